"""Benchmark: a 30-day backtest of one deployment (the field case of docs/economics.md).

    python bench/bench_backtest.py [--out DIR]

Generates the field-case trace (37 days from Monday 2026-03-02), backtests
2026-03-09T00:00Z -> 2026-04-08T00:00Z through the real forecaster, planner and simulated
provider, and prints the wall-clock seconds (target: under 60) with the result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.config import load_config  # noqa: E402
from scheduler.ingest.files import read_usage_file  # noqa: E402
from scheduler.planning.backtest import run_backtest  # noqa: E402

START = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
END = dt.datetime(2026, 4, 8, tzinfo=dt.UTC)


def _write_trace(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location(
        "field_case_generate", ROOT / "examples" / "field_case" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written: Path = module.write(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the outputs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = _write_trace(Path(tmp) / "field_case.csv")
        deployment = load_config(ROOT / "examples" / "field_case" / "capsched.toml",
                                 env={}).deployment("support-bot")
        usage = read_usage_file(trace)
        # Import the forecaster before timing (a one-off cost of any process).
        import forecasting  # noqa: F401

        out = args.out or Path(tmp) / "out"
        t0 = time.perf_counter()
        summary = run_backtest(usage, deployment, out, start=START, end=END)
        seconds = time.perf_counter() - t0
    cost = summary["cost"]
    print(f"field case 30-day backtest: {seconds:.1f} s "
          f"({summary['minutes']} minutes, {summary['plans_made']} plans, "
          f"{seconds / summary['minutes'] * 1000:.2f} ms per simulated minute)")
    print(f"cost ${cost['total']:,.2f} (committed ${cost['committed']:,.2f}, elastic "
          f"${cost['elastic']:,.2f}, spill ${cost['spill']:,.2f}); spill fraction "
          f"{summary['spill_fraction']:.4%}; hindsight "
          f"${summary['baselines']['hindsight_optimum']['total']:,.2f} "
          f"(x{summary['versus']['hindsight_optimum']['ratio']}); dedicated "
          f"${summary['baselines']['dedicated_at_peak']['cost']:,.2f}")
    print(f"seconds={seconds:.2f}")
    return 0 if seconds < 60 else 1


if __name__ == "__main__":
    raise SystemExit(main())

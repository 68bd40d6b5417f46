"""`make bench`: every benchmark, one after the other, each against its reference.

Speed and memory targets live here, never in timed tests. Each script measures its own
reference in the same run (psql \\copy, statsmodels MSTL, the fast path, ...) and prints
the ratio.

M4 Hourly (``bench/m4.py``, all 414 series: about 40 minutes on two cores) runs only with
``--m4`` (``make bench`` leaves it out); ``--m4-series N`` scores an even subset of about N.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = (
    ("ingest: 1,000,000 rows vs psql \\copy", ["bench_ingest.py"]),
    ("forecast: 1,000 series x 30 days vs statsmodels MSTL", ["bench_forecast.py"]),
    ("refit with the model choice: 1,000 series x 30 days, 30 s budget, vs the fast path",
     ["bench_select.py"]),
    ("backtest: 30 days of the field case", ["bench_backtest.py"]),
    ("daemon tick: 1,000 deployments, 30 days stored", ["bench_tick.py"]),
    ("month-to-date service level: daily roll-ups vs the raw ledger",
     ["bench_service_level.py"]),
    ("scenario suite (issue #9): one backtest per traffic shape", ["scenarios/run.py"]),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--m4", action="store_true", help="also score M4 Hourly (slow)")
    ap.add_argument("--m4-series", type=int, default=0,
                    help="with --m4: score an even subset of about this many (0: all 414)")
    args = ap.parse_args(argv)
    benches = list(BENCHES)
    if args.m4:
        extra = ["--series", str(args.m4_series)] if args.m4_series else []
        benches.append(("M4 Hourly: 414 series, horizon 48, vs the published rows",
                        ["m4.py", *extra]))
    failed = []
    for title, argv_ in benches:
        print(f"== {title}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(HERE / argv_[0]), *argv_[1:]],
                                capture_output=True, text=True, check=False)
        # The benches' own result lines; the daemon's JSON logs are not the result.
        for line in result.stdout.splitlines():
            if not line.startswith("{") and "[info" not in line and "[warn" not in line:
                print(line)
        if result.returncode != 0:
            failed.append(title)
            print(result.stderr[-3000:])
        print(f"   ({time.perf_counter() - started:.0f} s)\n", flush=True)
    if failed:
        print("failed: " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: every benchmark, one after the other, each against its reference.

Speed and memory targets live here, never in timed tests. Each script measures its own
reference in the same run (psql \\copy, statsmodels MSTL, ...) and prints the ratio.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = (
    ("ingest: 1,000,000 rows vs psql \\copy", ["bench_ingest.py"]),
    ("forecast: 1,000 series x 30 days vs statsmodels MSTL", ["bench_forecast.py"]),
    ("backtest: 30 days of the field case", ["bench_backtest.py"]),
    ("daemon tick: 1,000 deployments, 30 days stored", ["bench_tick.py"]),
    ("month-to-date service level: daily roll-ups vs the raw ledger",
     ["bench_service_level.py"]),
    ("scenario suite (issue #9): one backtest per traffic shape", ["scenarios/run.py"]),
)


def main() -> int:
    failed = []
    for title, argv in BENCHES:
        print(f"== {title}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]],
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

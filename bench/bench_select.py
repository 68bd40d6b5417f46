"""Benchmark: the per-series model choice on top of the fast path, under a time budget.

1,000 synthetic minute-level deployments with 30 days of history (bench_forecast's
generator). First the fast path alone (``forecasting.fit_batch`` + ``predict``), then the
choice as ``capsched forecast`` runs it: ``forecasting.select_forecast`` per deployment
against one shared deadline of ``BENCH_CHOICE_SECONDS`` (default 20) on a monotonic clock;
deployments reached after the deadline keep the fast path. Prints both wall times, their
ratio (the machine is shared, so the ratio is the comparable figure), how many deployments
were validated and how many fell back, and the choice's accuracy against the fast path's
on the day after the history for the validated ones.

    .venv/bin/python bench/bench_select.py            # BENCH_SERIES=1000
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forecast import synthetic

import forecasting

N_SERIES = int(os.environ.get("BENCH_SERIES", "1000"))
CHOICE_SECONDS = float(os.environ.get("BENCH_CHOICE_SECONDS", "20"))
TARGET_SECONDS = 30.0
DAYS = 30
HORIZON = 1440
START = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)
QUANTILES = (0.1, 0.5, 0.9, 0.975, 0.99)


def main() -> None:
    full = synthetic(N_SERIES, DAYS + 1)
    hist, future = full[:, : DAYS * 1440], full[:, DAYS * 1440 : DAYS * 1440 + HORIZON]
    origin = START + dt.timedelta(days=DAYS)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    models = forecasting.fit_batch(hist, step_minutes=1, starts=[START] * N_SERIES,
                                   quantiles=QUANTILES)
    fast = [m.predict(h[-1440:], origin=origin, horizon=HORIZON)
            for m, h in zip(models, hist, strict=True)]
    t1 = time.perf_counter()
    deadline = time.monotonic() + CHOICE_SECONDS
    chosen: dict[int, forecasting.Forecast] = {}
    for i in range(N_SERIES):
        if time.monotonic() >= deadline:
            break
        fc = forecasting.select_forecast(hist[i], step_minutes=1, horizon=HORIZON,
                                         quantiles=QUANTILES, start=START,
                                         clock=time.monotonic, deadline=deadline)
        if not fc.parameters["selection"]["fast_path"]:
            chosen[i] = fc
    t2 = time.perf_counter()
    fast_s, choice_s = t1 - t0, t2 - t1
    total = fast_s + choice_s

    def mae(fcs: dict[int, np.ndarray]) -> float:
        errs = [np.nanmean(np.abs(future[i] - m)) / np.nanmean(np.abs(future[i]))
                for i, m in fcs.items()]
        return float(np.mean(errs)) if errs else float("nan")

    ids = list(chosen)
    print(f"{N_SERIES} deployments x {DAYS} days of minutes, load average {load:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"fast path alone (fit_batch + predict): {fast_s:.1f} s")
    print(f"choice, budget {CHOICE_SECONDS:g} s:            {choice_s:.1f} s, "
          f"{len(chosen)} validated, {N_SERIES - len(chosen)} kept the fast path")
    print(f"total {total:.1f} s = {total / fast_s:.2f} x the fast path "
          f"(target <= {TARGET_SECONDS:g} s; bounded by fast + budget + one deployment)")
    if ids:
        ours = mae({i: chosen[i].mean for i in ids})
        theirs = mae({i: fast[i].mean for i in ids})
        print(f"day-ahead relative MAE on the validated ones: choice {ours:.4f} "
              f"vs fast path {theirs:.4f}")
        print("chosen:", dict(Counter(chosen[i].model for i in ids).most_common(6)))
        per = choice_s / max(1, len(chosen))
        print(f"choice cost {per:.2f} s per deployment: {TARGET_SECONDS / per:.0f} deployments "
              f"fit in a {TARGET_SECONDS:g} s budget on this machine now")


if __name__ == "__main__":
    main()

"""Benchmark: a refit of 1,000 deployments with the per-series model choice, under one budget.

1,000 synthetic minute-level deployments with 30 days of history (bench_forecast's
generator), refit as ``capsched forecast --choose-seconds`` does it: the fast path for all
(``forecasting.fit_batch`` + ``predict``), then ``forecasting.select.select_batch`` against
one deadline for the whole refit (``BENCH_REFIT_SECONDS``, default 29 s after the refit
started, on a monotonic clock); deployments the deadline does not reach keep the fast path
and one warning says how many. Prints the fast path's wall time, the whole refit's, their
ratio (the machine is shared, so the ratio is the comparable figure), how many
deployments were validated and how many kept the fast path, and the accuracy of both on
the day after the history.

A second refit shows the steady state: the choice re-validated on a slower cadence than
the refits (``BENCH_REVALIDATE_EVERY`` refits, default 24: daily at the daemon's hourly
``refit_minutes``), a rotating 1/24 of the deployments plus every one whose last choice
was not the fast path.

``--traces`` instead scores the choice on the ServeGen minute traces in examples/traces
(day-ahead, origins every 9 h from day 7): the fast path, the choice as select_batch makes
it (it may leave the fast path only on clear evidence), and the unconstrained choice
(``select_forecast`` alone, 3 origins), as relative MAE (MAE / mean load).

    .venv/bin/python bench/bench_select.py            # BENCH_SERIES=1000
    .venv/bin/python bench/bench_select.py --traces   # about 15 s
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_forecast import synthetic

import forecasting
from forecasting.select import BatchSelection, select_batch

N_SERIES = int(os.environ.get("BENCH_SERIES", "1000"))
TARGET_SECONDS = 30.0
REFIT_SECONDS = float(os.environ.get("BENCH_REFIT_SECONDS", str(TARGET_SECONDS - 1)))
REVALIDATE_EVERY = int(os.environ.get("BENCH_REVALIDATE_EVERY", "24"))
DAYS = 30
HORIZON = 1440
START = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)
QUANTILES = (0.1, 0.5, 0.9, 0.975, 0.99)


def refit(hist: np.ndarray, validate: Sequence[bool] | None
          ) -> tuple[list[forecasting.Forecast], BatchSelection, float, float]:
    """One refit: the fast path, then the choice against the whole refit's deadline."""
    n = hist.shape[0]
    origin = START + dt.timedelta(days=DAYS)
    c0 = time.process_time()
    t0 = time.perf_counter()
    deadline = time.monotonic() + REFIT_SECONDS
    models = forecasting.fit_batch(hist, step_minutes=1, starts=[START] * n,
                                   quantiles=QUANTILES)
    fast = [m.predict(h[-1440:], origin=origin, horizon=HORIZON)
            for m, h in zip(models, hist, strict=True)]
    t1 = time.perf_counter()
    c1 = time.process_time()
    chosen = select_batch(list(hist), step_minutes=1, horizon=HORIZON, fast=fast,
                          quantiles=QUANTILES, starts=[START] * n, validate=validate,
                          clock=time.monotonic, deadline=deadline)
    t2 = time.perf_counter()
    c2 = time.process_time()
    # CPU seconds: what the refit costs on an idle machine, whoever else is running.
    print(f"   (CPU: fast path {c1 - c0:.1f} s, choice {c2 - c1:.1f} s "
          f"= {(c2 - c1) / max(1, chosen.validated) * 1000:.1f} ms per validated series)")
    return fast, chosen, t1 - t0, t2 - t0


def main() -> None:
    # The choice's one warning is part of the result: on stdout, in order.
    logging.basicConfig(format="   log: %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    full = synthetic(N_SERIES, DAYS + 1)
    hist, future = full[:, : DAYS * 1440], full[:, DAYS * 1440 : DAYS * 1440 + HORIZON]
    load = os.getloadavg()[0]

    def rel_mae(fcs: Sequence[forecasting.Forecast], ids: Sequence[int]) -> float:
        errs = [np.nanmean(np.abs(future[i] - fcs[i].mean)) / np.nanmean(np.abs(future[i]))
                for i in ids]
        return float(np.mean(errs)) if errs else float("nan")

    print(f"{N_SERIES} deployments x {DAYS} days of minutes, load average {load:.1f} "
          f"on {os.cpu_count()} CPUs; refit budget {REFIT_SECONDS:g} s")
    fast, sel, fast_s, total = refit(hist, None)
    late = len(sel.out_of_time)
    print(f"fast path alone (fit_batch + predict): {fast_s:.1f} s")
    print(f"refit with the choice:                 {total:.1f} s = {total / fast_s:.2f} x the "
          f"fast path (target <= {TARGET_SECONDS:g} s): {sel.validated} validated, "
          f"{late} kept the fast path (budget)")
    per = (total - fast_s) / max(1, sel.validated)
    print(f"choice cost {per * 1000:.1f} ms per deployment: "
          f"{max(0.0, TARGET_SECONDS - fast_s) / per:.0f} deployments validated within "
          f"{TARGET_SECONDS:g} s on this machine now")
    ids = [i for i in range(N_SERIES) if i not in set(sel.out_of_time)]
    picks = Counter(fc.parameters["selection"]["chosen"] for fc in sel.forecasts)
    changed = [i for i in ids if not sel.forecasts[i].parameters["selection"]["fast_path"]]
    print(f"day-ahead relative MAE, validated ones: choice {rel_mae(sel.forecasts, ids):.4f} "
          f"vs fast path {rel_mae(fast, ids):.4f}; the {len(changed)} that left the fast "
          f"path: {rel_mae(sel.forecasts, changed):.4f} vs {rel_mae(fast, changed):.4f}")
    print("chosen:", dict(picks.most_common(6)))

    # Steady state: the previous choice is fresh for most deployments.
    due = [i % REVALIDATE_EVERY == 1 or not sel.forecasts[i].parameters["selection"]
           ["fast_path"] for i in range(N_SERIES)]
    _fast2, sel2, fast2_s, total2 = refit(hist, due)
    print(f"next refit, choice re-validated every {REVALIDATE_EVERY} refits "
          f"({sum(due)} due): {total2:.1f} s = {total2 / fast2_s:.2f} x its fast path "
          f"({fast2_s:.1f} s); {sel2.validated} validated, {len(sel2.out_of_time)} out of time")


def traces() -> None:
    from scheduler.ingest.files import read_usage_file

    root = Path(__file__).resolve().parents[1] / "examples" / "traces"
    print("day-ahead relative MAE on the ServeGen minute traces (origins every 9 h from day 7)")
    for name in ("m-small", "m-mid", "m-large"):
        parsed = read_usage_file(root / f"servegen_{name}.csv")
        offsets = (parsed.minutes - parsed.minutes[0]).astype(np.int64)
        y = np.full(int(offsets[-1]) + 1, np.nan)
        y[offsets] = parsed.input_tokens + 3.0 * parsed.output_tokens
        start = parsed.minutes[0].astype("datetime64[s]").item().replace(tzinfo=dt.UTC)
        scores: dict[str, list[float]] = {"fast path": [], "select_batch": [],
                                          "unconstrained choice": []}
        left = 0
        origins = range(7 * 1440, y.size - HORIZON + 1, 540)
        for o in origins:
            h, truth = y[:o], y[o : o + HORIZON]
            fast = forecasting.forecast(h, step_minutes=1, horizon=HORIZON, start=start,
                                        quantiles=QUANTILES)
            batch = select_batch([h], step_minutes=1, horizon=HORIZON, fast=[fast],
                                 quantiles=QUANTILES, starts=[start]).forecasts[0]
            free = forecasting.select_forecast(h, step_minutes=1, horizon=HORIZON,
                                               quantiles=QUANTILES, start=start)
            left += not batch.parameters["selection"]["fast_path"]
            ok = np.isfinite(truth)
            for key, fc in zip(scores, (fast, batch, free), strict=True):
                scores[key].append(float(np.mean(np.abs(truth[ok] - fc.mean[ok]))
                                         / np.mean(np.abs(truth[ok]))))
        print(f"  {name:8s} {len(origins)} origins: "
              + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in scores.items())
              + f"; select_batch left the fast path {left}x")


if __name__ == "__main__":
    if "--traces" in sys.argv[1:]:
        traces()
    else:
        main()

"""Benchmark: fit and forecast 1,000 synthetic deployments (30 days of minute data).

Prints the wall-clock seconds of forecasting.fit_batch + predict for all series, beside
statsmodels MSTL timed on a small sample of the same series in the same run and
extrapolated to 1,000, and the accuracy of both on the day after the history.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import forecasting

N_SERIES = int(os.environ.get("BENCH_SERIES", "1000"))
MSTL_SAMPLE = max(1, int(os.environ.get("BENCH_MSTL_SAMPLE", "1")))
# MSTL with the weekly period on 30 days of minutes takes minutes per series here, so the
# comparison uses its cheapest useful form: daily period only, last 14 days.
MSTL_DAYS = 14
DAYS = 30
HORIZON = 1440
START = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)


def synthetic(n: int, days: int, seed: int = 7) -> np.ndarray:
    """Daily + weekly cycles, multiplicative noise, bursts, NaN and all-zero logging gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440)
    tod = (t % 1440) / 1440.0
    dow = (t // 1440) % 7
    out = np.empty((n, t.size))
    for i in range(n):
        level = rng.lognormal(3.0, 1.0)
        peak = rng.uniform(0.3, 0.8)
        amp = rng.uniform(0.3, 0.8)
        daily = 1 + amp * np.cos(2 * np.pi * (tod - peak)) + 0.2 * np.cos(4 * np.pi * (tod - peak))
        weekly = np.where(dow >= 5, rng.uniform(0.5, 0.9), 1.0)
        growth = 1 + rng.choice([0.0, 0.0, 0.01]) * t / 1440
        y = level * daily * weekly * growth * rng.lognormal(0.0, 0.15, t.size)
        for _ in range(rng.integers(0, 6)):
            s = int(rng.integers(0, t.size - 120))
            y[s : s + int(rng.integers(5, 120))] *= rng.uniform(1.5, 4.0)
        for _ in range(rng.integers(0, 3)):
            s = int(rng.integers(0, t.size - 240))
            y[s : s + int(rng.integers(10, 240))] = 0.0
        for _ in range(rng.integers(0, 3)):
            s = int(rng.integers(0, t.size - 240))
            y[s : s + int(rng.integers(1, 240))] = np.nan
        out[i] = y
    return out


def main() -> None:
    full = synthetic(N_SERIES, DAYS + 1)
    hist = full[:, : DAYS * 1440]
    future = full[:, DAYS * 1440 : DAYS * 1440 + HORIZON]

    load_before = os.getloadavg()[0]
    c0 = time.process_time()
    t0 = time.perf_counter()
    models = forecasting.fit_batch(hist, step_minutes=1, starts=[START] * N_SERIES)
    t1 = time.perf_counter()
    origin = START + dt.timedelta(days=DAYS)
    fcs = [
        m.predict(h[-1440:], origin=origin, horizon=HORIZON)
        for m, h in zip(models, hist, strict=True)
    ]
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    load_after = os.getloadavg()[0]
    ours = t2 - t0
    predict_ms = (t2 - t1) / N_SERIES * 1000

    from statsmodels.tsa.seasonal import MSTL

    mstl_secs = []
    mstl_err = []
    our_err = []
    for i in range(MSTL_SAMPLE):
        y = forecasting.mask_suspected_gaps(hist[i])
        filled = np.interp(np.arange(y.size), np.flatnonzero(np.isfinite(y)), y[np.isfinite(y)])
        filled = filled[-MSTL_DAYS * 1440 :]
        s = time.perf_counter()
        res = MSTL(filled, periods=(1440,)).fit()
        seas = np.asarray(res.seasonal).reshape(filled.size, -1).sum(axis=1)[-1440:][:HORIZON]
        pred = np.maximum(res.trend[-1] + seas, 0.0)
        mstl_secs.append(time.perf_counter() - s)
        ok = np.isfinite(future[i])
        mstl_err.append(np.mean(np.abs(future[i][ok] - pred[ok])))
        our_err.append(np.mean(np.abs(future[i][ok] - fcs[i].mean[ok])))
    mstl_total = float(np.mean(mstl_secs)) * N_SERIES
    cover = []
    for fc, fut in zip(fcs, future, strict=True):
        ok = np.isfinite(fut) & (fut > 0)
        cover.append(np.mean(fut[ok] <= fc.quantile(0.9)[ok]))
    print(f"series: {N_SERIES} x {DAYS} days of minute data, horizon {HORIZON} steps")
    print(f"forecasting.fit_batch + predict: {ours:.2f} s  (fit {t1 - t0:.2f} s, "
          f"predict {predict_ms:.3f} ms per series)")
    print(f"  CPU time of this process {cpu:.2f} s on {os.cpu_count()} cores; 1-min load "
          f"average {load_before:.1f} before, {load_after:.1f} after (other processes share "
          f"the cores, so wall time inflates under load)")
    print(f"statsmodels MSTL (daily period, {MSTL_DAYS} days): {np.mean(mstl_secs):.2f} s per "
          f"series on {MSTL_SAMPLE} series, "
          f"extrapolated to {N_SERIES}: {mstl_total:.0f} s")
    print(f"speed ratio MSTL / ours: {mstl_total / ours:.0f}x; "
          f"next-day MAE on the MSTL sample: ours {np.mean(our_err):.3g}, "
          f"MSTL {np.mean(mstl_err):.3g}")
    print(f"share of next-day minutes at or below the 0.9 quantile: {np.mean(cover):.3f}")
    print(f"target < 10 s for 1,000 series: {'PASS' if ours * 1000 / N_SERIES < 10 else 'FAIL'}")


if __name__ == "__main__":
    main()

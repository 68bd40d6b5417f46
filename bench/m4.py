"""Score the forecaster on M4 Hourly exactly as the M4 Competition did.

414 series, horizon 48, seasonal period 24. Point accuracy: sMAPE and MASE (scale: the
in-sample seasonal-naive MAE with m = 24), averaged over series and horizons, and OWA
against Naive2, all computed by the organisers' definitions as re-implemented and checked
in ``bench/data/m4_hourly/score.py`` (its ``--self-test`` reproduces the published Naive,
sNaive and Naive2 rows). Intervals: coverage of the 95 % interval (2.5 % / 97.5 %
quantiles) and MSIS at alpha = 0.05 (Makridakis et al., IJF 36(1) 2020, eq. 4: mean of
``U - L + (2/a)(L - y)[y < L] + (2/a)(y - U)[y > U]`` over the horizon, divided by the same
seasonal-naive scale as MASE). The published rows are printed beside ours.

Usage::

    .venv/bin/python bench/m4.py                 # all 414 series, 2 worker processes
    .venv/bin/python bench/m4.py --series 50     # every 8th series: a quick subset
    .venv/bin/python bench/m4.py --method fast   # the harmonic fast path alone
    .venv/bin/python bench/m4.py --method guarded  # select_batch's guarded rule

M4 Hourly series carry no timestamps, so they are forecast on a bare hourly grid (UTC,
no calendar). The data are public (see bench/data/m4_hourly/SOURCE.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "m4_hourly"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DATA))

import score as m4score  # noqa: E402  (bench/data/m4_hourly/score.py, the M4 definitions)

import forecasting  # noqa: E402

H = 48
M = 24
LEVELS = (0.025, 0.5, 0.975)
ALPHA = 0.05
# Published 95 % interval scores, M4 sheet "Prediction Intervals-Frequency" (REFERENCE.md).
PUBLISHED_MSIS = {"ARIMA": 7.538, "ETS": 17.487, "Naive": 71.245, "118": 7.928, "245": 18.509}
SHOWN = ("238", "118", "237", "245", "72", "24", "sNaive", "Naive2", "Theta", "SES", "Naive")


Result = tuple[str, np.ndarray, np.ndarray, str, float]


def forecast_one(args: tuple[str, np.ndarray, str]) -> Result:
    sid, x, method = args
    import threadpoolctl

    t0 = time.perf_counter()
    with threadpoolctl.threadpool_limits(1):
        if method == "fast":
            fc = forecasting.forecast(x, step_minutes=60, horizon=H, quantiles=LEVELS,
                                      zero_gap_minutes=0, method="fast")
        elif method == "guarded":
            fast = forecasting.fast_forecast(x, step_minutes=60, horizon=H, quantiles=LEVELS,
                                             zero_gap_minutes=0)
            fc = forecasting.select_forecast(x, step_minutes=60, horizon=H, quantiles=LEVELS,
                                             zero_gap_minutes=0, n_origins=7, fast=fast)
        else:
            # The package's one-call entry, as a user calls it: at hourly steps it runs the
            # per-series choice (forecasting.select_forecast).
            fc = forecasting.forecast(x, step_minutes=60, horizon=H, quantiles=LEVELS,
                                      zero_gap_minutes=0)
    return sid, fc.mean, fc.quantiles, fc.model, time.perf_counter() - t0


def msis(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: float) -> float:
    pen = (hi - lo) + (2 / ALPHA) * (lo - y) * (y < lo) + (2 / ALPHA) * (y - hi) * (y > hi)
    return float(pen.mean() / scale)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=0, help="score every k-th series so that "
                    "about this many are scored (0: all 414)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--method", choices=("select", "guarded", "fast"), default="select",
                    help="select: forecasting.forecast (the per-series choice); guarded: "
                    "select_batch's rule (7 origins, must beat the fast path at each); "
                    "fast: the harmonic fast path alone")
    ap.add_argument("--write", help="write the point forecasts in submission format")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ap.add_argument("--results", help="append each series' forecast to this JSON Lines file "
                    "as it finishes, and skip the series already in it (a long run can be "
                    "resumed; --score-only scores what it holds)")
    ap.add_argument("--score-only", action="store_true",
                    help="with --results: score the series in the file, compute nothing")
    a = ap.parse_args(argv)
    train = m4score.load_m4(str(DATA / "Hourly-train.csv"))
    test = m4score.load_m4(str(DATA / "Hourly-test.csv"))
    ids = sorted(train, key=lambda s: int(s[1:]))
    if a.series:
        ids = ids[:: max(1, len(ids) // a.series)][: a.series]
    # Interleaved order (every 7th series first): a run cut short leaves a spread subset.
    ids = sorted(ids, key=lambda sid: (int(sid[1:]) % 7, int(sid[1:])))
    done: dict[str, Result] = {}
    if a.results and os.path.exists(a.results):
        with open(a.results) as f:
            for line in f:
                r = json.loads(line)
                if r["id"] in train and r["method"] == a.method:
                    done[r["id"]] = (r["id"], np.array(r["mean"]), np.array(r["quantiles"]),
                                     r["model"], r["seconds"])
    t0 = time.perf_counter()
    jobs = [(s, train[s], a.method) for s in ids if s not in done]
    if a.score_only:
        ids = [s for s in ids if s in done]
        jobs = []
    with ProcessPoolExecutor(max_workers=max(1, min(2, a.workers))) as pool:
        for r in pool.map(forecast_one, jobs, chunksize=1):
            done[r[0]] = r
            if a.results:
                with open(a.results, "a") as f:
                    f.write(json.dumps({"id": r[0], "method": a.method,
                                        "mean": r[1].tolist(), "quantiles": r[2].tolist(),
                                        "model": r[3], "seconds": r[4]}) + "\n")
    results = [done[s] for s in ids]
    wall = time.perf_counter() - t0
    point = {sid: np.asarray(mean, dtype=np.float64) for sid, mean, *_ in results}
    summary, _per = m4score.score(point, train, test)
    inside, msis_all = [], []
    for sid, _mean, q, _model, _t in results:
        y = test[sid][:H]
        lo, hi = q[0], q[-1]
        inside.append(((y >= lo) & (y <= hi)).mean())
        msis_all.append(msis(y, lo, hi, m4score.mase_scale(train[sid])))
    models = Counter(r[3] for r in results)
    ours = {
        "method": a.method, "n_series": len(ids), "sMAPE": round(summary["sMAPE"], 3),
        "MASE": round(summary["MASE"], 3), "OWA": round(summary["OWA"], 4),
        "coverage_95": round(float(np.mean(inside)), 4),
        "MSIS": round(float(np.mean(msis_all)), 3),
        "seconds": round(wall, 1), "seconds_per_series_cpu": round(
            float(np.mean([r[4] for r in results])), 3),
        "models": dict(models.most_common(12)),
    }
    if a.write:
        m4score.write_forecasts(a.write, point)
    if a.json:
        print(json.dumps(ours, indent=1))
        return 0
    published = {}
    with open(DATA / "published_hourly.csv", newline="") as f:
        for entry in csv.DictReader(f):
            published[entry["id"]] = entry
    subset = "" if len(ids) == len(train) else f" (subset of {len(ids)}: not comparable)"
    print(f"M4 Hourly, horizon {H}, m = {M}{subset}; {wall:.1f} s wall, "
          f"{os.cpu_count()} CPUs, {min(2, a.workers)} workers")
    print(f"{'method':<44} {'sMAPE':>8} {'MASE':>7} {'OWA':>7} {'cover95':>8} {'MSIS':>8}")
    print(f"{'capsched ' + a.method:<44} {ours['sMAPE']:>8.3f} {ours['MASE']:>7.3f} "
          f"{ours['OWA']:>7.4f} {ours['coverage_95']:>8.3f} {ours['MSIS']:>8.3f}")
    for key in SHOWN:
        row = published.get(key)
        if row is None:
            continue
        who = f"{key} (M4 benchmark)" if key in ("sNaive", "Naive2", "Theta", "SES", "Naive") else (
            f"{key} {row['who'].split(',')[0]}")
        ms = PUBLISHED_MSIS.get(key)
        print(f"{who:<44} {float(row['hourly_sMAPE']):>8.3f} {float(row['hourly_MASE']):>7.3f} "
              f"{float(row['hourly_OWA']):>7.4f} {'':>8} {ms if ms else '':>8}")
    print(f"{'ARIMA (auto.arima, tm1611 replication)':<44} {14.090:>8.3f} {0.949:>7.3f} "
          f"{0.5813:>7.4f} {'':>8} {PUBLISHED_MSIS['ARIMA']:>8}")
    print(f"{'ETS (forecast::ets, tm1611 replication)':<44} {17.307:>8.3f} {1.824:>7.3f} "
          f"{0.8515:>7.4f} {'':>8} {PUBLISHED_MSIS['ETS']:>8}")
    print("models chosen:", json.dumps(ours["models"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

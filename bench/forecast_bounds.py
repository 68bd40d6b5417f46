"""How accurate can a forecast of a trace be? Evidence for the forecasting targets.

    python bench/forecast_bounds.py [--traces m-small,m-mid,m-large]

Scores, with the protocol of ``capsched forecast eval`` (targets whose origin lies in the
last week, an origin every minute, suspected zero gaps masked, MAE relative to weekly
seasonal naive on the same points), forecasts that are *not* online-honest, to bound
what a model could reach at 1 hour and 24 hours:

* **true day level x profile**: the mean of the target's own local day (unknowable in
  advance) times the profile of the previous seven days at that time of day (+-30 min):
  the error left when the level is known exactly and only the shape is forecast;
* **median regression, out of sample**: a quantile (LAD) regression of the target on the
  values at the same time of day 1 (and 1-3) days earlier (smoothed over 0/30/60/120
  min) and the means of the last 10/60/360/1440 minutes, refitted every day on
  everything before the day: the best linear use of what the history can train;
* **median regression, in sample**: the same with days 1-7 fitted on the scored week
  itself (it has seen the answers): an optimistic ceiling for any linear model.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecasting._gaps import mask_suspected_gaps  # noqa: E402
from scheduler.ingest.files import read_usage_file  # noqa: E402

FloatArray = npt.NDArray[np.float64]
DAY, WEEK = 1440, 10080


def rolling_mean(x: FloatArray, w: int, centred: bool) -> FloatArray:
    """NaN-aware mean over [i - w, i + w] (centred) or [i - w + 1, i] (trailing)."""
    ok = np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    k = np.concatenate([[0.0], np.cumsum(ok)])
    idx = np.arange(x.size)
    lo = np.clip(idx - w if centred else idx + 1 - w, 0, x.size)
    hi = np.clip(idx + w + 1 if centred else idx + 1, 0, x.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((c[hi] - c[lo]) / (k[hi] - k[lo]), np.float64)


def mase(y: FloatArray, pred: FloatArray, targets: npt.NDArray[np.int64], h: int) -> float:
    lag = WEEK * int(np.ceil(h / WEEK))
    truth, naive, p = y[targets], y[targets - lag], pred
    ok = np.isfinite(truth) & np.isfinite(naive) & np.isfinite(p)
    return float(np.mean(np.abs(truth[ok] - p[ok])) / np.mean(np.abs(truth[ok] - naive[ok])))


def features(y: FloatArray, filled: FloatArray, targets: npt.NDArray[np.int64], h: int,
             days: range) -> FloatArray:
    origins = targets - h + 1
    cols = []
    for k in days:
        src = targets - DAY * max(k, int(np.ceil(h / DAY)))
        for w in (0, 30, 60, 120):
            # A window centred on the lagged minute, cut so it ends before the origin.
            centre = np.minimum(src, origins - 1 - w)
            cols.append(rolling_mean(filled, w, centred=True)[centre])
    for w in (10, 60, 360, 1440):
        cols.append(rolling_mean(filled, w, centred=False)[origins - 1])
    return np.column_stack([np.ones(targets.size), *cols])


def lad(x: FloatArray, y: FloatArray) -> FloatArray:
    import statsmodels.api as sm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(sm.QuantReg(y, x).fit(q=0.5, max_iter=5000).params, np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default="m-small,m-mid,m-large")
    args = ap.parse_args()
    for name in args.traces.split(","):
        usage = read_usage_file(ROOT / "examples" / "traces" / f"servegen_{name}.csv")
        raw = usage.input_tokens + 3.0 * usage.output_tokens.astype(np.float64)
        y = mask_suspected_gaps(raw.astype(np.float64), min_run=10)
        n = y.size
        first = n - WEEK
        ok = np.isfinite(y)
        filled = np.interp(np.arange(n), np.flatnonzero(ok), y[ok])
        row = []
        # True day level x the previous week's profile (24 h ahead only).
        h = DAY
        targets = np.arange(first + h - 1, n)
        daily = np.array([np.nanmean(y[d * DAY:(d + 1) * DAY]) for d in range(n // DAY)])
        around = rolling_mean(y, 30, centred=True)
        prof = np.nanmean(np.stack([around[targets - k * DAY] / daily[(targets - k * DAY) // DAY]
                                    for k in range(1, 8)]), axis=0) * daily[targets // DAY]
        row.append(f"true day level x profile 24h {mase(y, prof, targets, h):.3f}")
        for h in (60, DAY):
            targets = np.arange(first + h - 1, n)
            for days in (range(1, 2), range(1, 4)):
                all_t = np.arange(DAY * days.stop + 240, n)
                x_all = features(y, filled, all_t, h, days)
                pred = np.full(targets.size, np.nan)
                for d in range(7):
                    o0 = first + d * DAY
                    train = (all_t < o0) & np.isfinite(y[all_t])
                    beta = lad(x_all[train], y[all_t][train])
                    sel = (targets - h + 1 >= o0) & (targets - h + 1 < o0 + DAY)
                    pred[sel] = features(y, filled, targets[sel], h, days) @ beta
                row.append(f"LAD out of sample days {days.start}-{days.stop - 1} "
                           f"{h // 60}h {mase(y, pred, targets, h):.3f}")
            x = features(y, filled, targets, h, range(1, 8))
            fit = np.isfinite(y[targets])
            beta = lad(x[fit], y[targets][fit])
            row.append(f"LAD in sample (seen the answers) {h // 60}h "
                       f"{mase(y, x @ beta, targets, h):.3f}")
        print(f"{name}: " + "; ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

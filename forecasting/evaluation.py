"""Rolling-origin evaluation against a seasonal naive forecast."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core import steps_for
from ._gaps import mask_suspected_gaps
from ._model import FittedModel, fit
from ._time import MINUTES_PER_DAY, CalendarDay, epoch_minutes

#: Day-block bootstrap resamples behind the ``*_range`` fields, and the fixed seed that
#: makes a report reproducible (the same inputs give the same ranges).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: Fewer origin days than this give no range: with 2-4 days the 5th and 95th percentiles
#: are little more than the best and the worst day.
BOOTSTRAP_MIN_DAYS = 5


@dataclass(frozen=True)
class HorizonScore:
    horizon_minutes: float
    mae: float
    mae_naive: float
    mase: float
    pinball: float
    coverage_80: float | None
    coverage_95: float | None
    n_points: int
    smape: float = math.nan  # percent, 200 |y - f| / (|y| + |f|), 0 where both are 0
    mase_insample: float = math.nan  # MAE / in-sample seasonal-naive MAE (the M4 MASE)
    msis: float | None = None  # 95 % interval score over the same in-sample scale (M4)
    #: The sampling spread of the coverage an exactly calibrated interval would show on
    #: these points, sqrt(p (1 - p) / n) with p nominal: a measured coverage within about
    #: two of these of nominal is no evidence of miscalibration (points taken as
    #: independent, so a lower bound: errors of nearby origins are correlated). 56 origins
    #: give 0.054 at 80 %, more than the 3 points asked of the intervals.
    coverage_80_se: float | None = None
    coverage_95_se: float | None = None
    #: 90 % day-block bootstrap ranges (5th, 95th percentile over resamples of whole origin
    #: days) of ``mase`` and of the two coverages; None with fewer than 5 origin days (or
    #: when the score itself is undefined). See :func:`rolling_origin_eval`.
    mase_range: tuple[float, float] | None = None
    coverage_80_range: tuple[float, float] | None = None
    coverage_95_range: tuple[float, float] | None = None
    #: Distinct UTC days of the origins of the scored points (the bootstrap's blocks).
    n_days: int = 0


@dataclass(frozen=True)
class EvalReport:
    naive: str  # "weekly" or "daily" seasonal naive
    quantiles: tuple[float, ...]
    n_origins: int
    n_fits: int
    scores: tuple[HorizonScore, ...]
    origin_every_minutes: float = 1.0
    first_origin: dt.datetime | None = None
    #: Distinct origin positions modulo ``window_minutes`` (the data's publication window,
    #: e.g. ServeGen's 10 minutes): all of them means no within-window position is favoured.
    window_minutes: float | None = None
    window_phases: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "naive": self.naive,
            "quantiles": list(self.quantiles),
            "n_origins": self.n_origins,
            "n_fits": self.n_fits,
            "origin_every_minutes": self.origin_every_minutes,
            "first_origin": None if self.first_origin is None else self.first_origin.isoformat(),
            "window_minutes": self.window_minutes,
            "window_phases": self.window_phases,
            "horizons": {
                f"{s.horizon_minutes:g}": {
                    "mae": s.mae,
                    "mase": s.mase,
                    "mae_naive": s.mae_naive,
                    "pinball": s.pinball,
                    "coverage_80": s.coverage_80,
                    "coverage_95": s.coverage_95,
                    "smape": s.smape,
                    "mase_insample": s.mase_insample,
                    "msis": s.msis,
                    "coverage_80_se": s.coverage_80_se,
                    "coverage_95_se": s.coverage_95_se,
                    "n_points": s.n_points,
                    "mase_range": _as_list(s.mase_range),
                    "coverage_80_range": _as_list(s.coverage_80_range),
                    "coverage_95_range": _as_list(s.coverage_95_range),
                    "n_days": s.n_days,
                }
                for s in self.scores
            },
        }


def _as_list(r: tuple[float, float] | None) -> list[float] | None:
    return None if r is None else [r[0], r[1]]


def _nan_or(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")


def rolling_origin_eval(
    series: npt.ArrayLike,
    *,
    step_minutes: float = 1,
    start: dt.datetime | None = None,
    timezone: str = "UTC",
    calendar: Sequence[CalendarDay] | None = None,
    train_days: float | None = None,
    horizons: Sequence[float] = (5, 60, 1440),
    quantiles: Sequence[float] = (0.025, 0.1, 0.5, 0.9, 0.975),
    zero_gap_minutes: float = 10,
    eval_days: float = 7.0,
    refit_every_minutes: float = 360.0,
    origin_every_minutes: float = 1.0,
    first_origin_minutes: float | None = None,
    window_minutes: float | None = None,
    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
    bootstrap_seed: int = BOOTSTRAP_SEED,
) -> EvalReport:
    """Evaluate forecasts made from every origin of the last ``eval_days`` of ``series``.

    The default protocol (used by ``capsched forecast eval`` and the acceptance test) is
    the daemon's: a forecast from every minute, the model refitted every 6 hours on what
    precedes the refit point (the last ``train_days`` only, if given) and, in between,
    advanced with ``predict`` on the observations before each origin. Origins every
    minute matter for data published in blocks (ServeGen: 10 minutes): origins on block
    boundaries only would score the hardest within-block position alone. ``horizons`` are
    in minutes: horizon h scores the h-th forecast step. ``first_origin_minutes`` (minutes
    after the series start) replaces the ``eval_days`` window: origins then run from there
    to the end, e.g. every 180 minutes after the first week (``origin_every_minutes=180,
    first_origin_minutes=10080``) puts every origin on a ServeGen window boundary. With
    ``window_minutes`` the report counts the origins' distinct positions in that window.

    Per horizon: MAE, ``mase`` (MAE over the seasonal naive's MAE on the same points, the
    relative MAE), ``mase_insample`` (MAE over the in-sample seasonal-naive MAE of the
    history before the first origin: the M4 MASE), sMAPE (percent), pinball loss, 80 % and
    95 % coverage and MSIS (M4: mean of ``U - L + 40 (L - y)[y < L] + 40 (y - U)[y > U]``
    over the same in-sample scale; Makridakis et al., IJF 36(1) 2020). Truth and naive
    both come from the series with suspected zero gaps masked; points where either is
    missing are skipped. The naive is the weekly seasonal naive when the series spans two
    weeks, else the daily one.

    Uncertainty: ``mase_range``, ``coverage_80_range`` and ``coverage_95_range`` are 90 %
    percentile intervals (the 5th and 95th percentiles; Efron & Tibshirani, *An
    Introduction to the Bootstrap*, 1993, ch. 13) of a day-block bootstrap: the scored
    points are grouped by the UTC day of their *origin* (``n_days`` groups), and
    ``bootstrap_resamples`` resamples draw that many whole days with replacement (a
    ``numpy.random.default_rng(bootstrap_seed)`` per horizon, so a report is reproducible
    and a horizon's range does not depend on the other horizons asked for). Each resample's
    relative MAE is a ratio of sums, sum |e| / sum |e_naive| over its points, like the
    point estimate; its coverages are the share of its points inside the interval. Whole
    days are the blocks, in the spirit of the moving-block bootstrap for dependent data
    (Künsch, Ann. Statist. 17(3) 1989; here non-overlapping blocks at day boundaries),
    because the errors of origins within a day share that day's level and are far from
    independent: ``coverage_*_se`` treats points as independent and understates the
    spread. Days are still taken as independent of each other, so with a week of origins
    the range is itself rough and, if levels persist across days, still somewhat narrow.
    None with fewer than :data:`BOOTSTRAP_MIN_DAYS` (5) origin days. Raises ``ValueError``
    when ``bootstrap_resamples`` < 1.
    """
    if bootstrap_resamples < 1:
        raise ValueError("bootstrap_resamples must be >= 1")
    raw = np.asarray(series, dtype=np.float64).reshape(-1)
    n = raw.size
    zg = 0 if zero_gap_minutes <= 0 else steps_for(zero_gap_minutes, step_minutes)
    truth = mask_suspected_gaps(raw, min_run=zg) if zg else raw.copy()
    weekly = n * step_minutes >= 14 * MINUTES_PER_DAY
    season = steps_for((7 if weekly else 1) * MINUTES_PER_DAY, step_minutes)
    h_steps = [steps_for(h, step_minutes) for h in horizons]
    max_h = max(h_steps)
    eval_len = min(steps_for(eval_days * MINUTES_PER_DAY, step_minutes), n // 2)
    first = n - eval_len
    if first_origin_minutes is not None:
        first = min(n, max(1, steps_for(first_origin_minutes, step_minutes)))
    scale = _insample_scale(truth[:first], steps_for(MINUTES_PER_DAY, step_minutes))
    refit = steps_for(refit_every_minutes, step_minutes)
    stride = steps_for(origin_every_minutes, step_minutes)
    train_len = None if train_days is None else steps_for(train_days * MINUTES_PER_DAY,
                                                          step_minutes)
    qs = tuple(float(q) for q in quantiles)
    lookback = steps_for(MINUTES_PER_DAY, step_minutes)
    phases: set[float] = set()
    points: dict[int, list[tuple[float, float, npt.NDArray[np.float64], float, int]]] = {
        h: [] for h in h_steps
    }
    # The UTC day of an origin (the bootstrap's block): minutes since the epoch when the
    # series' start is known, else since the series start.
    t0 = 0.0 if start is None else epoch_minutes(start)
    model: FittedModel | None = None
    fit_at = -1
    fit_from = 0
    n_fits = 0
    n_origins = 0
    for o in range(first, n, stride):
        f = first + ((o - first) // refit) * refit
        if model is None or f != fit_at:
            fit_from = 0 if train_len is None else max(0, f - train_len)
            s = None if start is None else start + dt.timedelta(minutes=fit_from * step_minutes)
            model = fit(raw[fit_from:f], step_minutes=step_minutes, start=s, timezone=timezone,
                        calendar=calendar, quantiles=qs, zero_gap_minutes=zero_gap_minutes)
            fit_at = f
            n_fits += 1
        fc = model.predict(raw[max(0, o - lookback) : o], origin=o - fit_from, horizon=max_h)
        n_origins += 1
        if window_minutes:
            phases.add(round((o * step_minutes) % window_minutes, 6))
        qmat = np.stack([fc.quantile(q) for q in qs])
        for h in h_steps:
            t = o + h - 1
            if t >= n:
                continue
            lag = season * math.ceil(h / season)
            if t - lag < 0:
                continue
            y = truth[t]
            naive = truth[t - lag]
            pred = fc.mean[h - 1]
            if not (math.isfinite(y) and math.isfinite(naive) and math.isfinite(pred)):
                continue
            day = int((t0 + o * step_minutes) // MINUTES_PER_DAY)
            points[h].append((y - pred, y - naive, y - qmat[:, h - 1], y, day))
    scores = []
    qarr = np.asarray(qs)
    for h_min, h in zip(horizons, h_steps, strict=True):
        pts = points[h]
        if not pts:
            scores.append(HorizonScore(float(h_min), math.nan, math.nan, math.nan, math.nan,
                                       None, None, 0))
            continue
        e = np.array([p[0] for p in pts])
        en = np.array([p[1] for p in pts])
        eq = np.stack([p[2] for p in pts])  # y - quantile, (points, nq)
        yv = np.array([p[3] for p in pts])
        days = np.array([p[4] for p in pts], dtype=np.int64)
        mae = float(np.mean(np.abs(e)))
        fv = yv - e
        denom = np.abs(yv) + np.abs(fv)
        with np.errstate(divide="ignore", invalid="ignore"):
            smape = float(np.mean(np.where(denom > 0, 200.0 * np.abs(e) / denom, 0.0)))
        mae_naive = float(np.mean(np.abs(en)))
        pinball = float(np.mean(np.maximum(qarr * eq, (qarr - 1.0) * eq)))
        in80 = _inside(qs, eq, 0.1, 0.9)
        in95 = _inside(qs, eq, 0.025, 0.975)
        ranges = _day_block_ranges(days, np.abs(e), np.abs(en), in80, in95,
                                   resamples=bootstrap_resamples, seed=bootstrap_seed)
        mase = _nan_or(mae / mae_naive) if mae_naive > 0 else math.nan
        scores.append(
            HorizonScore(
                horizon_minutes=float(h_min),
                mae=mae,
                mae_naive=mae_naive,
                mase=mase,
                pinball=pinball,
                coverage_80=None if in80 is None else float(np.mean(in80)),
                coverage_95=None if in95 is None else float(np.mean(in95)),
                n_points=len(pts),
                smape=smape,
                mase_insample=_nan_or(mae / scale),
                msis=_msis(qs, eq, yv, scale),
                coverage_80_se=_coverage_se(0.8, len(pts)),
                coverage_95_se=_coverage_se(0.95, len(pts)),
                mase_range=ranges[0] if math.isfinite(mase) else None,
                coverage_80_range=ranges[1],
                coverage_95_range=ranges[2],
                n_days=int(np.unique(days).size),
            )
        )
    return EvalReport(
        naive="weekly" if weekly else "daily",
        quantiles=qs,
        n_origins=n_origins,
        n_fits=n_fits,
        scores=tuple(scores),
        origin_every_minutes=float(origin_every_minutes),
        first_origin=None if start is None else start + dt.timedelta(
            minutes=first * step_minutes),
        window_minutes=window_minutes,
        window_phases=len(phases) if window_minutes else None,
    )


def _inside(
    qs: tuple[float, ...], eq: npt.NDArray[np.float64], lo: float, hi: float
) -> npt.NDArray[np.bool_] | None:
    """Per point (shape (points,)): is y inside [quantile lo, quantile hi]; None if either
    level is not among ``qs``."""
    try:
        i = next(j for j, q in enumerate(qs) if math.isclose(q, lo))
        k = next(j for j, q in enumerate(qs) if math.isclose(q, hi))
    except StopIteration:
        return None
    # eq holds y - quantile: inside the interval means y >= lower and y <= upper.
    return (eq[:, i] >= 0) & (eq[:, k] <= 0)


Range = tuple[float, float]


def _day_block_ranges(
    days: npt.NDArray[np.int64],
    abs_e: npt.NDArray[np.float64],
    abs_en: npt.NDArray[np.float64],
    in80: npt.NDArray[np.bool_] | None,
    in95: npt.NDArray[np.bool_] | None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    min_days: int = BOOTSTRAP_MIN_DAYS,
) -> tuple[Range | None, Range | None, Range | None]:
    """Day-block bootstrap 5th / 95th percentiles of relMAE, 80 % and 95 % coverage.

    ``days`` (shape (points,), any integer labels) groups the points into blocks; the other
    arrays are per point: |forecast error|, |seasonal-naive error| and the in-interval
    flags. A resample draws ``n_days`` whole days with replacement: the (resamples, n_days)
    multinomial count matrix times the per-day sums gives every resample's sums at once
    (the same distribution as drawing day indices, without a (resamples, points) array).
    relMAE per resample is sum |e| / sum |e_naive|, a ratio of sums like the point
    estimate; resamples whose naive sum is 0 are left out. Returns (None, None, None) with
    fewer than ``min_days`` days (at least 2); a coverage range is None when its flags
    are.
    """
    labels, day_of = np.unique(days, return_inverse=True)
    n_days = labels.size
    if n_days < max(2, min_days) or resamples < 1:
        return None, None, None
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_days, np.full(n_days, 1.0 / n_days), size=resamples)
    counts = counts.astype(np.float64)

    def per_day(v: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        return np.asarray(np.bincount(day_of, weights=v.astype(np.float64), minlength=n_days),
                          dtype=np.float64)

    n_pts = counts @ per_day(np.ones(days.size))

    def pct(x: npt.NDArray[np.float64]) -> Range | None:
        x = x[np.isfinite(x)]
        if x.size == 0:
            return None
        lo, hi = np.percentile(x, [5.0, 95.0])
        return float(lo), float(hi)

    num, den = counts @ per_day(abs_e), counts @ per_day(abs_en)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(den > 0, num / den, np.nan)
    cov80 = None if in80 is None else pct(counts @ per_day(in80) / n_pts)
    cov95 = None if in95 is None else pct(counts @ per_day(in95) / n_pts)
    return pct(rel), cov80, cov95


def _coverage_se(nominal: float, n: int) -> float | None:
    return math.sqrt(nominal * (1.0 - nominal) / n) if n else None


def _insample_scale(y: npt.NDArray[np.float64], m: int) -> float:
    """Mean |y[t] - y[t - m]| over observed pairs (the M4 MASE / MSIS scale); NaN if none."""
    if y.size <= m:
        return math.nan
    d = np.abs(y[m:] - y[:-m])
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size and d.mean() > 0 else math.nan


def _msis(qs: tuple[float, ...], eq: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
          scale: float, alpha: float = 0.05) -> float | None:
    try:
        i = next(j for j, q in enumerate(qs) if math.isclose(q, alpha / 2))
        k = next(j for j, q in enumerate(qs) if math.isclose(q, 1 - alpha / 2))
    except StopIteration:
        return None
    lo, hi = y - eq[:, i], y - eq[:, k]
    pen = (hi - lo) + (2 / alpha) * (lo - y) * (y < lo) + (2 / alpha) * (y - hi) * (y > hi)
    return _nan_or(float(pen.mean()) / scale)

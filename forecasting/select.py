"""Per-series model choice by rolling-origin validation, with calibrated quantiles.

:func:`select_forecast` fits every usable member of the model family
(:mod:`forecasting.models`) at a few origins in the series' own recent history, scores
each on the steps after its origin (MAE scaled by the in-sample daily seasonal-naive MAE:
the M4 MASE, Hyndman & Koehler 2006), scores equal-weight combinations of the best
members the same way (combining the best few is what the M4 leaders did: Makridakis et
al., IJF 36(1) 2020), keeps the best of all, refits its members on the whole history and
forecasts. Quantiles are split-conformal (Vovk et al. 2005; Lei et al. 2018) on the chosen
forecast's own validation errors, pooled over neighbouring horizons.

Seasonal periods are in local time: with a ``start`` and a ``timezone`` the series is put
on a local wall-clock grid (a spring-forward hour is missing, a fall-back hour is the mean
of its two readings), modelled there, and the forecast read back on the UTC grid.

Pure: no clock is read. A budget is a ``deadline`` on the caller's ``clock`` (any
monotonic seconds callable); when it passes, the choice stops and the fast harmonic path
(:func:`forecasting.fast_forecast`) is returned with ``parameters["selection"]["degraded"]``
set, for the caller to log.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ._core import steps_for
from ._gaps import mask_suspected_gaps
from ._model import (
    Forecast,
    _broadcast,
    _check_quantiles,
    fast_forecast,
    fast_forecast_batch,
    fit_batch,
)
from ._time import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    CalendarDay,
    FloatArray,
    Timeline,
    from_epoch_minutes,
    normalise_calendar,
)
from .models import (
    FittedSeries,
    Harmonic,
    HoltWinters,
    MSTLModel,
    Sarimax,
    SeasonalNaive,
    SeriesModel,
    Theta,
    fill_missing,
)

Clock = Callable[[], float]

log = logging.getLogger(__name__)

#: Largest daily period (steps) the statsmodels members are tried at: 5-minute data.
#: At 1-minute steps a 1,440-step season makes Holt-Winters and MSTL take minutes per
#: series, so minute data choose between the harmonic model and seasonal naive only.
STATSMODELS_MAX_PERIOD = 288
#: Largest daily period (steps) at which ``forecast(method="auto")`` runs the choice:
#: 15-minute data (see uses_model_choice).
AUTO_MAX_PERIOD = 96
#: Histories longer than this (steps) fit the harmonic model once for all validation
#: origins and advance it with ``predict``; shorter ones refit it at each origin.
HARMONIC_REFIT_STEPS = 20_000
#: The statsmodels members see at most this many days (older data rarely helps a
#: two-day forecast and costs time linearly).
FIT_DAYS = 42.0
#: With the fast path's forecast at hand, a candidate must beat the harmonic member by this
#: much (relative validation MASE, and at every origin) to replace it (see select_forecast).
FAST_MARGIN = 0.05
#: select_batch prepares and pre-fits this many series at a time (two fit_batch chunks:
#: one per core) and checks its deadline in between.
_BLOCK = 128
_FIRST_BLOCK = 16


@dataclass(frozen=True)
class Choice:
    """What the validation chose: member names with weights, and the evidence."""

    members: tuple[str, ...]
    weights: tuple[float, ...]
    score: float  # validation MASE of the choice
    scores: dict[str, float]  # validation MASE of every candidate (members and combinations)
    origins: int
    horizon_steps: int
    degraded: str | None = None

    @property
    def name(self) -> str:
        if len(self.members) == 1:
            return self.members[0]
        return "combination(" + "+".join(self.members) + ")"

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.name,
            "members": list(self.members),
            "weights": [round(w, 4) for w in self.weights],
            "validation_mase": None if not math.isfinite(self.score) else round(self.score, 4),
            "candidates": {k: (round(v, 4) if math.isfinite(v) else None)
                           for k, v in sorted(self.scores.items(), key=lambda kv: kv[1])},
            "origins": self.origins,
            "validation_horizon_steps": self.horizon_steps,
            "degraded": self.degraded,
            "fast_path": False,
        }


def default_family(
    step_minutes: float, start: dt.datetime | None = None,
    calendar: tuple[CalendarDay, ...] = (),
) -> tuple[SeriesModel, ...]:
    """The candidates tried by default, cheapest first (so a tight budget still has some)."""
    models: list[SeriesModel] = [SeasonalNaive(0), SeasonalNaive(1)]
    if steps_for(MINUTES_PER_DAY, step_minutes) <= STATSMODELS_MAX_PERIOD:
        models += [Theta(), HoltWinters("add"), HoltWinters("mul"), MSTLModel("ets"),
                   HoltWinters("add", damped=True), Sarimax()]
    models.append(Harmonic(step_minutes, start, calendar))
    return tuple(models)


@dataclass(frozen=True)
class _Grid:
    """Where each UTC step of history and forecast sits on the local wall-clock grid."""

    hist_pos: npt.NDArray[np.int64]
    fut_pos: npt.NDArray[np.int64]
    hist_mult: FloatArray
    fut_mult: FloatArray
    local_start: dt.datetime | None
    size: int  # local steps covering the history


def _grid(n: int, horizon: int, step_minutes: float, start: dt.datetime | None,
          timezone: str, calendar: tuple[CalendarDay, ...]) -> _Grid:
    idx = np.arange(n + horizon, dtype=np.int64)
    if start is None:
        ones = np.ones(n + horizon)
        return _Grid(idx[:n], idx[n:], ones[:n], ones[n:], None, n)
    tl = Timeline.build(start, step_minutes, timezone, calendar)
    local = tl.local(idx)
    wall = local.day * MINUTES_PER_DAY + (local.phase % MINUTES_PER_DAY)
    pos = np.rint((wall - wall[0]) / step_minutes).astype(np.int64)
    # Only UTC-aligned steps exist in the output; a local grid step that no UTC step maps
    # to (spring forward) is missing in the history and skipped in the forecast.
    local_start = from_epoch_minutes(float(wall[0]))
    size = int(pos[n - 1]) + 1 if n else 0
    return _Grid(pos[:n], pos[n:], local.multiplier[:n], local.multiplier[n:], local_start,
                 size)


def _to_local(y: FloatArray, g: _Grid) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(g.hist_mult > 0, y / g.hist_mult, np.nan)
    ok = np.isfinite(v)
    total = np.bincount(g.hist_pos[ok], weights=v[ok], minlength=g.size)
    count = np.bincount(g.hist_pos[ok], minlength=g.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _scale(y: FloatArray, m: int) -> float:
    """In-sample seasonal-naive MAE (the M4 MASE denominator); 1 when undefined."""
    if y.size <= m:
        return 1.0
    d = np.abs(y[m:] - y[:-m])
    d = d[np.isfinite(d)]
    s = float(d.mean()) if d.size else 0.0
    if s > 0:
        return s
    pos = np.abs(y[np.isfinite(y)])
    return float(pos.mean()) if pos.size and pos.mean() > 0 else 1.0


def _clearly_better(cand: FloatArray, base: FloatArray, margin: float) -> bool:
    """Per-origin validation MASE ``cand`` beats ``base`` at every origin and on average by
    at least ``margin`` (relative)."""
    ok = np.isfinite(cand) & np.isfinite(base)
    if not ok.any():
        return False
    return bool(np.all(cand[ok] < base[ok])
                and cand[ok].mean() <= (1.0 - margin) * base[ok].mean())


def _expired(clock: Clock | None, deadline: float | None) -> bool:
    return clock is not None and deadline is not None and clock() >= deadline


def _fit(model: SeriesModel, y: FloatArray, periods: tuple[int, ...], *,
         mean_only: bool = False) -> FittedSeries | None:
    try:
        if mean_only and isinstance(model, Harmonic):
            return model.fit_mean(y, periods)
        return model.fit(y, periods)
    except (ValueError, np.linalg.LinAlgError, IndexError, ZeroDivisionError):
        # A member that cannot fit this series is simply not a candidate.
        return None


def _input(model: SeriesModel, y_local: FloatArray, y_filled: FloatArray) -> FloatArray:
    # The harmonic model skips missing steps itself; the others need them filled.
    return y_local if isinstance(model, Harmonic) else y_filled


def _quantiles(mean: FloatArray, errors: FloatArray, levels: tuple[float, ...]) -> FloatArray:
    """Quantiles of ``mean`` from validation errors ``(origins, Hv)`` (truth - forecast).

    Horizon ``h`` pools the errors at horizons within ``w`` steps of it (``w`` = Hv / 8);
    horizons beyond Hv reuse the last window; widths are a running maximum over the
    horizon. Level ``q`` is the centre plus the
    conformal half-width at coverage ``|2q - 1|`` on the side of ``q``; the centre is the
    mean shifted by the median validation error of the window (a model biased on its
    own recent history stays honest).
    """
    h = mean.size
    hv = errors.shape[1]
    w = max(1, hv // 8)
    sign = np.array([1.0 if q > 0.5 else -1.0 if q < 0.5 else 0.0 for q in levels])
    coverages = [abs(2 * q - 1) for q in levels]
    # Neighbouring windows share all but a few of their 2w + 1 columns, so the pool is
    # evaluated every ``w // 4`` horizons and held in between (every horizon when w < 8,
    # as for hourly data; at minute steps this is 32 pools instead of 1,440).
    stride = max(1, w // 4)
    table = np.zeros((hv, len(levels)))
    centres = np.zeros(hv)
    for c0 in range(0, hv, stride):
        c = min(c0 + stride // 2, hv - 1)
        pool = errors[:, max(0, c - w) : c + w + 1].ravel()
        pool = pool[np.isfinite(pool)]
        centre = float(np.median(pool)) if pool.size else 0.0
        # Split-conformal half-width (Vovk et al. 2005): the ceil((n+1) c)-th smallest
        # |error| at coverage c, the largest when there are too few errors for that rank.
        dev = np.sort(np.abs(pool - centre))
        row = [math.nan if dev.size == 0 else
               float(dev[min(math.ceil((dev.size + 1) * cov), dev.size) - 1])
               for cov in coverages]
        centres[c0 : c0 + stride] = centre
        table[c0 : c0 + stride] = np.nan_to_num(row)
    # Errors do not shrink with the horizon: a width never falls below an earlier one's
    # (a running maximum), which evens out the noise of a few origins.
    table = np.maximum.accumulate(table, axis=0)
    c = np.minimum(np.arange(h), hv - 1)
    out = mean[None, :] + (centres[c] * (sign != 0)[:, None]) + sign[:, None] * table[c].T
    return np.sort(np.maximum(out, 0.0), axis=0)


def select_forecast(
    history: npt.ArrayLike,
    *,
    step_minutes: float,
    horizon: int,
    quantiles: Sequence[float] = (0.5, 0.9),
    start: dt.datetime | None = None,
    timezone: str = "UTC",
    calendar: Sequence[CalendarDay] | None = None,
    zero_gap_minutes: float = 10,
    models: Sequence[SeriesModel] | None = None,
    n_origins: int = 3,
    n_calibration: int = 7,
    max_combination: int = 3,
    clock: Clock | None = None,
    deadline: float | None = None,
    fast: Forecast | None = None,
    fast_margin: float = FAST_MARGIN,
    _prep: _Prep | str | None = None,
    _harmonic: FittedSeries | None = None,
) -> Forecast:
    """Choose a model (or an equal-weight combination) by rolling-origin validation and
    forecast ``horizon`` steps after ``history``.

    ``history``: ``(n,)`` on a regular grid of ``step_minutes``, NaN = missing. Returns a
    :class:`Forecast` (non-negative mean and the requested ``quantiles``) whose ``model``
    names the choice and whose ``parameters["selection"]`` holds the evidence
    (:meth:`Choice.to_dict`). Validation origins are ``n_origins`` days apart, each
    followed by ``min(horizon, 2 days)`` scored steps; the quantiles use the chosen
    forecast's errors at ``n_calibration`` such origins (fewer if the history is short).
    With a ``deadline`` on ``clock``, the choice uses the candidates validated before it
    passed; if none was, the fast harmonic path is returned with ``selection.degraded = "budget"``.

    ``fast``: the fast path's forecast of this very history and horizon when the caller
    already has it (the daemon and ``capsched forecast`` fit every deployment with
    :func:`fit_batch` first). It is returned, with the evidence in
    ``parameters["selection"]`` and ``fast_path`` set, whenever the fast path would be
    (a fallback, or the harmonic member chosen alone), instead of fitting it again. With
    ``fast`` given the choice leaves the fast path only for a candidate that beats the
    harmonic member at every validation origin and by ``fast_margin`` (relative) on
    average: the harmonic member stands in for the fast path in validation, fitted once
    days before the origins and never refitted, so its score is a pessimistic stand-in,
    and three origins are few. Otherwise the fast path stays, with
    ``degraded = "not clearly better than the fast path"`` and the evidence.
    ``horizon=0`` returns the fast path's empty forecast without validating anything.
    Raises ``ValueError`` for a non-positive step, a negative horizon or a bad quantile.
    """
    if not step_minutes > 0:
        raise ValueError("step_minutes must be > 0")
    if horizon < 0:
        raise ValueError("horizon must be >= 0")
    qs = _check_quantiles(quantiles)
    cal = normalise_calendar(calendar)
    raw = np.asarray(history, dtype=np.float64).reshape(-1)
    n = raw.size
    day = steps_for(MINUTES_PER_DAY, step_minutes)
    week = steps_for(MINUTES_PER_WEEK, step_minutes)
    periods = (day, week)

    given_fast = fast
    if fast is not None and fast.mean.shape[0] != horizon:
        raise ValueError(f"fast has {fast.mean.shape[0]} steps, not the horizon {horizon}")

    def keep_fast(reason: str | None, choice: Choice | None = None) -> Forecast:
        fc = given_fast if given_fast is not None else fast_forecast(
            raw, step_minutes=step_minutes, horizon=horizon, quantiles=qs, start=start,
            timezone=timezone, calendar=cal, zero_gap_minutes=zero_gap_minutes)
        sel = (choice or Choice((fc.model,), (1.0,), math.nan, {}, 0, 0)).to_dict()
        sel["chosen"] = fc.model
        sel["degraded"] = reason
        sel["fast_path"] = True
        return _with_selection(fc, sel)

    if horizon == 0:
        # Nothing to forecast: validating a choice for it would cost seconds for nothing.
        return keep_fast("horizon 0")
    prep = _prep if _prep is not None else _prepare(
        raw, step_minutes, horizon, start, timezone, cal, zero_gap_minutes, n_origins,
        n_calibration)
    if isinstance(prep, str):
        return keep_fast(prep)
    y_local, y_all, offset, g = prep.y_local, prep.y_all, prep.offset, prep.grid
    local_start, hv, origins, first_origin = (prep.local_start, prep.hv, prep.origins,
                                              prep.first_origin)
    fit_steps = steps_for(FIT_DAYS * MINUTES_PER_DAY, step_minutes)
    family = tuple(models) if models is not None else default_family(
        step_minutes, local_start, tuple(CalendarDay(c.date, c.like_weekday) for c in cal))
    m_len = y_all.size
    harmonic_fits: dict[str, Any] = {}
    if _harmonic is not None:
        harmonic_fits.update((m.name, _harmonic) for m in family if isinstance(m, Harmonic))

    def at_origins(model: SeriesModel, at: Sequence[int]) -> list[FloatArray] | None:
        """``hv``-step forecasts of ``model`` from each origin, or None if it cannot fit."""
        out: list[FloatArray] = []
        for o in at:
            if isinstance(model, Harmonic) and m_len > HARMONIC_REFIT_STEPS:
                # Long (minute) histories: fit once at the earliest origin and advance
                # with predict, as the daemon does between refits.
                if model.name not in harmonic_fits:
                    harmonic_fits[model.name] = _fit(model, y_local[:first_origin], periods,
                                                     mean_only=True)
                fitted = harmonic_fits[model.name]
                if fitted is None:
                    return None
                out.append(np.asarray(fitted.model.predict(
                    y_local[max(0, o - day) : o], origin=o, horizon=hv).mean))
                continue
            lo = 0 if isinstance(model, Harmonic) else max(0, o - fit_steps)
            if not model.usable(o - lo, periods):
                return None
            fitted = _fit(model, _input(model, y_local, y_all)[lo:o], periods, mean_only=True)
            if fitted is None:
                return None
            out.append(np.asarray(fitted.forecast(hv), dtype=np.float64))
        return out

    # fcs[name] = forecasts at the validation origins, kept for the combinations.
    fcs: dict[str, list[FloatArray]] = {}
    degraded: str | None = None
    for model in family:
        if _expired(clock, deadline):
            degraded = "budget"
            break
        runs = at_origins(model, origins)
        if runs is not None:
            fcs[model.name] = runs
    if not fcs:
        return keep_fast(degraded or "no model could be validated")
    if given_fast is not None and degraded and any(
            isinstance(m, Harmonic) and m.name not in fcs for m in family):
        # The budget ran out before the fast path itself was validated: nothing shows that
        # the members validated so far beat it, so it stays.
        return keep_fast(degraded)
    truth = np.stack([y_local[o : o + hv] for o in origins])  # NaN where missing
    scales = np.array([_scale(y_all[max(0, o - fit_steps) : o], day) for o in origins])

    def score(runs: Sequence[FloatArray]) -> tuple[float, FloatArray]:
        err = truth - np.stack(runs)
        per = np.nanmean(np.abs(err), axis=1) / scales
        return float(np.nanmean(per)), err

    scores: dict[str, float] = {}
    errors: dict[str, FloatArray] = {}
    for name, runs in fcs.items():
        scores[name], errors[name] = score(runs)
    ranked = sorted((s, k) for k, s in scores.items() if math.isfinite(s))
    combos: dict[str, tuple[str, ...]] = {}
    for k in range(2, min(max_combination, len(ranked)) + 1):
        members = tuple(name for _s, name in ranked[:k])
        label = "combination(" + "+".join(members) + ")"
        avg = [np.mean([fcs[m][i] for m in members], axis=0) for i in range(len(origins))]
        scores[label], errors[label] = score(avg)
        combos[label] = members
    best = min((k for k in scores if math.isfinite(scores[k])), key=lambda k: scores[k],
               default=None)
    if best is None:
        return keep_fast("no finite validation score")
    members = combos.get(best, (best,))
    choice = Choice(members, tuple(1.0 / len(members) for _ in members), scores[best],
                    scores, len(origins), hv, degraded)

    by_name = {m.name: m for m in family}
    if given_fast is not None:
        harmonic = next((m.name for m in family if isinstance(m, Harmonic)), None)
        if len(members) == 1 and members[0] == harmonic:
            # The harmonic member alone is the fast path: keep the caller's forecast
            # (fitted on the UTC grid with its own calibrated quantiles), with the evidence.
            return keep_fast(None, choice)
        if harmonic is not None and harmonic in errors and not _clearly_better(
                np.nanmean(np.abs(errors[best]), axis=1) / scales,
                np.nanmean(np.abs(errors[harmonic]), axis=1) / scales, fast_margin):
            return keep_fast("not clearly better than the fast path", choice)
    # Calibrate on more origins than the choice needed: the chosen members only, so the
    # quantiles rest on n_calibration x Hv errors instead of n_origins x Hv.
    calib_err = [errors[best]]
    for k in range(n_origins, n_calibration):
        o = m_len - hv - k * day
        if o < 2 * day or _expired(clock, deadline):
            break
        member_runs = [at_origins(by_name[name], [o]) for name in members]
        if any(r is None for r in member_runs):
            break
        mean_o = np.mean([r[0] for r in member_runs if r is not None], axis=0)
        calib_err.append((y_local[o : o + hv] - mean_o)[None, :])
    cal_errors = np.concatenate(calib_err, axis=0)
    # Future step j sits at local position fut_pos[j], i.e. at[j] steps after y_all.
    at = g.fut_pos - offset - m_len
    steps_needed = int(at.max()) + 1 if horizon else 0
    means = []
    for name in members:
        model = by_name[name]
        lo = 0 if isinstance(model, Harmonic) else max(0, m_len - fit_steps)
        fitted = _fit(model, _input(model, y_local, y_all)[lo:], periods)
        if fitted is None:
            return keep_fast("the chosen model failed on the whole history", choice)
        means.append(np.asarray(fitted.forecast(steps_needed), dtype=np.float64))
    local_mean = np.mean(means, axis=0)
    local_q = _quantiles(local_mean, cal_errors, qs) if local_mean.size else np.zeros(
        (len(qs), 0))
    mean = np.maximum(local_mean[at], 0.0) * g.fut_mult
    quant = local_q[:, at] * g.fut_mult[None, :]
    fc_start = (None if start is None
                else start + dt.timedelta(minutes=n * step_minutes))
    accuracy = _validation_accuracy(errors[best], np.stack(
        [np.mean([fcs[m][i] for m in members], axis=0) for i in range(len(origins))]),
        truth, scales, scores[best])
    accuracy["calibration_origins"] = int(cal_errors.shape[0])
    return Forecast(
        mean=mean, quantile_levels=qs, quantiles=quant, start=fc_start,
        step_minutes=step_minutes, model=choice.name,
        parameters={"selection": choice.to_dict(), "timezone": timezone,
                    "seasonal_periods_steps": list(periods), "history_steps": n},
        accuracy=accuracy,
    )


@dataclass(frozen=True, eq=False)
class _Prep:
    """A series on its local grid, ready for validation (see :func:`_prepare`)."""

    y_local: FloatArray  # from the first observed step; NaN = missing
    y_all: FloatArray  # the same, gaps filled for the members that need it
    offset: int  # local steps dropped before the first observation
    grid: _Grid
    local_start: dt.datetime | None
    hv: int  # scored steps after each origin
    origins: list[int]
    first_origin: int  # the earliest validation or calibration origin


def _prepare(raw: FloatArray, step_minutes: float, horizon: int, start: dt.datetime | None,
             timezone: str, cal: tuple[CalendarDay, ...], zero_gap_minutes: float,
             n_origins: int, n_calibration: int) -> _Prep | str:
    """The series on the local wall-clock grid and its origins, or why it cannot be
    validated."""
    n = raw.size
    zg = 0 if zero_gap_minutes <= 0 else steps_for(zero_gap_minutes, step_minutes)
    y_utc = mask_suspected_gaps(raw, min_run=zg) if zg else raw.copy()
    day = steps_for(MINUTES_PER_DAY, step_minutes)
    g = _grid(n, horizon, step_minutes, start, timezone, cal)
    y_local = _to_local(y_utc, g) if n else y_utc
    seen = np.flatnonzero(np.isfinite(y_local))
    if seen.size < 2 * day:
        return "history shorter than two days"
    y_local = y_local[seen[0]:]
    offset = int(seen[0])
    y_all = fill_missing(y_local, day)
    local_start = (None if g.local_start is None
                   else g.local_start + dt.timedelta(minutes=offset * step_minutes))
    m_len = y_all.size
    hv = max(1, min(horizon if horizon else day, 2 * day))
    origins = [m_len - hv - k * day for k in range(n_origins)]
    origins = [o for o in origins if o >= 2 * day]
    if not origins:
        return "history too short for validation"
    all_origins = [m_len - hv - k * day for k in range(max(n_origins, n_calibration))]
    first_origin = min(o for o in all_origins + origins if o >= 2 * day)
    return _Prep(y_local, y_all, offset, g, local_start, hv, origins, first_origin)


def _validation_accuracy(err: FloatArray, fc: FloatArray, truth: FloatArray,
                         scales: FloatArray, mase: float) -> dict[str, Any]:
    denom = np.abs(truth) + np.abs(fc)
    with np.errstate(divide="ignore", invalid="ignore"):
        smape = np.where(denom > 0, 200.0 * np.abs(err) / denom, 0.0)
    return {
        "method": "rolling-origin validation of the chosen model",
        "validation_mase": None if not math.isfinite(mase) else round(mase, 4),
        "validation_smape": round(float(np.nanmean(smape)), 4),
        "validation_mae": round(float(np.nanmean(np.abs(err))), 6),
        "origins": int(err.shape[0]),
    }


def _with_selection(fc: Forecast, selection: dict[str, Any]) -> Forecast:
    params = dict(fc.parameters)
    params["selection"] = selection
    return Forecast(fc.mean, fc.quantile_levels, fc.quantiles, fc.start, fc.step_minutes,
                    fc.model, params, fc.accuracy)


@dataclass(frozen=True)
class BatchSelection:
    """What :func:`select_batch` returned: one forecast per series, and the tally."""

    forecasts: list[Forecast]
    validated: int  # series whose choice ran (their evidence is in the selection)
    not_due: int  # series the caller did not ask to validate this time (fast path kept)
    out_of_time: tuple[int, ...]  # series the budget did not reach (fast path kept)


def select_batch(
    histories: Sequence[npt.ArrayLike],
    *,
    step_minutes: float,
    horizon: int,
    fast: Sequence[Forecast],
    quantiles: Sequence[float] = (0.5, 0.9),
    starts: Sequence[dt.datetime | None] | None = None,
    timezones: Sequence[str] | None = None,
    calendars: Sequence[Sequence[CalendarDay] | None] | None = None,
    zero_gap_minutes: float = 10,
    validate: Sequence[bool] | None = None,
    clock: Clock | None = None,
    deadline: float | None = None,
    n_origins: int = 7,
    n_calibration: int = 7,
) -> BatchSelection:
    """The per-series choice for a whole refit under one budget.

    ``fast[i]`` is the fast path's forecast of ``histories[i]`` (from :func:`fit_batch`
    and ``predict``): the choice starts from it and returns it unchanged, with the
    evidence attached, whenever the validation does not show something better (see
    :func:`select_forecast`). ``validate[i] = False`` keeps ``fast[i]`` without validating
    (the caller re-validates a still-fresh choice on a slower cadence than it refits).

    Validation uses ``n_origins`` = 7 daily origins by default (one per weekday; the
    quantiles are calibrated on as many anyway, so they cost little more than 3): a
    candidate replaces the fast path only if it beats it on each of them. On the ServeGen
    minute traces, 3 origins let daily seasonal naive in where it then lost the next day.

    One ``deadline`` on ``clock`` covers the whole batch: series are validated in order
    until it passes; the rest keep the fast path with ``selection.degraded = "budget"``,
    and one warning names how many. Pure: the clock is the caller's.
    """
    n = len(histories)
    if len(fast) != n:
        raise ValueError(f"fast must have one forecast per series ({n}), got {len(fast)}")
    start_list = list(starts) if starts is not None else [None] * n
    tz_list = list(timezones) if timezones is not None else ["UTC"] * n
    cal_list = list(calendars) if calendars is not None else [None] * n
    due = list(validate) if validate is not None else [True] * n
    if not len(start_list) == len(tz_list) == len(cal_list) == len(due) == n:
        raise ValueError("starts, timezones, calendars and validate need one entry per series")
    qs = _check_quantiles(quantiles)
    out: list[Forecast | None] = [None] * n
    late: list[int] = []
    validated = not_due = 0
    todo = []
    for i in range(n):
        if due[i]:
            todo.append(i)
        else:
            not_due += 1
            out[i] = _with_selection(fast[i], _kept(fast[i], "not due"))
    # Blocks start small and grow to _BLOCK while the budget allows: a block's pre-fit
    # cannot stop half-way, so it is sized to a quarter of the time left at the pace of
    # the previous one (the overrun past the deadline is at most a small block).
    size, pos = _FIRST_BLOCK, 0
    timed = clock is not None and deadline is not None
    while pos < len(todo):
        block = todo[pos : pos + size]
        pos += len(block)
        if late or _expired(clock, deadline):
            late.extend(block)
            continue
        began = clock() if timed and clock is not None else 0.0
        cals = {i: normalise_calendar(cal_list[i]) for i in block}
        preps = {i: _prepare(np.asarray(histories[i], dtype=np.float64).reshape(-1),
                             step_minutes, horizon, start_list[i], tz_list[i], cals[i],
                             zero_gap_minutes, n_origins, n_calibration) for i in block}
        prefit = _prefit_harmonic(preps, cals, step_minutes)
        if timed and clock is not None and deadline is not None:
            now = clock()
            pace = (now - began) / len(block)
            size = _BLOCK if pace <= 0 else int(
                min(_BLOCK, max(_FIRST_BLOCK, (deadline - now) / (4 * pace))))
        else:
            size = _BLOCK
        for i in block:
            if late or _expired(clock, deadline):
                late.append(i)
                continue
            fc = select_forecast(
                histories[i], step_minutes=step_minutes, horizon=horizon, quantiles=qs,
                start=start_list[i], timezone=tz_list[i], calendar=cal_list[i],
                zero_gap_minutes=zero_gap_minutes, n_origins=n_origins,
                n_calibration=n_calibration, clock=clock, deadline=deadline, fast=fast[i],
                _prep=preps[i], _harmonic=prefit.get(i))
            if fc.parameters["selection"].get("degraded") == "budget":
                late.append(i)
            else:
                validated += 1
            out[i] = fc
    for i in late:
        if out[i] is None:
            out[i] = _with_selection(fast[i], _kept(fast[i], "budget"))
    if late:
        log.warning("model choice out of time: %d of %d series keep the fast path "
                    "(%d validated, %d not due)", len(late), n, validated, not_due)
    return BatchSelection([fc for fc in out if fc is not None], validated, not_due,
                          tuple(sorted(late)))


def _prefit_harmonic(preps: dict[int, _Prep | str], cals: dict[int, tuple[CalendarDay, ...]],
                     step_minutes: float) -> dict[int, FittedSeries]:
    """The harmonic member's validation fits of a block of long series in one
    :func:`fit_batch` (shared design matrices, one thread per core) instead of one at a
    time: what ``Harmonic.fit_mean`` on ``y_local[:first_origin]`` gives each of them."""
    from .models.statistical import _HarmonicFit

    ids = [i for i, p in preps.items()
           if not isinstance(p, str) and p.y_local.size > HARMONIC_REFIT_STEPS]
    if not ids:
        return {}
    ys, starts, calendars = [], [], []
    for i in ids:
        p = preps[i]
        assert not isinstance(p, str)
        ys.append(p.y_local[: p.first_origin])
        starts.append(p.local_start)
        calendars.append(tuple(CalendarDay(c.date, c.like_weekday) for c in cals[i]) or None)
    models = fit_batch(ys, step_minutes=step_minutes, starts=starts, calendars=calendars,
                       zero_gap_minutes=0, _calibrate=False)
    return {i: _HarmonicFit(m, y) for i, m, y in zip(ids, models, ys, strict=True)}


def _kept(fc: Forecast, reason: str) -> dict[str, Any]:
    sel = Choice((fc.model,), (1.0,), math.nan, {}, 0, 0, reason).to_dict()
    sel["fast_path"] = True
    return sel


#: ``forecast(method=...)``: "auto" runs the per-series choice on grids of 15 minutes or
#: more, "choice" runs it at any step, "fast" is the harmonic path alone.
Method = Literal["auto", "choice", "fast"]


def uses_model_choice(step_minutes: float, method: Method = "auto") -> bool:
    """Whether :func:`forecast` runs the per-series choice at this step.

    ``"auto"``: on grids of 15 minutes or more (a daily period of at most
    :data:`AUTO_MAX_PERIOD` steps). Below 5 minutes the family is the harmonic model and
    seasonal naive alone, and on the ServeGen minute traces the choice never beat the fast
    path (``bench/bench_select.py --traces``); at 5 minutes MSTL and Holt-Winters on a
    288-step season take one to three minutes per series. From 15-minute steps a call takes
    seconds (on LLM usage there, see :func:`forecast`, the fast path may still be better).
    Raises ``ValueError`` for an unknown method or a step <= 0."""
    if method not in ("auto", "choice", "fast"):
        raise ValueError(f"method must be 'auto', 'choice' or 'fast', not {method!r}")
    if not step_minutes > 0:
        raise ValueError("step_minutes must be > 0")
    if method == "auto":
        return steps_for(MINUTES_PER_DAY, step_minutes) <= AUTO_MAX_PERIOD
    return method == "choice"


def forecast(
    history: npt.ArrayLike,
    *,
    step_minutes: float,
    horizon: int,
    quantiles: Sequence[float] = (0.5, 0.9),
    start: dt.datetime | None = None,
    timezone: str = "UTC",
    calendar: Sequence[CalendarDay] | None = None,
    zero_gap_minutes: float = 10,
    method: Method = "auto",
) -> Forecast:
    """Forecast the ``horizon`` steps after ``history``: the package's one-call entry.

    ``history``: ``(n,)`` on a regular grid of ``step_minutes`` (NaN = missing), ``start``
    the tz-aware time of ``history[0]``. Returns a :class:`Forecast`: ``mean`` ``(horizon,)``
    (never negative) and one row per requested quantile, in the history's units.

    ``method="auto"`` (default) picks a model per series by rolling-origin validation
    (:func:`select_forecast`: the statsmodels family, seasonal naive and the harmonic
    model, or an equal-weight combination, with split-conformal quantiles) on grids of 15
    minutes or more, and the fast harmonic path (:func:`fast_forecast`) on finer ones
    (see :func:`uses_model_choice`); ``"choice"`` and ``"fast"`` force one or the other.
    M4 Hourly, all 414 series, horizon 48 (``python bench/m4.py``): sMAPE 10.165 and
    MASE 0.879 with the choice, 13.523 and 1.432 with the fast path alone. On LLM usage
    aggregated to 15 or 60 minutes the fast path wins (``bench/choice_vs_fast.py``): use
    ``method="fast"`` or :func:`select_batch`'s guarded rule for such series.
    Raises ``ValueError`` for a non-positive step, a negative horizon, a bad quantile or
    an unknown method."""
    if uses_model_choice(step_minutes, method):
        return select_forecast(history, step_minutes=step_minutes, horizon=horizon,
                               quantiles=quantiles, start=start, timezone=timezone,
                               calendar=calendar, zero_gap_minutes=zero_gap_minutes)
    return fast_forecast(history, step_minutes=step_minutes, horizon=horizon,
                         quantiles=quantiles, start=start, timezone=timezone,
                         calendar=calendar, zero_gap_minutes=zero_gap_minutes)


def forecast_batch(
    histories: Sequence[npt.ArrayLike] | npt.NDArray[Any],
    *,
    step_minutes: float,
    horizon: int,
    quantiles: Sequence[float] = (0.5, 0.9),
    starts: Sequence[dt.datetime | None] | None = None,
    timezones: Sequence[str] | None = None,
    calendars: Sequence[Sequence[CalendarDay] | None] | None = None,
    zero_gap_minutes: float = 10,
    method: Method = "auto",
) -> list[Forecast]:
    """Batch form of :func:`forecast`, one forecast per series (same rules for ``method``).

    The fast path is fitted for all series at once (:func:`fast_forecast_batch`); the
    choice runs series by series. For a time budget use :func:`select_batch`."""
    if not uses_model_choice(step_minutes, method):
        return fast_forecast_batch(histories, step_minutes=step_minutes, horizon=horizon,
                                   quantiles=quantiles, starts=starts, timezones=timezones,
                                   calendars=calendars, zero_gap_minutes=zero_gap_minutes)
    n = len(histories)
    start_list = _broadcast(starts, n, None, "starts")
    tz_list = _broadcast(timezones, n, "UTC", "timezones")
    cal_list = _broadcast(calendars, n, None, "calendars")
    return [select_forecast(h, step_minutes=step_minutes, horizon=horizon, quantiles=quantiles,
                            start=s, timezone=z, calendar=c, zero_gap_minutes=zero_gap_minutes)
            for h, s, z, c in zip(histories, start_list, tz_list, cal_list, strict=True)]

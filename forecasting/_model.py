"""Public value objects and entry points: fit, predict, forecast and their batch forms."""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from . import _calibration, _core
from ._calibration import block_phase
from ._gaps import (
    SUBSTANTIAL_FRACTION,
    ZERO_LOAD_AFTER_MINUTES,
    mask_suspected_gaps,
    zero_runs,
)
from ._time import (
    MINUTES_PER_DAY,
    CalendarDay,
    FloatArray,
    LocalSteps,
    Timeline,
    basis_table,
    from_epoch_minutes,
    normalise_calendar,
)

_CHUNK = 64
_INTERVAL_LEVELS = (0.025, 0.1, 0.9, 0.975)


@dataclass(frozen=True, eq=False)
class Forecast:
    """Point forecast and quantiles for ``len(mean)`` steps starting at ``start``.

    ``mean`` is NaN everywhere only when the model saw no observation at all.
    """

    mean: FloatArray
    quantile_levels: tuple[float, ...]
    quantiles: FloatArray  # (len(quantile_levels), horizon)
    start: dt.datetime | None
    step_minutes: float
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)

    def quantile(self, q: float) -> FloatArray:
        for j, level in enumerate(self.quantile_levels):
            if math.isclose(level, q, abs_tol=1e-9):
                return np.asarray(self.quantiles[j])
        raise KeyError(f"quantile {q} was not requested; available: {self.quantile_levels}")


@dataclass(frozen=True, eq=False)
class FittedModel:
    """A fitted model for one series; ``predict`` is cheap and may be called every step."""

    step_minutes: float
    start: dt.datetime | None
    timezone: str
    calendar: tuple[CalendarDay, ...]
    quantile_levels: tuple[float, ...]
    model: str
    parameters: dict[str, Any]
    accuracy: dict[str, Any]
    n_history: int
    timeline: Timeline = field(repr=False)
    coef: FloatArray = field(repr=False)
    slope_per_day: float = field(repr=False)
    t_ref_days: float = field(repr=False)
    scale: float = field(repr=False)
    beta: FloatArray = field(repr=False)  # (G, F)
    horizon_steps: FloatArray = field(repr=False)  # (G,)
    windows: npt.NDArray[np.int64] = field(repr=False)
    table_levels: tuple[float, ...] = field(repr=False)
    error_table: FloatArray = field(repr=False)  # (G, nq)
    daily_harmonics: int = field(repr=False)
    weekly_harmonics: int = field(repr=False)
    level_floor: float = field(repr=False)
    zero_gap_steps: int = field(repr=False)
    scale_by_forecast: bool = field(repr=False, default=False)
    # Residuals (scaled units) of the last steps of the history, for the seasonal lags.
    tail: FloatArray = field(repr=False, default_factory=lambda: np.zeros(0))
    lags: npt.NDArray[np.int64] = field(repr=False,
                                        default_factory=lambda: np.zeros(0, dtype=np.int64))
    lag_half: int = field(repr=False, default=0)
    blend: FloatArray = field(repr=False, default_factory=lambda: np.ones((1, 1)))  # (G, 1+L)
    #: Zero runs this long or longer are load, not gaps (0: no limit).
    zero_load_steps: int = field(repr=False, default=0)
    #: Data published in blocks of ``block_steps`` (1: none): one error table per position
    #: of the origin in its block, (block_steps, G, nq); see forecasting._calibration.
    block_steps: int = field(repr=False, default=1)
    block_offset: int = field(repr=False, default=0)
    phase_tables: FloatArray = field(repr=False, default_factory=lambda: np.zeros((0, 0, 0)))
    #: Blocks the residual model knows (1: none): origins on a block boundary use
    #: ``boundary_beta`` (G, F), fitted from the boundaries alone (see forecasting._core).
    point_block: int = field(repr=False, default=1)
    point_block_offset: int = field(repr=False, default=0)
    boundary_beta: FloatArray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    def _origin_index(self, origin: dt.datetime | int) -> int:
        if isinstance(origin, dt.datetime):
            if self.start is None:
                raise ValueError("origin must be an int step offset when the model has no start")
            k = (self.timeline.utc_minutes(np.zeros(1, dtype=np.int64))[0])
            steps = (_epoch(origin) - k) / self.step_minutes
            if abs(steps - round(steps)) > 1e-6:
                raise ValueError("origin is not on the model's step grid")
            return int(np.rint(steps))
        if isinstance(origin, bool | float) or not isinstance(origin, int | np.integer):
            raise TypeError("origin must be a timezone-aware datetime or an int step offset")
        return int(origin)

    def predict(
        self, recent: npt.ArrayLike, *, origin: dt.datetime | int, horizon: int
    ) -> Forecast:
        """Forecast ``horizon`` steps from ``origin`` given the observations just before it.

        ``recent`` holds the latest observations up to (not including) ``origin``; only the
        last few hours are used (NaN = missing). Zero runs where the profile expects load are
        treated as a logging gap, exactly as in fitting; a run is measured on all of
        ``recent``, so zeros that have gone on for longer than the model's zero-load limit
        are load even when only their last hours are used.
        """
        if horizon < 0:
            raise ValueError("horizon must be >= 0")
        k = self._origin_index(origin)
        lag_max = int(self.lags.max()) + self.lag_half if self.lags.size else 0
        lookback = max(int(self.windows.max()), lag_max)
        rec = np.asarray(recent, dtype=np.float64).reshape(-1)
        n_rec = min(rec.size, lookback)
        gap_runs: list[tuple[int, int]] = []
        if self.zero_gap_steps > 0 and n_rec:
            cut = rec.size - n_rec
            # Only a run reaching into the used window matters; measure it on all of recent.
            tail_from = cut
            while tail_from > 0 and rec[tail_from - 1] == 0:
                tail_from -= 1
            starts, ends = zero_runs(rec[tail_from:], self.zero_gap_steps,
                                     self.zero_load_steps)
            gap_runs = [(max(a + tail_from - cut, 0), b + tail_from - cut)
                        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
                        if b + tail_from > cut]
        rec = rec[rec.size - n_rec :]
        fc_start = (
            None
            if self.start is None
            else from_epoch_minutes(
                float(self.timeline.utc_minutes(np.array([k], dtype=np.int64))[0])
            )
        )
        nq = len(self.quantile_levels)
        if self.coef.size == 0:
            nan = np.full(horizon, np.nan)
            return Forecast(nan, self.quantile_levels, np.full((nq, horizon), np.nan), fc_start,
                            self.step_minutes, self.model, self.parameters, self.accuracy)
        # Local time over the whole lookback and horizon in one pass (the level check below
        # reads the lookback's profile; the local-time mapping is the costly part).
        full = np.arange(k - lookback, k + horizon, dtype=np.int64)
        local_full = self.timeline.local(full)
        cut = lookback - n_rec
        idx = full[cut:]
        local = LocalSteps(phase=local_full.phase[cut:],
                           multiplier=local_full.multiplier[cut:], day=local_full.day[cut:])
        x = basis_table(self.daily_harmonics, self.weekly_harmonics)[local.phase, : self.coef.size]
        tdays = idx * (self.step_minutes / MINUTES_PER_DAY)
        base = x @ self.coef + self.slope_per_day * (tdays - self.t_ref_days)
        mult = local.multiplier
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(mult[:n_rec] > 0, rec / (self.scale * mult[:n_rec]), np.nan)
        y[~np.isfinite(y)] = np.nan
        for a, b in gap_runs:
            if float(base[a:b].mean()) >= SUBSTANTIAL_FRACTION:
                y[a:b] = np.nan
        # Residuals over the lookback ending at the origin: the stored tail of the history,
        # overridden by the recent observations where they exist.
        r = np.full(lookback, np.nan)
        t0 = self.n_history - self.tail.size  # step index of tail[0]
        a, b = max(t0, k - lookback), min(self.n_history, k)
        if b > a:
            r[a - (k - lookback) : b - (k - lookback)] = self.tail[a - t0 : b - t0]
        rr = y - base[:n_rec]
        fin = np.isfinite(rr)
        r[lookback - n_rec :][fin] = rr[fin]
        # A lasting level change since the fit (the refit waits 30 h before it believes one):
        # read from the residuals over the lookback, it rescales the profile from the step
        # the change began, so the forecast follows a step within hours, not at the refit.
        look = full[:lookback]
        x_look = basis_table(self.daily_harmonics, self.weekly_harmonics)[
            local_full.phase[:lookback], : self.coef.size]
        base_look = x_look @ self.coef + self.slope_per_day * (
            look * (self.step_minutes / MINUTES_PER_DAY) - self.t_ref_days)
        factor, first = _core.recent_level(r + base_look, base_look, self.step_minutes)
        if factor != 1.0:
            r = np.where(np.arange(lookback) < first, factor * r,
                         r + base_look * (1.0 - factor))
            base = base * factor
        feats = np.zeros(self.windows.size)
        for j, w in enumerate(self.windows.tolist()):
            tail = r[max(0, lookback - w) :]
            tail = tail[np.isfinite(tail)]
            if tail.size:
                feats[j] = tail.mean()
        steps = np.arange(1, horizon + 1, dtype=np.int64)
        if self.lags.size and horizon:
            lagf = _core.lag_features(r[None, :], np.array([lookback], dtype=np.int64), steps,
                                      self.lags, self.lag_half)[0, :, 0, :]  # (horizon, L)
        else:
            lagf = np.zeros((horizon, 0))
        h = np.log(np.arange(1, horizon + 1, dtype=np.float64))
        grid = np.log(self.horizon_steps)
        # Data published in blocks: an origin on a block boundary has its own coefficients.
        beta = (self.boundary_beta if self.point_block > 1 and self.boundary_beta.size
                and block_phase(k, self.point_block, self.point_block_offset) == 0
                else self.beta)
        correction = np.interp(h, grid, self.blend[:, 0] * (beta @ feats))
        for j in range(lagf.shape[1]):
            correction += np.interp(h, grid, self.blend[:, 1 + j]) * lagf[:, j]
        fut = base[n_rec:]
        yhat = np.maximum(fut + correction, 0.0)
        level = np.maximum(yhat if self.scale_by_forecast else fut, self.level_floor)
        out_scale = mult[n_rec:] * self.scale
        qs = np.empty((nq, horizon))
        table = (self.error_table if self.block_steps <= 1 else
                 self.phase_tables[block_phase(k, self.block_steps, self.block_offset)])
        for j, q in enumerate(self.quantile_levels):
            col = self.table_levels.index(q)
            e = np.interp(h, grid, table[:, col])
            qs[j] = np.maximum(yhat + e * level, 0.0)
        qs = np.sort(qs, axis=0) * out_scale
        return Forecast(
            mean=yhat * out_scale,
            quantile_levels=self.quantile_levels,
            quantiles=qs,
            start=fc_start,
            step_minutes=self.step_minutes,
            model=self.model,
            parameters=self.parameters,
            accuracy=self.accuracy,
        )


def _epoch(t: dt.datetime) -> float:
    from ._time import epoch_minutes

    return epoch_minutes(t)


def _check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    qs = tuple(float(q) for q in quantiles)
    for q in qs:
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantiles must be in (0, 1), got {q}")
    return qs


def _as_series(histories: Sequence[npt.ArrayLike] | npt.NDArray[Any]) -> list[FloatArray]:
    if isinstance(histories, np.ndarray) and histories.dtype != object:
        if histories.ndim != 2:
            raise ValueError("a batch given as an array must be 2-D (series x steps)")
        return [np.asarray(row, dtype=np.float64) for row in histories]
    return [np.asarray(h, dtype=np.float64).reshape(-1) for h in histories]


def _broadcast(value: Sequence[Any] | None, n: int, default: Any, name: str) -> list[Any]:
    if value is None:
        return [default] * n
    out = list(value)
    if len(out) != n:
        raise ValueError(f"{name} must have one entry per series ({n}), got {len(out)}")
    return out


def _model_name(ncols: int, slope: float, cfg: _core.Config) -> str:
    if ncols == 0:
        return "empty"
    if ncols == 1:
        name = "recent-window"
    elif ncols == 1 + 2 * cfg.daily_harmonics:
        name = "harmonic-daily"
    else:
        name = "harmonic-daily-weekly"
    if slope != 0.0:
        name += "+trend"
    return name + ("+direct-residual" if ncols > 1 else "")


def fit_batch(
    histories: Sequence[npt.ArrayLike] | npt.NDArray[Any],
    *,
    step_minutes: float,
    starts: Sequence[dt.datetime | None] | None = None,
    timezones: Sequence[str] | None = None,
    calendars: Sequence[Sequence[CalendarDay] | None] | None = None,
    quantiles: Sequence[float] = (0.5, 0.9),
    zero_gap_minutes: float = 10,
    zero_load_after_minutes: float = ZERO_LOAD_AFTER_MINUTES,
    _config: _core.Config | None = None,
    _calibrate: bool = True,
) -> list[FittedModel]:
    """Fit one model per series; series sharing length, start, time zone and calendar share
    one design matrix and are solved together.

    Runs of at least ``zero_gap_minutes`` reported zeros where load was expected are
    suspected logging gaps (missing), unless they last ``zero_load_after_minutes`` or
    longer (0: no limit): those are load (see ``forecasting._gaps``).

    ``_calibrate=False`` skips the quantile calibration (about a third of the fit): the
    models' means are the same, their quantiles are NaN. For callers that only score the
    mean, as the model choice's validation does."""
    if not step_minutes > 0:
        raise ValueError("step_minutes must be > 0")
    cfg = _config or _core.DEFAULT
    series = _as_series(histories)
    n = len(series)
    qs = _check_quantiles(quantiles)
    start_list = _broadcast(starts, n, None, "starts")
    tz_list = _broadcast(timezones, n, "UTC", "timezones")
    cal_list = [normalise_calendar(c) for c in _broadcast(calendars, n, None, "calendars")]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in range(n):
        key = (series[i].size, start_list[i], tz_list[i] if start_list[i] else "UTC", cal_list[i])
        groups.setdefault(key, []).append(i)
    models: list[FittedModel | None] = [None] * n
    tasks: list[tuple[list[int], Callable[[], list[FittedModel]]]] = []
    for (length, start, tz, cal), members in groups.items():
        timeline = Timeline.build(start, step_minutes, tz, cal)
        local = timeline.local(np.arange(max(length, 1), dtype=np.int64))
        x_full = basis_table(cfg.daily_harmonics, cfg.weekly_harmonics)[local.phase]
        for c0 in range(0, len(members), _CHUNK):
            chunk = members[c0 : c0 + _CHUNK]
            raw = (np.stack([series[i] for i in chunk]) if length else
                   np.zeros((len(chunk), 0)))
            tasks.append((chunk, functools.partial(
                _fit_group, raw, timeline, local, x_full, start, tz, cal, step_minutes, qs,
                zero_gap_minutes, cfg, zero_load_after_minutes, _calibrate)))
    # Chunks are independent and numpy releases the GIL in its heavy loops, so they run on
    # one thread per core, each with single-threaded BLAS (the products are small; BLAS
    # threads only contend with each other).
    workers = min(len(tasks), _workers())
    with _threadpools().limit(limits=1, user_api="blas"):
        if workers <= 1:
            results = [task() for _chunk, task in tasks]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda ct: ct[1](), tasks))
    for (chunk, _task), fitted in zip(tasks, results, strict=True):
        for i, model in zip(chunk, fitted, strict=True):
            models[i] = model
    return [m for m in models if m is not None]


@functools.cache
def _threadpools() -> ThreadpoolController:
    # Finding the loaded BLAS libraries costs about a millisecond: once per process, not
    # once per fit (the model choice fits one series at a time).
    return ThreadpoolController()


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _fit_group(
    raw: FloatArray,
    timeline: Timeline,
    local: LocalSteps,
    x_full: FloatArray,
    start: dt.datetime | None,
    timezone: str,
    calendar: tuple[CalendarDay, ...],
    step_minutes: float,
    quantiles: tuple[float, ...],
    zero_gap_minutes: float,
    cfg: _core.Config,
    zero_load_after_minutes: float = ZERO_LOAD_AFTER_MINUTES,
    calibrate: bool = True,
) -> list[FittedModel]:
    n_history = raw.shape[1]
    if raw.shape[1] == 0:
        # Padding with one missing step keeps every array non-empty; the model is "empty".
        raw = np.full((raw.shape[0], 1), np.nan)
    m, t = raw.shape
    zero_gap_steps = 0 if zero_gap_minutes <= 0 else _core.steps_for(zero_gap_minutes, step_minutes)
    zero_load_steps = (0 if zero_load_after_minutes <= 0
                       else _core.steps_for(zero_load_after_minutes, step_minutes))
    y = np.where(np.isfinite(raw), raw, np.nan)
    masked = np.zeros(m, dtype=np.int64)
    if zero_gap_steps:
        # Only rows holding a long enough zero run can have a gap to mask.
        zero = y == 0
        for i in range(m):
            if (not zero[i].any()
                    or zero_runs(y[i], zero_gap_steps, zero_load_steps)[0].size == 0):
                continue
            before = np.isnan(y[i]).sum()
            y[i] = mask_suspected_gaps(y[i], min_run=zero_gap_steps, max_run=zero_load_steps)
            masked[i] = int(np.isnan(y[i]).sum() - before)
    mult = local.multiplier[:t]
    if not np.all(mult == 1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(mult[None, :] > 0, y / mult[None, :], np.nan)
    scale = np.ones(m)
    for i in range(m):
        # The typical level only normalises units: a median of every 4th step suffices.
        row = y[i, :: 4] if t >= 4000 else y[i]
        pos = row[row > 0]
        if pos.size == 0:
            pos = y[i][y[i] > 0]
        if pos.size:
            scale[i] = float(np.median(pos))
    ys = y / scale[:, None]
    gram_cache: dict[tuple[int, int], FloatArray] = {}
    # Data published in blocks gets a residual model fitted from the block boundaries.
    blocks = (_calibration.block_structure(
        ys, max(2, min(t // 20, _core.steps_for(MINUTES_PER_DAY / 4, step_minutes))))
        if cfg.block_boundary_model else
        (np.ones(m, dtype=np.int64), np.zeros(m, dtype=np.int64)))
    core = _core.fit_core(ys, x_full, local.day, step_minutes, cfg, gram_cache,
                          blocks=blocks if np.any(blocks[0] > 1) else None)
    levels = tuple(sorted(set(quantiles) | set(_INTERVAL_LEVELS)))
    if calibrate:
        cal = _calibration.calibrate(ys, x_full, local.day, core, levels, step_minutes, cfg,
                                     gram_cache)
    else:
        cal = _uncalibrated(m, levels, step_minutes, cfg)
    hs = _core.horizon_grid(cfg, step_minutes).astype(np.float64)
    windows = _core.feature_windows(cfg, step_minutes)
    lags = _core.lag_steps(cfg, step_minutes)
    half = _core.lag_half(cfg, step_minutes)
    tail_len = min(t, int(lags.max()) + half if lags.size else 0)
    out: list[FittedModel] = []
    for i in range(m):
        nc = int(core.ncols[i])
        slope = float(core.slope[i])
        params: dict[str, Any] = {
            "regime": ["empty", "recent-window", "daily", "daily+weekly"][
                0 if nc == 0 else 1 if nc == 1 else 2 if nc == 1 + 2 * cfg.daily_harmonics else 3
            ],
            "daily_harmonics": cfg.daily_harmonics if nc > 1 else 0,
            "weekly_harmonics": cfg.weekly_harmonics if nc > 1 + 2 * cfg.daily_harmonics else 0,
            "history_steps": n_history,
            "observed_steps": int(np.isfinite(ys[i]).sum()),
            "observed_span_days": round(float(core.span_days[i]), 4),
            "masked_zero_gap_steps": int(masked[i]),
            "scale": float(scale[i]),
            "trend_per_day": slope * float(scale[i]),
            "trend_relative_per_day": slope,
            "recency_halflife_days": cfg.halflife_days,
            "residual_windows_minutes": list(cfg.feature_windows_minutes),
            "seasonal_lag_days": list(cfg.lag_days),
            "seasonal_lag_weight_by_horizon_minutes": {
                f"{h * step_minutes:g}": round(float(1.0 - cal.blend[i, g, 0]), 4)
                for g, h in enumerate(hs.tolist()) if h * step_minutes in (60, 240, 1440)
            },
            "timezone": timezone,
        }
        w = 1 if cal.block is None else int(cal.block[i])
        out.append(
            FittedModel(
                step_minutes=step_minutes,
                start=start,
                timezone=timezone,
                calendar=calendar,
                quantile_levels=quantiles,
                model=_model_name(nc, slope, cfg),
                parameters=params,
                accuracy=cal.accuracy[i] if nc else {"method": "none (no observations)"},
                n_history=n_history,
                timeline=timeline,
                coef=core.coef[i, :nc].copy(),
                slope_per_day=slope,
                t_ref_days=core.t_ref,
                scale=float(scale[i]),
                beta=core.beta[i].copy(),
                horizon_steps=hs,
                windows=windows,
                table_levels=levels,
                error_table=cal.table[i].copy(),
                daily_harmonics=cfg.daily_harmonics,
                weekly_harmonics=cfg.weekly_harmonics,
                level_floor=cfg.level_floor,
                zero_gap_steps=zero_gap_steps,
                zero_load_steps=zero_load_steps,
                scale_by_forecast=cfg.scale_by_forecast,
                tail=core.resid[i, core.resid.shape[1] - tail_len :].astype(np.float32),
                lags=lags,
                lag_half=half,
                blend=cal.blend[i].copy(),
                block_steps=w,
                block_offset=int(cal.block_offset[i]) if w > 1 and cal.block_offset is not None
                else 0,
                phase_tables=(cal.phase_table[i, :w].copy()
                              if w > 1 and cal.phase_table is not None
                              else np.zeros((0, 0, 0))),
                point_block=int(blocks[0][i]) if core.boundary_beta is not None else 1,
                point_block_offset=int(blocks[1][i]),
                boundary_beta=(core.boundary_beta[i].copy()
                               if core.boundary_beta is not None and blocks[0][i] > 1
                               else np.zeros((0, 0))),
            )
        )
    return out


def _uncalibrated(m: int, levels: tuple[float, ...], step_minutes: float,
                  cfg: _core.Config) -> _calibration.Calibration:
    """What ``calibrate`` returns, minus the calibration: the same (fixed) blend weights, so
    the same means, and NaN error quantiles."""
    hs = _core.horizon_grid(cfg, step_minutes)
    blend = np.repeat(_core.blend_weights(cfg, hs, step_minutes)[None], m, axis=0)
    return _calibration.Calibration(
        levels=levels, table=np.full((m, hs.size, len(levels)), np.nan),
        accuracy=[{"method": "none (not calibrated)"} for _ in range(m)], blend=blend)


def fit(
    history: npt.ArrayLike,
    *,
    step_minutes: float,
    start: dt.datetime | None = None,
    timezone: str = "UTC",
    calendar: Sequence[CalendarDay] | None = None,
    quantiles: Sequence[float] = (0.5, 0.9),
    zero_gap_minutes: float = 10,
    zero_load_after_minutes: float = ZERO_LOAD_AFTER_MINUTES,
    _calibrate: bool = True,
) -> FittedModel:
    """Fit one series (the expensive part); see ``fit_batch`` for many."""
    return fit_batch(
        [np.asarray(history, dtype=np.float64).reshape(-1)],
        step_minutes=step_minutes,
        starts=[start],
        timezones=[timezone],
        calendars=[calendar],
        quantiles=quantiles,
        zero_gap_minutes=zero_gap_minutes,
        zero_load_after_minutes=zero_load_after_minutes,
        _calibrate=_calibrate,
    )[0]


def _forecast_from(model: FittedModel, history: FloatArray, horizon: int) -> Forecast:
    return model.predict(history, origin=history.size, horizon=horizon)


def fast_forecast(
    history: npt.ArrayLike,
    *,
    step_minutes: float,
    horizon: int,
    quantiles: Sequence[float] = (0.5, 0.9),
    start: dt.datetime | None = None,
    timezone: str = "UTC",
    calendar: Sequence[CalendarDay] | None = None,
    zero_gap_minutes: float = 10,
) -> Forecast:
    """The fast harmonic path alone: fit on ``history`` and forecast the ``horizon`` steps
    that follow it (``forecasting.forecast`` with ``method="fast"``)."""
    h = np.asarray(history, dtype=np.float64).reshape(-1)
    model = fit(h, step_minutes=step_minutes, start=start, timezone=timezone, calendar=calendar,
                quantiles=quantiles, zero_gap_minutes=zero_gap_minutes)
    return _forecast_from(model, h, horizon)


def fast_forecast_batch(
    histories: Sequence[npt.ArrayLike] | npt.NDArray[Any],
    *,
    step_minutes: float,
    horizon: int,
    quantiles: Sequence[float] = (0.5, 0.9),
    starts: Sequence[dt.datetime | None] | None = None,
    timezones: Sequence[str] | None = None,
    calendars: Sequence[Sequence[CalendarDay] | None] | None = None,
    zero_gap_minutes: float = 10,
) -> list[Forecast]:
    """Batch form of :func:`fast_forecast`: one shared fit, one forecast per series."""
    series = _as_series(histories)
    models = fit_batch(series, step_minutes=step_minutes, starts=starts, timezones=timezones,
                       calendars=calendars, quantiles=quantiles,
                       zero_gap_minutes=zero_gap_minutes)
    return [_forecast_from(m, s, horizon) for m, s in zip(models, series, strict=True)]

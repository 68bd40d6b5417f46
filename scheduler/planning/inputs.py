"""What the planner reads as demand: the model's quantiles, made safe and sharpened.

One function shared by the backtest, the daemon and ``capsched plan --dry-run`` so that
all three plan from the same numbers.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from typing import Protocol

import numpy as np

import forecasting
from scheduler.config import CalendarEntry
from scheduler.planning import seasonal
from scheduler.planning.economics import FloatArray
from scheduler.planning.planner import DemandForecast

#: History the seasonal envelope needs: its three weeks of samples plus a day of horizon.
SEASONAL_HISTORY_MINUTES = 4 * 10_080


class ForecastLike(Protocol):
    @property
    def quantile_levels(self) -> tuple[float, ...]: ...

    def quantile(self, q: float) -> FloatArray: ...


def calendar_scale(calendar: Sequence[CalendarEntry], timezone: str, start: dt.datetime,
                   minutes: int) -> FloatArray:
    """The declared multiplier of each minute of ``[start, start + minutes)`` (1 on days
    the calendar does not declare; local days of ``timezone``)."""
    out = np.ones(max(minutes, 0))
    zone = zoneinfo.ZoneInfo(timezone)
    start = start.astimezone(dt.UTC).replace(second=0, microsecond=0)
    for e in calendar:
        if e.multiplier == 1.0:
            continue
        day0 = dt.datetime.combine(e.date, dt.time.min, zone).astimezone(dt.UTC)
        day1 = dt.datetime.combine(e.date + dt.timedelta(days=1), dt.time.min,
                                   zone).astimezone(dt.UTC)
        a = max(0, int((day0 - start) // dt.timedelta(minutes=1)))
        b = min(out.size, int((day1 - start) // dt.timedelta(minutes=1)))
        if b > a:
            out[a:b] = e.multiplier
    return out


def planning_forecast(
    fc: ForecastLike,
    now: dt.datetime,
    recent: FloatArray,
    past: FloatArray,
    *,
    use_seasonal: bool = True,
    rel_tol: float = 0.01,
    zero_load_after_minutes: int = forecasting.ZERO_LOAD_AFTER_MINUTES,
    calendar: Sequence[CalendarEntry] = (),
    calendar_timezone: str = "UTC",
) -> DemandForecast:
    """The model's quantiles from ``now`` as a :class:`DemandForecast`.

    Where the model has nothing to say (NaN: no usable observations yet) the highest recent
    demand is held, so missing data never plans zero capacity. With ``use_seasonal`` the
    trusted seasonal envelope of ``past`` is laid over the quantiles
    (:mod:`scheduler.planning.seasonal`). When ``past`` ends in at least
    ``zero_load_after_minutes`` of reported zeros that replaced load
    (:func:`forecasting.sustained_zeros`), the forecast is zero: capacity goes to
    ``min_units`` and no commitment is bought on it.
    """
    levels = tuple(sorted(float(q) for q in fc.quantile_levels))
    values = np.vstack([np.asarray(fc.quantile(q), dtype=np.float64) for q in levels])
    if not np.isfinite(values).all():
        finite = recent[np.isfinite(recent)]
        fallback = float(finite.max()) if finite.size else 0.0
        values = np.where(np.isfinite(values), values, fallback)
    if use_seasonal:
        # Local-time samples: the forecaster's own time zone (its fitted parameters).
        timezone = getattr(fc, "parameters", {}).get("timezone")
        scales: dict[str, FloatArray] = {}
        if any(e.multiplier != 1.0 for e in calendar):
            # A declared day is its usual pattern x its multiplier (see seasonal.combine).
            scales = {"past_scale": calendar_scale(
                          calendar, calendar_timezone,
                          now - past.size * dt.timedelta(minutes=1), past.size),
                      "ahead_scale": calendar_scale(calendar, calendar_timezone, now,
                                                    values.shape[1])}
        values = seasonal.combine(values, past, rel_tol=rel_tol, now=now,
                                  timezone=timezone if isinstance(timezone, str) else None,
                                  **scales)
    if forecasting.sustained_zeros(past, min_run=zero_load_after_minutes):
        # Reported zeros for hours where the same hours carried load before: the
        # deployment went quiet (retired, drained). Plan for the zeros it reports; the
        # first non-zero minute leaves the band and re-plans from the model.
        values = np.zeros_like(values)
    return DemandForecast(now, levels, values)

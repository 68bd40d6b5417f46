"""The steps every entry point shares: stored usage -> demand histories -> forecasts.

Used by ``capsched forecast``, ``capsched plan --dry-run`` and the daemon, so a dry run
and a live tick plan from exactly the same numbers. No clock reads: ``now`` is passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

import forecasting
from scheduler.config import Deployment
from scheduler.planning.headroom import (
    DEFAULT_DAYS,
    HeadroomCurve,
    applies_to,
    headroom_curves,
)
from scheduler.store import usage as usage_store
from scheduler.store.forecasts import ForecastRecord

#: Quantiles every stored forecast carries: the planner reads its service level from them.
PLANNING_QUANTILES = (0.1, 0.5, 0.9, 0.975, 0.99)


@dataclass(frozen=True)
class History:
    """One deployment's demand in model units per minute on [start, start + len)."""

    deployment: Deployment
    deployment_id: int
    start: dt.datetime
    demand: npt.NDArray[np.float64]  # NaN where no source reported the minute
    input_tokens: npt.NDArray[np.float64]
    output_tokens: npt.NDArray[np.float64]

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=int(self.demand.shape[0]))

    @property
    def observed_minutes(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.demand)))

    def observed_span(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        seen = np.flatnonzero(~np.isnan(self.demand))
        if seen.size == 0:
            return None, None
        return (self.start + dt.timedelta(minutes=int(seen[0])),
                self.start + dt.timedelta(minutes=int(seen[-1]) + 1))


def staleness(history: History, now: dt.datetime, staleness_minutes: int) -> str | None:
    """Why ``history`` is too old to plan or forecast from at ``now`` (None: fresh).

    Stale means no minute observed in the last ``staleness_minutes`` before ``now``: the
    daemon then holds capacity, and one-shot commands (``forecast``, ``plan --dry-run``)
    refuse rather than store a forecast or plan that nothing recent supports.
    """
    until = minute_floor(now)
    window = max(int(staleness_minutes), 1)
    first_fresh = int((until - dt.timedelta(minutes=window) - history.start)
                      // dt.timedelta(minutes=1))
    tail = history.demand[max(0, first_fresh):]
    if tail.size and not np.isnan(tail).all():
        return None
    _, last = history.observed_span()
    name = history.deployment.name
    if last is None:
        span_days = history.demand.shape[0] / 1440
        return (f"{name}: no usage in the {span_days:g} days before {until:%Y-%m-%dT%H:%MZ}")
    lag = (until - last) / dt.timedelta(minutes=1)
    return (f"{name}: usage ends at {last:%Y-%m-%dT%H:%MZ}, {_duration(lag)} before "
            f"{until:%Y-%m-%dT%H:%MZ} (staleness_minutes = {staleness_minutes})")


def _duration(minutes: float) -> str:
    if minutes >= 2 * 1440:
        return f"{minutes / 1440:.1f} days"
    if minutes >= 120:
        return f"{minutes / 60:.1f} h"
    return f"{minutes:.0f} min"


def minute_floor(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(second=0, microsecond=0)


def load_histories(
    conn: sa.Connection,
    deployments: Sequence[Deployment],
    ids: Mapping[str, int],
    now: dt.datetime,
    days: float,
) -> dict[str, History]:
    """The last ``days`` of usage before ``now`` (exclusive) for each deployment."""
    until = minute_floor(now)
    since = until - dt.timedelta(minutes=round(days * 1440))
    series = usage_store.load_demand(conn, [ids[d.name] for d in deployments], since, until)
    n = int((until - since).total_seconds() // 60)
    out = {}
    for d in deployments:
        found = series.get(ids[d.name])
        if found is None:
            nan = np.full(n, np.nan)
            out[d.name] = History(d, ids[d.name], since, nan, nan, nan)
            continue
        demand = (found.input_tokens + d.output_token_weight * found.output_tokens) / d.unit_tpm
        out[d.name] = History(d, ids[d.name], since, demand, found.input_tokens,
                              found.output_tokens)
    return out


class HistoryBuffer:
    """One deployment's history kept in memory between refits and updated in place.

    The daemon re-reads only the latest minutes each tick; copying weeks of history per
    deployment every minute would cost more than the rest of the tick. The buffer has
    spare room at the end and shifts once when it fills. :meth:`update` returns a
    :class:`History` whose arrays are views: readers must not write to them.
    """

    def __init__(self, history: History, *, spare_minutes: int = 2 * 1440) -> None:
        self.window = int(history.demand.shape[0])
        self.deployment, self.deployment_id = history.deployment, history.deployment_id
        self.start = history.start
        capacity = self.window + spare_minutes
        self._arrays = []
        for values in (history.demand, history.input_tokens, history.output_tokens):
            array = np.full(capacity, np.nan)
            array[: self.window] = values
            self._arrays.append(array)
        self._end = self.window

    def update(self, fresh: History) -> History:
        end = int((fresh.end - self.start).total_seconds() // 60)
        capacity = self._arrays[0].shape[0]
        if end > capacity:
            shift = end - self.window
            for array in self._arrays:
                kept = array[shift:].copy() if shift < capacity else np.empty(0)
                array[:] = np.nan
                array[: kept.shape[0]] = kept
            self.start += dt.timedelta(minutes=shift)
            end -= shift
        begin = end - int(fresh.demand.shape[0])
        for array, values in zip(self._arrays, (fresh.demand, fresh.input_tokens,
                                                fresh.output_tokens), strict=True):
            array[max(begin, 0): end] = values[max(-begin, 0):]
        self._end = max(self._end, end)
        first = max(0, end - self.window)
        return History(self.deployment, self.deployment_id,
                       self.start + dt.timedelta(minutes=first),
                       *(array[first:end] for array in self._arrays))


def calendar_days(deployment: Deployment) -> tuple[forecasting.CalendarDay, ...]:
    return tuple(forecasting.CalendarDay(e.date, e.like_weekday, e.multiplier)
                 for e in deployment.calendar)


@dataclass(frozen=True)
class Refit:
    model: forecasting.FittedModel
    forecast: forecasting.Forecast
    record: ForecastRecord


def refit(
    histories: Sequence[History],
    now: dt.datetime,
    horizon_minutes: int,
    *,
    zero_gap_minutes: int = 10,
    zero_load_after_minutes: int = forecasting.ZERO_LOAD_AFTER_MINUTES,
) -> dict[str, Refit]:
    """Fit every deployment's model together and forecast from ``now``.

    Reported zeros are load once a run lasts ``zero_load_after_minutes`` (shorter runs
    where load was expected are suspected logging gaps); see ``forecasting._gaps``."""
    if not histories:
        return {}
    models = forecasting.fit_batch(
        [h.demand for h in histories], step_minutes=1, starts=[h.start for h in histories],
        timezones=[h.deployment.timezone for h in histories],
        calendars=[calendar_days(h.deployment) for h in histories],
        quantiles=PLANNING_QUANTILES, zero_gap_minutes=zero_gap_minutes,
        zero_load_after_minutes=zero_load_after_minutes,
    )
    origin = minute_floor(now)
    out = {}
    for history, model in zip(histories, models, strict=True):
        fc = model.predict(history.demand[-360:], origin=origin, horizon=horizon_minutes)
        out[history.deployment.name] = Refit(model, fc, to_record(history, fc, origin))
    return out


def headroom_by_deployment(
    histories: Sequence[History], *, zero_gap_minutes: int = 10, days: float = DEFAULT_DAYS,
    zero_load_after_minutes: int = forecasting.ZERO_LOAD_AFTER_MINUTES,
) -> dict[str, HeadroomCurve | None]:
    """Calibrate every pay-as-you-go deployment's elastic headroom on its last ``days``.

    Deployments sharing a lead time and a minimum hold are replayed together (one
    vectorised pass per group). Suspected logging gaps are missing, as for the forecast.
    """
    out: dict[str, HeadroomCurve | None] = {h.deployment.name: None for h in histories}
    width = int(days * 1440)
    groups: dict[tuple[int, int], list[History]] = {}
    for h in histories:
        dep = h.deployment
        if applies_to(dep) and h.demand.size:
            key = (dep.scale_up_lead_minutes, dep.min_hold_minutes)
            groups.setdefault(key, []).append(h)
    for (lead, hold), members in groups.items():
        block = np.full((len(members), width), np.nan)
        for i, h in enumerate(members):
            tail = h.demand[-width:]
            block[i, width - tail.size:] = forecasting.mask_suspected_gaps(
                tail, min_run=zero_gap_minutes, max_run=zero_load_after_minutes,
            ) if zero_gap_minutes > 0 else tail
        for h, curve in zip(members, headroom_curves(block, lead=lead, hold=hold),
                            strict=True):
            out[h.deployment.name] = curve
    return out


def to_record(history: History, fc: forecasting.Forecast, origin: dt.datetime) -> ForecastRecord:
    data_start, data_end = history.observed_span()
    return ForecastRecord(
        deployment_id=history.deployment_id, as_of=origin, model=fc.model,
        parameters=fc.parameters, data_start=data_start, data_end=data_end,
        minutes_observed=history.observed_minutes, start=origin,
        step_minutes=int(fc.step_minutes), quantile_levels=tuple(fc.quantile_levels),
        mean=fc.mean, quantiles=fc.quantiles, accuracy=fc.accuracy,
    )

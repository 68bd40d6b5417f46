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


def splice(old: History, fresh: History) -> History:
    """``old``'s window moved forward to end where ``fresh`` ends, ``fresh`` winning overlaps.

    Lets the daemon keep weeks of history in memory and read only the latest hours each
    tick (re-reading those hours picks up late or replaced deliveries).
    """
    length = old.demand.shape[0]
    start = fresh.end - dt.timedelta(minutes=length)
    shift = int((start - old.start).total_seconds() // 60)
    arrays = []
    for old_values, new_values in ((old.demand, fresh.demand),
                                   (old.input_tokens, fresh.input_tokens),
                                   (old.output_tokens, fresh.output_tokens)):
        out = np.full(length, np.nan)
        keep = old_values[shift:] if shift >= 0 else old_values
        if shift >= 0:
            out[: keep.shape[0]] = keep
        elif -shift < length:
            out[-shift:] = old_values[: length + shift]
        tail = new_values[-length:]
        out[length - tail.shape[0]:] = tail
        arrays.append(out)
    return History(fresh.deployment, fresh.deployment_id, start, arrays[0], arrays[1], arrays[2])


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
) -> dict[str, Refit]:
    """Fit every deployment's model together and forecast from ``now``."""
    if not histories:
        return {}
    models = forecasting.fit_batch(
        [h.demand for h in histories], step_minutes=1, starts=[h.start for h in histories],
        timezones=[h.deployment.timezone for h in histories],
        calendars=[calendar_days(h.deployment) for h in histories],
        quantiles=PLANNING_QUANTILES, zero_gap_minutes=zero_gap_minutes,
    )
    origin = minute_floor(now)
    out = {}
    for history, model in zip(histories, models, strict=True):
        fc = model.predict(history.demand[-360:], origin=origin, horizon=horizon_minutes)
        out[history.deployment.name] = Refit(model, fc, to_record(history, fc, origin))
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

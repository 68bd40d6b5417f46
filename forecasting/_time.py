"""Local-time phases (time of day, weekday) and calendar exceptions for a regular time grid."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Without a start timestamp index 0 is treated as Monday 00:00 UTC, so the daily and
# weekly phases are at least consistent with the series' own indexing.
VIRTUAL_START_MINUTES = 4 * MINUTES_PER_DAY
# Offsets are sampled on a quarter-hour UTC grid: every real time-zone transition
# happens on a quarter-hour boundary.
_OFFSET_GRID_MINUTES = 15


@dataclass(frozen=True)
class CalendarDay:
    """An exceptional local day (holiday, bridge day, launch event).

    ``like_weekday`` (Monday=0 .. Sunday=6) makes the day follow that weekday's
    profile; ``multiplier`` scales its demand (0 means the day carries no usable
    information and is skipped when fitting, and is forecast as zero).
    """

    date: dt.date
    like_weekday: int | None = None
    multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.like_weekday is not None and not 0 <= self.like_weekday <= 6:
            raise ValueError(f"like_weekday must be in 0..6, got {self.like_weekday}")
        if not math.isfinite(self.multiplier) or self.multiplier < 0:
            raise ValueError(f"multiplier must be finite and >= 0, got {self.multiplier}")


def epoch_minutes(t: dt.datetime) -> float:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return (t - _EPOCH) / dt.timedelta(minutes=1)


def from_epoch_minutes(m: float) -> dt.datetime:
    return _EPOCH + dt.timedelta(minutes=m)


def normalise_calendar(calendar: Sequence[CalendarDay] | None) -> tuple[CalendarDay, ...]:
    if not calendar:
        return ()
    days: dict[dt.date, CalendarDay] = {}
    for day in calendar:
        if not isinstance(day, CalendarDay):
            raise TypeError("calendar entries must be forecasting.CalendarDay")
        days[day.date] = day
    return tuple(days[d] for d in sorted(days))


@dataclass(frozen=True, eq=False)
class LocalSteps:
    phase: IntArray  # minute of the (calendar-adjusted) local week, 0..10079
    multiplier: FloatArray
    day: IntArray  # local day number since 1970-01-01


@dataclass(frozen=True, eq=False)
class Timeline:
    """Maps step indices of one series to local phases."""

    start_minutes: float
    step_minutes: float
    zone: ZoneInfo | None
    calendar: tuple[CalendarDay, ...]

    @classmethod
    def build(
        cls,
        start: dt.datetime | None,
        step_minutes: float,
        timezone: str,
        calendar: tuple[CalendarDay, ...],
    ) -> Timeline:
        if start is None:
            if calendar:
                raise ValueError("a calendar needs a start timestamp")
            return cls(VIRTUAL_START_MINUTES, step_minutes, None, ())
        zone = None if timezone in ("UTC", "Etc/UTC") else ZoneInfo(timezone)
        return cls(epoch_minutes(start), step_minutes, zone, calendar)

    def utc_minutes(self, idx: IntArray) -> FloatArray:
        return self.start_minutes + idx.astype(np.float64) * self.step_minutes

    def _offsets(self, utc: FloatArray) -> FloatArray:
        if self.zone is None or utc.size == 0:
            return np.zeros_like(utc)
        q = np.floor(utc / _OFFSET_GRID_MINUTES).astype(np.int64)
        q0 = int(q.min())
        q1 = int(q.max())
        zone = self.zone
        table = np.empty(q1 - q0 + 1)
        for j in range(q1 - q0 + 1):
            instant = _EPOCH + dt.timedelta(minutes=(q0 + j) * _OFFSET_GRID_MINUTES)
            off = instant.astimezone(zone).utcoffset()
            table[j] = 0.0 if off is None else off / dt.timedelta(minutes=1)
        return table[q - q0]

    def local(self, idx: IntArray) -> LocalSteps:
        utc = self.utc_minutes(idx)
        local = utc + self._offsets(utc)
        day = np.floor(local / MINUTES_PER_DAY).astype(np.int64)
        tod = np.floor(local - day * MINUTES_PER_DAY + 0.5).astype(np.int64) % MINUTES_PER_DAY
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
        mult = np.ones(idx.shape)
        if self.calendar and idx.size:
            base = dt.date(1970, 1, 1)
            lo = int(day.min())
            hi = int(day.max())
            for entry in self.calendar:
                d = (entry.date - base).days
                if d < lo or d > hi:
                    continue
                on_day = day == d
                if entry.like_weekday is not None:
                    weekday = np.where(on_day, entry.like_weekday, weekday)
                mult = np.where(on_day, entry.multiplier, mult)
        phase = weekday * MINUTES_PER_DAY + tod
        return LocalSteps(phase=phase, multiplier=mult, day=day)


@lru_cache(maxsize=8)
def basis_table(daily_harmonics: int, weekly_harmonics: int) -> FloatArray:
    """Fourier basis for every minute of the week: [1, daily cos/sin..., weekly cos/sin...].

    Daily terms come first so that a model restricted to the daily cycle is a column prefix.
    """
    m = np.arange(MINUTES_PER_WEEK, dtype=np.float64)
    cols = [np.ones_like(m)]
    for k in range(1, daily_harmonics + 1):
        a = 2.0 * np.pi * k * m / MINUTES_PER_DAY
        cols += [np.cos(a), np.sin(a)]
    for k in range(1, weekly_harmonics + 1):
        a = 2.0 * np.pi * k * m / MINUTES_PER_WEEK
        cols += [np.cos(a), np.sin(a)]
    table = np.ascontiguousarray(np.stack(cols, axis=1))
    table.setflags(write=False)
    return table

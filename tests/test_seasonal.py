"""The seasonal envelope follows local time across daylight-saving changes (issue #9,
dst-shift case), and a few unreported minutes do not void it (sparse-missing case)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import numpy as np
import pytest

from scheduler.planning.seasonal import seasonal_envelope, utc_offsets


def local_step_load(start: dt.datetime, minutes: int, zone: str) -> np.ndarray:
    """1 unit at night, 4 units 08:00-18:00 local time, one value per UTC minute."""
    tz = zoneinfo.ZoneInfo(zone)
    out = np.empty(minutes)
    for i in range(minutes):
        hour = (start + dt.timedelta(minutes=i)).astimezone(tz).hour
        out[i] = 4.0 if 8 <= hour < 18 else 1.0
    return out


# (zone, a local morning just after a change: spring forward and fall back, two zones)
CHANGES = [
    ("America/Los_Angeles", dt.datetime(2026, 3, 9, 7, 30)),   # PST -> PDT on 03-08
    ("America/Los_Angeles", dt.datetime(2026, 11, 2, 7, 30)),  # PDT -> PST on 11-01
    ("Europe/Berlin", dt.datetime(2026, 3, 30, 7, 30)),        # CET -> CEST on 03-29
    ("Europe/Berlin", dt.datetime(2026, 10, 26, 7, 30)),       # CEST -> CET on 10-25
]


@pytest.mark.parametrize(("zone", "local_now"), CHANGES)
def test_local_peak_is_anticipated_at_its_local_hour_after_a_dst_change(
        zone: str, local_now: dt.datetime) -> None:
    now = local_now.replace(tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(dt.UTC)
    start = now - dt.timedelta(days=22)
    history = local_step_load(start, 22 * 1440, zone)
    horizon = 120
    truth = local_step_load(now, horizon, zone)
    trusted, value = seasonal_envelope(history, horizon, now=now, timezone=zone)
    assert trusted.all()
    # The step to 4 units comes exactly at 08:00 local (30 minutes ahead), not an hour
    # early or late as whole-UTC-day lags would put it for a week after the change.
    np.testing.assert_array_equal(value, truth)
    assert value[29] == 1.0 and value[30] == 4.0
    # The UTC lags of old: wrong by an hour, so the envelope is distrusted or misplaced.
    utc_trusted, utc_value = seasonal_envelope(history, horizon)
    assert not (utc_trusted.all() and np.array_equal(utc_value, truth))


def test_utc_offsets_follow_the_zone() -> None:
    before = dt.datetime(2026, 3, 8, 9, 0, tzinfo=dt.UTC)  # 01:00 PST
    after = dt.datetime(2026, 3, 8, 11, 0, tzinfo=dt.UTC)  # 04:00 PDT
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    minutes = np.array([(t - epoch) // dt.timedelta(minutes=1) for t in (before, after)])
    assert utc_offsets(minutes, "America/Los_Angeles").tolist() == [-480, -420]
    assert utc_offsets(minutes, "UTC").tolist() == [0, 0]


@pytest.mark.parametrize("missing", [0.01, 0.05, 0.2])
def test_a_few_missing_samples_do_not_void_the_envelope(missing: float) -> None:
    now = dt.datetime(2026, 3, 23, 7, 30, tzinfo=dt.UTC)
    start = now - dt.timedelta(days=22)
    history = local_step_load(start, 22 * 1440, "UTC")
    complete_trusted, complete = seasonal_envelope(history, 180, now=now, timezone="UTC")
    rng = np.random.default_rng(int(missing * 100))
    lossy = history.copy()
    lossy[rng.random(lossy.size) < missing] = np.nan
    trusted, value = seasonal_envelope(lossy, 180, now=now, timezone="UTC")
    assert complete_trusted.all()
    # Nearly every minute stays trusted, with the complete trace's value.
    assert trusted.mean() >= 0.95
    np.testing.assert_array_equal(value[trusted], complete[trusted])


def test_the_same_minutes_lost_every_day_take_the_flat_stretch_value() -> None:
    """sparse-missing case: 20 % lost at random plus 12:00-12:45 lost every day."""
    now = dt.datetime(2026, 3, 23, 11, 0, tzinfo=dt.UTC)
    start = now - dt.timedelta(days=22)
    history = local_step_load(start, 22 * 1440, "UTC")
    lossy = history.copy()
    lossy[np.random.default_rng(7).random(lossy.size) < 0.2] = np.nan
    minute = (np.arange(lossy.size) + 11 * 60) % 1440  # history starts at 11:00 UTC
    lossy[(minute >= 720) & (minute < 765)] = np.nan
    trusted, value = seasonal_envelope(lossy, 180, now=now, timezone="UTC")
    assert trusted.all()
    np.testing.assert_array_equal(value, local_step_load(now, 180, "UTC"))
    # A hole at a step (values differ on its two sides) is left to the model.
    step = np.full(10, True)
    vals = np.array([1.0] * 4 + [0.0] * 2 + [4.0] * 4)
    step[4:6] = False
    from scheduler.planning.seasonal import _fill_holes

    _fill_holes(step, vals, 60)
    assert not step[4:6].any()


DAY = 1440


def _days(n: int) -> np.ndarray:
    """n UTC days of the field shape: 1 unit at night, 3 units 08:00-18:00."""
    day = np.where((np.arange(DAY) >= 8 * 60) & (np.arange(DAY) < 18 * 60), 3.0, 1.0)
    return np.tile(day, n)


@pytest.mark.parametrize(("factor", "days_ago"), [(3.0, 1), (3.0, 4), (0.2, 2), (5.0, 6)])
def test_one_unusual_day_does_not_void_the_envelope_for_the_next_week(
        factor: float, days_ago: int) -> None:
    """cases/one-off-spike: one unannounced day at 3x (or an outage at 0.2x) set aside:
    the days after it plan the usual steps to the minute, not the model's wider band.
    Two weeks of history: the weekly season (three weeks) cannot stand in yet."""
    history = _days(14)
    history = np.concatenate([history, _days(1)[: 7 * 60]])  # today until 07:00
    start = history.size - 7 * 60 - days_ago * DAY
    history[start:start + DAY] *= factor
    trusted, value = seasonal_envelope(history, 12 * 60)
    assert trusted.all()
    np.testing.assert_array_equal(value, _days(1)[7 * 60:19 * 60])


def test_a_weekly_peak_is_not_set_aside_as_an_unusual_day() -> None:
    """A peak every Monday shows in the sample one week back: on Monday the envelope is
    the peak (weekly season), never the other days' level."""
    history = _days(28)
    weekday = np.arange(28) % 7
    for d in np.flatnonzero(weekday == 0):  # day 0, 7, 14, 21 and 28 (today) are Mondays
        history[d * DAY:(d + 1) * DAY] *= 2.0
    today = _days(1) * 2.0
    history = np.concatenate([history, today[: 7 * 60]])
    trusted, value = seasonal_envelope(history, 12 * 60)
    assert trusted.all()
    np.testing.assert_array_equal(value, today[7 * 60:19 * 60])
    # And the day after a Monday plans the ordinary level again.
    tuesday = np.concatenate([history[: 28 * DAY], today, _days(1)[: 7 * 60]])
    trusted, value = seasonal_envelope(tuesday, 12 * 60)
    assert trusted.all()
    np.testing.assert_array_equal(value, _days(1)[7 * 60:19 * 60])


@pytest.mark.parametrize("factor", [3.0, 0.0])
def test_an_unusual_day_a_week_back_is_set_aside_in_both_seasons(factor: float) -> None:
    """cases/one-off-spike a week on: the unusual day is the daily season's same-weekday
    sample and one of the weekly season's three. Without it both agree on the usual day:
    3 units by day, 1 at night (before: 2 at 08:00, then 4 all day for a 3-unit load)."""
    history = np.concatenate([_days(21), _days(1)[: 7 * 60]])
    start = history.size - 7 * 60 - 7 * DAY
    history[start:start + DAY] *= factor
    trusted, value = seasonal_envelope(history, 12 * 60)
    assert trusted.all()
    np.testing.assert_array_equal(value, _days(1)[7 * 60:19 * 60])

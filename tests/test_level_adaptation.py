"""The forecaster's point forecast after a lasting level change and after a one-off outlier
day (issue #9: "the history before a lasting change stops steering the forecast within
hours"; "a one-day outlier does not move a 30-day commitment").

Traces are the suite's shapes (a daily cycle, a step in level for good, one unannounced 3x
day), built here with seeded noise so that the values checked are the forecaster's, not a
property of a noise-free square wave. Each test checks the forecast against the truth the
trace carries: the new level after a lasting change, the usual day after an outlier one.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import forecasting
from forecasting import _core
from forecasting._time import Timeline, basis_table

UTC = dt.UTC
START = dt.datetime(2026, 2, 23, tzinfo=UTC)  # a Monday
DAY = 1440


def shape(n: int, *, start: dt.datetime = START, timezone: str = "UTC", base: float = 2.0,
          peak: float = 6.0, noise: float = 0.03, seed: int = 0) -> np.ndarray:
    """``peak`` from 08:00 to 18:00 local, ``base`` otherwise, with lognormal noise."""
    zone = ZoneInfo(timezone)
    t0 = start.astimezone(zone)
    hours = np.array([(t0 + dt.timedelta(minutes=k)).astimezone(zone).hour
                      for k in range(0, n, 15)])
    hour = np.repeat(hours, 15)[:n]
    clean = np.where((hour >= 8) & (hour < 18), peak, base).astype(np.float64)
    return clean * np.random.default_rng(seed).lognormal(0.0, noise, n)


def fit_and_forecast(y: np.ndarray, t: int, horizon: int, timezone: str = "UTC",
                     start: dt.datetime = START) -> forecasting.Forecast:
    """Fit on the 28 days before step ``t`` (as the backtest does) and forecast from it."""
    h0 = max(0, t - 28 * DAY)
    model = forecasting.fit(y[h0:t], step_minutes=1, start=start + dt.timedelta(minutes=h0),
                            timezone=timezone, quantiles=(0.5, 0.9))
    return model.predict(y[max(0, t - 360):t], origin=start + dt.timedelta(minutes=t),
                         horizon=horizon)


def hourly(v: np.ndarray) -> np.ndarray:
    return np.asarray(v[: v.size // 60 * 60].reshape(-1, 60).mean(axis=1))


# ------------------------------------------------------------------ lasting level change


@pytest.mark.parametrize(("factor", "hour", "timezone"), [
    (0.5, 0, "UTC"),
    (0.25, 10, "UTC"),
    (2.0, 0, "UTC"),
    (3.0, 12, "UTC"),
    (0.5, 15, "Europe/Berlin"),
    (2.0, 3, "America/New_York"),
])
@pytest.mark.parametrize("after_hours", [33, 45])
def test_after_a_lasting_change_the_forecast_follows_the_new_level(
        factor: float, hour: int, timezone: str, after_hours: int) -> None:
    """Refitted ``after_hours`` after a step to ``factor`` times the old load (a refit
    believes a change once it has lasted 30 hours: it rescales every horizon), the next
    day's forecast sits at the new level: the median hour within 15 % of the truth and
    every hour within 50 % (the harmonic profile rounds the 08:00 and 18:00 steps, so the
    hours holding a step are left out; the residual model's corrections are additive and
    weigh more on a level cut to a quarter), where the old history alone would say
    1/factor of it."""
    y = shape(35 * DAY, timezone=timezone)
    at = 21 * DAY + hour * 60
    y[at:] *= factor
    t = at + after_hours * 60
    fc = fit_and_forecast(y, t, DAY, timezone)
    got, truth = hourly(fc.mean), hourly(y[t:t + DAY])
    local = [(START + dt.timedelta(minutes=t + 60 * k)).astimezone(ZoneInfo(timezone)).hour
             for k in range(24)]
    steady = np.array([h not in (7, 8, 17, 18) for h in local])
    ratio = got[steady] / truth[steady]
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=0.15), np.round(ratio, 2)
    assert np.all(np.abs(ratio - 1.0) <= 0.5), np.round(ratio, 2)


@pytest.mark.parametrize(("factor", "hour", "timezone"), [
    (0.5, 0, "UTC"), (0.25, 10, "UTC"), (2.0, 0, "UTC"), (3.0, 12, "Europe/Berlin"),
])
def test_between_refits_the_forecast_follows_a_change_within_hours(
        factor: float, hour: int, timezone: str) -> None:
    """Fitted the evening before a step (as the backtest's daily refit is), forecasts made
    4 to 10 hours after it for the next 12 hours sit at the new level: the median hour
    within 15 % of the truth, every hour outside the 08:00 and 18:00 steps within 50 %."""
    y = shape(35 * DAY, timezone=timezone)
    at = 21 * DAY + hour * 60
    y[at:] *= factor
    fit_at = at - hour * 60 - 4 * 60  # 20:00 UTC the day before
    model = forecasting.fit(y[:fit_at], step_minutes=1, start=START, timezone=timezone,
                            quantiles=(0.5, 0.9))
    for after in (4, 7, 10):
        t = at + after * 60
        fc = model.predict(y[t - 360:t], origin=START + dt.timedelta(minutes=t), horizon=720)
        got, truth = hourly(fc.mean), hourly(y[t:t + 720])
        local = [(START + dt.timedelta(minutes=t + 60 * k)).astimezone(ZoneInfo(timezone)).hour
                 for k in range(12)]
        steady = np.array([h not in (7, 8, 17, 18) for h in local])
        ratio = got[steady] / truth[steady]
        assert float(np.median(ratio)) == pytest.approx(1.0, abs=0.15), (after, ratio)
        assert np.all(np.abs(ratio - 1.0) <= 0.5), (after, np.round(ratio, 2))


def test_the_change_is_found_where_it_happened_and_sized() -> None:
    y = shape(30 * DAY)
    at = 24 * DAY + 10 * 60
    y[at:] *= 0.4
    t = at + 36 * 60
    timeline = Timeline.build(START, 1, "UTC", ())
    local = timeline.local(np.arange(t, dtype=np.int64))
    x = basis_table(12, 6)[local.phase]
    core = _core.fit_core((y[:t] / 4.0)[None, :], x, local.day, 1, _core.DEFAULT, {})
    assert core.level_notes is not None and core.level_factor is not None
    note = core.level_notes[0]
    assert abs(note["level_change_step"] - at) <= 60
    assert core.level_factor[0] == pytest.approx(0.4, rel=0.1)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_wandering_load_is_not_taken_for_a_change(seed: int) -> None:
    """Real traffic wanders: days 15 % apart (lognormal) and evening bursts of a few hours.
    None of that is a lasting change, and only a day at least 1.4x off its usual level may
    be left out as an outlier."""
    rng = np.random.default_rng(seed)
    n = 21 * DAY
    y = shape(n, noise=0.1, seed=seed)
    day_level = rng.lognormal(0.0, 0.15, n // DAY)
    y *= np.repeat(day_level, DAY)
    for d in rng.choice(np.arange(1, 21), size=4, replace=False):
        a = int(d) * DAY + int(rng.integers(12, 20)) * 60
        y[a:a + int(rng.integers(2, 5)) * 60] *= 1.6
    timeline = Timeline.build(START, 1, "UTC", ())
    local = timeline.local(np.arange(n, dtype=np.int64))
    x = basis_table(12, 6)[local.phase]
    core = _core.fit_core((y / np.median(y))[None, :], x, local.day, 1, _core.DEFAULT, {})
    assert core.level_notes is not None
    note = core.level_notes[0]
    assert "level_change_step" not in note
    first_day = int(local.day[0])
    for d in note.get("outlier_days", []):
        assert abs(np.log(day_level[d - first_day])) >= np.log(1.4), (d, day_level)


@pytest.mark.parametrize(("factor", "hours_after"), [(0.5, 3), (0.25, 5), (2.0, 4), (3.0, 12)])
def test_recent_level_reads_a_change_since_the_fit(factor: float, hours_after: int) -> None:
    """At forecast time, a few hours of a new level against the fitted profile give the
    factor and the step it started at (the forecast scales the profile by it)."""
    n = 7 * DAY
    hour = (np.arange(n) // 60) % 24
    base = np.where((hour >= 8) & (hour < 18), 3.0, 1.0)
    rng = np.random.default_rng(7)
    y = base * rng.lognormal(0.0, 0.05, n)
    at = n - hours_after * 60 - 17
    y[at:] *= factor
    got, first = _core.recent_level(y, base, 1)
    assert got == pytest.approx(factor, rel=0.05)
    assert abs(first - at) <= 60


def test_recent_level_leaves_bursts_and_old_days_alone() -> None:
    n = 7 * DAY
    hour = (np.arange(n) // 60) % 24
    base = np.where((hour >= 8) & (hour < 18), 3.0, 1.0)
    y = base * np.random.default_rng(8).lognormal(0.0, 0.05, n)
    burst = y.copy()
    burst[-100:] *= 2.0  # under two hours: too early to tell
    assert _core.recent_level(burst, base, 1) == (1.0, n)
    over = y.copy()
    over[-DAY - 600:-600] *= 3.0  # a 3x day that ended ten hours ago
    assert _core.recent_level(over, base, 1) == (1.0, n)
    assert _core.recent_level(y, base, 1) == (1.0, n)


def test_level_change_needs_the_new_level_to_hold_until_now() -> None:
    z = np.zeros(24 * 10)
    z[-30:-6] = np.log(3.0)  # a day at 3x that ended six hours ago
    args = dict(min_pre=24, min_post=3, search=24 * 14, min_log=np.log(1.25), sd_factor=3.0,
                consistency=0.8)
    assert _core.level_change(z, **args) is None
    z[-6:] = np.log(3.0)  # ... it did not end: 30 hours at 3x
    found = _core.level_change(z, **args)
    assert found is not None
    assert found[0] == z.size - 30
    assert found[1] == pytest.approx(np.log(3.0))


# --------------------------------------------------------------------- one-off outliers


@pytest.mark.parametrize(("factor", "timezone"), [(3.0, "UTC"), (3.0, "Europe/Berlin"),
                                                  (0.2, "UTC"), (5.0, "Asia/Kolkata")])
def test_a_one_off_day_is_not_replayed_a_week_later(factor: float, timezone: str) -> None:
    """One unannounced day at ``factor`` times the load; six days later the forecast of the
    same weekday is what it is without that day: within 10 % of the control's at every
    hour, where replaying it would add (factor - 1) x the weekly share."""
    control = shape(35 * DAY, timezone=timezone)
    spiked = control.copy()
    day = 14 * DAY
    spiked[day:day + DAY] *= factor
    t = day + 6 * DAY + 20 * 60
    a = hourly(fit_and_forecast(spiked, t, DAY, timezone).mean)
    b = hourly(fit_and_forecast(control, t, DAY, timezone).mean)
    assert np.all(np.abs(a / b - 1.0) <= 0.1), np.round(a / b, 2)


def test_a_weekly_quiet_day_is_the_shape_not_an_outlier() -> None:
    """Sundays at a fifth of the load every week are kept: the next Sunday is forecast low."""
    y = shape(28 * DAY)
    weekday = (np.arange(y.size) // DAY) % 7  # START is a Monday
    y[weekday == 6] *= 0.2
    t = 27 * DAY - 4 * 60  # Saturday 20:00: the forecast covers Sunday
    fc = fit_and_forecast(y, t, DAY)
    sunday, truth = fc.mean[4 * 60:].mean(), y[t + 4 * 60:t + DAY].mean()
    assert sunday == pytest.approx(truth, rel=0.15)


def test_outlier_days_spare_today_and_a_change_under_way() -> None:
    hours = np.tile(np.arange(24), 10)
    days = np.repeat(np.arange(100, 110), 24)
    h = np.where((hours >= 8) & (hours < 18), 3.0, 1.0)
    cfg = _core.DEFAULT
    spiked = h.copy()
    spiked[days == 104] *= 3.0
    assert _core.outlier_days(spiked, hours, days, 0.05, cfg).tolist() == [104]
    today = h.copy()
    today[days == 109] *= 3.0  # the last day: may be a change starting
    assert _core.outlier_days(today, hours, days, 0.05, cfg).tolist() == []
    lasting = h.copy()
    lasting[days >= 107] *= 3.0  # three days up to now: a change, not three outliers
    assert _core.outlier_days(lasting, hours, days, 0.05, cfg).tolist() == []


@pytest.mark.parametrize(("factor", "hour", "after_hours"), [
    (2.0, 0, 33), (2.0, 0, 48), (3.0, 12, 45), (0.5, 0, 48), (0.25, 10, 40),
])
def test_quantiles_stay_in_proportion_after_a_lasting_change(
        factor: float, hour: int, after_hours: int) -> None:
    """#9: "forecast bands stay in proportion after a level change". The calibration used to
    refit on a prefix that had not seen the change, and its errors put the median at up to
    40x and the 90th percentile at 100x the new load for two days after a step."""
    y = shape(35 * DAY)
    at = 21 * DAY + hour * 60
    y[at:] *= factor
    t = at + after_hours * 60
    fc = fit_and_forecast(y, t, DAY)
    truth = y[t:t + DAY]
    q50, q90 = fc.quantile(0.5), fc.quantile(0.9)
    assert q50.max() <= 1.25 * truth.max(), (q50.max(), truth.max())
    assert q90.max() <= 1.5 * truth.max(), (q90.max(), truth.max())
    # And still an upper band. Not a calibrated one yet: a day or two after a step up the
    # rescaled level is a few per cent low and the 90th percentile covers about half the
    # next day's minutes (0.49 at 2x after 33 h, 0.52 at 3x after 45 h; 0.9 elsewhere).
    assert float(np.mean(truth <= q90)) >= 0.4
    assert np.all(q90 >= q50)

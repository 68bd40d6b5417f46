"""Value-level tests of the forecasting library."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import statsmodels.api as sm

import forecasting
from forecasting import _calibration, _core
from forecasting._time import Timeline, basis_table

UTC = dt.UTC
START = dt.datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
TRACES = Path(__file__).resolve().parents[1] / "examples" / "traces"


def daily_series(days: float, *, level: float = 100.0, peak_hour: float = 14.0,
                 noise: float = 0.05, seed: int = 0, start: dt.datetime = START,
                 timezone: str = "UTC") -> np.ndarray:
    """Minute series whose daily peak sits at ``peak_hour`` local time."""
    rng = np.random.default_rng(seed)
    n = int(days * 1440)
    zone = ZoneInfo(timezone)
    local_hours = np.array([
        (start + dt.timedelta(minutes=int(i))).astimezone(zone).hour
        + (start + dt.timedelta(minutes=int(i))).astimezone(zone).minute / 60.0
        for i in range(0, n, 10)
    ])
    hours = np.repeat(local_hours, 10)[:n]
    cycle = 1.0 + 0.6 * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)
    return level * cycle * rng.lognormal(0.0, noise, n)


def test_short_history_one_hour_uses_recent_level() -> None:
    y = np.full(60, 50.0)
    y[-20:] = 80.0
    fc = forecasting.forecast(y, step_minutes=1, horizon=30, start=START)
    assert fc.model.startswith("recent-window")
    assert fc.mean.shape == (30,)
    # The next minutes follow the latest level; further out stays within the observed range.
    assert fc.mean[0] == pytest.approx(80.0, rel=0.1)
    assert np.all((fc.mean > 45.0) & (fc.mean < 85.0))
    assert np.all(fc.quantile(0.9) >= fc.quantile(0.5))


def test_one_observation_and_all_nan() -> None:
    fc = forecasting.forecast([42.0], step_minutes=1, horizon=5)
    np.testing.assert_allclose(fc.mean, 42.0)
    empty = forecasting.forecast(np.full(100, np.nan), step_minutes=1, horizon=5)
    assert empty.model == "empty"
    assert np.isnan(empty.mean).all()
    none = forecasting.forecast([], step_minutes=1, horizon=3)
    assert np.isnan(none.mean).all()


def test_one_day_history_learns_daily_shape() -> None:
    y = daily_series(1.5, peak_hour=14.0)
    fc = forecasting.forecast(y, step_minutes=1, horizon=1440, start=START)
    assert fc.parameters["regime"] == "daily"
    first = START + dt.timedelta(minutes=y.size)
    peak_minute = int(np.argmax(fc.mean))
    peak_at = first + dt.timedelta(minutes=peak_minute)
    assert abs((peak_at.hour + peak_at.minute / 60) - 14.0) < 1.5


def test_ten_days_daily_only_and_accurate() -> None:
    y = daily_series(11.0, seed=3)
    hist, fut = y[: 10 * 1440], y[10 * 1440 :]
    fc = forecasting.forecast(hist, step_minutes=1, horizon=1440, start=START)
    assert fc.parameters["regime"] == "daily"
    assert np.mean(np.abs(fc.mean - fut)) / np.mean(fut) < 0.08
    assert 0.6 < np.mean(fut <= fc.quantile(0.9)) <= 1.0


def test_nan_stretch_is_skipped_not_zero() -> None:
    y = daily_series(8.0, seed=5)
    y[3 * 1440 : 5 * 1440] = np.nan
    fc = forecasting.forecast(y, step_minutes=1, horizon=1440, start=START)
    clean = forecasting.forecast(daily_series(8.0, seed=5), step_minutes=1, horizon=1440,
                                 start=START)
    assert np.mean(np.abs(fc.mean - clean.mean)) / np.mean(clean.mean) < 0.05


def test_suspected_zero_gap_is_masked() -> None:
    y = daily_series(8.0, seed=6)
    y[-3 * 1440 : -3 * 1440 + 100] = 0.0
    masked = forecasting.mask_suspected_gaps(y, min_run=10)
    assert np.isnan(masked[-3 * 1440 : -3 * 1440 + 100]).all()
    assert np.isfinite(masked[: -3 * 1440]).all()
    # Zeros that last zero_load_after_minutes (120 by default) are load, not a gap.
    longer = y.copy()
    longer[-3 * 1440 : -3 * 1440 + 180] = 0.0
    kept = forecasting.mask_suspected_gaps(longer, min_run=10)
    assert (kept[-3 * 1440 : -3 * 1440 + 180] == 0).all()
    assert np.isnan(forecasting.mask_suspected_gaps(longer, min_run=10, max_run=0)[
        -3 * 1440 : -3 * 1440 + 180]).all()
    # A short zero run and a genuinely idle series are left alone.
    short = daily_series(2.0, seed=6)
    short[100:105] = 0.0
    assert np.isfinite(forecasting.mask_suspected_gaps(short, min_run=10)).all()
    idle = np.zeros(500)
    idle[::50] = 3.0
    assert np.isfinite(forecasting.mask_suspected_gaps(idle, min_run=10)).all()
    # An ongoing gap at the end of `recent` must not pull predict() to zero.
    model = forecasting.fit(y[:-60], step_minutes=1, start=START)
    recent = y[-420:-60].copy()
    recent[-30:] = 0.0
    fc = model.predict(recent, origin=y.size - 60, horizon=30)
    gapless = model.predict(y[-420:-60], origin=y.size - 60, horizon=30)
    assert np.min(fc.mean) > 0.5 * np.min(gapless.mean)
    off = forecasting.fit(y[:-60], step_minutes=1, start=START, zero_gap_minutes=0)
    assert off.parameters["masked_zero_gap_steps"] == 0
    assert model.parameters["masked_zero_gap_steps"] == 100


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
def test_daylight_saving_keeps_local_peak_hour(zone: str) -> None:
    # History ends just before the spring-forward change; forecast the days after it.
    # The history ends at local midnight two days before the change (NY 9 March, Berlin
    # 30 March 2025), so the three forecast days straddle it.
    start = (dt.datetime(2025, 2, 28, 5, tzinfo=UTC) if zone == "America/New_York"
             else dt.datetime(2025, 3, 20, tzinfo=UTC))
    y = daily_series(8.0, peak_hour=9.0, noise=0.02, start=start, timezone=zone)
    fc = forecasting.forecast(y, step_minutes=1, horizon=3 * 1440, start=start, timezone=zone)
    assert fc.start is not None
    tz = ZoneInfo(zone)
    offsets = set()
    for d in range(3):
        day = fc.mean[d * 1440 : (d + 1) * 1440]
        when = fc.start + dt.timedelta(minutes=d * 1440 + int(np.argmax(day)))
        local = when.astimezone(tz)
        offsets.add(local.utcoffset())
        assert abs(local.hour + local.minute / 60 - 9.0) < 1.0
    assert len(offsets) == 2, "the forecast window must span the change"


def test_calendar_day_behaves_like_sunday_and_scales() -> None:
    rng = np.random.default_rng(9)
    days = 21
    t = np.arange(days * 1440)
    weekday = (t // 1440) % 7
    y = np.where(weekday >= 5, 40.0, 100.0) * rng.lognormal(0, 0.03, t.size)
    holiday = dt.date(2025, 1, 22)  # a Wednesday in the history (day 16)
    d = (holiday - START.date()).days
    y[d * 1440 : (d + 1) * 1440] = 40.0
    future_holiday = START.date() + dt.timedelta(days=days + 1)  # a Tuesday
    cal = [forecasting.CalendarDay(holiday, like_weekday=6),
           forecasting.CalendarDay(future_holiday, multiplier=0.5)]
    fc = forecasting.forecast(y, step_minutes=1, horizon=3 * 1440, start=START, calendar=cal)
    plain = forecasting.forecast(y, step_minutes=1, horizon=3 * 1440, start=START)
    monday = fc.mean[600:900].mean()
    tuesday = fc.mean[1440 + 600 : 1440 + 900].mean()
    assert monday == pytest.approx(100.0, rel=0.1)
    assert tuesday == pytest.approx(50.0, rel=0.12)
    # Without the calendar the Sunday-like Wednesday pulls weekday forecasts down.
    assert plain.mean[600:900].mean() < monday


def test_trend_moves_forecast_but_spike_does_not() -> None:
    rng = np.random.default_rng(11)
    days = 21
    t = np.arange(days * 1440 + 1440)
    base = 100.0 * (1 + 0.2 * np.cos(2 * np.pi * (t % 1440) / 1440))
    growth = base * (1 + 0.03 * t / 1440) * rng.lognormal(0, 0.05, t.size)
    fc = forecasting.forecast(growth[:-1440], step_minutes=1, horizon=1440, start=START)
    assert "trend" in fc.model
    assert fc.parameters["trend_relative_per_day"] > 0.01
    assert np.mean(np.abs(fc.mean - growth[-1440:])) / growth[-1440:].mean() < 0.06

    flat = base * rng.lognormal(0, 0.05, t.size)
    spiky = flat.copy()
    spiky[(days - 3) * 1440 : (days - 3) * 1440 + 240] *= 8.0
    fc_spike = forecasting.forecast(spiky[:-1440], step_minutes=1, horizon=1440, start=START)
    assert "trend" not in fc_spike.model
    assert np.mean(np.abs(fc_spike.mean - flat[-1440:])) / flat[-1440:].mean() < 0.06


def test_batch_equals_single_and_handles_ragged_lengths() -> None:
    ys = [daily_series(3.0, seed=s, level=10.0 ** s) for s in range(3)]
    ys[1] = ys[1].copy()
    ys[1][500:900] = np.nan
    ys.append(daily_series(2.0, seed=7))
    batch = forecasting.forecast_batch(ys, step_minutes=1, horizon=240, starts=[START] * 4,
                                       quantiles=(0.1, 0.5, 0.9))
    for y, b in zip(ys, batch, strict=True):
        single = forecasting.forecast(y, step_minutes=1, horizon=240, start=START,
                                      quantiles=(0.1, 0.5, 0.9))
        np.testing.assert_allclose(b.mean, single.mean, rtol=1e-8)
        np.testing.assert_allclose(b.quantile(0.9), single.quantile(0.9), rtol=1e-8)
    two_d = forecasting.fit_batch(np.stack(ys[:3]), step_minutes=1, starts=[START] * 3)
    assert len(two_d) == 3


def test_predict_tracks_level_shift() -> None:
    # Demand wanders around its profile (persistent deviations), as real load does, so the
    # residual model learns that a deviation lasts.
    rng = np.random.default_rng(12)
    wander = np.zeros(9 * 1440)
    for i in range(1, wander.size):
        wander[i] = 0.998 * wander[i - 1] + rng.normal(0, 0.01)
    y = daily_series(9.0, seed=12) * np.exp(wander)
    model = forecasting.fit(y[: 8 * 1440], step_minutes=1, start=START)
    shifted = y[8 * 1440 : 8 * 1440 + 600] * 1.6
    origin = START + dt.timedelta(minutes=8 * 1440 + 600)
    fc = model.predict(shifted, origin=origin, horizon=60)
    expected = y[8 * 1440 + 600 : 8 * 1440 + 660] * 1.6
    unshifted = model.predict(y[8 * 1440 : 8 * 1440 + 600], origin=origin, horizon=60)
    assert fc.start == origin
    assert np.mean(np.abs(fc.mean - expected)) < 0.5 * np.mean(np.abs(unshifted.mean - expected))


def test_quantiles_ordered_non_negative_and_json() -> None:
    y = daily_series(15.0, seed=13, noise=0.3) * 1e5  # ~1e7 scale
    fc = forecasting.forecast(y, step_minutes=1, horizon=600, start=START,
                              quantiles=(0.05, 0.5, 0.9, 0.99))
    qs = np.stack([fc.quantile(q) for q in fc.quantile_levels])
    assert np.all(np.diff(qs, axis=0) >= 0)
    assert np.all(qs >= 0) and np.all(fc.mean >= 0)
    assert fc.parameters["regime"] == "daily+weekly"
    with pytest.raises(KeyError):
        fc.quantile(0.42)
    json.dumps(fc.parameters)
    json.dumps(fc.accuracy)
    assert 0.7 <= fc.accuracy["coverage_80"] <= 0.9
    # Forecasts never go negative even when demand collapses at the end.
    y2 = y.copy()
    y2[-120:] = 1.0
    assert np.all(forecasting.forecast(y2, step_minutes=1, horizon=300, start=START).mean >= 0)


def test_weighted_least_squares_matches_statsmodels() -> None:
    rng = np.random.default_rng(2)
    t = 3 * 1440
    tl = Timeline.build(START, 1, "UTC", ())
    x = basis_table(4, 0)[tl.local(np.arange(t, dtype=np.int64)).phase]
    y = x @ rng.normal(size=x.shape[1]) + rng.normal(size=t)
    y[100:400] = np.nan
    w = rng.uniform(0.5, 1.0, t)
    obs = np.isfinite(y)
    ours = _core._wls_batch(y[None, :], obs[None, :], x, w, {})[0]
    ref = sm.WLS(y[obs], x[obs], weights=w[obs]).fit().params
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)


def _trace(name: str) -> tuple[np.ndarray, dt.datetime]:
    raw = np.genfromtxt(TRACES / name, delimiter=",", skip_header=1, usecols=(1, 2))
    first = (TRACES / name).read_text().splitlines()[1].split(",")[0]
    return raw[:, 0] + 3 * raw[:, 1], dt.datetime.fromisoformat(first.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def m_small_report() -> dict[str, Any]:
    # The stated protocol (rolling_origin_eval's defaults, also `capsched forecast eval`'s):
    # second week, a forecast from every minute, refit every 6 hours, gaps masked.
    y, start = _trace("servegen_m-small.csv")
    return forecasting.rolling_origin_eval(
        y, step_minutes=1, start=start, horizons=(5, 60, 1440), refit_every_minutes=360,
        origin_every_minutes=1,
    ).to_dict()


def test_servegen_m_small_coverage_and_accuracy(m_small_report: dict[str, Any]) -> None:
    assert m_small_report["naive"] == "weekly"
    h = m_small_report["horizons"]
    for k in ("5", "60", "1440"):
        assert 0.75 <= h[k]["coverage_80"] <= 0.85, (k, h[k])
        # 0.985, not 0.98: at 24 h the measured 0.982 (5-day calibration tail) has a 90 %
        # day-block range of 0.954-0.999 over its 7 origin days; 0.977 with a 3-day tail.
        assert 0.92 <= h[k]["coverage_95"] <= (0.985 if k == "1440" else 0.98), (k, h[k])
        lo, hi = h[k]["coverage_95_range"]
        assert lo <= 0.95 + 0.03 and hi >= 0.95 - 0.03, (k, h[k])
    assert h["5"]["mase"] <= 0.35
    # Regression guards at the level reached so far (0.585 and 0.773 when written).
    assert h["60"]["mase"] <= 0.60
    assert h["1440"]["mase"] <= 0.80


@pytest.mark.xfail(strict=True, reason="the issue's 1 h and 24 h targets are not met yet "
                   "(0.593 and 0.779 on 2026-11-29); strict: meeting them turns this red")
def test_servegen_m_small_meets_the_issue_targets(m_small_report: dict[str, Any]) -> None:
    h = m_small_report["horizons"]
    targets = {"5": 0.35, "60": 0.55, "1440": 0.70}
    missed = {k: round(h[k]["mase"], 3) for k, cap in targets.items() if h[k]["mase"] > cap}
    assert not missed, f"MASE above the targets {targets}: {missed}"


def test_huber_trend_matches_statsmodels_rlm() -> None:
    from statsmodels.robust.norms import HuberT

    rng = np.random.default_rng(4)
    days = np.arange(21)
    wd = (days + 3) % 7
    exog = np.column_stack([np.ones(21), days.astype(float)]
                           + [(wd == k).astype(float) for k in range(1, 7)])
    v = 1 + 0.01 * days[None, :] * rng.normal(size=(5, 1)) + 0.05 * rng.standard_t(3, (5, 21))
    ok = rng.random((5, 21)) > 0.1
    params, pval = _core.huber_regression(v, exog, ok)
    for i in range(5):
        ref = sm.RLM(v[i][ok[i]], exog[ok[i]], M=HuberT()).fit()
        assert params[i, 1] == pytest.approx(ref.params[1], rel=1e-3, abs=1e-6)
        assert pval[i] == pytest.approx(ref.pvalues[1], rel=0.05, abs=1e-4)


def test_threaded_chunks_match_single_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    from forecasting import _model

    monkeypatch.setattr(_model, "_CHUNK", 2)
    ys = [daily_series(3.0, seed=20 + s, level=5.0 * (s + 1)) for s in range(5)]
    models = forecasting.fit_batch(ys, step_minutes=1, starts=[START] * 5)
    for y, m in zip(ys, models, strict=True):
        single = forecasting.fit(y, step_minutes=1, start=START)
        a = m.predict(y, origin=y.size, horizon=120)
        b = single.predict(y, origin=y.size, horizon=120)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-8)


def test_predict_reads_seasonal_lags_from_the_fitted_history() -> None:
    # A one-hour burst at 20:00 every day is too sharp for the harmonic profile; the
    # seasonal-lag components put part of it back into the day-ahead forecast, and they
    # come from the history stored in the model when `recent` is short.
    rng = np.random.default_rng(21)
    days = 15
    t = np.arange((days + 1) * 1440)
    y = 100.0 * (1 + 0.3 * np.cos(2 * np.pi * t / 1440)) * rng.lognormal(0, 0.02, t.size)
    y[(t % 1440 >= 1200) & (t % 1440 < 1260)] *= 2.0
    hist, nxt = y[: days * 1440], y[days * 1440 :]
    model = forecasting.fit(hist, step_minutes=1, start=START)
    short = model.predict(hist[-60:], origin=hist.size, horizon=1440)
    full = model.predict(hist[-2 * 1440 :], origin=hist.size, horizon=1440)
    np.testing.assert_allclose(short.mean, full.mean, rtol=1e-4)
    plain = forecasting.fit_batch([hist], step_minutes=1, starts=[START],
                                  _config=_core.Config(lag_days=()))[0]
    no_lag = plain.predict(hist[-60:], origin=hist.size, horizon=1440)
    burst = slice(1170, 1290)
    assert (np.mean(np.abs(short.mean[burst] - nxt[burst]))
            < 0.95 * np.mean(np.abs(no_lag.mean[burst] - nxt[burst])))


def test_conformal_levels_widen_for_few_effective_errors() -> None:
    levels = (0.1, 0.5, 0.9)
    many = _calibration.conformal_levels(levels, np.array([[1e6]]))[:, 0, 0]
    few = _calibration.conformal_levels(levels, np.array([[20.0]]))[:, 0, 0]
    np.testing.assert_allclose(many, levels, atol=1e-5)
    assert few[0] < 0.1 and few[2] > 0.9 and few[1] == 0.5
    # Errors of consecutive origins that repeat each other count as one.
    rng = np.random.default_rng(3)
    iid = rng.normal(size=(1, 400, 1))
    sticky = np.repeat(rng.normal(size=(1, 40, 1)), 10, axis=1)
    assert _calibration.effective_counts(iid)[0, 0] > 200
    assert _calibration.effective_counts(sticky)[0, 0] < 40

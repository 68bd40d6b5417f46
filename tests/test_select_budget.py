"""The model choice for a whole refit: one budget on an injected clock, the fast path kept
(with one log line naming how many) when it runs out, and the choice leaving the fast path
only on clear validation evidence. No timing: the clock is a fake."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest

import forecasting
from forecasting.select import FAST_MARGIN, _clearly_better, select_batch

START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
HORIZON = 60
QS = (0.1, 0.5, 0.9)


def minutes(n: int, days: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` minute-level series with a daily cycle and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440)
    out = np.empty((n, t.size))
    for i in range(n):
        level = rng.uniform(5, 50)
        out[i] = level * (1 + 0.5 * np.sin(2 * np.pi * (t / 1440 - rng.uniform())))
        out[i] *= rng.lognormal(0.0, 0.1, t.size)
    return out


def fast_path(hist: np.ndarray) -> list[forecasting.Forecast]:
    return forecasting.forecast_batch(hist, step_minutes=1, horizon=HORIZON, quantiles=QS,
                                      starts=[START] * hist.shape[0])


class FakeClock:
    """Reads 0 for the first ``free`` calls, then 100 for ever."""

    def __init__(self, free: int) -> None:
        self.free, self.calls = free, 0

    def __call__(self) -> float:
        self.calls += 1
        return 0.0 if self.calls <= self.free else 100.0


def run(hist: np.ndarray, fast: list[forecasting.Forecast], clock: FakeClock,
        **kw: object) -> forecasting.select.BatchSelection:
    return select_batch(list(hist), step_minutes=1, horizon=HORIZON, fast=fast, quantiles=QS,
                        starts=[START] * hist.shape[0], clock=clock, deadline=50.0,
                        **kw)  # type: ignore[arg-type]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "forecasting.select" and r.levelno == logging.WARNING]


def test_an_expired_budget_keeps_the_fast_path_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    hist = minutes(4)
    fast = fast_path(hist)
    with caplog.at_level(logging.WARNING, logger="forecasting.select"):
        out = run(hist, fast, FakeClock(free=0))
    assert out.validated == 0 and out.out_of_time == (0, 1, 2, 3)
    for fc, f in zip(out.forecasts, fast, strict=True):
        sel = fc.parameters["selection"]
        assert sel["degraded"] == "budget" and sel["fast_path"] and sel["chosen"] == f.model
        np.testing.assert_array_equal(fc.mean, f.mean)
        np.testing.assert_array_equal(fc.quantiles, f.quantiles)
    [line] = warnings_of(caplog)
    assert "4 of 4 series keep the fast path" in line.getMessage()


def test_the_budget_runs_out_part_way_through_the_batch(
        caplog: pytest.LogCaptureFixture) -> None:
    hist = minutes(5, seed=1)
    fast = fast_path(hist)
    # Enough clock reads for the first series' whole choice, none for the second's.
    probe = FakeClock(free=10**9)
    run(hist[:1], fast[:1], probe)
    with caplog.at_level(logging.WARNING, logger="forecasting.select"):
        out = run(hist, fast, FakeClock(free=probe.calls))
    assert out.validated == 1 and out.out_of_time == (1, 2, 3, 4)
    first = out.forecasts[0].parameters["selection"]
    assert first["degraded"] != "budget" and first["candidates"]
    assert "harmonic" in first["candidates"]
    for i in out.out_of_time:
        assert out.forecasts[i].parameters["selection"]["degraded"] == "budget"
        np.testing.assert_array_equal(out.forecasts[i].mean, fast[i].mean)
    [line] = warnings_of(caplog)
    assert "4 of 5 series keep the fast path (1 validated, 0 not due)" in line.getMessage()


def test_a_budget_that_lasts_logs_nothing_and_series_not_due_are_not_validated(
        caplog: pytest.LogCaptureFixture) -> None:
    hist = minutes(3, seed=2)
    fast = fast_path(hist)
    clock = FakeClock(free=10**9)
    with caplog.at_level(logging.WARNING, logger="forecasting.select"):
        out = run(hist, fast, clock, validate=[False, True, False])
    assert (out.validated, out.not_due, out.out_of_time) == (1, 2, ())
    assert not warnings_of(caplog)
    for i in (0, 2):
        sel = out.forecasts[i].parameters["selection"]
        assert sel["degraded"] == "not due" and sel["fast_path"]
        np.testing.assert_array_equal(out.forecasts[i].mean, fast[i].mean)
    assert out.forecasts[1].parameters["selection"]["candidates"]


def test_the_budget_passing_before_the_harmonic_member_keeps_the_fast_path() -> None:
    # Seasonal naive is validated first; a clock that expires right after it must not let
    # seasonal naive win by default over a fast path nobody compared it with.
    hist = minutes(1, seed=3)
    fast = fast_path(hist)
    for free in (1, 2):  # the family at minute steps: two seasonal naives, then harmonic
        fc = forecasting.select_forecast(hist[0], step_minutes=1, horizon=HORIZON,
                                         quantiles=QS, start=START, fast=fast[0],
                                         clock=FakeClock(free), deadline=50.0)
        sel = fc.parameters["selection"]
        assert sel["fast_path"] and sel["degraded"] == "budget"
        np.testing.assert_array_equal(fc.mean, fast[0].mean)


def test_leaving_the_fast_path_needs_clear_evidence() -> None:
    base = np.array([1.0, 1.0, 1.0])
    assert _clearly_better(base * (1 - 2 * FAST_MARGIN), base, FAST_MARGIN)
    assert not _clearly_better(base * (1 - FAST_MARGIN / 2), base, FAST_MARGIN)
    # Better on average but not at every origin.
    assert not _clearly_better(np.array([0.5, 0.5, 1.1]), base, FAST_MARGIN)
    assert not _clearly_better(np.full(3, np.nan), base, FAST_MARGIN)


def test_a_step_shaped_week_leaves_the_fast_path_for_seasonal_naive() -> None:
    # A noise-free daily square wave: seasonal naive is exact, a few harmonics are not.
    t = np.arange(4 * 1440)
    y = np.where((t % 1440) < 480, 40.0, 5.0)
    fast = fast_path(y[None, :])[0]
    fc = forecasting.select_forecast(y, step_minutes=1, horizon=HORIZON, quantiles=QS,
                                     start=START, fast=fast)
    sel = fc.parameters["selection"]
    assert not sel["fast_path"] and "seasonal-naive" in sel["chosen"]
    truth = np.where(((t.size + np.arange(HORIZON)) % 1440) < 480, 40.0, 5.0)
    assert np.abs(fc.mean - truth).mean() < np.abs(fast.mean - truth).mean()


def test_validation_fits_skip_calibration_but_not_the_mean() -> None:
    hist = minutes(2, seed=4)
    full = forecasting.fit_batch(hist, step_minutes=1, starts=[START] * 2, quantiles=QS)
    bare = forecasting.fit_batch(hist, step_minutes=1, starts=[START] * 2, quantiles=QS,
                                 _calibrate=False)
    for a, b, h in zip(full, bare, hist, strict=True):
        fa = a.predict(h, origin=h.size, horizon=HORIZON)
        fb = b.predict(h, origin=h.size, horizon=HORIZON)
        np.testing.assert_allclose(fb.mean, fa.mean)
        assert np.isfinite(fa.quantiles).all() and np.isnan(fb.quantiles).all()


def test_the_batch_prefit_gives_each_series_the_evidence_it_would_get_alone() -> None:
    # Histories longer than HARMONIC_REFIT_STEPS: select_batch fits the harmonic member's
    # validation models together; the scores must be those of one series at a time.
    hist = minutes(3, days=15, seed=5)
    hist[1, :1440] = np.nan  # a later first observation: a different local start
    hist[2] = np.where((np.arange(hist.shape[1]) % 1440) < 480, 40.0, 5.0)
    fast = fast_path(hist)
    out = run(hist, fast, FakeClock(free=10**9), n_origins=3)
    assert out.validated == 3
    for i in range(3):
        alone = forecasting.select_forecast(hist[i], step_minutes=1, horizon=HORIZON,
                                            quantiles=QS, start=START, fast=fast[i],
                                            n_origins=3)
        a, b = alone.parameters["selection"], out.forecasts[i].parameters["selection"]
        assert b["candidates"] == a["candidates"] and b["chosen"] == a["chosen"]
        np.testing.assert_allclose(out.forecasts[i].mean, alone.mean)
    assert not out.forecasts[2].parameters["selection"]["fast_path"]

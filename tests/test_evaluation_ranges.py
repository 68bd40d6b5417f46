"""Day-block bootstrap ranges of ``rolling_origin_eval`` (pure numpy, hourly series, no DB)."""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import numpy.typing as npt
import pytest

import forecasting
from forecasting.evaluation import _day_block_ranges

START = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)  # a Monday, 00:00 UTC
STEP = 60  # minutes: 24 steps a day keeps every evaluation well under a second
BAD_DAYS = (22, 25, 29, 33)  # days of the (a) series whose whole level jumps 1.8x


def hourly(days: int, bad: tuple[int, ...], seed: int) -> npt.NDArray[np.float64]:
    """A daily sine around 100 with N(0, 5) noise; the ``bad`` days scaled 1.8x."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    y = 100 + 40 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 5, t.size)
    for d in bad:
        y[d * 24 : (d + 1) * 24] *= 1.8
    return y


def evaluate(y: npt.NDArray[np.float64], *, eval_days: float, seed: int = 0,
             start: dt.datetime = START, first: float | None = None,
             horizons: tuple[float, ...] = (60,)) -> forecasting.EvalReport:
    return forecasting.rolling_origin_eval(
        y, step_minutes=STEP, start=start, horizons=horizons, eval_days=eval_days,
        refit_every_minutes=1440, origin_every_minutes=60, zero_gap_minutes=0,
        first_origin_minutes=first, bootstrap_seed=seed)


@cache
def uneven() -> forecasting.HorizonScore:
    # 14 origin days, 4 of them with an unforecastable level jump: the forecast is good on
    # 10 days and far off on 4, so which days a resample draws moves its relMAE a lot.
    return evaluate(hourly(35, BAD_DAYS, seed=1), eval_days=14).scores[0]


@cache
def iid() -> forecasting.HorizonScore:
    # 25 origin days of the same shape with only i.i.d. noise: every day scores alike.
    return evaluate(hourly(49, (), seed=2), eval_days=28).scores[0]


def width(r: tuple[float, float] | None) -> float:
    assert r is not None
    return r[1] - r[0]


def test_uneven_days_give_a_wide_range_around_the_point_estimate() -> None:
    s = uneven()
    assert s.n_days == 14
    assert s.mase_range is not None and s.coverage_80_range is not None
    assert s.coverage_95_range is not None
    assert s.mase_range[0] < s.mase < s.mase_range[1]
    assert s.coverage_80 is not None and s.coverage_95 is not None
    assert s.coverage_80_range[0] <= s.coverage_80 <= s.coverage_80_range[1]
    assert s.coverage_95_range[0] <= s.coverage_95 <= s.coverage_95_range[1]
    # Measured 0.25-0.63 around 0.36: the 4 jump days dominate the sums.
    assert width(s.mase_range) > 0.25


def test_iid_errors_over_many_days_give_a_narrow_range() -> None:
    s, u = iid(), uneven()
    assert s.n_days == 25
    assert s.mase_range is not None
    assert s.mase_range[0] < s.mase < s.mase_range[1]
    # Measured 0.70-0.76 (width 0.065) against 0.39 for the uneven days.
    assert width(s.mase_range) < 0.1
    assert width(s.mase_range) * 4 < width(u.mase_range)
    # Coverage too, on as many origin days as the uneven series (14, so that the day count
    # does not make the difference): measured 0.054 against 0.080 with the 5-day
    # calibration tail; the coverage depends on the calibration, so the margin is loose.
    same_days = evaluate(hourly(49, (), seed=2), eval_days=14).scores[0]
    assert same_days.n_days == u.n_days == 14
    assert width(same_days.coverage_80_range) * 1.2 < width(u.coverage_80_range)


def test_ranges_are_reproducible_and_come_from_the_seed() -> None:
    y = hourly(35, BAD_DAYS, seed=1)
    a = evaluate(y, eval_days=14, horizons=(60, 1440))
    b = evaluate(y, eval_days=14, horizons=(60, 1440))
    assert a.to_dict() == b.to_dict()
    # A horizon's range does not depend on the other horizons asked for.
    assert evaluate(y, eval_days=14, horizons=(60,)).scores[0] == a.scores[0]
    # ... and it is a resampling: another seed moves it.
    other = evaluate(y, eval_days=14, seed=1).scores[0]
    assert other.mase == a.scores[0].mase
    assert other.mase_range != a.scores[0].mase_range
    h = a.to_dict()["horizons"]["60"]
    assert a.scores[0].mase_range is not None
    assert h["mase_range"] == list(a.scores[0].mase_range)
    assert len(h["coverage_80_range"]) == 2 and len(h["coverage_95_range"]) == 2
    assert h["n_days"] == 14


def test_origins_in_one_utc_day_have_no_range() -> None:
    y = hourly(15, (), seed=3)
    # Origins from day 14 00:00 to the end of the series: one UTC day.
    s = evaluate(y, eval_days=1, first=14 * 1440).scores[0]
    assert s.n_points > 10 and s.n_days == 1
    assert s.mase_range is None and s.coverage_80_range is None
    assert s.coverage_95_range is None
    assert np.isfinite(s.mase)  # the point scores are still there
    # The day is the UTC day of the origin, not of the series start: the same origins
    # from a start at 12:00 UTC straddle two UTC days.
    s2 = evaluate(y, eval_days=1, first=14 * 1440,
                  start=START + dt.timedelta(hours=12)).scores[0]
    assert s2.n_days == 2
    # Fewer than 5 origin days give no range either (the percentiles would be little more
    # than the best and the worst day); 5 do.
    assert s2.mase_range is None
    four = evaluate(y, eval_days=4, first=11 * 1440).scores[0]  # days 11-14
    five = evaluate(y, eval_days=5, first=10 * 1440).scores[0]
    assert (four.n_days, five.n_days) == (4, 5)
    assert four.mase_range is None and five.mase_range is not None
    with pytest.raises(ValueError, match="bootstrap_resamples"):
        forecasting.rolling_origin_eval(y, step_minutes=60, bootstrap_resamples=0)


def test_ratio_of_sums_over_whole_days_by_hand() -> None:
    # Day 0: two points, |e| = 1 each, |naive| = 1 each; day 1: one point, |e| = 3,
    # |naive| = 1. A resample is day 0 twice (relMAE 4/4 = 1, probability 1/4), both
    # (5/3) or day 1 twice (6/2 = 3, probability 1/4): percentiles 5 and 95 are 1 and 3.
    days = np.array([7, 7, 9])
    inside = np.array([True, True, False])
    rel, c80, c95 = _day_block_ranges(days, np.array([1.0, 1.0, 3.0]), np.ones(3),
                                      inside, None, min_days=2)
    assert rel == pytest.approx((1.0, 3.0))
    assert c80 == pytest.approx((0.0, 1.0))
    assert c95 is None
    assert _day_block_ranges(np.array([7, 7]), np.ones(2), np.ones(2), None, None,
                             min_days=2) == (None, None, None)
    # The default needs 5 days.
    assert _day_block_ranges(days, np.array([1.0, 1.0, 3.0]), np.ones(3), inside,
                             None) == (None, None, None)

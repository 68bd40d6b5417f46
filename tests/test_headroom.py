"""Headroom calibrated by replaying the deployment's history (scheduler/planning/headroom.py)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import Deployment, Pricing
from scheduler.planning.headroom import (
    HeadroomCurve,
    headroom_curves,
    replayed_spill_fraction,
)
from scheduler.planning.planner import (
    DemandForecast,
    Holdings,
    PlannerSettings,
    SpillToDate,
    plan,
)


def reference_spill(demand: list[float], h: float, lead: int, hold: int) -> float:
    """The rule replayed unit by unit, in plain Python."""
    active: list[int] = []  # activation minutes
    pending: list[int] = []
    last = 0.0
    spill = total = 0.0
    for d, x in enumerate(demand):
        if d == 0:
            if math.isfinite(x):
                last = x
            continue
        active += [a for a in pending if a <= d]
        pending = [a for a in pending if a > d]
        need = math.ceil(last * (1 + h) - 1e-9)
        short = max(0, need - len(active) - len(pending))
        if lead == 0:
            active += [d] * short
        else:
            pending += [d + lead] * short
        excess = len(active) + len(pending) - need
        active.sort()
        while excess > 0 and active and d - active[0] >= hold:
            active.pop(0)
            excess -= 1
        if math.isfinite(x):
            spill += max(0.0, x - len(active))
            total += x
            last = x
    return spill / total if total > 0 else 0.0


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(0, 30), st.just(math.nan)), min_size=2, max_size=120),
    h=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
    lead=st.integers(0, 6),
    hold=st.integers(1, 30),
)
def test_replay_matches_a_unit_by_unit_simulation(
    values: list[float], h: float, lead: int, hold: int
) -> None:
    got = replayed_spill_fraction(np.array(values), [h], lead=lead, hold=hold)[0, 0]
    assert got == pytest.approx(reference_spill(values, h, lead, hold), abs=1e-12)


def test_replay_is_batched_over_series_and_headrooms() -> None:
    rng = np.random.default_rng(3)
    demand = rng.gamma(5.0, 2.0, size=(3, 600))
    demand[1, 100:130] = np.nan
    batch = replayed_spill_fraction(demand, [0.0, 0.2, 0.6], lead=5, hold=60)
    assert batch.shape == (3, 3)
    for i in range(3):
        for j, h in enumerate((0.0, 0.2, 0.6)):
            assert batch[i, j] == pytest.approx(
                reference_spill(list(demand[i]), h, 5, 60), abs=1e-12)
    # More headroom never spills more here (no rounding quirks at these levels).
    assert np.all(np.diff(batch, axis=1) <= 1e-12)


def test_missing_minutes_are_not_read_as_zero() -> None:
    demand = np.full(3000, 10.0)
    demand[1000:1100] = np.nan  # a logging gap: the rule holds its capacity
    frac = replayed_spill_fraction(demand, [0.0], lead=5, hold=60)[0, 0]
    # Only the start-up minutes (lead) spill; the gap neither spills nor drops capacity.
    assert frac == pytest.approx(10.0 * 5 / (10.0 * 2899), rel=1e-9)


def test_calibration_picks_the_smallest_headroom_meeting_the_target() -> None:
    rng = np.random.default_rng(7)
    # Ten-minute blocks with random steps, as ServeGen publishes them.
    blocks = 20.0 * np.exp(np.cumsum(rng.normal(0, 0.15, 300)) * 0.3)
    demand = np.repeat(blocks, 10)
    grid = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)
    fracs = replayed_spill_fraction(demand, grid, lead=5, hold=60)[0]
    target = 0.01
    curve = headroom_curves(demand, lead=5, hold=60, grid=grid)[0]
    assert curve is not None and curve.spill_fractions == pytest.approx(tuple(fracs))
    h = curve.headroom_for(target)
    assert h is not None
    i = grid.index(h)
    assert np.all(fracs[i:] <= target)
    assert i == 0 or fracs[i - 1] > target


def test_curve_edge_cases() -> None:
    curve = HeadroomCurve((0.0, 0.1, 0.2, 0.3), (0.05, 0.008, 0.012, 0.004))
    # 0.1 met the target but 0.2 did not: only from 0.3 on does every larger one meet it.
    assert curve.headroom_for(0.01) == 0.3
    assert curve.headroom_for(0.02) == 0.1
    assert curve.headroom_for(0.001) is None
    assert curve.headroom_for(0.0) is None
    assert headroom_curves(np.full(600, 5.0), lead=5, hold=60)[0] is None  # under a day
    flat = headroom_curves(np.full(3000, 5.0), lead=5, hold=60)[0]
    assert flat is not None and flat.headroom_for(0.0) is None  # a zero bound


def _deployment(**kw: object) -> Deployment:
    pricing = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379)
    base: dict[str, object] = dict(name="d", provider="sim", unit_tpm=1000, pricing=pricing,
                                   max_units=1000, max_spill_fraction=0.01,
                                   scale_up_lead_minutes=5, min_hold_minutes=60)
    base.update(kw)
    return Deployment(**base)  # type: ignore[arg-type]


def _forecast(now: dt.datetime, n: int, median: float) -> DemandForecast:
    m = np.full(n, median)
    return DemandForecast(now, (0.5, 0.9, 0.975), np.vstack([m, m * 1.4, m * 1.9]))


def test_planner_holds_the_median_times_the_calibrated_headroom() -> None:
    now = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    dep = _deployment()
    fc = _forecast(now, 120, 40.0)
    s = PlannerSettings(horizon_minutes=120)
    curve = HeadroomCurve((0.0, 0.1, 0.2, 0.3), (0.05, 0.02, 0.008, 0.004))
    calibrated = plan(fc, Holdings(), dep, now, settings=s, headroom=curve)
    # Target 0.9 % of the bound: h = 0.2, so ceil(40 x 1.2) = 48 units once served.
    assert int(calibrated.required_units[10]) == 48
    assert any(r.rule == "calibrated_headroom" for r in calibrated.reasons)
    per_minute = plan(fc, Holdings(), dep, now, settings=s)
    assert int(per_minute.required_units[10]) > 48  # the band's 97.5 % is 76
    # A period that spilled twice its share aims at half the target: h = 0.3 -> 52, when
    # the 900 unit-minutes of overrun (at $1 each) pay for the 4 extra units over the
    # horizon (4 x 120 min x $0.634 = $304 < $900).
    debt = SpillToDate(demand_unit_minutes=100_000.0, spill_unit_minutes=1800.0)
    tightened = plan(fc, Holdings(), dep, now, settings=s, headroom=curve,
                     spill_to_date=debt, spill_price=1.0)
    assert int(tightened.required_units[10]) == 52
    assert tightened.bound_alert is None
    # At the default price ($0.0025 a unit-minute) the overrun cost $2.25: repaying it
    # would cost far more, so the plan holds 48 and says why.
    cheap = plan(fc, Holdings(), dep, now, settings=s, headroom=curve, spill_to_date=debt)
    assert int(cheap.required_units[10]) == 48
    assert cheap.bound_alert is not None and "not met economically" in cheap.bound_alert
    assert any(r.rule == "overrun_not_repaid" for r in cheap.reasons)
    # Nothing on the curve meets a tighter aim: the per-minute rule decides.
    worse = SpillToDate(demand_unit_minutes=10_000.0, spill_unit_minutes=900.0)
    fallback = plan(fc, Holdings(), dep, now, settings=s, headroom=curve,
                    spill_to_date=worse, spill_price=1e6)
    assert not any(r.rule == "calibrated_headroom" for r in fallback.reasons)
    assert int(fallback.required_units[10]) >= int(per_minute.required_units[10])


def test_throttle_and_zero_bound_keep_the_per_minute_rule() -> None:
    now = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    fc = _forecast(now, 60, 40.0)
    curve = HeadroomCurve((0.0, 0.2), (0.0, 0.0))
    s = PlannerSettings(horizon_minutes=60)
    for dep in (_deployment(spill="throttle"), _deployment(max_spill_fraction=0.0)):
        with_curve = plan(fc, Holdings(), dep, now, settings=s, headroom=curve)
        without = plan(fc, Holdings(), dep, now, settings=s)
        assert np.array_equal(with_curve.required_units, without.required_units)


def test_commitments_are_judged_against_the_capacity_elastic_would_hold() -> None:
    now = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    dep = _deployment()
    n = 7 * 1440
    day = (np.arange(n) % 1440) / 1440.0
    median = 20.0 + 10.0 * np.sin(2 * np.pi * day)  # 10..30 units
    commit_fc = DemandForecast(now, (0.5, 0.9, 0.975),
                               np.vstack([median, median * 1.3, median * 1.6]))
    s = PlannerSettings(horizon_minutes=60)
    curve = HeadroomCurve((0.0, 0.25), (0.05, 0.001))
    plain = plan(_forecast(now, 60, 20.0), Holdings(), dep, now, settings=s,
                 commit_forecast=commit_fc)
    calibrated = plan(_forecast(now, 60, 20.0), Holdings(), dep, now, settings=s,
                      commit_forecast=commit_fc, headroom=curve)
    units = sum(c.units for c in plain.new_commitments)
    more = sum(c.units for c in calibrated.new_commitments)
    # x 1.25 lifts the level a 30-day unit is needed > 73 % of the time (about 1.25x).
    assert more > units > 0


def test_headroom_is_calibrated_per_deployment_in_groups() -> None:
    from scheduler.pipeline.forecast import History, headroom_by_deployment

    rng = np.random.default_rng(11)
    start = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    n = 7 * 1440  # exactly the calibration window

    def history(name: str, scale: float, **kw: object) -> History:
        demand = np.repeat(scale * np.exp(rng.normal(0, 0.2, n // 10)), 10)
        return History(_deployment(name=name, **kw), 1, start, demand, demand * 1000.0,
                       np.zeros(n))

    calm = history("calm", 20.0)
    gapped = history("gapped", 20.0)
    gapped.demand[1000:1100] = 0.0  # a logging gap: missing, not idle
    other = history("other-lead", 20.0, scale_up_lead_minutes=1)
    throttled = history("throttled", 20.0, spill="throttle")
    curves = headroom_by_deployment([calm, gapped, other, throttled])
    assert curves["throttled"] is None
    for h in (calm, gapped, other):
        curve = curves[h.deployment.name]
        assert curve is not None
        lead = h.deployment.scale_up_lead_minutes
        masked = h.demand.copy()
        if h is gapped:
            masked[1000:1100] = np.nan
        expected = replayed_spill_fraction(masked, curve.headrooms, lead=lead, hold=60)[0]
        assert curve.spill_fractions == pytest.approx(tuple(expected), abs=1e-12)
    # A shorter lead needs less headroom for the same target.
    calm_h = curves["calm"].headroom_for(0.009)  # type: ignore[union-attr]
    other_h = curves["other-lead"].headroom_for(0.009)  # type: ignore[union-attr]
    assert calm_h is not None and other_h is not None and other_h <= calm_h


@settings(max_examples=30, deadline=None)
@given(
    base=st.lists(st.floats(0.0, 60.0), min_size=30, max_size=30),
    lift=st.lists(st.floats(0.0, 20.0), min_size=30, max_size=30),
    overrun=st.floats(0.0, 0.05),
)
def test_more_forecast_demand_never_gives_less_capacity_with_a_curve(
    base: list[float], lift: list[float], overrun: float
) -> None:
    now = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    dep = _deployment()
    curve = HeadroomCurve((0.0, 0.1, 0.2, 0.4), (0.03, 0.012, 0.006, 0.002))
    low = np.asarray(base)
    high = low + np.asarray(lift)
    spill = SpillToDate(demand_unit_minutes=10_000.0, spill_unit_minutes=10_000.0 * overrun)
    s = PlannerSettings(horizon_minutes=30)
    plans = [plan(DemandForecast(now, (0.5, 0.9, 0.975), np.vstack([m, m * 1.3, m * 1.6])),
                  Holdings(), dep, now, settings=s, headroom=curve, spill_to_date=spill)
             for m in (low, high)]
    assert np.all(plans[1].required_units >= plans[0].required_units)
    assert np.all(plans[1].capacity_target >= plans[0].capacity_target)

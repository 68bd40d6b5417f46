"""Issue #9, planner side: no unit bought that the evidence does not support.

The cover chosen on the recent replay, the cost ceiling and its report, the evidence
bound on capacity, the cost bound on repaying an overrun, and the commitment rules (no
commitment on stale, zero or missing demand; a one-day outlier does not move a 30-day
commitment). Hand-made inputs check the right values; hypothesis covers the bounds.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import CalendarEntry, Deployment, Pricing
from scheduler.planning.headroom import (
    choose_cover,
    constant_level_spill,
    headroom_curves,
    held_level_spill,
)
from scheduler.planning.planner import (
    CommitEvidence,
    DemandForecast,
    Holdings,
    PlannerSettings,
    commitment_block,
    evidence_cap,
    plan,
    typical_day_level,
)

T0 = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
PRICING = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379)
RE = PRICING.elastic_unit_hour / 60
R30 = RE * 0.7
LEVELS = (0.5, 0.9, 0.975)


def deployment(**kw: object) -> Deployment:
    base: dict[str, object] = dict(name="d", provider="sim", unit_tpm=2000, pricing=PRICING,
                                   max_units=1000, max_spill_fraction=0.01,
                                   scale_up_lead_minutes=5, min_hold_minutes=60)
    base.update(kw)
    return Deployment(**base)  # type: ignore[arg-type]


def bursty(days: int, seed: int) -> np.ndarray:
    """Idle-heavy, heavy-tailed minutes (the shape of ../shared/cases/bursty/gen_bursty.py)."""
    rng = np.random.default_rng(seed)
    n = days * 1440
    m = np.arange(n)
    rate = 0.6 + 0.4 * np.sin(2 * np.pi * (m % 1440) / 1440 - 1.5)
    req = rng.poisson(rate * rng.pareto(1.6, n).clip(0, 12))
    inp = req * rng.lognormal(6.5, 1.0, n)
    out = req * rng.lognormal(5.2, 0.8, n)
    return np.asarray((inp + 3 * out) / 2000.0)


def flat_forecast(n: int, median: float, p90: float, p975: float) -> DemandForecast:
    row = np.ones(n)
    return DemandForecast(T0, LEVELS, np.vstack([row * median, row * p90, row * p975]))


def test_constant_level_spill_is_exact() -> None:
    d = np.array([0.0, 1.0, 3.0, np.nan, 6.0])
    got = constant_level_spill(d, 7)
    want = [sum(max(0.0, x - c) for x in (0, 1, 3, 6)) / 10.0 for c in range(7)]
    assert np.allclose(got, want)


def test_bursty_cover_is_the_cheapest_constant_level_meeting_the_aim() -> None:
    demand = bursty(2, 1)
    curve = headroom_curves(demand, lead=5, hold=60)[0]
    assert curve is not None
    dep = deployment()
    cover = choose_cover(curve, dep, 0.009, 0.0025)
    assert cover is not None
    # No headroom of the grid meets 0.9 % on this traffic: the level rule decides.
    assert curve.headroom_for(0.009) is None
    # The level held is chosen on the replay's days weighted to the latest (without the
    # heaviest day when the bound's resampled range is wide); the bound's cost on the pooled
    # replay.
    held = held_level_spill(curve, 0.009, leave_out_heaviest=cover.left_out_heaviest)
    want = int(np.flatnonzero(held <= 0.009)[0])
    assert cover.kind == "level" and cover.level == want
    assert math.isclose(cover.cost_per_minute,
                        want * R30 + held[want] * demand.mean() * 0.0025)
    spill = constant_level_spill(demand, math.ceil(demand.max()) + 1)
    assert cover.bound_level == int(np.flatnonzero(spill <= 0.01)[0])
    # Within the default ceiling (dedicated at the replay's peak): met, no alert.
    assert cover.bound_within_ceiling and cover.meets_aim
    assert cover.payg_cheapest  # $0.0025 a unit-minute: pay-as-you-go beats any unit
    assert "pay-as-you-go alone is cheaper than any reservation" in cover.describe(0.01)


def test_a_bound_above_the_ceiling_is_reported_not_chased() -> None:
    demand = bursty(2, 1)
    curve = headroom_curves(demand, lead=5, hold=60)[0]
    assert curve is not None
    # A ceiling of 10 units at the elastic rate: far under what 1 % needs.
    dep = deployment(max_spill_fraction=0.01)
    ceiling = 10 * RE
    cover = choose_cover(curve, dep, 0.009, 0.0025, ceiling_per_minute=ceiling)
    assert cover is not None and not cover.bound_within_ceiling
    assert cover.kind == "payg" and cover.level == 0  # the cheapest cover of all
    spill = constant_level_spill(demand, math.ceil(demand.max()) + 1)
    level = int(np.flatnonzero(spill <= 0.01)[0])
    assert cover.bound_level == level
    assert math.isclose(cover.bound_cost_per_minute,
                        level * R30 + spill[level] * demand.mean() * 0.0025)
    # The least spill the ceiling buys: the constant level costing at most the ceiling.
    affordable = [spill[c] for c in range(spill.size)
                  if c * R30 + spill[c] * demand.mean() * 0.0025 <= ceiling]
    assert cover.ceiling_spill_fraction <= min(affordable)  # headroom covers count too
    # The plan holds nothing, buys nothing, and says why.
    fc = flat_forecast(120, 0.0, 3.0, 20.0)
    p = plan(fc, Holdings(), dep, T0, settings=PlannerSettings(horizon_minutes=120),
             commit_forecast=flat_forecast(7 * 1440, 0.0, 3.0, 20.0), spill_price=0.0025,
             headroom=curve, ceiling_per_minute=ceiling)
    assert int(p.capacity_target.max()) == 0
    assert p.new_commitments == ()
    assert p.bound_alert is not None and "not met at a sane price" in p.bound_alert
    assert f"${level * R30 * 1440 + spill[level] * demand.mean() * 0.0025 * 1440:,.2f}/day" \
        in p.bound_alert
    # The same ceiling configured on the deployment ($/hour).
    configured = deployment(cost_ceiling_per_hour=ceiling * 60)
    q = plan(fc, Holdings(), configured, T0, settings=PlannerSettings(horizon_minutes=120),
             spill_price=0.0025, headroom=curve)
    assert q.cover is not None and q.cover.ceiling_per_minute == ceiling
    assert q.bound_alert == p.bound_alert


def test_covered_plan_expects_the_replayed_spill() -> None:
    demand = bursty(2, 2)
    curve = headroom_curves(demand, lead=5, hold=60)[0]
    assert curve is not None
    p = plan(flat_forecast(60, 0.5, 4.0, 20.0), Holdings(), deployment(), T0,
             settings=PlannerSettings(horizon_minutes=60), spill_price=0.0025,
             headroom=curve)
    assert p.cover is not None
    assert math.isclose(p.expected_spill_fraction, p.cover.spill_fraction)
    assert p.expected_spill_fraction <= 0.009


def test_an_exploded_band_buys_no_more_than_the_evidence() -> None:
    # After a level change the band read median 3.97, p90 436 for a 4-12 unit load.
    fc = flat_forecast(120, 3.97, 436.0, 449.0)
    s = PlannerSettings(horizon_minutes=120)
    dep = deployment(max_spill_fraction=0.0)  # spill target 0 %: the band's tail
    unbounded = plan(fc, Holdings(), dep, T0, settings=s)
    assert int(unbounded.capacity_target.max()) > 400
    p = plan(fc, Holdings(), dep, T0, settings=s, recent_peak=12.0)
    assert int(p.capacity_target.max()) == 18  # ceil(1.5 x 12)
    assert any(r.rule == "evidence_cap" for r in p.reasons)
    # A declared launch day at 1.8x lets it go that much higher.
    launch = deployment(max_spill_fraction=0.0, calendar=(
        CalendarEntry(date=T0.date(), like=None, multiplier=1.8, note="launch"),))
    q = plan(fc, Holdings(), launch, T0, settings=s, recent_peak=12.0)
    assert int(q.capacity_target.max()) == math.ceil(1.5 * 1.8 * 12)


@settings(max_examples=40, deadline=None)
@given(median=st.floats(0, 50), spread=st.floats(0, 40), peak=st.floats(0, 60),
       bound=st.sampled_from([0.0, 0.001, 0.01, 0.1]), lo=st.integers(0, 3))
def test_capacity_stays_within_the_evidence(median: float, spread: float, peak: float,
                                            bound: float, lo: int) -> None:
    fc = flat_forecast(90, median, median * (1 + spread), median * (1 + 2 * spread) + 1)
    dep = deployment(max_spill_fraction=bound, min_units=lo, max_units=500)
    p = plan(fc, Holdings(), dep, T0, settings=PlannerSettings(horizon_minutes=90),
             commit_forecast=flat_forecast(7 * 1440, median, median * 2, median * 3),
             recent_peak=peak)
    cap = evidence_cap(peak, dep, T0, 90, 1.5)
    assert cap == max(lo, math.ceil(1.5 * peak - 1e-9))
    assert int(p.capacity_target.max()) <= cap
    assert sum(c.units for c in p.new_commitments) <= cap


@settings(max_examples=40, deadline=None)
@given(level=st.floats(0.5, 40), stale=st.booleans(), zero=st.booleans(),
       missing=st.floats(0, 1), scale=st.sampled_from([0.0, 1.0]))
def test_no_commitment_on_stale_zero_or_missing_demand(
        level: float, stale: bool, zero: bool, missing: float, scale: float) -> None:
    rng = np.random.default_rng(3)
    recent = np.full(7 * 1440, level * scale)
    recent[-1440:][rng.random(1440) < missing] = np.nan
    ev = CommitEvidence(recent, stale=stale, zero_run=zero)
    fc = flat_forecast(7 * 1440, level, level * 1.1, level * 1.2)
    p = plan(fc, Holdings(), deployment(), T0, settings=PlannerSettings(horizon_minutes=60),
             commit_forecast=fc, commit_evidence=ev, recent_peak=level)
    blocked = stale or zero or scale == 0.0 or np.isnan(recent[-1440:]).mean() > 0.5
    assert (commitment_block(ev) is not None) == blocked
    if blocked:
        assert p.new_commitments == ()
        assert any(r.rule == "no_commitment" for r in p.reasons)
    else:
        assert sum(c.units for c in p.new_commitments if c.term_days == 30) >= 1


def test_a_one_day_outlier_does_not_move_a_30_day_commitment() -> None:
    day = np.full(1440, 10.0)
    recent = np.concatenate([day] * 6 + [day * 3])  # six normal days, then a 3x day
    assert typical_day_level(recent) == 10.0
    assert typical_day_level(recent, 3, 0.88, 2) == 10.0
    # The forecast right after the outlier follows it (30 units all week).
    fc = flat_forecast(7 * 1440, 30.0, 33.0, 36.0)
    s = PlannerSettings(horizon_minutes=60)
    p = plan(fc, Holdings(), deployment(), T0, settings=s, commit_forecast=fc,
             commit_evidence=CommitEvidence(recent), recent_peak=30.0)
    by_term = {c.term_days: c.units for c in p.new_commitments}
    assert by_term == {30: 10}  # and no 7-day top-up on the outlier either
    without = plan(fc, Holdings(), deployment(), T0, settings=s, commit_forecast=fc,
                   recent_peak=30.0)
    assert {c.term_days: c.units for c in without.new_commitments}[30] == 30


def test_no_30_day_term_under_three_days_of_evidence() -> None:
    fc = flat_forecast(7 * 1440, 10.0, 11.0, 12.0)
    s = PlannerSettings(horizon_minutes=60)
    p = plan(fc, Holdings(), deployment(), T0, settings=s, commit_forecast=fc,
             commit_evidence=CommitEvidence(np.full(2 * 1440, 10.0)), recent_peak=10.0)
    by_term = {c.term_days: c.units for c in p.new_commitments}
    assert 30 not in by_term
    assert by_term[7] == 5  # the 7-day ladder: ceil(10 / 2 tranches)


def test_the_bound_alert_is_logged_once_a_day() -> None:
    from structlog.testing import capture_logs

    from scheduler.pipeline import plan as pipeline_plan

    with capture_logs() as logs:
        for minutes in (0, 1, 60):
            pipeline_plan._alert_once("bursty-x", T0 + dt.timedelta(minutes=minutes), "costly")
        pipeline_plan._alert_once("bursty-x", T0 + dt.timedelta(days=1), "costly")
    alerts = [e for e in logs if e["event"] == "service_level_bound_alert"]
    assert [(e["deployment"], e["log_level"]) for e in alerts] == [("bursty-x", "warning")] * 2

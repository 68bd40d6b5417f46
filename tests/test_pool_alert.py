"""The bound alert knows the provider's pool (issue #9, cases/out-of-capacity).

With a limited pool and no commitment term sold, no schedule holds more than the pool's
units: the cover says the bound is not possible with them (and the least spill), never
what meeting it "costs" on capacity that cannot be granted, and makes no "cheaper than
any reservation" claim when no reservation is sold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from scheduler.config import Deployment, Pricing
from scheduler.planning.headroom import (
    HeadroomCurve,
    ProviderPool,
    choose_cover,
    headroom_curves,
)
from scheduler.planning.planner import DemandForecast, Holdings, PlannerSettings, plan

UTC = dt.UTC


def _deployment() -> Deployment:
    pricing = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379)
    return Deployment(name="d", provider="sim", unit_tpm=1000, pricing=pricing,
                      max_units=1000, max_spill_fraction=0.01, scale_up_lead_minutes=5,
                      min_hold_minutes=60)


def _curve(peak_minutes: int) -> HeadroomCurve:
    """Three days of 1 unit with ``peak_minutes`` a day at 3 units."""
    day = np.full(1440, 1.0)
    day[480:480 + peak_minutes] = 3.0
    curve = headroom_curves(np.tile(day, 3), lead=5, hold=60)[0]
    assert curve is not None
    return curve


def test_a_pool_under_what_the_bound_needs_makes_the_bound_impossible() -> None:
    dep = _deployment()
    curve = _curve(600)  # 10 h a day at 3 units: 2 units leave ~29 % of demand spilled
    free = choose_cover(curve, dep, 0.009, 0.05)
    assert free is not None and free.bound_possible and free.bound_within_ceiling
    assert "not possible" not in free.describe(0.01)

    pooled = dataclasses.replace(curve, pool=ProviderPool(units=2, terms=()))
    c = choose_cover(pooled, dep, 0.009, 0.05)
    assert c is not None
    least = curve.level_spill[2]
    assert least > 0.01
    assert not c.bound_possible and not c.bound_within_ceiling
    assert c.least_spill_fraction == pytest.approx(least)
    assert c.bound_level == 2 and c.bound_spill_fraction == pytest.approx(least)
    # Every cover spills at least what the pool held all along does.
    assert c.spill_fraction >= least - 1e-12 and not c.meets_aim
    assert not c.payg_cheapest
    text = c.describe(0.01)
    assert text.startswith("meeting the 1.00% spill bound is not possible with the "
                           "provider's 2 units: least spill ")
    assert f"{least:.2%}" in text
    assert "cheaper than any reservation" not in text
    assert "sells no reservation" in text
    # The pool held all along, at the elastic rate (no term sold), is what it says.
    re = dep.pricing.elastic_unit_hour / 60.0
    assert c.bound_cost_per_minute == pytest.approx(2 * re + least * curve.mean_demand * 0.05)


def test_a_pool_the_bound_fits_in_or_no_limit_changes_nothing() -> None:
    dep = _deployment()
    curve = _curve(10)  # 10 minutes a day at 3 units: 2 units spill well under 1 %
    assert curve.level_spill[2] <= 0.01
    base = choose_cover(curve, dep, 0.009, 0.05)
    for pool in (ProviderPool(units=2, terms=()), ProviderPool(units=50, terms=()),
                 ProviderPool(units=None, terms=(30, 7))):
        c = choose_cover(dataclasses.replace(curve, pool=pool), dep, 0.009, 0.05)
        assert c is not None and base is not None and c.bound_possible
        assert (c.kind, c.level, c.headroom) == (base.kind, base.level, base.headroom)
        assert c.bound_cost_per_minute == pytest.approx(base.bound_cost_per_minute)
        assert "not possible" not in c.describe(0.01)


def test_the_planner_alerts_that_the_pool_cannot_meet_the_bound() -> None:
    now = dt.datetime(2026, 3, 9, 8, tzinfo=UTC)
    dep = _deployment()
    m = np.full(120, 3.0)
    fc = DemandForecast(now, (0.5, 0.9, 0.975), np.vstack([m, m * 1.1, m * 1.2]))
    curve = dataclasses.replace(_curve(600), pool=ProviderPool(units=2, terms=()))
    p = plan(fc, Holdings(), dep, now, settings=PlannerSettings(horizon_minutes=120,
                                                                 commit_terms=()),
             headroom=curve, spill_price=0.05)
    assert p.bound_alert is not None
    assert "not possible with the provider's 2 units" in p.bound_alert
    assert "cheaper than any reservation" not in p.bound_alert


def test_backtest_on_two_of_three_says_the_bound_is_not_possible(tmp_path: Path) -> None:
    """cases/out-of-capacity's pool (2 units, no term sold): the first cover and alert
    say the bound cannot be met with 2 units, as the hindsight optimum under the pool
    finds (bound_feasible false), and claim no reservation."""
    from bench.scenarios.suite import SCENARIOS, build, provider_capacity
    from scheduler.config import load_config
    from scheduler.ingest.files import read_usage_file
    from scheduler.planning.backtest import run_backtest

    built = build(SCENARIOS["capacity-2-of-3"], tmp_path, quick=True)
    cap = provider_capacity(built)
    assert cap is not None and cap.supported_terms == ()
    dep = load_config(built.config).deployment(built.deployment)
    s = run_backtest(read_usage_file(built.usage), dep, tmp_path / "out", start=built.start,
                     end=built.end, capacity=cap)
    assert s["baselines"]["hindsight_optimum"]["bound_feasible"] is False
    cover = s["bound"]["first_cover"]
    assert cover is not None and cover["bound_within_ceiling"] is False
    assert cover["payg_cheaper_than_any_reservation"] is False
    assert "not possible with the provider's 2 units" in cover["detail"]
    assert cover["bound_replayed_spill_fraction"] > dep.max_spill_fraction
    alert = s["bound"]["first_alert"]
    assert alert is not None and "not possible with the provider's 2 units" in alert
    assert "cheaper than any reservation" not in alert

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from scheduler.config import parse_config
from scheduler.daemon.rails import (
    commitment_within_budget,
    committed_spend_in,
    elastic_target,
)
from scheduler.planning.economics import Commitment

DEPLOYMENT = parse_config({"deployment": [
    {"name": "d", "provider": "simulated", "unit_tpm": 1000, "min_units": 1, "max_units": 10,
     "pricing": {"elastic_unit_hour": 60.0}}]}).deployments[0]


def test_stale_usage_never_scales_down() -> None:
    decision = elastic_target(planned=0, current=4, committed=1, deployment=DEPLOYMENT,
                              stale=True, max_change_per_tick=50)
    assert decision.target == 4
    assert decision.held
    up = elastic_target(planned=6, current=4, committed=1, deployment=DEPLOYMENT, stale=True,
                        max_change_per_tick=50)
    assert up.target == 6  # scaling up on stale data is still allowed


@given(planned=st.integers(0, 40), current=st.integers(0, 12), committed=st.integers(0, 12),
       stale=st.booleans(), max_change=st.integers(1, 20))
def test_rails_bounds_hold(planned: int, current: int, committed: int, stale: bool,
                           max_change: int) -> None:
    d = elastic_target(planned=planned, current=current, committed=committed,
                       deployment=DEPLOYMENT, stale=stale, max_change_per_tick=max_change)
    assert d.target >= 0
    if committed < DEPLOYMENT.max_units:
        assert committed + d.target <= DEPLOYMENT.max_units
    if committed <= DEPLOYMENT.min_units <= DEPLOYMENT.max_units:
        assert committed + d.target >= DEPLOYMENT.min_units
    within_bounds = (max(DEPLOYMENT.min_units - committed, 0)
                     <= current <= DEPLOYMENT.max_units - committed)
    if within_bounds:
        assert abs(d.target - current) <= max_change
        if stale:
            assert d.target >= current


def test_budget_counts_only_the_month() -> None:
    now = dt.datetime(2026, 3, 20, tzinfo=dt.UTC)
    new = Commitment(start=now, term_days=30, units=1)
    # 1 unit at $60/h * 0.7 = $0.70 a minute; 12 days to the end of March.
    in_month = committed_spend_in([new], DEPLOYMENT, dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
                                  dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert abs(in_month - 0.70 * 12 * 1440) < 1e-6
    assert commitment_within_budget(new=new, existing_spend_this_month=0.0,
                                    deployment=DEPLOYMENT, now=now, monthly_budget=13_000)
    assert not commitment_within_budget(new=new, existing_spend_this_month=1_000.0,
                                        deployment=DEPLOYMENT, now=now, monthly_budget=13_000)
    assert commitment_within_budget(new=new, existing_spend_this_month=1e9,
                                    deployment=DEPLOYMENT, now=now, monthly_budget=0)

from __future__ import annotations

import datetime as dt

import numpy as np

from scheduler.config import parse_config
from scheduler.planning import planner
from scheduler.planning.follow import FollowedPlan, FollowSettings

NOW = dt.datetime(2026, 3, 16, 7, 40, tzinfo=dt.UTC)
DEPLOYMENT = parse_config({"deployment": [
    {"name": "d", "provider": "simulated", "unit_tpm": 1, "scale_up_lead_minutes": 5,
     "min_hold_minutes": 60, "max_spill_fraction": 0.0,
     "pricing": {"elastic_unit_hour": 38.0}}]}).deployments[0]


def step_plan() -> planner.Plan:
    """1 unit until 08:00, 3 units from 08:00: a plan with one scale-up."""
    minutes = 120
    demand = np.where(np.arange(minutes) >= 20, 3.0, 1.0)
    levels = (0.5, 0.9)
    values = np.vstack([demand, demand])
    return planner.plan(planner.DemandForecast(NOW, levels, values), planner.Holdings(),
                        DEPLOYMENT, NOW, settings=planner.PlannerSettings(horizon_minutes=minutes))


def test_schedule_following_requests_units_lead_minutes_ahead() -> None:
    followed = FollowedPlan(step_plan(), lead=5, capped=False)
    at = NOW.replace(minute=54)
    assert followed.target(at) < 3 <= followed.target(NOW.replace(minute=55))
    assert followed.target(NOW.replace(hour=8, minute=30)) == 3


def test_capped_following_holds_the_first_target_and_replans_at_the_step() -> None:
    followed = FollowedPlan(step_plan(), lead=5)
    settings = FollowSettings(replan_minutes=30)
    first = followed.target(NOW)
    assert all(followed.target(NOW + dt.timedelta(minutes=i)) == first for i in range(60))
    due = [i for i in range(1, 30)
           if followed.why_due(NOW + dt.timedelta(minutes=i), 1.0, settings) == "need_rises"]
    # A unit requested at 07:55 serves from 08:00, when the median need steps up.
    assert due and due[0] == 15


def test_due_on_band_breach_target_change_and_period() -> None:
    followed = FollowedPlan(step_plan(), lead=5)
    settings = FollowSettings(replan_minutes=10)
    minute = dt.timedelta(minutes=1)
    assert not followed.due(NOW + minute, 1.0, settings)
    assert followed.due(NOW + minute, 5.0, settings)  # demand above the top quantile
    assert followed.due(NOW + 10 * minute, 1.0, settings)  # the periodic re-plan
    assert followed.due(NOW.replace(minute=55), 1.0, settings)  # the target changes here


def test_phase_spreads_periodic_replans() -> None:
    followed = FollowedPlan(step_plan(), lead=5)
    settings = FollowSettings(replan_minutes=10)
    due_minutes = {
        phase: [i for i in range(1, 10)
                if followed.due(NOW + dt.timedelta(minutes=i), 1.0, settings, phase=phase)]
        for phase in range(10)
    }
    periodic = {phase: [i for i in mins if i < 15] for phase, mins in due_minutes.items()}
    # Each phase re-plans on its own minute (plus the target change at 07:55, i = 15).
    firsts = {mins[0] for mins in periodic.values() if mins}
    assert len(firsts) >= 8

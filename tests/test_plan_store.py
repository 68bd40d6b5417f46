from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from scheduler.config import parse_config
from scheduler.store import deployments as deployment_store
from scheduler.store import plans as plan_store

T0 = dt.datetime(2026, 3, 9, 7, 0, tzinfo=dt.UTC)


def record(deployment_id: int, mode: str, as_of: dt.datetime) -> plan_store.PlanRecord:
    def interval(start_min: int, end_min: int, elastic: int) -> plan_store.IntervalRecord:
        return plan_store.IntervalRecord(
            start=as_of + dt.timedelta(minutes=start_min),
            end=as_of + dt.timedelta(minutes=end_min), committed_units=1,
            elastic_target=elastic, demand_quantiles={"0.5": 1.0 + elastic, "0.9": 1.2 + elastic},
            expected_spill_units=0.0)

    return plan_store.PlanRecord(
        deployment_id=deployment_id, as_of=as_of, mode=mode, horizon_minutes=240,
        forecast_run_id=None, expected_committed_cost=10.0, expected_elastic_cost=20.0,
        expected_spill_cost=1.5, dedicated_cost=60.0, payg_cost=80.0,
        expected_spill_fraction=0.001, payg_cheaper_than_unit=False, held=False,
        reasons=[{"rule": "service_level", "quantile": 0.975}],
        commitments=[{"start": as_of.isoformat(), "term_days": 30, "units": 1}],
        actions=[], intervals=[interval(0, 55, 0), interval(55, 180, 2), interval(180, 240, 0)])


def test_views_show_the_plan_in_force(engine: sa.Engine) -> None:
    config = parse_config({"deployment": [
        {"name": "bot", "provider": "simulated", "unit_tpm": 2500,
         "pricing": {"elastic_unit_hour": 38.0}}]})
    with engine.begin() as conn:
        ids = deployment_store.sync_deployments(conn, config.deployments)
        plan_store.insert_plan(conn, record(ids["bot"], "dry_run", T0))
        live = plan_store.insert_plan(conn, record(ids["bot"], "live", T0 - dt.timedelta(hours=1)))
        newer_dry = plan_store.insert_plan(conn, record(ids["bot"], "dry_run", T0))
    with engine.connect() as conn:
        current = conn.execute(sa.text("SELECT id, mode FROM current_plan")).one()
        actions = conn.execute(sa.text(
            "SELECT effective_at, change, capacity FROM next_actions ORDER BY effective_at, change"
        )).all()
        summary = conn.execute(sa.text(
            "SELECT expected_total_cost, savings_vs_dedicated, savings_vs_payg, "
            "savings_fraction_vs_dedicated FROM cost_summary")).one()
        intervals = conn.execute(sa.text(
            "SELECT count(*) FROM current_plan_interval")).scalar()
    # A live plan is the one in force, even when a dry run is newer.
    assert (current.id, current.mode) == (live, "live")
    assert newer_dry != live
    changes = [(a.effective_at - (T0 - dt.timedelta(hours=1)), a.change, a.capacity)
               for a in actions]
    assert changes == [
        (dt.timedelta(0), "commit_30d", None),
        (dt.timedelta(minutes=55), "scale_up", 3),
        (dt.timedelta(minutes=180), "scale_down", 1),
    ]
    assert summary.expected_total_cost == 31.5
    assert summary.savings_vs_dedicated == 28.5
    assert summary.savings_vs_payg == 48.5
    assert abs(summary.savings_fraction_vs_dedicated - 28.5 / 60) < 1e-12
    assert intervals == 3

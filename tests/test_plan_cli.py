from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.cli.main import EXIT_LOCKED, main
from scheduler.store import locks
from tests.daemon_support import START, cli_with_usage

NOW = START + dt.timedelta(days=14, hours=7, minutes=50)


@pytest.fixture
def base(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    args = cli_with_usage(db_url, tmp_path, until=NOW)
    capsys.readouterr()
    return args


def test_dry_run_stores_a_queryable_plan_and_sends_nothing(
    base: list[str], engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base, "plan", "--dry-run", "--now", NOW.isoformat(), "--format", "json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["horizon_minutes"] == 180
    assert summary["spill_percent"] == 0
    with engine.connect() as conn:
        plan = conn.execute(sa.text(
            "SELECT mode, expected_total_cost, dedicated_cost FROM current_plan")).one()
        peak = conn.execute(sa.text(
            "SELECT max(committed_units + elastic_target) FROM current_plan_interval "
            "WHERE \"end\" > :t"), {"t": NOW.replace(hour=8)}).scalar()
        sent = conn.execute(sa.text("SELECT count(*) FROM action")).scalar()
        held = conn.execute(sa.text("SELECT count(*) FROM sim_tranche")).scalar()
    assert plan.mode == "dry_run"
    assert 0 < plan.expected_total_cost < plan.dedicated_cost
    assert peak == 3  # the plan covers the 08:00 peak of exactly 3 units
    assert sent == 0 and held == 0  # a dry run changes nothing at the provider


def test_dry_run_is_quiet_and_refuses_to_overlap(
    base: list[str], engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base, "plan", "--dry-run", "--quiet", "--now", NOW.isoformat()]) == 0
    assert capsys.readouterr().out == ""
    with locks.try_lock(engine, locks.DRY_RUN_PLAN) as held:
        assert held
        code = main([*base, "plan", "--dry-run", "--now", NOW.isoformat()])
    assert code == EXIT_LOCKED
    assert "another `capsched plan` is running" in capsys.readouterr().err


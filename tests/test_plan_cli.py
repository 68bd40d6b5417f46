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



@pytest.mark.parametrize("horizon", ["0", "0m", "-5"])
def test_a_horizon_that_is_not_positive_is_a_usage_error(
    base: list[str], capsys: pytest.CaptureFixture[str], horizon: str
) -> None:
    for command in (["plan", "--dry-run"], ["forecast"]):
        try:
            code = main([*base, *command, "--now", NOW.isoformat(), f"--horizon={horizon}"])
        except SystemExit as exc:  # argparse's own exit for a bad option
            code = exc.code
        assert code == 2
        assert "must be positive" in capsys.readouterr().err or horizon == "-5"


def test_dry_run_at_now_counts_what_the_provider_holds_at_now(
    base: list[str], engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon's tick at NOW buys the 30-day level; a dry run five minutes later must see
    # it at the (simulated) provider and propose no second one. Before the fix the dry run
    # read the provider at the wall clock (2026-11), where nothing bought in March is held.
    assert main([*base, "run", "--once", "--now", NOW.isoformat()]) == 0
    with engine.connect() as conn:
        bought = conn.execute(sa.text("SELECT count(*) FROM sim_commitment")).scalar()
    assert bought and bought > 0
    capsys.readouterr()
    later = NOW + dt.timedelta(minutes=5)
    assert main([*base, "plan", "--dry-run", "--now", later.isoformat(), "--format", "json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["new_commitments"] == 0
    assert summary["committed_cost"] > 0  # the held commitment is priced into the plan

from __future__ import annotations

import contextlib
import datetime as dt
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.cli.main import EXIT_FAILED, EXIT_OK, main
from tests.daemon_support import START, cli_with_usage

NOW = START + dt.timedelta(days=14, hours=7, minutes=50)


@pytest.fixture
def base(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    args = cli_with_usage(db_url, tmp_path, until=NOW + dt.timedelta(hours=1))
    capsys.readouterr()
    return args


def test_health_follows_the_heartbeat(base: list[str], capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    assert main([*base, "health", "--now", NOW.isoformat()]) == EXIT_FAILED
    assert "no tick recorded yet" in capsys.readouterr().out
    assert main([*base, "run", "--once", "--now", NOW.isoformat()]) == EXIT_OK
    capsys.readouterr()
    soon = NOW + dt.timedelta(minutes=2)
    assert main([*base, "health", "--now", soon.isoformat(), "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["healthy"] is True
    late = NOW + dt.timedelta(minutes=10)
    assert main([*base, "health", "--now", late.isoformat()]) == EXIT_FAILED
    assert "older than" in capsys.readouterr().out


def test_pause_stops_sending_and_resume_sends_again(
    base: list[str], engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*base, "pause", "--reason", "maintenance"]) == EXIT_OK
    for minute in range(5):
        now = NOW + dt.timedelta(minutes=minute)
        assert main([*base, "run", "--once", "--now", now.isoformat()]) == EXIT_OK
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM action")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM plan")).scalar()
    assert main([*base, "resume"]) == EXIT_OK
    assert main([*base, "run", "--once", "--now", (NOW + dt.timedelta(minutes=6)).isoformat()]
                ) == EXIT_OK
    with engine.connect() as conn:
        sent = conn.execute(sa.text(
            "SELECT count(*) FROM action WHERE state = 'confirmed'")).scalar()
    assert sent and sent >= 1


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0)


def test_stale_usage_fails_forecast_and_dry_run_and_stores_nothing(
    base: list[str], engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #10 item 7: usage ending days ago is not a forecast or a plan."""
    fresh = NOW + dt.timedelta(minutes=30)
    assert main([*base, "plan", "--dry-run", "--quiet", "--now", fresh.isoformat()]) == EXIT_OK
    assert main([*base, "forecast", "--now", fresh.isoformat()]) == EXIT_OK
    plans, forecasts = _count(engine, "plan"), _count(engine, "forecast_run")
    capsys.readouterr()
    later = NOW + dt.timedelta(days=3)
    with _no_warnings():
        assert main([*base, "forecast", "--now", later.isoformat()]) == EXIT_FAILED
        out = capsys.readouterr()
        assert main([*base, "plan", "--dry-run", "--now", later.isoformat()]) == EXIT_FAILED
        out_plan = capsys.readouterr()
    for err in (out.err, out_plan.err):
        # One line of our own (log lines of libraries, if any, are JSON records).
        lines = [line for line in err.splitlines() if not line.startswith("{")]
        assert len(lines) == 1, err
        assert "Warning" not in err
        assert "bot: usage ends at" in lines[0] and "staleness_minutes = 10" in lines[0]
    assert "nothing stored" in out.err and "no plan stored" in out_plan.err
    assert _count(engine, "plan") == plans and _count(engine, "forecast_run") == forecasts


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        yield


def test_health_reports_ingest_lag_past_staleness(
    base: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #10 item 8 / #9: a daemon holding capacity blind pages someone."""
    late = NOW + dt.timedelta(hours=1, minutes=30)  # usage ends at NOW + 1 h
    assert main([*base, "run", "--once", "--now", late.isoformat()]) == EXIT_OK
    capsys.readouterr()
    assert main([*base, "health", "--now", late.isoformat(), "--format", "json"]) == EXIT_FAILED
    result = json.loads(capsys.readouterr().out)
    assert result["ingest_lag_minutes"] == {"bot": 30.0}
    assert any("usage ingest lags 30 min" in p and "staleness_minutes = 10" in p
               for p in result["problems"]), result["problems"]

from __future__ import annotations

import datetime as dt
import json
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

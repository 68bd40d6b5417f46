"""Issue #10 (operator trust): each test here failed on 1fa750a."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.cli import main as cli
from scheduler.cli.main import build_parser, main

CONFIG = """
[[deployment]]
name = "m-small"
provider = "simulated"
unit_tpm = 500000
max_units = 100
[deployment.pricing]
elastic_unit_hour = 38.0264
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- item 1: global options after the subcommand ------------------------------------------


def test_global_options_after_the_subcommand(
    db_url: str, config_path: Path, traces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = str(traces_dir / "servegen_m-small.csv")
    code, _, err = run(
        capsys, "ingest", trace, "--deployment", "m-small", "--config", str(config_path),
        "--database-url", db_url, "--log-format", "json", "--log-level", "warning",
    )
    assert code == 0, err
    code, out, err = run(
        capsys, "status", "--format", "json", "--config", str(config_path), "--database-url", db_url
    )
    assert code == 0, err
    assert json.loads(out)[0]["minutes_stored"] == 20160
    # Nested subcommands too.
    code, out, _ = run(
        capsys, "db", "status", "--database-url", db_url, "--config", str(config_path)
    )
    assert code == 0 and "up to date" in out


def test_global_options_after_do_not_reset_those_before(monkeypatch: pytest.MonkeyPatch) -> None:
    cli._load_extensions()
    monkeypatch.setenv("CAPSCHED_LOG_LEVEL", "error")
    args = build_parser().parse_args(
        ["--config", "a.toml", "backtest", "--usage", "u.csv", "--deployment", "d", "--out", "o",
         "--data-dir", "/tmp/x"]
    )
    assert (args.config, args.data_dir, args.log_level) == ("a.toml", "/tmp/x", "error")
    args = build_parser().parse_args(
        ["backtest", "--usage", "u.csv", "--config", "b.toml", "--deployment", "d", "--out", "o"]
    )
    assert args.config == "b.toml"




# -- item 4: read-only commands never write ------------------------------------------------


def _database_digest(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table in the public schema (the test databases are small)."""
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY relname")
        ).scalars().all()
        return {
            t: sorted((tuple(r) for r in conn.execute(sa.text(f'SELECT * FROM "{t}"'))), key=repr)
            for t in tables
        }


def test_read_only_commands_leave_the_database_unchanged(
    db_url: str, engine: sa.Engine, config_path: Path, tmp_path: Path, traces_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon_config = tmp_path / "daemon.toml"
    daemon_config.write_text(CONFIG + CONFIG.replace('"m-small"', '"m-mid"'))
    base = ("--database-url", db_url, "--log-format", "json")
    assert run(capsys, *base, "--config", str(daemon_config), "deployments", "sync")[0] == 0
    trace = str(traces_dir / "servegen_m-small.csv")
    assert run(capsys, *base, "--config", str(daemon_config), "ingest", trace,
               "--deployment", "m-small")[0] == 0
    before = _database_digest(engine)
    # A config that lacks m-mid, as an operator's laptop copy might.
    for command in (["status"], ["status", "--format", "json"], ["deployments", "list"],
                    ["deployments", "sync", "--dry-run"], ["db", "status"],
                    ["health", "--now", "2025-01-20T00:05:00Z"],
                    ["db", "prune", "--dry-run"]):
        run(capsys, *base, "--config", str(config_path), *command)
        assert _database_digest(engine) == before, command
    code, out, _ = run(capsys, *base, "--config", str(config_path), "deployments", "sync",
                       "--dry-run")
    assert code == 0 and "would deactivate: m-mid" in out
    with engine.connect() as conn:
        active = conn.execute(sa.text("SELECT name FROM deployment WHERE active ORDER BY name"))
        assert active.scalars().all() == ["m-mid", "m-small"]


def test_deployments_sync_is_the_explicit_way_to_deactivate(
    db_url: str, engine: sa.Engine, config_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon_config = tmp_path / "daemon.toml"
    daemon_config.write_text(CONFIG + CONFIG.replace('"m-small"', '"m-mid"'))
    base = ("--database-url", db_url)
    code, out, _ = run(capsys, *base, "--config", str(daemon_config), "deployments", "sync")
    assert code == 0 and "did add: m-small, m-mid" in out
    code, out, _ = run(capsys, *base, "--config", str(config_path), "deployments", "sync")
    assert code == 0 and "did deactivate: m-mid" in out
    with engine.connect() as conn:
        active = conn.execute(sa.text("SELECT name FROM deployment WHERE active ORDER BY name"))
        assert active.scalars().all() == ["m-small"]


# -- item 5: retention never drops what the daemon needs, warns, and has a dry run ---------


def test_retention_keeps_the_latest_usage_and_warns_before_dropping(
    db_url: str, engine: sa.Engine, config_path: Path, tmp_path: Path, traces_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import datetime as dt

    from structlog.testing import capture_logs

    from scheduler.store import retention

    base = ("--database-url", db_url, "--config", str(config_path), "--log-format", "json")
    trace = str(traces_dir / "servegen_m-small.csv")  # 2025-01-06 .. 2025-01-19
    assert run(capsys, *base, "ingest", trace, "--deployment", "m-small")[0] == 0
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)  # the trace is 679 days old
    with engine.begin() as conn:
        assert retention.prune(conn, now, 400) == []  # the daemon still fits on it
    # `db prune` (clock: today) keeps it too, and its dry run says so.
    code, out, _ = run(capsys, *base, "db", "prune", "--dry-run")
    assert code == 0 and "nothing to drop" in out
    # Once newer usage exists, the old months are past both bounds.
    recent = tmp_path / "recent.csv"
    recent.write_text("minute_utc,input_tokens,output_tokens,requests\n"
                      "2026-11-28T00:00:00Z,10,1,1\n")
    assert run(capsys, *base, "ingest", str(recent), "--deployment", "m-small")[0] == 0
    with engine.begin() as conn:
        assert retention.prune(conn, now, 400, dry_run=True) == ["usage_hour_p202501"]
    code, out, _ = run(capsys, *base, "db", "prune", "--dry-run")
    assert "would drop usage_hour_p202501" in out
    with engine.begin() as conn, capture_logs() as logs:
        assert retention.prune(conn, now, 400) == ["usage_hour_p202501"]
    (warning,) = [e for e in logs if e["event"] == "retention.dropping"]
    assert warning["log_level"] == "warning" and warning["partitions"] == ["usage_hour_p202501"]


# -- item 17: the read-only role ----------------------------------------------------------


def test_capsched_reader_reads_the_views_and_nothing_else(engine: sa.Engine) -> None:
    import uuid

    views = ("usage", "usage_minute", "forecast_point", "latest_forecast", "current_plan",
             "current_plan_interval", "next_actions", "cost_summary", "pending_actions",
             "service_level_month")
    user = f"capsched_test_reader_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        # As the README says to connect: a login role that is a member of capsched_reader.
        conn.execute(sa.text(f"CREATE ROLE {user} LOGIN IN ROLE capsched_reader"))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"SET ROLE {user}"))
            for view in views:
                conn.execute(sa.text(f"SELECT * FROM {view} LIMIT 1")).all()
            for statement in ("SELECT * FROM usage_hour LIMIT 1", "SELECT * FROM action LIMIT 1",
                              "DELETE FROM deployment",
                              "INSERT INTO ingest_batch (file) VALUES ('x')"):
                with (pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                      conn.begin_nested()):
                    conn.execute(sa.text(statement))
            conn.rollback()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP ROLE {user}"))

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


# -- item 6: a multi-file ingest is all-or-nothing -----------------------------------------

HEADER = "minute_utc,input_tokens,output_tokens,requests\n"


def _usage_rows(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(sa.text("SELECT count(*) FROM usage")).scalar_one(),
                conn.execute(sa.text("SELECT count(*) FROM ingest_batch")).scalar_one())


def test_multi_file_ingest_writes_nothing_when_one_file_is_bad(
    db_url: str, engine: sa.Engine, config_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ok = tmp_path / "ok.csv"
    ok.write_text(HEADER + "2026-03-02T00:00:00Z,1,1,1\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "2026-03-02T00:01:00Z,x,1,1\n")
    base = ("--database-url", db_url, "--config", str(config_path))
    code, _, err = run(capsys, *base, "ingest", str(ok), str(bad), "--deployment", "m-small")
    assert code == cli.EXIT_FAILED
    assert f"{bad}:2:2: input_tokens:" in err
    assert _usage_rows(engine) == (0, 0)
    code, _, err = run(capsys, *base, "ingest", str(ok), "--deployment", "m-small")
    assert code == 0 and _usage_rows(engine) == (1, 1)


# -- item 9: timestamps outside a window around now, bounded partitions --------------------


def _partitions(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'usage_hour_p%'")).scalar_one())


@pytest.mark.parametrize(
    ("rows", "where"),
    [
        (["2025-06-02T00:00:00Z", "2099-01-01T00:00:00Z"], ":3:1: minute_utc: 2099-01-01T00:00Z"),
        (["1970-01-01T00:00:00Z", "2025-06-02T00:00:00Z"], ":2:1: minute_utc: 1970-01-01T00:00Z"),
        (["2025-06-02T00:00:00Z", "9999-12-31T23:59:00Z"], ":3:1: minute_utc: 9999-12-31T23:59Z"),
        (["0001-01-01T00:00:00Z", "2025-06-02T00:00:00Z"], ":2:1: minute_utc: 0001-01-01T00:00Z"),
        # Inside the window, but 17 months from the file's other rows.
        (["2025-01-02T00:00:00Z", "2025-01-03T00:00:00Z", "2026-06-02T00:00:00Z"],
         ":4:1: minute_utc: 2026-06-02T00:00Z is more than 400 days"),
    ],
)
def test_minutes_outside_the_window_are_rejected_with_their_location(
    db_url: str, engine: sa.Engine, config_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], rows: list[str], where: str,
) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + "".join(f"{m},1,1,1\n" for m in rows))
    before = _partitions(engine)
    code, _, err = run(capsys, "--database-url", db_url, "--config", str(config_path),
                       "ingest", str(path), "--deployment", "m-small")
    assert code == cli.EXIT_FAILED
    assert f"{path}{where}" in err
    assert _partitions(engine) == before and _usage_rows(engine) == (0, 0)


def test_the_window_is_configurable(
    db_url: str, engine: sa.Engine, tmp_path: Path, traces_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[ingest]\nmax_age_days = 30\n" + CONFIG)
    trace = str(traces_dir / "servegen_m-small.csv")  # January 2025
    code, _, err = run(capsys, "--database-url", db_url, "--config", str(config),
                       "ingest", trace, "--deployment", "m-small")
    assert code == cli.EXIT_FAILED and "max_age_days = 30" in err


def test_push_rejects_year_9999_without_creating_partitions(engine: sa.Engine) -> None:
    import http.client

    from scheduler.config import parse_config
    from scheduler.ingest.push import PushServer
    from scheduler.store import deployments as deployment_store

    config = parse_config({"deployment": [{"name": "m-small", "provider": "simulated",
                                           "unit_tpm": 2500,
                                           "pricing": {"elastic_unit_hour": 38.0}}]})
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, config.deployments)
    before = _partitions(engine)
    body = (HEADER + "2026-03-02T00:00:00Z,1,1,1\n9999-12-31T23:59:00Z,1,1,1\n").encode()
    with PushServer(engine, "t0ken", address="127.0.0.1:0") as push:
        conn = http.client.HTTPConnection("127.0.0.1", push.port, timeout=60)
        conn.request("POST", "/v1/usage?deployment=m-small&source=gw", body=body,
                     headers={"Authorization": "Bearer t0ken", "Content-Type": "text/csv"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
    assert response.status == 422
    assert ":3:1: minute_utc: 9999-12-31T23:59Z is outside the accepted window" in str(answer)
    assert _partitions(engine) == before


# -- item 10: one count validator for CSV and JSON Lines, a plausibility ceiling -----------

BAD_COUNTS = [
    ("9223372036854775807", "count too large"),
    (str(2**62 + 1), "count too large"),
    ("1e3", "not a non-negative integer"),
    ("5e2", "not a non-negative integer"),
    ("1_000", "not a non-negative integer"),
    ("١٢", "not a non-negative integer"),
    ("+5", "not a non-negative integer"),
    ("5.0", "not a non-negative integer"),
    ("-3", "negative count"),
    ("1" * 100_000, "count too large: 100,000 digits"),
]


@pytest.mark.parametrize(("cell", "why"), BAD_COUNTS, ids=[c[:12] for c, _ in BAD_COUNTS])
def test_csv_and_jsonl_reject_the_same_counts_with_a_location(cell: str, why: str) -> None:
    from scheduler.ingest.files import UsageFileError, parse_usage_bytes

    csv_body = HEADER + "2026-03-02T00:00:00Z,1,1,1\n" + f"2026-03-02T00:01:00Z,1,{cell},1\n"
    with pytest.raises(UsageFileError) as caught:
        parse_usage_bytes(csv_body.encode(), "u.csv")
    assert str(caught.value).startswith(f"u.csv:3:3: output_tokens: {why}")
    assert len(str(caught.value)) < 300
    number = cell if cell.isascii() and cell.lstrip("+-").replace(".", "").isalnum() else None
    if number is None or not (number[0].isdigit() or number[0] == "-") or "_" in number:
        json_cell = json.dumps(cell)  # not a JSON number: a string must be rejected as well
        why = "not a non-negative integer"
    else:
        json_cell = number
    jsonl_body = (
        '{"minute_utc": "2026-03-02T00:00:00Z", "input_tokens": 1, "output_tokens": 1, '
        '"requests": 1}\n'
        f'{{"minute_utc": "2026-03-02T00:01:00Z", "input_tokens": 1, "output_tokens": '
        f'{json_cell}, "requests": 1}}\n'
    )
    with pytest.raises(UsageFileError) as caught:
        parse_usage_bytes(jsonl_body.encode(), "u.jsonl")
    assert str(caught.value).startswith(f"u.jsonl:2:3: output_tokens: {why}")
    assert len(str(caught.value)) < 300


def test_plain_digits_still_take_the_fast_path_and_are_read() -> None:
    from scheduler.ingest.files import parse_usage_bytes

    body = HEADER + "2026-03-02T00:00:00Z,0,10,7\n2026-03-02T00:01:00Z,123456789,4,0\n"
    parsed = parse_usage_bytes(body.encode(), "u.csv")
    assert parsed.input_tokens.tolist() == [0, 123456789]
    assert parsed.output_tokens.tolist() == [10, 4]


def test_a_minute_above_the_plausibility_ceiling_is_rejected(
    db_url: str, engine: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "c.toml"
    # 10 x 100 units x 500,000 tokens per minute = 5x10^8 weighted tokens per minute.
    config.write_text("[ingest]\nplausibility_factor = 10\n" + CONFIG)
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + "2026-03-02T00:00:00Z,400000000,0,1\n"
                    "2026-03-02T00:01:00Z,400000000,40000000,1\n")
    code, _, err = run(capsys, "--database-url", db_url, "--config", str(config),
                       "ingest", str(path), "--deployment", "m-small")
    assert code == cli.EXIT_FAILED
    assert f"{path}:3:2: input_tokens: implausible: 520,000,000 weighted tokens" in err
    assert _usage_rows(engine) == (0, 0)
    config.write_text("[ingest]\nplausibility_factor = 0\n" + CONFIG)
    assert run(capsys, "--database-url", db_url, "--config", str(config),
               "ingest", str(path), "--deployment", "m-small")[0] == 0


# -- item 15: every log line is JSON, real action kinds, no RuntimeDirWarning --------------


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_library_loggers_and_warnings_are_json_lines(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import logging, warnings\n"
        "from scheduler.observe.logs import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "logging.getLogger('apscheduler.scheduler').warning('Execution of job \"tick\" skipped: "
        "maximum number of running instances reached (1)')\n"
        "logging.getLogger('alembic.runtime.migration').info('Running upgrade 0007 -> 0008')\n"
        "logging.getLogger('apscheduler.executors').error('boom', exc_info=ValueError('x'))\n"
        "warnings.warn('something a library warns about', UserWarning)\n"
        "warnings.warn('XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-0')\n"
        # Routine lines every command or tick would print (cron mail): dropped at info.
        "logging.getLogger('alembic.runtime.migration').info('Context impl PostgresqlImpl.')\n"
        "logging.getLogger('apscheduler.executors.default').info("
        "'Job \"tick\" executed successfully')\n"
        "logging.getLogger('pgserver').info('running pg_ctl... pg_ctl_args=[]')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=60)
    lines = _json_lines(result.stderr)
    events = [str(line["event"]) for line in lines]
    assert any("maximum number of running instances" in e for e in events)
    assert any("Running upgrade" in e for e in events)
    assert any("something a library warns about" in e for e in events)
    assert not any("XDG_RUNTIME_DIR" in e for e in events)
    assert not any("Context impl" in e or "executed successfully" in e or "pg_ctl" in e
                   for e in events)
    aps = next(line for line in lines if "maximum number" in str(line["event"]))
    assert aps["level"] == "warning" and aps["logger"] == "apscheduler.scheduler"


def test_embedded_command_prints_no_runtime_dir_warning(tmp_path: Path,
                                                         config_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CAPSCHED_") and k != "XDG_RUNTIME_DIR"}
    result = subprocess.run(
        [sys.executable, "-m", "scheduler", "--config", str(config_path), "--log-format", "json",
         "--data-dir", str(tmp_path / "pgdata"), "db", "upgrade"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "RuntimeDirWarning" not in result.stderr and "XDG_RUNTIME_DIR" not in result.stderr
    _json_lines(result.stderr)  # alembic's lines included


def test_actions_total_carries_the_action_kind(engine: sa.Engine, tmp_path: Path) -> None:
    import datetime as dt

    from scheduler.daemon.providers import ProviderSet
    from scheduler.daemon.tick import Daemon, set_provider_clocks
    from scheduler.ingest.write import ingest_files
    from tests.daemon_support import START, config, write_trace

    cfg, _ = config(tmp_path)
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id="kinds")
    day = START + dt.timedelta(days=14)
    now = day.replace(hour=7, minute=45)
    set_provider_clocks(providers, cfg, lambda: now)
    trace = write_trace(tmp_path / "usage.csv", 0, until=day + dt.timedelta(days=1))
    ingest_files(engine, [str(trace)], deployment="bot", source="gw", now=day)
    try:
        for i in range(3):
            now = day.replace(hour=7, minute=45 + i)
            daemon.tick(now)
        samples = [
            s for family in daemon.metrics.registry.collect()
            if family.name == "capsched_actions" for s in family.samples
            if s.name == "capsched_actions_total"
        ]
    finally:
        daemon.close()
    kinds = {s.labels["kind"] for s in samples if s.value > 0}
    assert kinds and kinds <= {"elastic_set_target", "buy_commitment"}, samples


# -- item 16: push tokens scoped to deployments and sources --------------------------------


def test_push_tokens_are_scoped_to_deployments_and_sources(engine: sa.Engine) -> None:
    import http.client

    from scheduler.config import ConfigError, parse_config
    from scheduler.ingest.push import PushServer, scoped_tokens
    from scheduler.store import deployments as deployment_store

    def deployment(name: str) -> dict[str, object]:
        return {"name": name, "provider": "simulated", "unit_tpm": 2500,
                "pricing": {"elastic_unit_hour": 38.0}}

    raw = {"deployment": [deployment("m-small"), deployment("other")],
           "push_token": [{"name": "gw-eu", "deployments": ["m-small"], "sources": ["gw-eu"]},
                          {"name": "all", "deployments": ["*"]}]}
    config = parse_config(raw)
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, config.deployments)
    # Secrets come from the environment (or credentials / token_file), never the config.
    tokens = scoped_tokens(config, env={"CAPSCHED_PUSH_TOKEN_GW_EU": "eu-secret",
                                        "CAPSCHED_PUSH_TOKEN_ALL": "all-secret"})
    body = (HEADER + "2026-03-02T00:00:00Z,1,1,1\n").encode()
    with_column = ("deployment," + HEADER + "other,2026-03-02T00:00:00Z,1,1,1\n").encode()

    def push(token: str, query: str, payload: bytes = body) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", f"/v1/usage?{query}", body=payload,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        return response.status, text

    with PushServer(engine, "", address="127.0.0.1:0", scoped=tokens) as server:
        assert push("eu-secret", "deployment=other&source=gw-eu")[0] == 403
        assert push("eu-secret", "deployment=m-small&source=gw-us")[0] == 403
        status, text = push("eu-secret", "source=gw-eu", with_column)
        assert status == 403 and "may not write deployment 'other'" in text
        assert _usage_rows(engine) == (0, 0)
        assert push("nope", "deployment=m-small&source=gw-eu")[0] == 401
        assert push("eu-secret", "deployment=m-small&source=gw-eu")[0] == 200
        assert push("all-secret", "deployment=other&source=anything")[0] == 200
    assert _usage_rows(engine) == (2, 2)

    bad = dict(raw, push_token=[{"name": "x", "deployments": ["nope"]}])
    with pytest.raises(ConfigError, match="push_token 'x': key 'deployments': no deployment"):
        parse_config(bad)
    with pytest.raises(ConfigError, match="unknown key 'token'"):
        parse_config(dict(raw, push_token=[{"name": "x", "deployments": ["*"], "token": "s"}]))


def test_partitions_per_batch_are_bounded_even_with_the_window_opened(
    db_url: str, engine: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[ingest]\nmax_age_days = 3000000\nmax_future_minutes = 5000000000\n"
                      "max_span_days = 4000000\n" + CONFIG)
    path = tmp_path / "usage.csv"
    path.write_text(HEADER + "0001-01-01T00:00:00Z,1,1,1\n2026-03-02T00:00:00Z,1,1,1\n"
                    "9999-12-31T23:59:00Z,1,1,1\n")
    before = _partitions(engine)
    code, _, err = run(capsys, "--database-url", db_url, "--config", str(config),
                       "ingest", str(path), "--deployment", "m-small")
    assert code == cli.EXIT_FAILED
    assert "a batch spanning 119988 months of usage_hour (limit 36)" in err
    assert _partitions(engine) == before and _usage_rows(engine) == (0, 0)

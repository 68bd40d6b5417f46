from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.cli.main import EXIT_FAILED, EXIT_SCHEMA, EXIT_USAGE, main

CONFIG = """
[[deployment]]
name = "m-small"
provider = "simulated"
unit_tpm = 500000
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


def test_ingest_and_status(
    db_url: str, config_path: Path, traces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("--config", str(config_path), "--database-url", db_url, "--log-format", "json")
    trace = str(traces_dir / "servegen_m-small.csv")
    assert run(capsys, *base, "ingest", trace, "--deployment", "m-small")[0] == 0
    code, out, _ = run(capsys, *base, "status", "--format", "json", "--now", "2025-01-20T00:05:00Z")
    assert code == 0
    (status,) = json.loads(out)
    assert status["minutes_stored"] == 20160
    assert status["last_minute"] == "2025-01-19T23:59Z"
    assert status["ingest_lag_minutes"] == 5.0


def test_bad_file_exit_code_and_message(
    db_url: str, config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "minute_utc,input_tokens,output_tokens,requests\n"
        "2026-03-02T00:00:00Z,1,1,1\n2026-03-02T00:01:00Z,x,1,1\n"
    )
    code, _, err = run(
        capsys,
        "--config",
        str(config_path),
        "--database-url",
        db_url,
        "ingest",
        str(bad),
        "--deployment",
        "m-small",
    )
    assert code == EXIT_FAILED
    assert f"{bad}:3:2: input_tokens: not a non-negative integer" in err


def test_bad_config_and_old_schema(
    empty_db_url: str, config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(CONFIG.replace("unit_tpm = 500000", "unit_tpm = -1"))
    code, _, err = run(capsys, "--config", str(broken), "status")
    assert code == EXIT_USAGE
    assert "deployment 'm-small': key 'unit_tpm' must be > 0" in err
    code, _, err = run(
        capsys, "--config", str(config_path), "--database-url", empty_db_url, "status"
    )
    assert code == EXIT_SCHEMA
    assert "capsched db upgrade" in err


def test_embedded_database_survives_restarts(
    tmp_path: Path, config_path: Path, traces_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSCHED_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")

    def capsched(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "scheduler",
                "--config",
                str(config_path),
                "--log-format",
                "json",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    assert capsched("db", "upgrade").returncode == 0, "embedded upgrade failed"
    trace = str(traces_dir / "servegen_m-small.csv")
    ingest = capsched("ingest", trace, "--deployment", "m-small")
    assert ingest.returncode == 0, ingest.stderr
    # A new process starts the server again on the same data directory.
    status = capsched("status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["minutes_stored"] == 20160
    assert (tmp_path / "xdg" / "capsched" / "pgdata").is_dir()


def test_status_shows_where_each_pull_source_stands(
    db_url: str, config_path: Path, traces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing or stale pull source is visible from `capsched status`, without SQL."""
    import datetime as dt

    from scheduler import database as db
    from scheduler.store import deployments as deployment_store
    from scheduler.store import sources as source_store

    base = ("--config", str(config_path), "--database-url", db_url)
    trace = str(traces_dir / "servegen_m-small.csv")
    assert run(capsys, *base, "ingest", trace, "--deployment", "m-small")[0] == 0
    code, out, _ = run(capsys, *base, "status")
    assert code == 0 and "SOURCE" not in out  # no pull source: no second table

    at = dt.datetime(2025, 1, 20, 0, 5, tzinfo=dt.UTC)
    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            ident = deployment_store.deployment_ids(conn, ["m-small"])["m-small"]
            source_store.record_success(conn, ident, "prom", "prometheus",
                                        high_water=at - dt.timedelta(minutes=5),
                                        now=at - dt.timedelta(minutes=4), minutes=60)
            source_store.record_failure(conn, ident, "prom", "prometheus", now=at,
                                        error="connection refused")
    finally:
        engine.dispose()
    code, out, _ = run(capsys, *base, "status", "--format", "json")
    assert code == 0
    (status,) = json.loads(out)
    assert status["pull_sources"] == [{
        "source": "prom", "kind": "prometheus", "high_water": "2025-01-20T00:00Z",
        "last_success_at": "2025-01-20T00:01Z", "failures": 1, "stale": True,
        "last_error": "connection refused"}]
    code, out, _ = run(capsys, *base, "status")
    row = next(line for line in out.splitlines() if line.startswith("m-small") and "prom" in line)
    assert "connection refused" in row and "yes" in row.split()

"""A synthetic deployment for daemon tests: 3 units 08:00-18:00 UTC, 1 unit otherwise."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from scheduler.config import Config, parse_config
from scheduler.ingest.files import write_usage_csv

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # a Monday
PEAK = (3750, 1250)  # 3,750 + 3 x 1,250 = 7,500 weighted tokens = 3 units of 2,500
OFF_PEAK = (1249, 417)  # 2,500 weighted tokens = 1 unit

#: The daemon and provider sections every daemon test shares.
DAEMON_SECTIONS = """
[daemon]
staleness_minutes = 10
plan_horizon_minutes = 180
history_days = 14
refit_minutes = 60
commit_decision_time = "02:00"

[providers.simulated]
lead_time_minutes = 5
min_hold_minutes = 60
"""

CONFIG = DAEMON_SECTIONS + """
[[deployment]]
name = "bot"
provider = "simulated"
unit_tpm = 2500
max_units = 20
scale_up_lead_minutes = 5
min_hold_minutes = 60
max_spill_fraction = 0.0
[deployment.pricing]
elastic_unit_hour = 38.0264
dedicated_unit_month = 27379
"""


def write_trace(path: Path, days: int, *, until: dt.datetime | None = None) -> Path:
    end = until or START + dt.timedelta(days=days)
    minutes = int((end - START).total_seconds() // 60)

    def rows():  # type: ignore[no-untyped-def]
        for i in range(minutes):
            t = START + dt.timedelta(minutes=i)
            inp, out = PEAK if 8 <= t.hour < 18 else OFF_PEAK
            yield t, inp, out, 10

    with path.open("w") as handle:
        write_usage_csv(rows(), handle)
    return path


def config(tmp_path: Path, extra: str = "") -> tuple[Config, Path]:
    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG + extra)
    return parse_config(__import__("tomllib").loads(path.read_text()), path=path), path


def cli_with_usage(db_url: str, tmp_path: Path, until: dt.datetime) -> list[str]:
    """Global CLI arguments for a database holding the synthetic usage up to ``until``."""
    from scheduler.cli.main import main

    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG)
    args = ["--config", str(path), "--database-url", db_url]
    trace = write_trace(tmp_path / "usage.csv", 0, until=until)
    assert main([*args, "ingest", str(trace), "--deployment", "bot"]) == 0
    return args


def kill_advisory_lock_holders(libpq_url: str, *, timeout: float = 30.0) -> None:
    """Terminate every other session holding an advisory lock (as a crash or a database
    restart would) and wait until those backends are gone, so their locks are free.

    The wait is for the database, not the code under test: a terminated backend releases
    its locks as it exits, a moment after the kill, later on a busy machine.
    """
    import time

    import psycopg

    with psycopg.connect(libpq_url, autocommit=True) as admin:
        # Terminated in the select list: in WHERE the planner may call it before the
        # filter that spares this session. Only this database's sessions are touched.
        killed = [pid for pid, _ in admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()]
        deadline = time.monotonic() + timeout
        while killed and time.monotonic() < deadline:
            held = admin.execute("SELECT count(*) FROM pg_locks WHERE pid = ANY(%s)",
                                 (killed,)).fetchone()
            if held is None or held[0] == 0:
                return
            time.sleep(0.05)
        if killed:
            raise TimeoutError(f"backends {killed} still hold locks {timeout} s after the kill")

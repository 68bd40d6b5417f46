"""A synthetic deployment for daemon tests: 3 units 08:00-18:00 UTC, 1 unit otherwise."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from scheduler.config import Config, parse_config
from scheduler.usagefile import write_usage_csv

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
    from scheduler.cli import main

    path = tmp_path / "capsched.toml"
    path.write_text(CONFIG)
    args = ["--config", str(path), "--database-url", db_url]
    trace = write_trace(tmp_path / "usage.csv", 0, until=until)
    assert main([*args, "ingest", str(trace), "--deployment", "bot"]) == 0
    return args

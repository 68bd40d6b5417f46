"""Realised cost (#13): ``cost_day`` / ``cost_month`` against docs/economics.md.

* the field case of docs/economics.md, written into the ledger by hand, costs its
  published $41,981.13 and dedicated $82,137 per 30 days;
* a week replayed by the daemon (``capsched run --replay-from``) costs, in ``cost_month``,
  to the cent what the contract gives applied here, minute by minute in plain Python, to
  the ledger's held capacity, the simulated provider's own commitment records and the
  usage trace the test wrote (not the database's copy of it).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import sqlalchemy as sa

from scheduler.config import parse_config
from scheduler.ingest.files import write_usage_csv
from scheduler.ingest.write import ingest_files
from scheduler.observe.metrics import Metrics
from scheduler.store import costs, ledger
from scheduler.store import deployments as deployment_store
from tests.daemon_support import CONFIG, OFF_PEAK, PEAK, START, write_trace

#: docs/economics.md's field case prices dedicated at $27,379 per unit-month and the
#: elastic hour at the same hourly rate.
FIELD_CONFIG = CONFIG.replace("elastic_unit_hour = 38.0264",
                              f"elastic_unit_hour = {27379 / 720!r}")


def _sync(engine: sa.Engine, text: str) -> dict[str, int]:
    with engine.begin() as conn:
        return deployment_store.sync_deployments(
            conn, parse_config(tomllib.loads(text)).deployments)


def _usage(t: dt.datetime) -> tuple[int, int]:
    return PEAK if 8 <= t.hour < 18 else OFF_PEAK


def test_the_field_case_costs_what_the_contract_publishes(
    engine: sa.Engine, tmp_path: Path
) -> None:
    ids = _sync(engine, FIELD_CONFIG)
    bot = ids["bot"]
    start = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    minutes = [start + dt.timedelta(minutes=i) for i in range(30 * 1440)]
    trace = tmp_path / "usage.csv"
    with trace.open("w") as handle:
        write_usage_csv(((t, *_usage(t), 10) for t in minutes), handle)
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")
    with engine.begin() as conn:
        ledger.record_capacity(conn, [
            ledger.CapacityRecord(bot, t, 1, 2 if 8 <= t.hour < 18 else 0) for t in minutes])
        costs.record_commitments(
            conn, {bot: [("c-30", 1, 30, start, start + dt.timedelta(days=30))]})
        written = costs.roll_up(conn, [bot], start + dt.timedelta(days=31))
    assert written == 30
    with engine.connect() as conn:
        month = conn.execute(sa.text(
            "SELECT * FROM cost_month WHERE deployment = 'bot'")).mappings().one()
        days = costs.cost_days(conn, [bot], start, start + dt.timedelta(days=30),
                               now=start + dt.timedelta(days=31))
    # docs/economics.md: "commits 1 unit for 30 days ($19,165.30) and reserves 2 elastic
    # units for the 10 peak hours ($22,815.83): $41,981.13"; dedicated 3 x $27,379.
    assert round(month["committed_cost"], 2) == 19165.30
    assert round(month["elastic_cost"], 2) == 22815.83
    assert round(month["total_cost"], 2) == 41981.13
    assert round(month["dedicated_cost"], 2) == 82137.00
    assert month["spill_cost"] == 0 and month["spill_fraction"] == 0
    assert month["minutes_billed"] == month["minutes_covered"] == 30 * 1440
    def payg(tokens: tuple[int, int]) -> float:
        return (tokens[0] * 2.50 + tokens[1] * 10.00) / 1e6

    assert round(month["payg_cost"], 2) == round(30 * 60 * (10 * payg(PEAK)
                                                          + 14 * payg(OFF_PEAK)), 2)
    whole = costs.totals(bot, days)
    assert round(whole.total, 2) == 41981.13 and round(whole.dedicated, 2) == 82137.00

    # The daemon's gauges: month to date at the end of the 30 days (stored days + raw).
    with engine.connect() as conn:
        mtd = costs.month_to_date(conn, [bot], start + dt.timedelta(days=30) - dt.timedelta(
            minutes=1))[bot]
    metrics = Metrics()
    metrics.set_cost_month_to_date("bot", {"committed": mtd.committed, "elastic": mtd.elastic,
                                           "spill": mtd.spill}, mtd.spill_fraction)
    value = metrics.registry.get_sample_value(
        "capsched_cost_month_to_date_dollars", {"deployment": "bot", "tier": "elastic"})
    assert value is not None and abs(value - month["elastic_cost"]) < 38.03 / 60 * 2 + 1e-6
    assert metrics.registry.get_sample_value(
        "capsched_spill_fraction_month_to_date", {"deployment": "bot"}) == 0.0


def test_cost_month_of_a_replayed_week_equals_the_contract_to_the_cent(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    config_path = tmp_path / "capsched.toml"
    config_path.write_text(CONFIG)
    ids = _sync(engine, CONFIG)
    replay_from = START + dt.timedelta(days=14)
    week_end = replay_from + dt.timedelta(days=7)
    trace = write_trace(tmp_path / "usage.csv", 0, until=week_end + dt.timedelta(days=1))
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSCHED_")}
    env.update(CAPSCHED_CONFIG=str(config_path), CAPSCHED_DATABASE_URL=db_url,
               CAPSCHED_LOG_FORMAT="json")
    # 2 replayed hours a wall second: a tick about every 0.5 s of wall time at most; the
    # ledger holds the minutes that were ticked (coalesced ticks skip some), and the
    # contract below is applied to exactly those.
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run", "--replay-from", replay_from.isoformat(),
         "--speed", "7200"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)

    def last_minute() -> dt.datetime | None:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT max(minute) FROM capacity_minute")).scalar()

    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            last = last_minute()
            if last is not None and last >= week_end:
                break
            assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(1)
        else:
            raise AssertionError(f"the replay did not reach {week_end} (at {last_minute()})")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]

    bot = ids["bot"]
    with engine.begin() as conn:
        # The daemon rolled up the days it saw settle; this rolls up the rest.
        conn.execute(sa.text("DELETE FROM capacity_minute WHERE minute >= :end"),
                     {"end": week_end})
        costs.roll_up(conn, [bot], week_end + dt.timedelta(days=1))
    with engine.connect() as conn:
        month = conn.execute(sa.text(
            "SELECT * FROM cost_month WHERE deployment = 'bot'")).mappings().one()
        held = conn.execute(sa.text(
            "SELECT minute, committed_units, elastic_units FROM capacity_minute "
            "WHERE deployment_id = :id ORDER BY minute"), {"id": bot}).all()
        bought = conn.execute(sa.text(
            'SELECT units, term_days, start, "end" FROM sim_commitment')).all()
    # At this speed ticks coalesce (measured 37 to 113 ledger minutes over the week on a
    # shared 2-core machine); the contract is applied to exactly the minutes recorded.
    assert len(held) >= 20, "the replay must have recorded minutes across the week"
    assert held[-1][0] - held[0][0] > dt.timedelta(days=6)
    assert any(eu > 0 for _, _, eu in held), "the week must include elastic peaks"

    # The contract, minute by minute, independently of scheduler/store/costs.py.
    hour_rate, d7, d30, ded_month = 38.0264, 0.15, 0.30, 27379.0
    committed = elastic = spill_cost = payg = demand_sum = spill_sum = 0.0
    peak = 0.0
    for minute, cu, eu in held:
        active = [(u, term) for u, term, s, e in bought if s <= minute < e]
        assert sum(u for u, _ in active) == cu, minute
        committed += sum(u * hour_rate * (1 - (d7 if term == 7 else d30)) / 60
                         for u, term in active)
        elastic += eu * hour_rate / 60
        inp, out = _usage(minute)
        demand = (inp + 3 * out) / 2500
        spilled = max(0.0, demand - (cu + eu))
        minute_payg = (inp * 2.50 + out * 10.00) / 1e6
        spill_cost += spilled / demand * minute_payg
        payg += minute_payg
        demand_sum += demand
        spill_sum += spilled
        peak = max(peak, demand)
    dedicated = -(-peak // 1) * ded_month * len(held) / 43_200
    assert committed > 0, "the week should include a commitment (the field case buys one)"
    for column, expected in [("committed_cost", committed), ("elastic_cost", elastic),
                             ("spill_cost", spill_cost), ("payg_cost", payg),
                             ("dedicated_cost", dedicated),
                             ("total_cost", committed + elastic + spill_cost)]:
        assert abs(month[column] - expected) < 0.005, (column, month[column], expected)
        assert round(month[column], 2) == round(expected, 2), column
    assert month["minutes_billed"] == len(held)
    assert abs(month["spill_unit_minutes"] - spill_sum) < 1e-6
    assert abs(month["demand_unit_minutes"] - demand_sum) < 1e-6


def test_retention_rolls_the_ledger_up_before_dropping_its_months(
    engine: sa.Engine, tmp_path: Path
) -> None:
    from scheduler.store import retention

    bot = _sync(engine, CONFIG)["bot"]
    day = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    minutes = [day + dt.timedelta(minutes=i) for i in range(1440)]
    trace = tmp_path / "usage.csv"
    with trace.open("w") as handle:
        write_usage_csv(((t, *_usage(t), 10) for t in minutes), handle)
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")
    with engine.begin() as conn:
        ledger.record_capacity(conn, [ledger.CapacityRecord(bot, t, 0, 3) for t in minutes])
    now = dt.datetime(2026, 4, 15, tzinfo=dt.UTC)
    with engine.begin() as conn:
        dropped = retention.prune(conn, now, retention_days=400)
    assert "capacity_minute_p202601" in dropped
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM capacity_minute")).scalar() == 0
        (kept,) = costs.stored_days(conn, [bot], day.date(), day.date() + dt.timedelta(days=1))
    assert round(kept.elastic_cost, 2) == round(3 * 24 * 38.0264, 2)
    assert kept.minutes_covered == 1440 and kept.spill_cost == 0

"""The capacity ledger: what the provider held each minute, the realised service level
(spill-to-date) computed from it and the usage, and how it reaches the plans."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from scheduler import database as db
from scheduler.cli.main import main
from scheduler.config import Config, parse_config
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.tick import Daemon, set_provider_clocks
from scheduler.ingest.files import write_usage_csv
from scheduler.ingest.write import ingest_files
from scheduler.pipeline import plan as planrun
from scheduler.planning.planner import SpillToDate
from scheduler.store import deployments as deployment_store
from scheduler.store import ledger
from scheduler.store import usage as usage_store
from tests.daemon_support import DAEMON_SECTIONS, OFF_PEAK, PEAK, START

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def minute(i: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=i)


# -- the store ------------------------------------------------------------------------------

STORE_CONFIG = {
    "deployment": [
        {"name": "a", "provider": "simulated", "unit_tpm": 1000, "output_token_weight": 3,
         "max_spill_fraction": 0.02, "pricing": {"elastic_unit_hour": 38.0}},
        {"name": "b", "provider": "simulated", "unit_tpm": 2000, "output_token_weight": 3,
         "max_spill_fraction": 0.01, "pricing": {"elastic_unit_hour": 38.0}},
        {"name": "idle", "provider": "simulated", "unit_tpm": 1000,
         "pricing": {"elastic_unit_hour": 38.0}},
    ]
}


def write(conn: sa.Connection, source: str,
          rows: list[tuple[int, dt.datetime, int, int]]) -> None:
    """Usage rows (deployment id, minute, input tokens, output tokens) from one source."""
    batch = usage_store.UsageBatch(
        np.array([r[0] for r in rows], dtype=np.int32),
        np.array([np.datetime64(r[1].replace(tzinfo=None), "m") for r in rows]),
        np.array([r[2] for r in rows], dtype=np.int64),
        np.array([r[3] for r in rows], dtype=np.int64),
        np.ones(len(rows), dtype=np.int64))
    usage_store.write_usage(conn, batch, source=source, file="test", deployment_names=["x"],
                            checksum="-")


@pytest.fixture
def ids(engine: sa.Engine) -> dict[str, int]:
    """Usage and ledger with a known spill (units: weighted tokens / unit_tpm).

    a (unit_tpm 1,000, output weight 3), minute by minute from T0:
      0: 2,000 in                   = 2.0 units, held 1 + 0 -> spill 1.0
      1: gw 500 in + 500 out, push 1,000 in = 3.0, held 1 + 1 -> spill 1.0
      2: 1,000 in                   = 1.0 units, held 1 + 1 -> spill 0
      3: no usage reported (-1)                 held 0 + 0 -> skipped, never a zero
      4: 4,000 in                   = 4.0 units, no ledger row -> skipped
      5: a reported zero            = 0.0 units, held 1 + 0 -> covered, no spill
    b (unit_tpm 2,000): Feb 28 23:59 4,000 in = 2.0, held 1 -> spill 1.0;
                        Mar 1 00:00 2,000 in = 1.0, held 0 -> spill 1.0
    """
    cfg = parse_config(STORE_CONFIG)
    with engine.begin() as conn:
        found = deployment_store.sync_deployments(conn, cfg.deployments)
    a, b = found["a"], found["b"]
    feb, mar = dt.datetime(2026, 2, 28, 23, 59, tzinfo=UTC), dt.datetime(2026, 3, 1, tzinfo=UTC)
    for source, rows in (
        ("gw", [(a, minute(0), 2000, 0), (a, minute(1), 500, 500), (a, minute(2), 1000, 0),
                (a, minute(4), 4000, 0), (a, minute(5), 0, 0), (b, feb, 4000, 0),
                (b, mar, 2000, 0)]),
        ("push", [(a, minute(1), 1000, 0)]),
    ):
        with engine.begin() as conn:  # one ingest batch per transaction
            write(conn, source, rows)
    R = ledger.CapacityRecord
    with engine.begin() as conn:
        ledger.record_capacity(conn, [
            R(a, minute(0), 0, 0),  # recorded again below: the second value counts
            R(a, minute(1), 1, 1), R(a, minute(2), 1, 1), R(a, minute(3), 0, 0),
            R(a, minute(5), 1, 0), R(b, feb, 1, 0), R(b, mar, 0, 0)])
    with engine.begin() as conn:
        ledger.record_capacity(conn, [R(a, minute(0), 1, 0)])
    return found


def count_ledger(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM capacity_minute")).scalar_one())


def test_spill_to_date_gives_the_exact_account(engine: sa.Engine, ids: dict[str, int]) -> None:
    a, b, idle = ids["a"], ids["b"], ids["idle"]
    march = dt.datetime(2026, 3, 1, tzinfo=UTC)
    with engine.connect() as conn:
        got = ledger.spill_to_date(conn, [a, b, idle], march, dt.datetime(2026, 4, 1, tzinfo=UTC))
        early = ledger.spill_to_date(conn, [a], march, minute(2))  # until is exclusive
        february = ledger.spill_to_date(conn, [b], dt.datetime(2026, 2, 1, tzinfo=UTC), march)
    assert got[a] == ledger.ServiceLevel(a, 6.0, 2.0, 4)
    assert got[a].spill_fraction == pytest.approx(1 / 3)
    assert got[b] == ledger.ServiceLevel(b, 1.0, 1.0, 1)  # February's minute is not March's
    assert got[idle] == ledger.ServiceLevel(idle, 0.0, 0.0, 0)
    assert got[idle].spill_fraction is None
    assert early[a] == ledger.ServiceLevel(a, 5.0, 2.0, 2)
    assert february[b] == ledger.ServiceLevel(b, 2.0, 1.0, 1)
    # Two disjoint periods add up to the whole.
    with engine.connect() as conn:
        rest = ledger.spill_to_date(conn, [a], minute(2), dt.datetime(2026, 4, 1, tzinfo=UTC))
    assert early[a].plus(rest[a]) == got[a]


def test_the_view_gives_the_same_numbers_per_utc_month(
    engine: sa.Engine, ids: dict[str, int]
) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT deployment_id, deployment, month, demand_unit_minutes, "
            "spill_unit_minutes, spill_fraction, max_spill_fraction, minutes_covered "
            "FROM service_level_month ORDER BY deployment, month")).all()
    feb, mar = dt.datetime(2026, 2, 1, tzinfo=UTC), dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert [tuple(r) for r in rows] == [
        (ids["a"], "a", mar, 6.0, 2.0, pytest.approx(1 / 3), 0.02, 4),
        (ids["b"], "b", feb, 2.0, 1.0, 0.5, 0.01, 1),
        (ids["b"], "b", mar, 1.0, 1.0, 1.0, 0.01, 1),
    ]


def test_recording_a_minute_again_overwrites_it(engine: sa.Engine, ids: dict[str, int]) -> None:
    before = count_ledger(engine)
    rows = [ledger.CapacityRecord(ids["a"], minute(1), 2, 1),
            ledger.CapacityRecord(ids["a"], minute(1), 3, 1),  # the last of a batch wins
            ledger.CapacityRecord(ids["a"], minute(2), 1, 1)]
    for _ in range(2):
        with engine.begin() as conn:
            assert ledger.record_capacity(conn, rows) == 2
    assert count_ledger(engine) == before
    with engine.connect() as conn:
        held = conn.execute(sa.text(
            "SELECT committed_units, elastic_units FROM capacity_minute "
            "WHERE deployment_id = :a AND minute = :m"), {"a": ids["a"], "m": minute(1)}).one()
        got = ledger.spill_to_date(conn, [ids["a"]], T0, minute(10))
    assert tuple(held) == (3, 1)
    assert got[ids["a"]] == ledger.ServiceLevel(ids["a"], 6.0, 1.0, 4)  # minute 1 no longer spills


def test_ledger_minutes_must_be_whole_aware_minutes(engine: sa.Engine, ids: dict[str, int]) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="whole minutes"):
        ledger.record_capacity(conn, [ledger.CapacityRecord(
            ids["a"], T0 + dt.timedelta(seconds=30), 1, 0)])
    with engine.begin() as conn, pytest.raises(ValueError, match="timezone-aware"):
        ledger.record_capacity(conn, [ledger.CapacityRecord(
            ids["a"], T0.replace(tzinfo=None), 1, 0)])
    with engine.begin() as conn:
        assert ledger.record_capacity(conn, []) == 0


MARCH, APRIL = dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 4, 1, tzinfo=UTC)


def age_usage(engine: sa.Engine) -> None:
    """Make every batch older than the roll-up's margin for batches still in flight."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ingest_batch SET ingested_at = ingested_at - :age"),
                     {"age": ledger.INGEST_MARGIN * 2})


def rolled_up(engine: sa.Engine) -> dict[tuple[int, dt.date], tuple[float, float, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT deployment_id, day, demand_unit_minutes, spill_unit_minutes, "
            "minutes_covered FROM service_level_day")).all()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def month_to_date(engine: sa.Engine, ids: dict[str, int], start: dt.datetime = MARCH,
                  until: dt.datetime = APRIL, now: dt.datetime | None = None, *,
                  session_zone: str = "UTC"
                  ) -> tuple[dict[int, ledger.ServiceLevel], dict[int, ledger.ServiceLevel]]:
    """(month_to_date, spill_to_date) over the same period, for all the fixture's ids."""
    every = list(ids.values())
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT set_config('TimeZone', :zone, true)"),
                     {"zone": session_zone})
        rolled = ledger.month_to_date(conn, every, start, until,
                                        now=now or until + ledger.SETTLE)
    with engine.connect() as conn:
        raw = ledger.spill_to_date(conn, every, start, until)
    return rolled, raw


def tamper(engine: sa.Engine, ident: int, day: dt.date) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE service_level_day SET spill_unit_minutes = 99 "
                             "WHERE deployment_id = :i AND day = :d"), {"i": ident, "d": day})


def test_month_to_date_is_the_raw_account_from_stored_days(
    engine: sa.Engine, ids: dict[str, int]
) -> None:
    a, day = ids["a"], T0.date()
    age_usage(engine)
    rolled, raw = month_to_date(engine, ids)
    assert rolled == raw
    stored = rolled_up(engine)
    assert len(stored) == len(ids) * 31  # idle days too: a zero is worth storing
    assert stored[(a, day)] == (6.0, 2.0, 4)
    # The next read takes the stored days: a value changed behind its back shows through.
    tamper(engine, a, day)
    rolled, raw = month_to_date(engine, ids)
    assert rolled[a] == ledger.ServiceLevel(a, 6.0, 99.0, 4)
    assert rolled[ids["b"]] == raw[ids["b"]]
    # Days are UTC days in a session west of UTC too: the month's last day is stored.
    tamper(engine, ids["idle"], dt.date(2026, 3, 31))
    rolled, raw = month_to_date(engine, ids, session_zone="America/Los_Angeles")
    assert rolled[ids["idle"]] == ledger.ServiceLevel(ids["idle"], 0.0, 99.0, 0)


def test_a_stored_day_is_recomputed_when_what_it_stands_on_changes(
    engine: sa.Engine, ids: dict[str, int]
) -> None:
    a, day = ids["a"], T0.date()
    age_usage(engine)
    month_to_date(engine, ids)
    # Usage of that day written since (late, or still in flight at the roll-up).
    tamper(engine, a, day)
    with engine.begin() as conn:
        write(conn, "late", [(a, minute(5), 3000, 0)])  # minute 5 is covered: 3 units
    rolled, raw = month_to_date(engine, ids)
    assert rolled == raw
    assert rolled[a] == ledger.ServiceLevel(a, 9.0, 4.0, 4)
    # Capacity recorded again for one of its minutes.
    age_usage(engine)
    month_to_date(engine, ids)
    tamper(engine, a, day)
    with engine.begin() as conn:
        ledger.record_capacity(conn, [ledger.CapacityRecord(a, minute(5), 4, 0)])
    rolled, raw = month_to_date(engine, ids)
    assert rolled == raw
    assert rolled[a] == ledger.ServiceLevel(a, 9.0, 2.0, 4)
    # The deployment's unit size changed: demand in units is another number.
    tamper(engine, a, day)
    changed = parse_config({"deployment": [
        dict(STORE_CONFIG["deployment"][0], unit_tpm=500), *STORE_CONFIG["deployment"][1:]]})
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, changed.deployments)
    rolled, raw = month_to_date(engine, ids)
    assert rolled == raw
    assert rolled[a].demand_unit_minutes == 18.0


def test_partial_and_unsettled_days_are_read_raw(engine: sa.Engine, ids: dict[str, int]) -> None:
    age_usage(engine)
    start = T0 - dt.timedelta(hours=18)  # Mar 9 18:00: Mar 9 is not whole
    until = dt.datetime(2026, 3, 11, 0, 10, tzinfo=UTC)
    # Mar 10 ended 10 minutes ago: the daemon may still record its last minutes.
    rolled, raw = month_to_date(engine, ids, start, until, now=until)
    assert rolled == raw
    assert rolled_up(engine) == {}
    rolled, raw = month_to_date(engine, ids, start, until, now=until + ledger.SETTLE)
    assert rolled == raw
    assert set(rolled_up(engine)) == {(i, T0.date()) for i in ids.values()}


def test_prune_drops_expired_daily_rollups(engine: sa.Engine, ids: dict[str, int]) -> None:
    age_usage(engine)
    month_to_date(engine, ids)
    with engine.begin() as conn:
        ledger.prune(conn, dt.datetime(2026, 5, 1, tzinfo=UTC))  # keeps April and May
    assert rolled_up(engine) == {}


def partitions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'capacity_minute' "
            "ORDER BY 1")).scalars())


def test_prune_keeps_the_current_and_the_previous_month(
    engine: sa.Engine, ids: dict[str, int]
) -> None:
    with engine.begin() as conn:
        ledger.record_capacity(conn, [ledger.CapacityRecord(
            ids["a"], dt.datetime(2025, 12, 31, 23, 59, tzinfo=UTC), 1, 0)])
    assert partitions(engine) == ["capacity_minute_p202512", "capacity_minute_p202602",
                                  "capacity_minute_p202603"]
    with engine.begin() as conn:
        assert ledger.prune(conn, dt.datetime(2026, 3, 31, 23, 59, tzinfo=UTC)) == [
            "capacity_minute_p202512"]
    with engine.begin() as conn:
        assert ledger.prune(conn, dt.datetime(2026, 4, 1, tzinfo=UTC)) == [
            "capacity_minute_p202602"]
    assert partitions(engine) == ["capacity_minute_p202603"]
    assert ledger.retention_cutoff(dt.datetime(2026, 1, 15, tzinfo=UTC)) == dt.datetime(
        2025, 12, 1, tzinfo=UTC)


def test_db_prune_command_prunes_the_ledger(
    db_url: str, engine: sa.Engine, ids: dict[str, int], tmp_path: Path
) -> None:
    with engine.begin() as conn:  # long expired, whatever month it is now
        ledger.record_capacity(conn, [ledger.CapacityRecord(
            ids["a"], dt.datetime(2020, 1, 1, tzinfo=UTC), 1, 0)])
    path = tmp_path / "capsched.toml"
    path.write_text(DAEMON_CONFIG + deployment_toml("a"))
    assert main(["--config", str(path), "--database-url", db_url, "db", "prune"]) == 0
    assert "capacity_minute_p202001" not in partitions(engine)


def test_migration_0006_downgrades_and_upgrades(empty_db_url: str) -> None:
    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            (ident,) = deployment_store.sync_deployments(
                conn, parse_config(STORE_CONFIG).deployments[:1]).values()
            ledger.record_capacity(conn, [ledger.CapacityRecord(ident, T0, 1, 2)])
        db.downgrade(empty_db_url, "0005")
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            assert "capacity_minute" not in inspector.get_table_names()
            assert "service_level_month" not in inspector.get_view_names()
            assert "deployment" in inspector.get_table_names()
        db.upgrade(empty_db_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM service_level_month")).scalar() == 0
        db.require_current_schema(engine)
    finally:
        engine.dispose()


# -- the daemon and the dry run -----------------------------------------------------------

DAY = START + dt.timedelta(days=14)  # Monday 2026-03-16
NOON = DAY.replace(hour=12)

DAEMON_CONFIG = DAEMON_SECTIONS


def deployment_toml(name: str, payg_per_mtok: tuple[float, float] | None = None) -> str:
    # Pay-as-you-go is far cheaper than a unit here: capacity follows the service level.
    payg = ("" if payg_per_mtok is None else
            f"payg_input_per_mtok = {payg_per_mtok[0]}\n"
            f"payg_output_per_mtok = {payg_per_mtok[1]}\n")
    return f"""
[[deployment]]
name = "{name}"
provider = "simulated"
unit_tpm = 2500
max_units = 20
scale_up_lead_minutes = 5
min_hold_minutes = 60
max_spill_fraction = 0.05
[deployment.pricing]
elastic_unit_hour = 38.0264
dedicated_unit_month = 27379
{payg}"""


def load_config(*names: str, payg_per_mtok: tuple[float, float] | None = None) -> Config:
    text = DAEMON_CONFIG + "".join(deployment_toml(n, payg_per_mtok) for n in names)
    return parse_config(tomllib.loads(text))


def noisy_trace(path: Path, until: dt.datetime) -> Path:
    """daemon_support's day shape with noise, so the forecast quantiles spread."""
    rng = np.random.default_rng(7)
    minutes = int((until - START).total_seconds() // 60)
    noise = rng.lognormal(0.0, 0.3, minutes)

    def rows() -> Iterator[tuple[dt.datetime, int, int, int]]:
        for i in range(minutes):
            t = START + dt.timedelta(minutes=i)
            inp, out = PEAK if 8 <= t.hour < 18 else OFF_PEAK
            yield t, int(inp * noise[i]), int(out * noise[i]), 10

    with path.open("w") as handle:
        write_usage_csv(rows(), handle)
    return path


def ingest_same_usage(engine: sa.Engine, tmp_path: Path, names: tuple[str, ...],
                      until: dt.datetime) -> None:
    trace = noisy_trace(tmp_path / "usage.csv", until)
    for name in names:
        ingest_files(engine, [str(trace)], deployment=name, source="gw")


def record_history(engine: sa.Engine, ident: int, units: int, since: dt.datetime,
                   minutes: int) -> None:
    """Ledger rows as if ``units`` were held over ``minutes`` from ``since``."""
    with engine.begin() as conn:
        ledger.record_capacity(conn, [
            ledger.CapacityRecord(ident, since + dt.timedelta(minutes=i), units, 0)
            for i in range(minutes)])


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def make_daemon(engine: sa.Engine) -> Iterator[Any]:
    made: list[Daemon] = []

    def make(cfg: Config, clock: Clock) -> Daemon:
        providers = ProviderSet(cfg, engine)
        daemon = Daemon(cfg, engine, providers, instance_id=f"ledger-{len(made)}")
        set_provider_clocks(providers, cfg, clock)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def start_bot(engine: sa.Engine, tmp_path: Path, make_daemon: Any) -> Any:
    """``start(now, usage_until)``: a daemon for the one deployment "bot" on a clock at
    ``now``, with its usage stored until ``usage_until``; returns (daemon, clock, id)."""

    def start(now: dt.datetime, usage_until: dt.datetime) -> tuple[Daemon, Clock, int]:
        clock = Clock(now)
        daemon = make_daemon(load_config("bot"), clock)
        ingest_same_usage(engine, tmp_path, ("bot",), usage_until)
        return daemon, clock, daemon._ids["bot"]

    return start


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, SpillToDate | None]:
    """The spill-to-date each deployment's latest plan was made with (the planner is real)."""
    seen: dict[str, SpillToDate | None] = {}
    real = planrun.make_plan

    def make_plan(**kwargs: Any) -> Any:
        seen[kwargs["history"].deployment.name] = kwargs.get("spill_to_date")
        return real(**kwargs)

    monkeypatch.setattr("scheduler.daemon.tick.make_plan", make_plan)
    return seen


def capacity_minutes(engine: sa.Engine, name: str) -> float:
    """Capacity the latest plan of ``name`` holds over its horizon, in unit-minutes."""
    with engine.connect() as conn:
        return float(conn.execute(sa.text(
            "SELECT sum((i.committed_units + i.elastic_target) "
            "* extract(epoch FROM i.\"end\" - i.start) / 60) FROM plan_interval i "
            "WHERE i.plan_id = (SELECT max(p.id) FROM plan p JOIN deployment d "
            "ON d.id = p.deployment_id WHERE d.name = :n)"), {"n": name}).scalar_one())


def test_a_spill_debt_raises_the_planned_capacity(
    engine: sa.Engine, tmp_path: Path, make_daemon: Any,
    spy: dict[str, SpillToDate | None],
) -> None:
    # Two deployments alike in all but their month so far: one spilled all of its demand
    # for six hours on the 10th (held nothing), the other held plenty. Spill is priced high
    # enough (80x the default pay-as-you-go) that repaying the overrun costs less than the
    # spill it repays: a cheaper overrun is not chased (test below).
    cfg = load_config("owes", "clean", payg_per_mtok=(200.0, 800.0))
    clock = Clock(NOON)
    daemon = make_daemon(cfg, clock)
    ingest_same_usage(engine, tmp_path, ("owes", "clean"), DAY + dt.timedelta(days=1))
    owes, clean = daemon._ids["owes"], daemon._ids["clean"]
    record_history(engine, owes, 0, T0, 360)
    record_history(engine, clean, 20, T0, 360)
    assert daemon.tick(clock.now).ok
    with engine.connect() as conn:
        expected = ledger.spill_to_date(
            conn, [owes, clean], dt.datetime(2026, 3, 1, tzinfo=UTC),
            NOON - ledger.SETTLE)
    assert expected[owes].demand_unit_minutes > 0
    assert expected[owes].spill_unit_minutes == pytest.approx(expected[owes].demand_unit_minutes)
    assert expected[clean].spill_unit_minutes == 0
    # The plans were made with the store's account of the month ...
    for name, ident in (("owes", owes), ("clean", clean)):
        passed = spy[name]
        assert passed is not None
        assert passed.demand_unit_minutes == pytest.approx(expected[ident].demand_unit_minutes)
        assert passed.spill_unit_minutes == pytest.approx(expected[ident].spill_unit_minutes)
    # ... and the one in debt plans tighter: more capacity, less expected spill.
    assert capacity_minutes(engine, "owes") > capacity_minutes(engine, "clean")
    with engine.connect() as conn:
        spill: dict[str, float] = dict(conn.execute(sa.text(
            "SELECT deployment, expected_spill_fraction FROM current_plan")).all())
    assert spill["owes"] < spill["clean"]


def test_an_overrun_dearer_to_repay_than_its_spill_is_reported_not_chased(
    engine: sa.Engine, tmp_path: Path, make_daemon: Any,
) -> None:
    # The same debt at the default prices: the spill cost dollars where repaying it would
    # cost hundreds of capacity, so the plan holds what it would hold without the debt
    # and says why (issue #9: repaying a spill overrun is bounded by cost).
    cfg = load_config("owes", "clean")
    clock = Clock(NOON)
    daemon = make_daemon(cfg, clock)
    ingest_same_usage(engine, tmp_path, ("owes", "clean"), DAY + dt.timedelta(days=1))
    record_history(engine, daemon._ids["owes"], 0, T0, 360)
    record_history(engine, daemon._ids["clean"], 20, T0, 360)
    assert daemon.tick(clock.now).ok
    assert capacity_minutes(engine, "owes") == capacity_minutes(engine, "clean")
    with engine.connect() as conn:
        rules = dict(conn.execute(sa.text(
            "SELECT d.name, array_agg(r->>'rule') FROM plan p JOIN deployment d "
            "ON d.id = p.deployment_id, jsonb_array_elements(p.reasons) r "
            "GROUP BY d.name")).all())
    assert "overrun_not_repaid" in rules["owes"]
    assert "overrun_not_repaid" not in rules["clean"]


def test_each_tick_records_one_ledger_row_per_deployment(
    engine: sa.Engine, tmp_path: Path, make_daemon: Any
) -> None:
    cfg = load_config("one", "two")
    clock = Clock(NOON)
    daemon = make_daemon(cfg, clock)
    ingest_same_usage(engine, tmp_path, ("one", "two"), DAY + dt.timedelta(days=1))
    expected = set()
    for i in range(7):  # through the first scale-up (5 minutes of lead time)
        clock.now = NOON + dt.timedelta(minutes=i, seconds=20)  # mid-minute: its minute counts
        for name in ("one", "two"):
            held = daemon.providers.get("simulated").holdings(name)
            at = NOON + dt.timedelta(minutes=i)
            expected.add((daemon._ids[name], at, held.committed_at(at), held.elastic_at(at)))
        assert daemon.tick(clock.now).ok
    assert daemon.tick(clock.now).ok  # a second tick in the same minute: overwritten, no twin
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT deployment_id, minute, committed_units, elastic_units "
            "FROM capacity_minute")).all()
    assert {tuple(r) for r in rows} == expected
    assert len(rows) == 14
    assert any(r.elastic_units > 0 for r in rows)  # the daemon's own scale-up is recorded


def test_the_account_is_read_every_quarter_hour_and_not_twice_in_a_day(
    engine: sa.Engine, start_bot: Any
) -> None:
    daemon, clock, ident = start_bot(NOON, DAY + dt.timedelta(days=1))
    record_history(engine, ident, 1, T0, 360)
    settle = ledger.SETTLE
    assert daemon.tick(clock.now).ok
    first = daemon._account
    assert first is not None and first.settled_until == NOON - settle
    # The next quarter hour to settle, and ten minutes behind the account (as if recorded
    # late, e.g. by another daemon): the first is added at the next refresh, the second
    # not before the next day's rebase.
    record_history(engine, ident, 0, NOON - settle, 15)
    record_history(engine, ident, 0, NOON - 2 * settle, 10)
    clock.now = NOON + dt.timedelta(minutes=14)
    assert daemon.tick(clock.now).ok
    assert daemon._account is first  # within the quarter hour: cached
    clock.now = NOON + dt.timedelta(minutes=15)
    assert daemon.tick(clock.now).ok
    account = daemon._account
    settled = clock.now - settle  # the quarter hour from NOON - settle is in
    assert account is not None and account.settled_until == settled
    march = dt.datetime(2026, 3, 1, tzinfo=UTC)
    with engine.connect() as conn:
        before = ledger.spill_to_date(conn, [ident], march, NOON - 2 * settle)[ident]
        added = ledger.spill_to_date(conn, [ident], NOON - settle, settled)[ident]
        whole = ledger.spill_to_date(conn, [ident], march, settled)[ident]
    level = account.levels[ident]
    assert (before.minutes_covered, added.minutes_covered, whole.minutes_covered) == (
        360, 15, 385)
    assert level.minutes_covered == 375
    assert level.demand_unit_minutes == pytest.approx(
        before.demand_unit_minutes + added.demand_unit_minutes)
    assert level.spill_unit_minutes == pytest.approx(
        before.spill_unit_minutes + added.spill_unit_minutes)


def test_late_usage_reaches_the_account_at_the_next_daily_rebase(
    engine: sa.Engine, start_bot: Any
) -> None:
    daemon, clock, ident = start_bot(NOON, DAY + dt.timedelta(days=2))
    record_history(engine, ident, 0, NOON - dt.timedelta(hours=3), 120)
    assert daemon.tick(clock.now).ok
    first = daemon._account
    assert first is not None and first.based_on == DAY.date()
    # Usage of a minute already in the account arrives an hour late, from another source.
    late = NOON - dt.timedelta(hours=2)
    with engine.begin() as conn:
        write(conn, "late", [(ident, late, 10 * int(daemon.config.deployment("bot").unit_tpm), 0)])
    clock.now = NOON + dt.timedelta(minutes=15)
    assert daemon.tick(clock.now).ok

    def raw(until: dt.datetime) -> ledger.ServiceLevel:
        with engine.connect() as conn:
            return ledger.spill_to_date(conn, [ident], MARCH, until)[ident]

    account = daemon._account
    assert account is not None
    level = account.levels[ident]
    missed = raw(account.settled_until).spill_unit_minutes - level.spill_unit_minutes
    assert missed == pytest.approx(10.0)  # 0 units held: all of the late demand spilled
    # The next UTC day, once the previous one settled: the month is read again in the
    # background while plans keep the account they have.
    clock.now = DAY + dt.timedelta(days=1, hours=1)
    assert daemon.tick(clock.now, refit_inline=False).ok
    assert daemon._account is not None and daemon._account.based_on == DAY.date()
    assert daemon._warming is not None
    daemon._warming.join(timeout=30)
    clock.now += dt.timedelta(minutes=1)
    assert daemon.tick(clock.now, refit_inline=False).ok
    account = daemon._account
    assert account is not None and account.based_on == clock.now.date()
    whole = raw(account.settled_until)
    assert account.levels[ident].minutes_covered == whole.minutes_covered
    assert account.levels[ident].spill_unit_minutes == pytest.approx(whole.spill_unit_minutes)


def test_a_new_month_starts_a_new_account(engine: sa.Engine, start_bot: Any) -> None:
    end = dt.datetime(2026, 3, 31, 23, 50, tzinfo=UTC)
    daemon, clock, ident = start_bot(end, end + dt.timedelta(hours=2))
    record_history(engine, ident, 0, T0, 60)
    assert daemon.tick(clock.now).ok
    assert daemon._account is not None
    assert daemon._account.levels[ident].spill_unit_minutes > 0
    clock.now = dt.datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    assert daemon.tick(clock.now).ok
    account = daemon._account
    assert account is not None and account.period == dt.datetime(2026, 4, 1, tzinfo=UTC)
    assert account.spill_to_date == {}  # nothing settled yet this month


def test_a_cold_start_late_in_the_month_reads_in_the_background(
    engine: sa.Engine, start_bot: Any, spy: dict[str, SpillToDate | None],
) -> None:
    daemon, clock, ident = start_bot(NOON, DAY + dt.timedelta(days=1))
    record_history(engine, ident, 0, T0, 120)
    # The daemon's production tick: a month under way is too long to read inline.
    assert daemon.tick(clock.now, refit_inline=False).ok
    assert spy["bot"] is None  # planned without the account meanwhile
    assert daemon._warming is not None
    daemon._warming.join(timeout=30)
    clock.now = NOON + dt.timedelta(minutes=1)
    assert daemon.tick(clock.now, refit_inline=False).ok
    account = daemon._account
    assert account is not None and account.refreshed_at == clock.now
    with engine.connect() as conn:
        whole = ledger.spill_to_date(conn, [ident], dt.datetime(2026, 3, 1, tzinfo=UTC),
                                     account.settled_until)[ident]
    assert account.levels[ident].minutes_covered == whole.minutes_covered
    assert account.levels[ident].spill_unit_minutes == pytest.approx(whole.spill_unit_minutes)
    assert whole.spill_unit_minutes > 0


def test_dry_run_plans_with_the_month_so_far(
    db_url: str, engine: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "capsched.toml"
    # Spill priced so that repaying the overrun costs less than it (see the daemon test).
    path.write_text(DAEMON_CONFIG + deployment_toml("bot", payg_per_mtok=(200.0, 800.0)))
    args = ["--config", str(path), "--database-url", db_url]
    trace = noisy_trace(tmp_path / "usage.csv", NOON)
    assert main([*args, "ingest", str(trace), "--deployment", "bot"]) == 0

    def dry_run() -> dict[str, Any]:
        capsys.readouterr()
        assert main([*args, "plan", "--dry-run", "--now", NOON.isoformat(),
                     "--format", "json"]) == 0
        (summary,) = json.loads(capsys.readouterr().out)
        return dict(summary)

    before = dry_run()
    clean = capacity_minutes(engine, "bot")
    with engine.connect() as conn:
        (ident,) = deployment_store.deployment_ids(conn, ["bot"]).values()
    record_history(engine, ident, 0, T0, 360)  # a month so far far above the bound
    after = dry_run()
    assert capacity_minutes(engine, "bot") > clean
    assert after["spill_percent"] < before["spill_percent"]

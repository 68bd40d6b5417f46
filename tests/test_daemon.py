from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from scheduler import database as db
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.tick import Daemon, set_provider_clocks
from scheduler.ingest.write import ingest_files
from scheduler.store import journal as journal_store
from scheduler.store import simulated as sim_store
from tests.daemon_support import START, config, kill_advisory_lock_holders, write_trace

DAY = START + dt.timedelta(days=14)  # Monday 2026-03-16


class Clock:
    def __init__(self) -> None:
        self.now = DAY

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def setup(engine: sa.Engine, tmp_path: Path) -> Iterator[tuple[Daemon, Clock]]:
    cfg, _ = config(tmp_path)
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id="test-a")
    clock = Clock()
    set_provider_clocks(providers, cfg, clock)
    yield daemon, clock
    daemon.close()


def ingest_until(engine: sa.Engine, tmp_path: Path, until: dt.datetime) -> None:
    trace = write_trace(tmp_path / "usage.csv", 0, until=until)
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")


def run_ticks(daemon: Daemon, clock: Clock, start: dt.datetime, minutes: int) -> None:
    for i in range(minutes):
        clock.now = start + dt.timedelta(minutes=i)
        report = daemon.tick(clock.now)
        assert report.leader


def holdings(daemon: Daemon):  # type: ignore[no-untyped-def]
    return daemon.providers.get("simulated").holdings("bot")


def test_scales_up_before_the_peak_and_down_after(
    setup: tuple[Daemon, Clock], engine: sa.Engine, tmp_path: Path
) -> None:
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
    run_ticks(daemon, clock, DAY.replace(hour=7, minute=45), 16)  # 07:45 .. 08:00
    peak = DAY.replace(hour=8)
    assert holdings(daemon).capacity_at(peak) >= 3, "3 units must serve from 08:00"
    with engine.connect() as conn:
        ups = conn.execute(sa.text(
            "SELECT decided_at, effective_at, target_units FROM action "
            "WHERE kind = 'elastic_set_target' AND state = 'confirmed' ORDER BY id")).all()
    assert any(a.effective_at <= peak and a.decided_at <= peak - dt.timedelta(minutes=5)
               for a in ups), ups
    run_ticks(daemon, clock, DAY.replace(hour=17, minute=55), 16)  # 17:55 .. 18:10
    after = DAY.replace(hour=18, minute=10)
    assert holdings(daemon).capacity_at(after) <= 2
    assert holdings(daemon).capacity_at(after) >= 1
    with engine.connect() as conn:
        drift = conn.execute(sa.text("SELECT count(*) FROM drift_event")).scalar()
    assert drift == 0, "the daemon's own actions are not drift"


def test_stale_usage_holds_capacity(
    setup: tuple[Daemon, Clock], engine: sa.Engine, tmp_path: Path
) -> None:
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY.replace(hour=12))  # ingestion stops at noon
    run_ticks(daemon, clock, DAY.replace(hour=11, minute=58), 2)
    assert holdings(daemon).capacity_at(DAY.replace(hour=12, minute=5)) >= 3
    run_ticks(daemon, clock, DAY.replace(hour=18, minute=30), 3)
    assert holdings(daemon).capacity_at(DAY.replace(hour=18, minute=35)) >= 3
    with engine.connect() as conn:
        held = conn.execute(sa.text(
            "SELECT held FROM plan WHERE as_of >= :t ORDER BY id DESC LIMIT 1"),
            {"t": DAY.replace(hour=18)}).scalar()
        downs = conn.execute(sa.text(
            "SELECT count(*) FROM action WHERE decided_at >= :t"),
            {"t": DAY.replace(hour=18)}).scalar()
    assert held is True
    assert downs == 0


def test_pause_records_plans_and_sends_nothing(
    setup: tuple[Daemon, Clock], engine: sa.Engine, tmp_path: Path
) -> None:
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
    with engine.begin() as conn:
        journal_store.set_paused(conn, True, now=DAY, reason="test")
    run_ticks(daemon, clock, DAY.replace(hour=7, minute=50), 6)
    with engine.connect() as conn:
        plans = conn.execute(sa.text("SELECT count(*) FROM plan WHERE mode = 'live'")).scalar()
        actions = conn.execute(sa.text("SELECT count(*) FROM action")).scalar()
    assert plans and plans >= 1
    assert actions == 0
    assert holdings(daemon).elastic_target == 0


def test_only_one_daemon_acts_and_the_standby_takes_over(
    setup: tuple[Daemon, Clock], engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    first, clock = setup
    ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
    cfg, _ = config(tmp_path)
    other_engine = db.make_engine(db_url)
    second = Daemon(cfg, other_engine, ProviderSet(cfg, other_engine), instance_id="test-b")
    set_provider_clocks(second.providers, cfg, clock)
    try:
        clock.now = DAY.replace(hour=7, minute=50)
        assert first.tick(clock.now).leader
        assert not second.tick(clock.now).leader
        kill_advisory_lock_holders(db.libpq_url(db_url))
        # Once the leader's session is gone, the standby takes over within a tick or two.
        took_over = False
        for _ in range(2):
            clock.now += dt.timedelta(minutes=1)
            if second.tick(clock.now).leader:
                took_over = True
                break
        assert took_over
        assert not first.tick(clock.now).leader
        with engine.connect() as conn:
            state = journal_store.read_heartbeat(conn)
        assert state is not None and state.instance_id == "test-b"
    finally:
        second.close()
        other_engine.dispose()


def test_provider_failures_are_retried_and_never_crash_the_tick(
    setup: tuple[Daemon, Clock], engine: sa.Engine, tmp_path: Path
) -> None:
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
    with engine.begin() as conn:
        sim_store.arm_fault(conn, "temporary", operation="set_elastic_target", times=2)
        sim_store.arm_fault(conn, "timeout", operation="set_elastic_target", times=1)
    run_ticks(daemon, clock, DAY.replace(hour=7, minute=40), 21)  # through 08:00
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT state, attempts, error_class FROM action "
            "WHERE kind = 'elastic_set_target' ORDER BY id")).all()
    assert any(r.attempts > 1 for r in rows), rows
    assert rows[-1].state in ("confirmed", "superseded")


def test_out_of_capacity_backs_off_then_asks_again(
    setup: tuple[Daemon, Clock], engine: sa.Engine, tmp_path: Path
) -> None:
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
    with engine.begin() as conn:
        sim_store.arm_fault(conn, "out_of_capacity", operation="set_elastic_target", times=1)
    run_ticks(daemon, clock, DAY.replace(hour=7, minute=40), 30)  # through 08:09
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, state, target_units, error_class, decided_at, sent_at FROM action "
            "WHERE kind = 'elastic_set_target' ORDER BY id")).all()
        plans = conn.execute(sa.text(
            "SELECT count(*) FROM plan WHERE as_of > :t"), {"t": DAY.replace(hour=7, minute=55)}
        ).scalar()
    failed = [r for r in rows if r.state == "failed"]
    assert [r.error_class for r in failed] == ["OutOfCapacityError"]
    retry = [r for r in rows if r.id > failed[0].id and r.target_units == failed[0].target_units]
    # The same capacity is asked for again once the provider's retry-after (60 s) is over.
    assert retry and retry[0].state == "confirmed"
    assert retry[0].sent_at >= failed[0].decided_at + dt.timedelta(seconds=60)
    assert plans and plans >= 1  # planning went on meanwhile
    assert holdings(daemon).capacity_at(DAY.replace(hour=8, minute=9)) >= 3


def test_a_lost_database_connection_is_survived(
    setup: tuple[Daemon, Clock], engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
    run_ticks(daemon, clock, DAY.replace(hour=7, minute=50), 1)
    with psycopg.connect(db.libpq_url(db_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    clock.now = DAY.replace(hour=7, minute=51)
    daemon.tick(clock.now)  # may find its leadership gone; must not raise
    run_ticks(daemon, clock, DAY.replace(hour=7, minute=52), 9)
    assert holdings(daemon).capacity_at(DAY.replace(hour=8)) >= 3


def test_refit_applies_the_retention_setting(
    engine: sa.Engine, tmp_path: Path
) -> None:
    cfg, _ = config(tmp_path, extra="")
    cfg = dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, retention_days=7))
    daemon = Daemon(cfg, engine, ProviderSet(cfg, engine), instance_id="retention")
    old = write_trace(tmp_path / "old.csv", 0, until=START + dt.timedelta(days=3))
    ingest_files(engine, [str(old)], deployment="bot", source="gw")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM usage_hour")).scalar() == 72
    march = "SELECT count(*) FROM usage_hour WHERE hour < '2026-04-01'"
    try:
        # The deployment's latest usage is all the daemon has to fit on: kept (#10 item 5).
        daemon.refit(dt.datetime(2026, 5, 2, tzinfo=dt.UTC))
        with engine.connect() as conn:
            assert conn.execute(sa.text(march)).scalar() == 72
        # Once newer usage covers history_days (14) + the headroom week, March goes.
        recent = tmp_path / "recent.csv"
        recent.write_text("minute_utc,input_tokens,output_tokens,requests\n"
                          "2026-04-29T00:00:00Z,1,1,1\n")
        ingest_files(engine, [str(recent)], deployment="bot", source="gw",
                     now=dt.datetime(2026, 5, 2, tzinfo=dt.UTC))
        daemon.refit(dt.datetime(2026, 5, 2, tzinfo=dt.UTC))
    finally:
        daemon.close()
    with engine.connect() as conn:
        assert conn.execute(sa.text(march)).scalar() == 0


def test_plans_use_the_headroom_calibrated_at_refit(engine: sa.Engine, tmp_path: Path) -> None:
    """With a pay-as-you-go bound, each refit replays the last week and plans hold
    median x (1 + h) (with the fixture's zero bound there is no curve)."""
    from tests.daemon_support import CONFIG

    cfg_path = tmp_path / "payg.toml"
    cfg_path.write_text(CONFIG.replace("max_spill_fraction = 0.0", "max_spill_fraction = 0.01"))
    from scheduler.config import load_config

    cfg = load_config(cfg_path)
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id="test-headroom")
    clock = Clock()
    set_provider_clocks(providers, cfg, clock)
    try:
        ingest_until(engine, tmp_path, DAY + dt.timedelta(hours=1))
        clock.now = DAY
        models = daemon.refit(DAY)
        curve = models.headroom["bot"]
        assert curve is not None
        # Replayed over the last 7 days, "last minute seen x (1 + h)" misses the daily
        # 1 -> 3 step at 08:00 until a unit requested at 08:01 serves (08:00-08:05:
        # 2 units x 6 minutes a day, of 3 x 600 + 1 x 840 unit-minutes), plus the replay's
        # own start (1 unit for 5 minutes; its first minute is not scored). Even 100 %
        # headroom (2 units) halves it only: no headroom is needed for 0.9 %, none
        # of the grid suffices for 0.1 %.
        assert curve.spill_fractions[0] == pytest.approx((7 * 12 + 5) / (7 * 2640 - 1))
        assert curve.spill_fractions[-1] == pytest.approx((7 * 6 + 5) / (7 * 2640 - 1))
        assert curve.headroom_for(0.009) == 0.0
        assert curve.headroom_for(0.001) is None
        daemon.tick(DAY)
        with engine.connect() as conn:
            reasons = conn.execute(sa.text(
                "SELECT reasons FROM plan ORDER BY id DESC LIMIT 1")).scalar_one()
        assert any(r["rule"] == "calibrated_headroom" for r in reasons)
        # Hourly refits keep the day's calibration; the first refit a day later replays again.
        later = daemon.refit(DAY + dt.timedelta(hours=1))
        assert later.headroom is models.headroom and later.headroom_at == DAY
        next_day = daemon.refit(DAY + dt.timedelta(days=1))
        assert next_day.headroom is not models.headroom
        assert next_day.headroom_at == DAY + dt.timedelta(days=1)
    finally:
        daemon.close()


def _held_gauge(daemon: Daemon) -> float | None:
    return daemon.metrics.registry.get_sample_value("capsched_held", {"deployment": "bot"})


def test_stale_usage_never_raises_capacity_or_buys_and_says_so_from_the_first_tick(
    setup: tuple[Daemon, Clock], engine: sa.Engine, tmp_path: Path
) -> None:
    """The stale-usage case (issue #9) and #10 item 8: the feed stops at 09:00."""
    daemon, clock = setup
    ingest_until(engine, tmp_path, DAY.replace(hour=9))
    run_ticks(daemon, clock, DAY.replace(hour=8, minute=50), 1)
    assert _held_gauge(daemon) == 0
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM action")).scalar()
    target = holdings(daemon).elastic_target
    # 09:11 is the first tick with no usage in the last staleness_minutes (10).
    clock.now = DAY.replace(hour=9, minute=11)
    report = daemon.tick(clock.now)
    assert [d.held for d in report.deployments] == [True]
    assert _held_gauge(daemon) == 1
    # 51 h blind, past the next day's commitment decision: nothing raised, nothing bought.
    for now in (DAY.replace(hour=20), DAY + dt.timedelta(days=1, hours=2, minutes=30),
                DAY + dt.timedelta(days=2, hours=12)):
        clock.now = now
        report = daemon.tick(now)
        assert [d.held for d in report.deployments] == [True]
        assert report.actions_planned == 0
    assert holdings(daemon).elastic_target == target
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT count(*) FROM action")).scalar()
        commitments = conn.execute(sa.text(
            "SELECT count(*) FROM action WHERE kind = 'buy_commitment' AND decided_at > :t"),
            {"t": DAY.replace(hour=9)}).scalar()
        decided = conn.execute(sa.text("SELECT count(*) FROM commitment_decision")).scalar()
    assert after == before and commitments == 0
    # The deferred decision is not recorded as made: it is taken once usage is fresh again.
    assert decided == 1


def _write_zero_drop(path: Path, zero_from: dt.datetime, until: dt.datetime) -> Path:
    from scheduler.ingest.files import write_usage_csv
    from tests.daemon_support import OFF_PEAK, PEAK

    def rows():  # type: ignore[no-untyped-def]
        t = START
        while t < until:
            inp, out = ((0, 0) if t >= zero_from else PEAK if 8 <= t.hour < 18 else OFF_PEAK)
            yield t, inp, out, 0 if t >= zero_from else 10
            t += dt.timedelta(minutes=1)

    with path.open("w") as handle:
        write_usage_csv(rows(), handle)
    return path


def test_reported_zeros_bring_capacity_down_within_hours_and_buy_nothing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """The drop-to-zero case: the gateway reports 0 tokens every minute from 09:00."""
    cfg, _ = config(tmp_path)
    # The day's commitment decision comes after the drop (as in the case: 60 h of zeros).
    cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(
        cfg.daemon, commit_decision_time="12:00"))
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id="test-zero")
    clock = Clock()
    set_provider_clocks(providers, cfg, clock)
    try:
        drop = DAY.replace(hour=9)
        trace = _write_zero_drop(tmp_path / "usage.csv", drop, DAY + dt.timedelta(days=3))
        ingest_files(engine, [str(trace)], deployment="bot", source="gw")
        run_ticks(daemon, clock, DAY.replace(hour=8, minute=50), 1)
        assert holdings(daemon).capacity_at(DAY.replace(hour=8, minute=55)) >= 3
        # A tick every 10 minutes through the afternoon (refits hourly, as configured).
        t = DAY.replace(hour=9)
        while t <= DAY.replace(hour=14):
            clock.now = t
            daemon.tick(t)
            t += dt.timedelta(minutes=10)
        # zero_load_after_minutes (120) + the 60-minute hold: at min_units (0) by 14:00.
        assert holdings(daemon).capacity_at(DAY.replace(hour=14)) == cfg.deployments[0].min_units
        # 2.5 days of zeros later, at the next commitment decisions: nothing bought.
        for now in (DAY + dt.timedelta(days=1, hours=12), DAY + dt.timedelta(days=2, hours=12)):
            clock.now = now
            daemon.tick(now)
        assert holdings(daemon).capacity_at(DAY + dt.timedelta(days=2, hours=12, minutes=5)) == 0
        with engine.connect() as conn:
            bought = conn.execute(sa.text(
                "SELECT count(*) FROM action WHERE kind = 'buy_commitment'")).scalar()
        assert bought == 0
    finally:
        daemon.close()


def test_out_of_capacity_takes_what_is_granted_and_keeps_asking(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """The out-of-capacity case: the region can grant 2 units, the peak needs 3, and the
    provider sells no commitments."""
    import tomllib

    from scheduler.config import parse_config
    from tests.daemon_support import CONFIG

    text = CONFIG.replace("min_hold_minutes = 60\n",
                          "min_hold_minutes = 60\navailable_units = 2\nsupported_terms = []\n", 1)
    cfg = parse_config(tomllib.loads(text))
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id="test-ooc")
    clock = Clock()
    set_provider_clocks(providers, cfg, clock)
    try:
        ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
        run_ticks(daemon, clock, DAY.replace(hour=7, minute=50), 31)  # 07:50 .. 08:20
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT kind, state, target_units, error_class, decided_at FROM action "
                "ORDER BY id")).all()
        # No purchase the provider cannot make; the 1-unit night load was served meanwhile.
        assert all(r.kind == "elastic_set_target" for r in rows), rows
        failed = [r for r in rows if r.state == "failed"]
        assert failed and all(r.error_class == "OutOfCapacityError" and r.target_units == 3
                              for r in failed)
        granted = [r for r in rows if r.state == "confirmed" and r.target_units == 2]
        assert granted and granted[0].decided_at <= failed[0].decided_at + dt.timedelta(
            minutes=2)
        # Capacity is the 2 grantable units through the peak (was 0: the whole peak spilled).
        for minute in (8, 10, 20):
            assert holdings(daemon).capacity_at(DAY.replace(hour=8, minute=minute)) == 2
        # ... and the third unit is asked for again after the cap expires.
        assert any(r.decided_at >= failed[0].decided_at + dt.timedelta(minutes=10)
                   and r.target_units == 3 for r in failed), rows
    finally:
        daemon.close()


def test_out_of_capacity_cap_survives_a_restart(engine: sa.Engine, tmp_path: Path) -> None:
    """``run --once`` from cron is a new process each tick: the refusal journalled by the
    last one still makes this one take the grantable units."""
    import tomllib

    from scheduler.config import parse_config
    from tests.daemon_support import CONFIG

    text = CONFIG.replace("min_hold_minutes = 60\n",
                          "min_hold_minutes = 60\navailable_units = 2\nsupported_terms = []\n", 1)
    cfg = parse_config(tomllib.loads(text))
    clock = Clock()
    for minute in (55, 56, 57):
        providers = ProviderSet(cfg, engine)
        daemon = Daemon(cfg, engine, providers, instance_id=f"once-{minute}")
        set_provider_clocks(providers, cfg, clock)
        if minute == 55:  # the deployment exists once a daemon has synced the config
            ingest_until(engine, tmp_path, DAY + dt.timedelta(days=1))
        try:
            clock.now = DAY.replace(hour=7, minute=minute)
            daemon.tick(clock.now)
        finally:
            daemon.close()
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT state, target_units FROM action ORDER BY id")).all()
    assert ("failed", 3) in [tuple(r) for r in rows]
    assert ("confirmed", 2) in [tuple(r) for r in rows], rows

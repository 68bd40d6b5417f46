"""The daemon as real processes: SIGKILL mid-send, SIGTERM, and a standby taking over."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.config import parse_config
from scheduler.ingest.write import ingest_files
from scheduler.store import deployments as deployment_store
from scheduler.store import journal as journal_store
from scheduler.store import simulated as sim_store
from tests.daemon_support import CONFIG, DAEMON_SECTIONS, START, write_trace

DAY = START + dt.timedelta(days=14)


@pytest.fixture
def prepared(engine: sa.Engine, db_url: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    config_path = tmp_path / "capsched.toml"
    config_path.write_text(CONFIG)
    import tomllib

    with engine.begin() as conn:
        deployment_store.sync_deployments(
            conn, parse_config(tomllib.loads(CONFIG)).deployments)
    trace = write_trace(tmp_path / "usage.csv", 0, until=DAY + dt.timedelta(days=1))
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSCHED_")}
    env.update(CAPSCHED_CONFIG=str(config_path), CAPSCHED_DATABASE_URL=db_url,
               CAPSCHED_LOG_FORMAT="json")
    return config_path, env


def capsched(env: dict[str, str], *args: str, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def applied_per_key(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT idempotency_key, count(*) FROM sim_request WHERE applied "
            "GROUP BY idempotency_key")).all()
    return {key: int(n) for key, n in rows}


def test_sigkill_at_each_step_of_sending_yields_every_action_exactly_once(
    prepared: tuple[Path, dict[str, str]], engine: sa.Engine
) -> None:
    _, env = prepared
    # Alternate the kill point: before the provider applies the change (the journal says
    # "sent"), and after it applied it but before the journal heard back.
    crash_plan = {52: False, 53: True, 54: False, 55: True, 58: True, 59: False}
    kills = 0
    for minute in range(50, 63):  # 07:50 .. 08:02, one tick a minute
        now = DAY.replace(hour=7) + dt.timedelta(minutes=minute)
        if minute in crash_plan:
            with engine.begin() as conn:
                sim_store.arm_fault(conn, "crash", apply_first=crash_plan[minute],
                                    operation="set_elastic_target")
        result = capsched(env, "run", "--once", "--now", now.isoformat())
        restarts = 0
        while result.returncode == -signal.SIGKILL and restarts < 10:
            kills += 1
            restarts += 1
            # The restarted daemon recovers the journal at its next tick.
            result = capsched(env, "run", "--once", "--now", now.isoformat())
        assert result.returncode in (0, 1), result.stderr[-2000:]
    with engine.begin() as conn:
        sim_store.clear_faults(conn)
    last = capsched(env, "run", "--once", "--now", DAY.replace(hour=8, minute=3).isoformat())
    assert last.returncode == 0, last.stderr[-2000:]
    assert kills >= 2, "the crash faults must actually have killed the daemon"
    per_key = applied_per_key(engine)
    assert per_key and all(n == 1 for n in per_key.values()), per_key
    with engine.connect() as conn:
        actions = conn.execute(sa.text(
            "SELECT idempotency_key, state FROM action WHERE kind = 'elastic_set_target'")).all()
    confirmed = {a.idempotency_key for a in actions if a.state == "confirmed"}
    never_sent = {a.idempotency_key for a in actions if a.state == "superseded"}
    assert confirmed <= set(per_key)
    assert not never_sent & set(per_key)
    assert not [a for a in actions if a.state == "sent"]
    with engine.connect() as conn:
        capacity = conn.execute(sa.text(
            "SELECT coalesce(sum(units), 0) FROM sim_tranche WHERE active_from <= :t"),
            {"t": DAY.replace(hour=8, minute=3)}).scalar()
        committed = conn.execute(sa.text(
            'SELECT coalesce(sum(units), 0) FROM sim_commitment WHERE start <= :t AND "end" > :t'),
            {"t": DAY.replace(hour=8, minute=3)}).scalar()
    assert int(capacity) + int(committed) >= 3


def _start(env: dict[str, str], replay_from: dt.datetime, speed: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run", "--replay-from", replay_from.isoformat(),
         "--speed", str(speed)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM and wait; a daemon that does not stop in 60 s is killed (never left behind)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        raise


def _wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_daemon_scales_up_before_the_peak_and_stops_cleanly_on_sigterm(
    prepared: tuple[Path, dict[str, str]], engine: sa.Engine
) -> None:
    _, env = prepared
    proc = _start(env, DAY.replace(hour=7, minute=45), speed=120)  # a tick every 0.5 s

    def scaled_up() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM action WHERE kind = 'elastic_set_target' "
                "AND state = 'confirmed' AND effective_at <= :peak AND target_units >= 1"),
                {"peak": DAY.replace(hour=8)}).scalar())

    try:
        assert _wait_for(scaled_up, 90), "no confirmed scale-up effective by 08:00"
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    ticks = [e for e in events if e.get("event") == "tick"]
    assert ticks and all("tick_id" in t and "actions_sent" in t for t in ticks)
    names = [e.get("event") for e in events]
    assert "daemon_stopping" in names
    # At most the tick in flight at the signal finishes after it; library loggers
    # (APScheduler's job and shutdown lines, routed through structlog since #10 item 15) may
    # follow it too.
    assert names[names.index("daemon_stopping"):].count("tick") <= 1

    # The same daemon restarted before the evening drop scales down after it.
    evening = _start(env, DAY.replace(hour=17, minute=55), speed=120)

    def scaled_down() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM action WHERE kind = 'elastic_set_target' "
                "AND state = 'confirmed' AND decided_at >= :drop AND target_units = 0"),
                {"drop": DAY.replace(hour=18)}).scalar())

    try:
        assert _wait_for(scaled_down, 90), "no confirmed scale-down after 18:00"
    finally:
        _stop(evening)
    assert evening.returncode == 0


def test_two_daemons_one_acts_and_the_other_takes_over_after_a_kill(
    prepared: tuple[Path, dict[str, str]], engine: sa.Engine
) -> None:
    _, env = prepared
    first = _start(env, DAY.replace(hour=6), speed=120)

    def leader() -> str | None:
        with engine.connect() as conn:
            state = journal_store.read_heartbeat(conn)
        return state.instance_id if state else None

    second: subprocess.Popen[str] | None = None
    try:
        assert _wait_for(lambda: leader() is not None, 90)
        original = leader()
        second = _start(env, DAY.replace(hour=6), speed=120)
        time.sleep(4)  # several ticks of both
        assert leader() == original, "the standby must not act while the leader lives"
        first.kill()
        first.wait(timeout=30)
        assert _wait_for(lambda: leader() not in (None, original), 60), "no takeover"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                _stop(proc)


def test_sighup_reloads_the_config(
    prepared: tuple[Path, dict[str, str]], engine: sa.Engine
) -> None:
    config_path, env = prepared
    proc = _start(env, DAY.replace(hour=7), speed=120)

    def deployments() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(
                "SELECT name FROM deployment WHERE active")).scalars())

    def ticked() -> bool:
        with engine.connect() as conn:
            return journal_store.read_heartbeat(conn) is not None

    try:
        assert _wait_for(ticked, 90)
        config_path.write_text(CONFIG + CONFIG[CONFIG.index("[[deployment]]"):].replace(
            'name = "bot"', 'name = "bot-eu"'))
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: deployments() == {"bot", "bot-eu"}, 60)
        assert proc.poll() is None, "SIGHUP must not stop the daemon"
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err[-2000:]
    assert any('"config_reloaded"' in line for line in out.splitlines())


# -- the SIGKILL loop through the http provider (#10: crash between journal and send) --------

SHIM_TOKEN = "sigkill-loop-token"


def _shim_config(url: str) -> str:
    # max_change_per_tick = 1 with holdings moved by hand makes a new target every tick, so
    # every tick sends; drift from those hand moves must not stop sending (drift_stop_after).
    sections = DAEMON_SECTIONS.replace(
        "[daemon]\n", "[daemon]\nmax_change_per_tick = 1\ndrift_stop_after = 0\n")
    # A unit of 250 tokens/min makes the peak 30 units: the loop's 1-unit commitments never
    # cover it, so the elastic target keeps moving.
    deployment = CONFIG[CONFIG.index("[[deployment]]"):].replace(
        'provider = "simulated"', 'provider = "shim"').replace(
        "unit_tpm = 2500", "unit_tpm = 250").replace("max_units = 20", "max_units = 60")
    return sections + f"""
[providers.shim]
type = "http"
url = "{url}"
token = "{SHIM_TOKEN}"
timeout_seconds = 5
""" + deployment


@pytest.mark.slow
def test_sigkill_loop_through_the_http_provider_duplicates_and_loses_nothing(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """At least 20 SIGKILLs of `capsched run --once` at the moment its request reaches the
    provider: before the provider applies it (the journal says sent, the provider never saw
    it) or after (applied, the journal never heard), for elastic targets and commitment
    purchases. Afterwards every change the provider applied is confirmed in the journal
    exactly once, and nothing is left unresolved."""
    import tomllib

    from reference_server import Fault, ManualClock, ReferenceServer, ReferenceState

    from scheduler.daemon import journal
    from scheduler.providers.base import ProviderLimits

    start = DAY.replace(hour=8, minute=30)  # the peak
    clock = ManualClock(start)
    state = ReferenceState(token=SHIM_TOKEN, clock=clock)
    state.add_deployment("bot", ProviderLimits(max_units=100, max_step=10,
                                               supported_terms=(7, 30)))
    running: list[subprocess.Popen[str]] = []

    def kill_daemon() -> None:
        os.kill(running[-1].pid, signal.SIGKILL)

    with ReferenceServer(state) as server:
        text = _shim_config(server.url)
        config_path = tmp_path / "capsched.toml"
        config_path.write_text(text)
        with engine.begin() as conn:
            ids = deployment_store.sync_deployments(
                conn, parse_config(tomllib.loads(text)).deployments)
        trace = write_trace(tmp_path / "usage.csv", 0, until=DAY + dt.timedelta(days=1))
        ingest_files(engine, [str(trace)], deployment="bot", source="gw")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSCHED_")}
        env.update(CAPSCHED_CONFIG=str(config_path), CAPSCHED_DATABASE_URL=db_url,
                   CAPSCHED_LOG_FORMAT="json", CAPSCHED_LOG_LEVEL="warning")

        def run_once(now: dt.datetime) -> int:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "run", "--once", "--now", now.isoformat()],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running.append(proc)
            _, err = proc.communicate(timeout=180)
            assert proc.returncode in (0, 1, -signal.SIGKILL), err[-2000:]
            return proc.returncode

        # Every run that sends is killed at its request, alternately before and after the
        # provider applies it; the restart recovers the journal at the same minute (lookup,
        # resend with the same key) and is itself killed at its next request. The clock
        # moves on a minute only after a run that sent nothing faulted.
        kills: dict[str, int] = {}
        quiet = minute = 0
        wanted = int(os.environ.get("CAPSCHED_SIGKILL_LOOP_KILLS", "20"))
        state.set_elastic_by_hand("bot", 0)
        while sum(kills.values()) < wanted and quiet < 30:
            now = start + dt.timedelta(minutes=minute)
            clock.advance(now - clock())
            done = sum(kills.values())
            after = done % 2 == 1
            path = "/commitments" if done % 4 >= 2 else "/elastic"
            if path == "/commitments":
                with engine.connect() as conn:
                    open_buys = [a for a in journal_store.list_actions(
                        conn, states=("planned", "sent"), kind="buy_commitment")]
                if not open_buys:  # a purchase the planner decided, to be sent this tick
                    journal.plan_action(engine, journal.ActionRequest(
                        deployment_id=ids["bot"], kind="buy_commitment", units=1, term_days=7,
                        due_at=now, reason=f"sigkill loop {done}"), now)
            server.inject(Fault(status=503, code="unavailable", delay_seconds=1.0,
                                apply_first=after, path_contains=path, on_fire=kill_daemon))
            if run_once(now) == -signal.SIGKILL:
                label = f"{path.strip('/')}_{'after' if after else 'before'}_apply"
                kills[label] = kills.get(label, 0) + 1
                continue
            server.clear_faults()
            quiet += 1
            minute += 1
            # Holdings moved by hand (0 or 1 unit, far below the 30 the peak needs) keep the
            # elastic target moving.
            state.set_elastic_by_hand("bot", minute % 2)
        server.clear_faults()
        for j in range(1, 3):  # quiet ticks: everything in flight resolves
            now = start + dt.timedelta(minutes=minute + j)
            clock.advance(now - clock())
            assert run_once(now) in (0, 1)

        with engine.connect() as conn:
            actions = journal_store.list_actions(conn)
        applied = state.applied_keys
        confirmed = {a.idempotency_key for a in actions if a.state == "confirmed"}
        duplicated = sorted({k for k in applied if applied.count(k) > 1})
        # Lost: applied at the provider but not confirmed in the journal, or confirmed in
        # the journal but never applied, or left unresolved.
        lost = sorted(set(applied) ^ confirmed)
        unresolved = [a.idempotency_key for a in actions if a.state == "sent"]
        held = state._deployments["bot"].commitments
        bought = {a.provider_reference for a in actions
                  if a.kind == "buy_commitment" and a.state == "confirmed"}
        print(f"sigkill loop: kills={sum(kills.values())} {kills} quiet_runs={quiet} "
              f"actions={len(actions)} applied={len(applied)} duplicated={len(duplicated)} "
              f"lost={len(lost)} unresolved={len(unresolved)} commitments={len(held)}")
    assert sum(kills.values()) >= wanted, kills
    assert kills.get("commitments_before_apply", 0) >= 1, kills
    assert kills.get("commitments_after_apply", 0) >= 1, kills
    assert duplicated == [] and lost == [] and unresolved == []
    assert {c["commitment_id"] for c in held} == bought  # each purchase exactly once

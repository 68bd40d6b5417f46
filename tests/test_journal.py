"""The action journal: exactly-once application through crashes, faults and restarts.

The simulated provider (state in the same PostgreSQL) is the only fake. A crash is a
``BaseException`` raised at the provider call boundary, before or after delegating; the
"restarted daemon" is a fresh provider object and fresh calls to ``recover``/``send_due``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from typing import Any, Self

import pytest
import sqlalchemy as sa
from reference_server import ManualClock

from scheduler.daemon import journal
from scheduler.daemon.journal import ActionRequest
from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    CommitmentReceipt,
    ElasticReceipt,
    Holdings,
    Provider,
    ProviderLimits,
    RequestLookup,
)
from scheduler.providers.retry import Disposition
from scheduler.providers.simulated import SimulatedProvider
from scheduler.store import journal as jstore
from scheduler.store import simulated as sim
from scheduler.store.deployments import deployment_table

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
ELASTIC = "elastic_set_target"
COMMIT = "buy_commitment"


class Crash(BaseException):
    """The daemon process dies here."""


class CrashingProvider(Provider):
    """Delegates to a real provider; dies before or after the next mutating call."""

    def __init__(self, inner: Provider, *, before: bool = False, after: bool = False) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.before = before
        self.after = after

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Mapping[str, Any],
        *,
        engine: sa.Engine | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Self:
        raise NotImplementedError

    def holdings(self, deployment: str) -> Holdings:
        return self.inner.holdings(deployment)

    def limits(self, deployment: str) -> ProviderLimits:
        return self.inner.limits(deployment)

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        return self.inner.lookup_request(idempotency_key)

    def _boundary(self) -> None:
        if self.before:
            raise Crash("before the provider call")

    def set_elastic_target(
        self, deployment: str, target_units: int, *, idempotency_key: str
    ) -> ElasticReceipt:
        self._boundary()
        receipt = self.inner.set_elastic_target(
            deployment, target_units, idempotency_key=idempotency_key
        )
        if self.after:
            raise Crash("after the provider applied the change")
        return receipt

    def buy_commitment(
        self, deployment: str, units: int, term_days: int, *, idempotency_key: str
    ) -> CommitmentReceipt:
        self._boundary()
        receipt = self.inner.buy_commitment(
            deployment, units, term_days, idempotency_key=idempotency_key
        )
        if self.after:
            raise Crash("after the provider applied the change")
        return receipt


# -- helpers ----------------------------------------------------------------------------


def add_deployment(engine: sa.Engine, name: str, provider: str = "sim") -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                deployment_table.insert().returning(deployment_table.c.id),
                {
                    "name": name,
                    "provider": provider,
                    "model": "m",
                    "unit_tpm": 1000.0,
                    "output_token_weight": 3.0,
                    "timezone": "UTC",
                    "settings": {},
                },
            ).scalar_one()
        )


def fresh_provider(engine: sa.Engine, clock: ManualClock, **settings: Any) -> SimulatedProvider:
    provider = SimulatedProvider.from_settings("sim", settings, engine=engine)
    provider.set_clock(clock)
    return provider


def elastic(deployment_id: int, target: int, **kw: Any) -> ActionRequest:
    return ActionRequest(deployment_id=deployment_id, kind=ELASTIC, target_units=target, **kw)


def action(engine: sa.Engine, action_id: int) -> jstore.ActionRecord:
    with engine.connect() as conn:
        found = jstore.get_action(conn, action_id)
    assert found is not None
    return found


def applied(engine: sa.Engine, key: str | None = None) -> int:
    with engine.connect() as conn:
        return sim.count_applied(conn, "sim", key=key)


def arm(engine: sa.Engine, kind: str, **kw: Any) -> None:
    with engine.begin() as conn:
        sim.arm_fault(conn, kind, **kw)


@pytest.fixture
def setup(engine: sa.Engine) -> tuple[sa.Engine, ManualClock, dict[int, str]]:
    clock = ManualClock(T0)
    chat = add_deployment(engine, "chat")
    return engine, clock, {chat: "chat"}


RNG = random.Random(7)


# -- planning ---------------------------------------------------------------------------


def test_plan_writes_key_before_sending_supersedes_and_dedupes(engine: sa.Engine) -> None:
    chat = add_deployment(engine, "chat/eu west")
    first = journal.plan_action(engine, elastic(chat, 3, due_at=T0 + dt.timedelta(minutes=5)), T0)
    assert first.state == "planned" and first.attempts == 0
    assert first.idempotency_key.startswith("cs-chat_eu_west-elastic-")
    newer = journal.plan_action(engine, elastic(chat, 5, due_at=T0 + dt.timedelta(minutes=5)), T0)
    assert action(engine, first.id).state == "superseded"
    same = journal.plan_action(engine, elastic(chat, 5, due_at=T0), T0)
    assert same.id == newer.id and same.due_at == T0  # not duplicated, made due earlier
    commit = ActionRequest(deployment_id=chat, kind=COMMIT, units=2, term_days=30)
    c1 = journal.plan_action(engine, commit, T0)
    assert journal.plan_action(engine, commit, T0).id == c1.id
    assert action(engine, newer.id).state == "planned"  # commitments supersede nothing
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT deployment, kind, state FROM pending_actions ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("chat/eu west", ELASTIC, "planned"),
        ("chat/eu west", COMMIT, "planned"),
    ]
    with pytest.raises(ValueError, match="target_units"):
        ActionRequest(deployment_id=chat, kind=ELASTIC)
    with pytest.raises(ValueError, match="no deployment"):
        journal.plan_action(engine, elastic(9999, 1), T0)


# -- exactly once through crashes ---------------------------------------------------------


def test_crash_after_marking_sent_before_the_call(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    planned = journal.plan_action(engine, elastic(next(iter(names)), 3), T0)
    dying = CrashingProvider(fresh_provider(engine, clock), before=True)
    with pytest.raises(Crash):
        journal.send_due(engine, dying, names, T0, rng=RNG)
    assert action(engine, planned.id).state == "sent"
    assert applied(engine) == 0
    # Restart: a new provider, recover first.
    report = journal.recover(engine, fresh_provider(engine, clock), T0 + dt.timedelta(minutes=1))
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    done = action(engine, planned.id)
    assert done.state == "confirmed" and done.attempts == 2 and done.accepted_units == 3
    assert applied(engine, planned.idempotency_key) == 1 and applied(engine) == 1


def test_crash_after_the_provider_applied(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    planned = journal.plan_action(engine, elastic(next(iter(names)), 4), T0)
    dying = CrashingProvider(fresh_provider(engine, clock), after=True)
    with pytest.raises(Crash):
        journal.send_due(engine, dying, names, T0, rng=RNG)
    assert action(engine, planned.id).state == "sent" and applied(engine) == 1
    provider = fresh_provider(engine, clock)
    report = journal.recover(engine, provider, T0)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    done = action(engine, planned.id)
    assert done.state == "confirmed" and done.attempts == 1
    assert done.provider_reference and done.accepted_units == 4
    assert journal.send_due(engine, provider, names, T0, rng=RNG).outcomes == ()
    assert applied(engine) == 1


def test_lost_response_is_confirmed_by_lookup(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    planned = journal.plan_action(engine, elastic(next(iter(names)), 2), T0)
    provider = fresh_provider(engine, clock)
    arm(engine, "timeout", apply_first=True)
    report = journal.send_due(engine, provider, names, T0, rng=RNG)
    assert [o.outcome for o in report.retrying] == ["retry"]
    sent = action(engine, planned.id)
    assert sent.state == "sent" and sent.error_class == "ProviderTimeout"
    assert sent.next_attempt_at is not None and sent.next_attempt_at > T0
    assert journal.recover(engine, provider, T0).outcomes == ()  # not due yet
    later = T0 + dt.timedelta(minutes=15)
    report = journal.recover(engine, provider, later)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    assert action(engine, planned.id).attempts == 1  # confirmed by lookup, not resent
    assert applied(engine) == 1


def test_temporary_errors_then_success(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    planned = journal.plan_action(engine, elastic(next(iter(names)), 2), T0)
    provider = fresh_provider(engine, clock)
    arm(engine, "temporary", times=2, operation="set_elastic_target")
    now = T0
    assert journal.send_due(engine, provider, names, now, rng=RNG).retrying
    for _ in range(3):
        now += dt.timedelta(minutes=15)
        journal.recover(engine, provider, now, rng=RNG)
    done = action(engine, planned.id)
    assert done.state == "confirmed" and done.attempts == 3
    assert applied(engine) == 1


def test_out_of_capacity_fails_and_backs_off(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    chat = next(iter(names))
    provider = fresh_provider(engine, clock, available_units=3)
    first = journal.plan_action(engine, elastic(chat, 5), T0)
    report = journal.send_due(engine, provider, names, T0, rng=RNG)
    assert [o.error_class for o in report.failed] == ["OutOfCapacityError"]
    assert report.failed[0].disposition is Disposition.BACK_OFF
    backoff = report.backoffs[chat]
    assert backoff.failures == 1 and backoff.until is not None and backoff.until > T0
    assert action(engine, first.id).state == "failed"
    # The daemon keeps planning; nothing is sent to the deployment while it backs off.
    second = journal.plan_action(engine, elastic(chat, 3), T0 + dt.timedelta(seconds=10))
    report = journal.send_due(engine, provider, names, T0 + dt.timedelta(seconds=10), rng=RNG)
    assert [o.outcome for o in report.outcomes] == ["skipped"]
    assert report.backoffs[chat].failures == 1
    after = backoff.until + dt.timedelta(seconds=1)
    report = journal.send_due(engine, provider, names, after, rng=RNG)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    assert report.backoffs == {}
    assert action(engine, second.id).state == "confirmed"
    with engine.connect() as conn:
        assert jstore.read_backoffs(conn) == {}
    assert applied(engine) == 1


def test_permanent_error_fails_and_alerts(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    planned = journal.plan_action(engine, elastic(next(iter(names)), 1), T0)
    arm(engine, "permanent")
    report = journal.send_due(engine, fresh_provider(engine, clock), names, T0, rng=RNG)
    assert [o.action_id for o in report.alerts] == [planned.id]
    assert action(engine, planned.id).state == "failed"


def test_supersede_and_ordering_of_targets(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    chat = next(iter(names))
    provider = fresh_provider(engine, clock)
    old = journal.plan_action(engine, elastic(chat, 4), T0)
    arm(engine, "temporary", operation="set_elastic_target")
    assert journal.send_due(engine, provider, names, T0, rng=RNG).retrying
    # A newer target is planned while the old one is unresolved: it waits.
    new = journal.plan_action(engine, elastic(chat, 1), T0)
    report = journal.send_due(engine, provider, names, T0, rng=RNG)
    assert [o.outcome for o in report.outcomes] == ["skipped"]
    # Recovery finds the old one never reached the provider and supersedes it.
    later = T0 + dt.timedelta(minutes=15)
    report = journal.recover(engine, provider, later, rng=RNG)
    assert [o.outcome for o in report.outcomes] == ["superseded"]
    report = journal.send_due(engine, provider, names, later, rng=RNG)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    assert action(engine, old.id).state == "superseded"
    assert provider.holdings("chat").elastic_target == 1
    assert applied(engine, old.idempotency_key) == 0 and applied(engine) == 1
    assert action(engine, new.id).state == "confirmed"


def test_slow_confirmation_stays_sent_until_done(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    chat = next(iter(names))
    provider = fresh_provider(engine, clock)
    arm(engine, "slow_confirm", confirm_after_seconds=60)
    planned = journal.plan_action(engine, ActionRequest(chat, COMMIT, units=1, term_days=7), T0)
    assert journal.send_due(engine, provider, names, T0, rng=RNG).pending
    assert action(engine, planned.id).state == "sent"
    clock.advance(minutes=1)
    journal.recover(engine, provider, T0 + dt.timedelta(minutes=15))
    done = action(engine, planned.id)
    assert done.state == "confirmed" and done.effective_at == T0 and done.accepted_units == 1
    assert applied(engine) == 1


def test_reconcile_records_manual_changes_once(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    chat = next(iter(names))
    provider = fresh_provider(engine, clock)
    journal.plan_action(engine, elastic(chat, 3), T0)
    journal.plan_action(engine, ActionRequest(chat, COMMIT, units=2, term_days=7), T0)
    journal.send_due(engine, provider, names, T0, rng=RNG)
    assert journal.reconcile(engine, provider, names, T0) == []
    # Someone changes capacity by hand, straight at the provider.
    provider.set_elastic_target("chat", 6, idempotency_key="by-hand-1")
    provider.buy_commitment("chat", 1, 30, idempotency_key="by-hand-2")
    drifts = journal.reconcile(engine, provider, names, T0 + dt.timedelta(minutes=1))
    assert {(d.kind, d.expected, d.actual) for d in drifts} == {
        ("elastic_target", 3, 6),
        ("committed_units", 2, 3),
    }
    assert all(d.event_id is not None for d in drifts)
    again = journal.reconcile(engine, provider, names, T0 + dt.timedelta(minutes=2))
    assert len(again) == 2 and all(d.event_id is None for d in again)
    with engine.connect() as conn:
        events = jstore.list_drift(conn, deployment_id=chat)
    assert len(events) == 2
    # It only records: the provider still holds what the human set.
    assert provider.holdings("chat").elastic_target == 6
    # After the commitment ends, expectations follow the clock too.
    clock.advance(dt.timedelta(days=8))
    late = journal.reconcile(engine, provider, names, T0 + dt.timedelta(days=8))
    assert [(d.kind, d.expected, d.actual) for d in late if d.kind == "committed_units"] == [
        ("committed_units", 0, 1)
    ]


def test_drift_streak_stops_sending_and_resume_starts_it_again(
    setup: tuple[sa.Engine, ManualClock, dict[int, str]],
) -> None:
    engine, clock, names = setup
    chat = next(iter(names))
    provider = fresh_provider(engine, clock)
    now = T0

    def done_but_undone(target: int) -> journal.SendReport:
        """Send a target; the provider confirms it, then its holdings fall back to 0."""
        nonlocal now
        now += dt.timedelta(minutes=1)
        journal.plan_action(engine, elastic(chat, target), now)
        report = journal.send_due(engine, provider, names, now, rng=RNG)
        provider.set_elastic_target("chat", 0, idempotency_key=f"undo-{target}-{now:%H%M}")
        journal.reconcile(engine, provider, names, now, drift_stop_after=3)
        return report

    assert done_but_undone(1).confirmed
    # A confirmed action whose holdings followed breaks the streak.
    now += dt.timedelta(minutes=1)
    journal.plan_action(engine, elastic(chat, 2), now)
    journal.send_due(engine, provider, names, now, rng=RNG)
    journal.reconcile(engine, provider, names, now, drift_stop_after=3)
    provider.set_elastic_target("chat", 0, idempotency_key="undo-after-match")
    assert done_but_undone(3).confirmed and done_but_undone(4).confirmed
    with engine.connect() as conn:
        assert jstore.sending_stops(conn, [chat]) == {}
        assert jstore.drift_streak(conn, chat, limit=10) == 2
    assert done_but_undone(5).confirmed  # the third in a row: stop

    now += dt.timedelta(minutes=1)
    journal.plan_action(engine, elastic(chat, 6), now)
    held = journal.send_due(engine, provider, names, now, rng=RNG)
    assert [o.outcome for o in held.outcomes] == ["skipped"]
    assert "sending stopped" in held.stopped[chat] and "3 action(s)" in held.stopped[chat]
    assert provider.holdings("chat").elastic_target == 0  # nothing was sent

    assert journal.resume_sending(engine, chat, now)
    assert not journal.resume_sending(engine, chat, now)  # not stopped any more
    resumed = journal.send_due(engine, provider, names, now + dt.timedelta(seconds=1), rng=RNG)
    assert resumed.confirmed and resumed.stopped == {}
    assert provider.holdings("chat").elastic_target == 6


# -- the crash loop -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_crashes_and_faults_apply_each_action_exactly_once(
    engine: sa.Engine, seed: int
) -> None:
    rng = random.Random(seed)
    clock = ManualClock(T0)
    names = {add_deployment(engine, n): n for n in ("a", "b")}
    now = T0
    wanted: dict[int, int] = {}
    crashes = 0
    for step in range(24):
        now += dt.timedelta(minutes=1)
        clock.advance(minutes=1)
        deployment = rng.choice(sorted(names))
        if rng.random() < 0.15:
            req = ActionRequest(deployment, COMMIT, units=1, term_days=rng.choice([7, 30]))
        else:
            target = rng.randint(0, 6)
            wanted[deployment] = target
            req = elastic(deployment, target)
        journal.plan_action(engine, req, now)
        point = rng.choice(["none", "before", "after", "timeout", "temporary", "none"])
        if point == "timeout":
            arm(engine, "timeout", apply_first=True, provider="sim")
        elif point == "temporary":
            arm(
                engine, "temporary", provider="sim",
                operation=rng.choice(["set_elastic_target", "buy_commitment", "lookup_request"]),
            )
        provider = CrashingProvider(
            fresh_provider(engine, clock, lead_time_minutes=0, min_hold_minutes=0),
            before=point == "before",
            after=point == "after",
        )
        try:
            journal.recover(engine, provider, now, rng=rng)
            journal.send_due(engine, provider, names, now, rng=rng)
        except Crash:
            crashes += 1  # the process is gone; the next step is a restart
        if step % 5 == 4:
            with engine.begin() as conn:
                sim.clear_faults(conn)
    # Quiet period: restarts without faults until everything settles.
    with engine.begin() as conn:
        sim.clear_faults(conn)
    provider_ok = fresh_provider(engine, clock, lead_time_minutes=0, min_hold_minutes=0)
    for _ in range(4):
        now += dt.timedelta(minutes=15)
        journal.recover(engine, provider_ok, now, rng=rng)
        journal.send_due(engine, provider_ok, names, now, rng=rng)
    assert crashes > 0
    with engine.connect() as conn:
        actions = jstore.list_actions(conn)
        requests = sim.list_requests(conn, "sim")
    assert {a.state for a in actions} <= {"confirmed", "superseded"}
    keys = {a.idempotency_key: a for a in actions}
    # Every change the provider applied belongs to one journalled action, once.
    for request in requests:
        assert request.idempotency_key in keys
    for a in actions:
        expected = 1 if a.state == "confirmed" else 0
        assert applied(engine, a.idempotency_key) == expected, a
    assert applied(engine) == sum(1 for a in actions if a.state == "confirmed")
    # The provider ends up where the last planned target says.
    for deployment, target in wanted.items():
        assert provider_ok.holdings(names[deployment]).elastic_target == target
    committed = sum(a.units or 0 for a in actions if a.kind == COMMIT and a.state == "confirmed")
    held = sum(
        provider_ok.holdings(n).committed_at(clock()) for n in names.values()
    )
    assert held == committed
    assert journal.reconcile(engine, provider_ok, names, now) == []


# -- daemon state -------------------------------------------------------------------------


def test_pause_and_heartbeat(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert not jstore.is_paused(conn)
        assert jstore.read_heartbeat(conn) is None
        state = jstore.set_paused(conn, True, now=T0, reason="maintenance")
        assert state.paused and state.paused_at == T0 and state.paused_reason == "maintenance"
        later = jstore.set_paused(conn, True, now=T0 + dt.timedelta(hours=1))
        assert later.paused_at == T0  # pausing twice keeps the first time
        assert jstore.is_paused(conn)
        resumed = jstore.set_paused(conn, False, now=T0 + dt.timedelta(hours=2))
        assert not resumed.paused and resumed.paused_at is None
        assert not jstore.is_paused(conn)
        beat = jstore.record_heartbeat(conn, instance_id="i1", tick_at=T0, tick_id="t1", ok=True)
        assert beat.leader_since == T0 and beat.last_tick_ok
        beat = jstore.record_heartbeat(
            conn, instance_id="i1", tick_at=T0 + dt.timedelta(minutes=1), tick_id="t2",
            ok=False, error="boom",
        )
        assert beat.leader_since == T0 and beat.last_error == "boom" and not beat.last_tick_ok
        beat = jstore.record_heartbeat(
            conn, instance_id="i2", tick_at=T0 + dt.timedelta(minutes=2), tick_id="t3", ok=True
        )
        assert beat.leader_since == T0 + dt.timedelta(minutes=2) and beat.last_error is None
        read = jstore.read_heartbeat(conn)
        assert read is not None and read.last_tick_id == "t3" and read.instance_id == "i2"

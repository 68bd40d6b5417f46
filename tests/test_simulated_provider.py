"""The simulated provider against a real PostgreSQL: the provider contract, faults, restarts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from reference_server import ManualClock

from scheduler.providers import create_provider
from scheduler.providers.base import RequestStatus
from scheduler.providers.errors import (
    IdempotencyConflictError,
    InvalidRequestError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderConfigError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
    TemporaryProviderError,
)
from scheduler.providers.simulated import SimulatedProvider
from scheduler.store import simulated as sim

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def make(
    engine: sa.Engine, clock: ManualClock, name: str = "sim", **settings: Any
) -> SimulatedProvider:
    provider = SimulatedProvider.from_settings(name, settings, engine=engine)
    provider.set_clock(clock)
    return provider


def applied(engine: sa.Engine, **kw: Any) -> int:
    with engine.connect() as conn:
        return sim.count_applied(conn, **kw)


def arm(engine: sa.Engine, kind: str, **kw: Any) -> None:
    with engine.begin() as conn:
        sim.arm_fault(conn, kind, **kw)


def test_settings_are_validated_and_registered(engine: sa.Engine) -> None:
    with pytest.raises(ProviderConfigError, match="needs its engine"):
        SimulatedProvider.from_settings("sim", {})
    with pytest.raises(ProviderConfigError, match="unknown key 'lead_minutes'"):
        SimulatedProvider.from_settings("sim", {"lead_minutes": 3}, engine=engine)
    with pytest.raises(ProviderConfigError, match="max_step"):
        SimulatedProvider.from_settings("sim", {"max_step": 0}, engine=engine)
    with pytest.raises(ProviderConfigError, match="unknown key 'colour'"):
        SimulatedProvider.from_settings(
            "sim", {"deployments": {"chat": {"colour": 1}}}, engine=engine
        )
    provider = create_provider(
        "sim",
        {
            "type": "simulated",
            "lead_time_minutes": 2,
            "supported_terms": [30],
            "timeout_seconds": 3,
            "deployments": {"chat": {"max_units": 7}},
        },
        engine=engine,
    )
    assert isinstance(provider, SimulatedProvider)
    assert provider.timeout == 3.0
    limits = provider.limits("chat")
    assert (limits.max_units, limits.lead_time_minutes, limits.supported_terms) == (7, 2, (30,))
    other = provider.limits("other")
    assert (other.max_units, other.min_hold_minutes, other.max_step) == (1000, 60, 1000)


def test_lead_time_then_active(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock, lead_time_minutes=5)
    receipt = provider.set_elastic_target("chat", 3, idempotency_key="k1")
    assert receipt.accepted_units == 3
    assert receipt.effective_at == T0 + dt.timedelta(minutes=5)
    assert receipt.status is RequestStatus.DONE and not receipt.replayed
    held = provider.holdings("chat")
    assert (held.elastic_active_units, held.elastic_pending_units) == (0, 3)
    assert held.elastic_target == 3
    clock.advance(minutes=5)
    held = provider.holdings("chat")
    assert (held.elastic_active_units, held.elastic_pending_units) == (3, 0)
    assert held.capacity_at(clock()) == 3


def test_min_hold_clamps_scale_down(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock, lead_time_minutes=5, min_hold_minutes=60)
    provider.set_elastic_target("chat", 2, idempotency_key="up1")
    clock.advance(minutes=30)
    provider.set_elastic_target("chat", 5, idempotency_key="up2")  # 3 pending until +35
    clock.advance(minutes=1)
    down = provider.set_elastic_target("chat", 0, idempotency_key="down1")
    # Pending units go first; the 2 active ones are held until T0+65.
    assert down.requested_units == 0 and down.accepted_units == 2
    assert down.clamp_reason == "min_hold" and down.clamped
    assert down.next_release_at == T0 + dt.timedelta(minutes=65)
    assert provider.holdings("chat").elastic_target == 2
    clock.advance(dt.timedelta(minutes=65) - dt.timedelta(minutes=31))
    free = provider.set_elastic_target("chat", 0, idempotency_key="down2")
    assert free.accepted_units == 0 and free.clamp_reason is None
    assert provider.holdings("chat").elastic == ()


def test_idempotent_replay_across_restart_and_conflict(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    first = make(engine, clock)
    receipt = first.set_elastic_target("chat", 4, idempotency_key="same")
    # A "restart": a new provider object on the same database.
    second = make(engine, clock)
    clock.advance(minutes=10)
    again = second.set_elastic_target("chat", 4, idempotency_key="same")
    assert again.replayed and again.reference == receipt.reference
    assert again.effective_at == receipt.effective_at
    assert applied(engine, provider="sim") == 1
    assert second.holdings("chat").elastic_target == 4
    found = second.lookup_request("same")
    assert found.status is RequestStatus.DONE and found.reference == receipt.reference
    assert found.details["accepted_units"] == 4
    with pytest.raises(IdempotencyConflictError):
        second.set_elastic_target("chat", 5, idempotency_key="same")
    with pytest.raises(IdempotencyConflictError):
        second.set_elastic_target("other", 4, idempotency_key="same")
    assert second.lookup_request("never").status is RequestStatus.UNKNOWN
    # Keys are per provider: another simulated provider on the same database does not see it.
    assert make(engine, clock, name="sim2").lookup_request("same").status is RequestStatus.UNKNOWN


def test_commitments_appear_and_expire(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock, supported_terms=[7, 30])
    receipt = provider.buy_commitment("chat", 2, 7, idempotency_key="c1")
    c = receipt.commitment
    assert (c.units, c.term_days, c.start, c.end) == (2, 7, T0, T0 + dt.timedelta(days=7))
    replay = provider.buy_commitment("chat", 2, 7, idempotency_key="c1")
    assert replay.replayed and replay.commitment == c
    assert provider.holdings("chat").committed_at(clock()) == 2
    with pytest.raises(InvalidRequestError, match="not offered"):
        provider.buy_commitment("chat", 1, 14, idempotency_key="c2")
    assert provider.lookup_request("c2").status is RequestStatus.FAILED
    clock.advance(dt.timedelta(days=7))
    assert provider.holdings("chat").commitments == ()
    assert applied(engine) == 1


def test_quota_step_and_pool(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(
        engine, clock, max_units=10, max_step=6, available_units=8,
        deployments={"tiny": {"available_units": 2}},
    )
    with pytest.raises(InvalidRequestError, match="max_step"):
        provider.set_elastic_target("chat", 7, idempotency_key="step")
    provider.set_elastic_target("chat", 6, idempotency_key="a")
    with pytest.raises(OutOfCapacityError) as info:
        provider.set_elastic_target("chat", 9, idempotency_key="b")
    assert info.value.retry_after == 60
    # The rejection is recorded under its key: replayed, never applied later.
    with pytest.raises(OutOfCapacityError):
        provider.set_elastic_target("chat", 9, idempotency_key="b")
    found = provider.lookup_request("b")
    assert found.status is RequestStatus.FAILED and found.error_code == "out_of_capacity"
    provider.buy_commitment("chat", 3, 30, idempotency_key="c")
    with pytest.raises(QuotaExceededError):
        provider.set_elastic_target("chat", 8, idempotency_key="d")
    with pytest.raises(OutOfCapacityError):
        provider.set_elastic_target("tiny", 3, idempotency_key="e")
    provider.set_elastic_target("tiny", 2, idempotency_key="f")
    assert applied(engine) == 3


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("timeout", ProviderTimeout),
        ("temporary", ProviderUnavailable),
        ("out_of_capacity", OutOfCapacityError),
        ("quota", QuotaExceededError),
        ("permanent", PermanentProviderError),
    ],
)
def test_each_fault_kind_maps_to_its_error(
    engine: sa.Engine, kind: str, error: type[Exception]
) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock)
    arm(engine, kind, provider="sim", operation="set_elastic_target", times=2)
    for key in ("k1", "k2"):
        with pytest.raises(error):
            provider.set_elastic_target("chat", 1, idempotency_key=key)
    # Exhausted: the next call goes through.
    provider.set_elastic_target("chat", 1, idempotency_key="k3")
    assert applied(engine) == 1
    recorded = provider.lookup_request("k1").status
    if kind in ("out_of_capacity", "quota"):
        assert recorded is RequestStatus.FAILED  # reached the books, rejected for good
    else:
        assert recorded is RequestStatus.UNKNOWN  # never reached the books


def test_faults_filter_by_deployment_and_operation(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock)
    arm(engine, "temporary", deployment="chat", operation="holdings")
    provider.holdings("other")
    provider.set_elastic_target("chat", 1, idempotency_key="x")
    with pytest.raises(ProviderUnavailable):
        provider.holdings("chat")
    provider.holdings("chat")
    arm(engine, "timeout", operation="lookup_request")
    with pytest.raises(ProviderTimeout):
        provider.lookup_request("x")
    arm(engine, "permanent", provider="someone-else")
    provider.holdings("chat")
    with engine.begin() as conn:
        assert sim.clear_faults(conn) == 1


def test_timeout_after_apply_applies_exactly_once(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock)
    arm(engine, "timeout", apply_first=True)
    with pytest.raises(ProviderTimeout):
        provider.set_elastic_target("chat", 3, idempotency_key="lost")
    assert provider.lookup_request("lost").status is RequestStatus.DONE
    retry = provider.set_elastic_target("chat", 3, idempotency_key="lost")
    assert retry.replayed and retry.accepted_units == 3
    assert applied(engine) == 1
    assert provider.holdings("chat").elastic_target == 3


def test_slow_confirm_becomes_done_after_calls_or_time(engine: sa.Engine) -> None:
    clock = ManualClock(T0)
    provider = make(engine, clock)
    arm(engine, "slow_confirm", confirm_after_calls=2)
    receipt = provider.set_elastic_target("chat", 2, idempotency_key="slow")
    assert receipt.status is RequestStatus.PENDING
    assert provider.lookup_request("slow").status is RequestStatus.PENDING
    provider.holdings("chat")  # the second look
    assert provider.lookup_request("slow").status is RequestStatus.DONE
    arm(engine, "slow_confirm", confirm_after_seconds=120)
    provider.buy_commitment("chat", 1, 7, idempotency_key="slow-c")
    assert provider.lookup_request("slow-c").status is RequestStatus.PENDING
    clock.advance(minutes=2)
    assert provider.lookup_request("slow-c").status is RequestStatus.DONE
    assert applied(engine) == 2


def test_database_errors_become_temporary(engine: sa.Engine, db_url: str) -> None:
    from scheduler import database as db

    clock = ManualClock(T0)
    broken = db.make_engine(db_url.rsplit("/", 1)[0] + "/no_such_database_here")
    try:
        provider = SimulatedProvider("sim", engine=broken, clock=clock)
        with pytest.raises(TemporaryProviderError):
            provider.holdings("chat")
        with pytest.raises(TemporaryProviderError):
            provider.set_elastic_target("chat", 1, idempotency_key="k")
    finally:
        broken.dispose()
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE sim_fault"))
    with pytest.raises(ProviderUnavailable, match="database error"):
        make(engine, clock).holdings("chat")


def test_naive_clock_is_refused(engine: sa.Engine) -> None:
    provider = SimulatedProvider(
        "sim", engine=engine, clock=lambda: dt.datetime(2026, 1, 1)
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        provider.holdings("chat")

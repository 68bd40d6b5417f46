"""Provider faults through the daemon: the HTTP provider against the reference server.

Each test runs real daemon ticks (:class:`scheduler.daemon.tick.Daemon`) whose deployment is
served by the ``http`` provider over a loopback socket to the reference server
(``examples/http_provider/reference_server.py``), which injects the fault (#10 items 11-14).
The server's clock is the daemon's clock, so lead times and holds line up.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from reference_server import Fault, ManualClock, ReferenceServer, ReferenceState

from scheduler.config import parse_config
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.tick import Daemon, TickReport
from scheduler.ingest.write import ingest_files
from scheduler.providers.base import ProviderLimits
from scheduler.store import journal as journal_store
from tests.daemon_support import DAEMON_SECTIONS, START, write_trace

DAY = START + dt.timedelta(days=14)  # Monday 2026-03-16
TOKEN = "fault-test-token"
LIMITS = ProviderLimits(
    max_units=20, max_step=10, supported_terms=(7, 30), lead_time_minutes=5, min_hold_minutes=60
)
DEPLOYMENT = """
[[deployment]]
name = "bot"
provider = "shim"
unit_tpm = 2500
max_units = 20
scale_up_lead_minutes = 5
min_hold_minutes = 60
max_spill_fraction = 0.0
[deployment.pricing]
elastic_unit_hour = 38.0264
dedicated_unit_month = 27379
"""


@dataclass
class Rig:
    daemon: Daemon
    server: ReferenceServer
    state: ReferenceState
    clock: ManualClock
    engine: sa.Engine

    def tick(self, at: dt.datetime) -> TickReport:
        self.clock.advance(at - self.clock())
        report = self.daemon.tick(at)
        assert report.leader
        return report

    def ticks(self, start: dt.datetime, minutes: int) -> list[TickReport]:
        return [self.tick(start + dt.timedelta(minutes=i)) for i in range(minutes)]

    def actions(self, kind: str = journal_store.KIND_ELASTIC) -> list[journal_store.ActionRecord]:
        with self.engine.connect() as conn:
            return journal_store.list_actions(conn, kind=kind)

    def backoff(self) -> journal_store.BackoffRecord | None:
        with self.engine.connect() as conn:
            return journal_store.read_backoffs(conn).get(self.daemon._ids["bot"])


def make_rig(engine: sa.Engine, tmp_path: Path, extra_daemon: str = "",
             commit_decision_time: str = "02:00") -> Iterator[Rig]:
    clock = ManualClock(DAY)
    state = ReferenceState(token=TOKEN, clock=clock)
    state.add_deployment("bot", LIMITS)
    with ReferenceServer(state) as server:
        sections = DAEMON_SECTIONS.replace(
            'commit_decision_time = "02:00"', f'commit_decision_time = "{commit_decision_time}"')
        text = sections.replace("[daemon]\n", "[daemon]\n" + extra_daemon) + f"""
[providers.shim]
type = "http"
url = "{server.url}"
token = "{TOKEN}"
timeout_seconds = 2
""" + DEPLOYMENT
        path = tmp_path / "capsched.toml"
        path.write_text(text)
        config = parse_config(tomllib.loads(text), path=path)
        trace = write_trace(tmp_path / "usage.csv", 0, until=DAY + dt.timedelta(days=1))
        providers = ProviderSet(config, engine)
        daemon = Daemon(config, engine, providers, instance_id="fault-test")
        ingest_files(engine, [str(trace)], deployment="bot", source="gw")
        try:
            yield Rig(daemon, server, state, clock, engine)
        finally:
            daemon.close()


@pytest.fixture
def rig(engine: sa.Engine, tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(engine, tmp_path)


def confirmed_keys(rig: Rig, kind: str = journal_store.KIND_ELASTIC) -> set[str]:
    return {a.idempotency_key for a in rig.actions(kind) if a.state == "confirmed"}


# -- item 11: a change applied but answered with an unreadable 2xx -------------------------


def test_an_unreadable_2xx_to_a_scale_up_is_looked_up_and_confirmed_not_failed(rig: Rig) -> None:
    rig.server.inject(Fault(status=200, raw_body=b"<html>OK</html>", apply_first=True,
                            path_contains="/elastic"))
    rig.ticks(DAY.replace(hour=7, minute=40), 25)  # through 08:04, across the scale-up

    actions = rig.actions()
    assert actions and not [a for a in actions if a.state == "failed"], actions
    faulted = rig.server.posts("/elastic")[0][2]
    (first,) = [a for a in actions if a.idempotency_key == faulted]
    assert first.state == "confirmed"  # by lookup_request, as after a timeout
    assert first.error_class == "OutcomeUnknownError"
    assert rig.state._records[faulted].reference is not None  # the provider had applied it
    # Each confirmed key changed the books once; nothing else changed them (the first tick
    # also buys the day's commitment).
    assert rig.state.applied_changes() == len(
        confirmed_keys(rig) | confirmed_keys(rig, journal_store.KIND_COMMITMENT))
    with rig.engine.connect() as conn:
        assert not journal_store.list_drift(conn)


def test_an_unreadable_2xx_to_a_commitment_purchase_never_buys_twice(rig: Rig) -> None:
    # The first tick takes the day's commitment decision (past 02:00) and buys; the
    # provider applies the purchase and answers a 201 that cannot be read.
    rig.server.inject(Fault(status=201, raw_body=b'{"status": "done"', apply_first=True,
                            path_contains="/commitments"))
    now = DAY.replace(hour=7, minute=30)

    first = rig.tick(now)
    (after_first,) = rig.actions(journal_store.KIND_COMMITMENT)
    rig.ticks(now + dt.timedelta(minutes=1), 3)

    # Outcome unknown: neither failed (old behaviour) nor confirmed blind.
    assert after_first.state == "sent" and after_first.error_class == "OutcomeUnknownError"
    assert first.actions_failed == 0
    (final,) = rig.actions(journal_store.KIND_COMMITMENT)
    assert final.state == "confirmed" and final.provider_reference
    held = rig.daemon.providers.get("shim").holdings("bot")
    assert [c.units for c in held.commitments] == [final.units]  # bought exactly once
    assert len(rig.server.posts("/commitments")) == 1  # looked up, not resent


# -- item 12: Retry-After honoured past the old 600 s cap ----------------------------------


def test_retry_after_1800_is_honoured_and_nothing_is_sent_before(rig: Rig) -> None:
    rig.server.inject(Fault(status=503, code="unavailable", retry_after=1800,
                            path_contains="/elastic"))
    start = DAY.replace(hour=7, minute=45)
    rig.ticks(start, 15)  # the first scale-up meets the 503
    (_, _, faulted), *_ = rig.server.posts("/elastic")
    sent_at = next(a.sent_at for a in rig.actions() if a.idempotency_key == faulted)
    assert sent_at is not None

    backoff = rig.backoff()
    assert backoff is not None and backoff.until is not None
    assert backoff.until >= sent_at + dt.timedelta(seconds=1800)
    assert len(rig.server.posts("/elastic")) == 1  # 14 more ticks, no POST

    # Nothing until the half hour has passed; then the latest target goes out once.
    rig.ticks(start + dt.timedelta(minutes=15), 15)
    assert len(rig.server.posts("/elastic")) == 1
    rig.ticks(sent_at + dt.timedelta(minutes=31), 2)
    assert len(rig.server.posts("/elastic")) >= 2
    assert rig.actions()[-1].state == "confirmed" or any(
        a.state == "confirmed" for a in rig.actions())


def test_the_retry_after_maximum_is_configurable(engine: sa.Engine, tmp_path: Path) -> None:
    for rig in make_rig(engine, tmp_path, "provider_max_retry_after_seconds = 900\n"):
        rig.server.inject(Fault(status=503, code="unavailable", retry_after=86_400,
                                path_contains="/elastic"))
        rig.ticks(DAY.replace(hour=7, minute=45), 15)
        (_, _, faulted), *_ = rig.server.posts("/elastic")
        sent_at = next(a.sent_at for a in rig.actions() if a.idempotency_key == faulted)
        backoff = rig.backoff()
        assert sent_at is not None and backoff is not None and backoff.until is not None
        assert backoff.until == sent_at + dt.timedelta(seconds=900)


# -- item 13: persistent 500s back off the deployment, not the action ----------------------


def test_persistent_500s_back_off_the_deployment_even_as_targets_change(
    engine: sa.Engine, tmp_path: Path
) -> None:
    # One unit per tick at most: as the provider's holdings move (by hand here) the target
    # moves every tick, and each new target supersedes the one in backoff.
    # The day's commitment decision is put off (23:00) so that only elastic targets move.
    for rig in make_rig(engine, tmp_path, "max_change_per_tick = 1\n", "23:00"):
        rig.server.inject(Fault(status=500, code="internal", times=10**6,
                                path_contains="/elastic"))
        start = DAY.replace(hour=9)
        minutes = 30
        for i in range(minutes):
            rig.clock.advance(start + dt.timedelta(minutes=i) - rig.clock())
            rig.state.set_elastic_by_hand("bot", i % 2)  # holdings 0 or 1 unit, alternately
            rig.tick(start + dt.timedelta(minutes=i))

        posts = rig.server.posts("/elastic")
        keys = {a.idempotency_key for a in rig.actions()}
        assert len(keys) >= minutes // 2, "the target must really change from tick to tick"
        # Old behaviour: one POST (and a fresh key) per tick. Backoff of 15 s doubling to
        # 10 min, jittered down by at most half: at most 10 sends in 30 minutes.
        assert len(posts) <= 10, len(posts)
        backoff = rig.backoff()
        assert backoff is not None and backoff.failures == len(posts)  # never reset

        # The provider recovers: the next send after the backoff is confirmed and clears it.
        rig.server.clear_faults()
        rig.ticks(start + dt.timedelta(minutes=minutes), 12)
        assert any(a.state == "confirmed" for a in rig.actions())
        assert rig.backoff() is None


# -- item 14: "done" without a change ------------------------------------------------------


def test_done_without_a_change_stops_sending_alerts_and_holds(rig: Rig) -> None:
    rig.server.inject(Fault(pretend_done=True, times=10**6, path_contains="/elastic"))
    reports = rig.ticks(DAY.replace(hour=7, minute=50), 15)  # through 08:04

    posts = rig.server.posts("/elastic")
    # Old behaviour: a new request every tick, forever. Now: three, then stop.
    assert len(posts) == 3, posts
    assert rig.daemon.providers.get("shim").holdings("bot").elastic_target == 0
    with rig.engine.connect() as conn:
        drift = journal_store.list_drift(conn)
        state = journal_store.read_heartbeat(conn)
    kinds = [d.kind for d in drift]
    assert kinds.count("elastic_target") == 3 and kinds[-1] == "sending_stopped"
    # The alert: every tick after the stop says so (the heartbeat makes `health` fail),
    # and the gauge is up.
    stopped_at = next(i for i, r in enumerate(reports) if any("sending stopped" in e
                                                              for e in r.errors))
    assert all(any("sending stopped" in e for e in r.errors) for r in reports[stopped_at:])
    assert state is not None and state.last_tick_ok is False
    assert "sending stopped" in (state.last_error or "")
    gauge = rig.daemon.metrics.registry.get_sample_value(
        "capsched_sending_stopped", {"deployment": "bot"})
    assert gauge == 1.0

    # A human puts the capacity the journal expects in place: sending resumes.
    last = [a for a in rig.actions() if a.state == "confirmed"][-1]
    rig.server.clear_faults()
    rig.state.set_elastic_by_hand("bot", last.accepted_units or 0)
    later = rig.ticks(DAY.replace(hour=8, minute=5), 3)
    with rig.engine.connect() as conn:
        assert journal_store.sending_stops(conn, [rig.daemon._ids["bot"]]) == {}
    assert not any("sending stopped" in e for e in later[-1].errors)
    assert rig.daemon.metrics.registry.get_sample_value(
        "capsched_sending_stopped", {"deployment": "bot"}) == 0.0

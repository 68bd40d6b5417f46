"""The worked example of docs/providers.md runs, and the journal drives it end to end.

The example is written against a made-up vendor SDK, ``acme``; this test supplies it (an
in-memory platform with the calls and exceptions the page describes), executes the page's
Python block verbatim, and sends, looks up and reconciles through it with the real journal.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.daemon import journal
from scheduler.providers.base import Provider, RequestStatus
from scheduler.providers.errors import AuthenticationError, ProviderUnavailable
from scheduler.store.deployments import deployment_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "providers.md"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@dataclass
class _Units:
    count: int
    since: dt.datetime


@dataclass
class _Result:
    id: str
    units: int
    at: dt.datetime
    done: bool = True


def _acme() -> types.ModuleType:
    """The made-up SDK of the page: a platform holding units per deployment in memory."""
    acme = types.ModuleType("acme")

    class Error(Exception):
        pass

    class Timeout(Error):
        pass

    class Throttled(Error):
        def __init__(self, message: str, retry_after: float) -> None:
            super().__init__(message)
            self.retry_after = retry_after

    class Denied(Error):
        def __init__(self, permission: str) -> None:
            super().__init__(f"denied: {permission}")
            self.permission = permission

    class Invalid(Error):
        pass

    class NotFound(Error):
        pass

    class Client:
        def __init__(self, region: str | None = None, timeout: float = 10.0) -> None:
            self.units: dict[str, int] = {}
            self.requests: dict[str, _Result] = {}
            self.fail_next: Error | None = None

        def get_units(self, deployment: str) -> list[_Units]:
            count = self.units.get(deployment, 0)
            return [_Units(count, NOW)] if count else []

        def set_units(self, deployment: str, units: int, *, request_id: str) -> _Result:
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            if request_id not in self.requests:  # the platform's own idempotency
                self.units[deployment] = units
                self.requests[request_id] = _Result(f"r-{len(self.requests) + 1}", units, NOW)
            return self.requests[request_id]

        def get_request(self, request_id: str) -> _Result:
            if request_id not in self.requests:
                raise NotFound(request_id)
            return self.requests[request_id]

    for value in (Error, Timeout, Throttled, Denied, Invalid, NotFound, Client):
        setattr(acme, value.__name__, value)
    return acme


@pytest.fixture
def acme_provider() -> Iterator[Any]:
    text = DOC.read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    acme = _acme()
    sys.modules["acme"] = acme
    try:
        namespace: dict[str, Any] = {"__name__": "acme_capsched"}
        exec(compile(block, f"{DOC}:python", "exec"), namespace)
        cls = namespace["AcmeProvider"]
        assert issubclass(cls, Provider)
        yield cls.from_settings("acme-eu", {"region": "eu-west"}), acme
    finally:
        del sys.modules["acme"]


def test_the_worked_example_is_a_provider_the_journal_can_drive(
    acme_provider: Any, engine: sa.Engine
) -> None:
    provider, acme = acme_provider
    with engine.begin() as conn:
        ident = int(conn.execute(deployment_table.insert().returning(deployment_table.c.id), {
            "name": "support-bot", "provider": "acme-eu", "model": "m", "unit_tpm": 1000.0,
            "output_token_weight": 3.0, "timezone": "UTC", "settings": {}}).scalar_one())
    names = {ident: "support-bot"}

    # A throttled send maps to a temporary error carrying the SDK's hint.
    provider._client.fail_next = acme.Throttled("slow down", retry_after=120)
    action = journal.plan_action(engine, journal.ActionRequest(
        ident, "elastic_set_target", target_units=3), NOW)
    first = journal.send_due(engine, provider, names, NOW)
    assert [o.error_class for o in first.outcomes] == [ProviderUnavailable.__name__]
    assert first.backoffs[ident].until == NOW + dt.timedelta(seconds=120)

    # After the backoff the journal looks the key up (unknown) and resends it once.
    later = NOW + dt.timedelta(minutes=3)
    assert journal.recover(engine, provider, later).confirmed
    assert provider.holdings("support-bot").elastic_target == 3
    assert provider.lookup_request(action.idempotency_key).status is RequestStatus.DONE
    assert journal.reconcile(engine, provider, names, later) == []

    # A permission error names the permission and is permanent.
    provider._client.fail_next = acme.Denied("units:write")
    journal.plan_action(engine, journal.ActionRequest(
        ident, "elastic_set_target", target_units=5), later)
    denied = journal.send_due(engine, provider, names, later)
    (alert,) = denied.alerts
    assert alert.error_class == AuthenticationError.__name__
    assert "units:write" in (alert.error or "")

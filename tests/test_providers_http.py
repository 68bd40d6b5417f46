"""The http adapter against the real reference server on loopback, plus edge mapping units.

The server runs in a thread on 127.0.0.1, port 0, with a manual clock; every call crosses a
real socket. Faults (errors, slow answers) are injected server-side.
"""

from __future__ import annotations

import datetime as dt
import random
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reference_server import Fault, ManualClock, ReferenceServer, ReferenceState

from scheduler.providers import (
    AuthenticationError,
    IdempotencyConflictError,
    InvalidRequestError,
    NotSupportedError,
    OutcomeUnknownError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ProviderLimits,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
    RequestStatus,
    RetryPolicy,
    TemporaryProviderError,
    call_with_retry,
)
from scheduler.providers.http import HttpProvider, parse_retry_after

T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
TOKEN = "s3cret-token"
DEPLOYMENT = "gpt-4o"
LIMITS = ProviderLimits(
    max_units=20, max_step=10, supported_terms=(7, 30), lead_time_minutes=5, min_hold_minutes=60
)


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def state(clock: ManualClock) -> ReferenceState:
    state = ReferenceState(token=TOKEN, clock=clock)
    state.add_deployment(DEPLOYMENT, LIMITS, available_units=12)
    state.add_deployment("no-commit", ProviderLimits(max_units=5, max_step=5, supported_terms=()))
    return state


@pytest.fixture
def server(state: ReferenceState) -> Iterator[ReferenceServer]:
    with ReferenceServer(state) as server:
        yield server


@pytest.fixture
def provider(server: ReferenceServer) -> HttpProvider:
    return HttpProvider("shim", url=server.url, token=TOKEN, timeout=2.0)


# -- round trips -----------------------------------------------------------------------


def test_limits_round_trip(provider: HttpProvider) -> None:
    assert provider.limits(DEPLOYMENT) == LIMITS
    assert not provider.limits("no-commit").supports_commitments


def test_holdings_round_trip(provider: HttpProvider, clock: ManualClock) -> None:
    empty = provider.holdings(DEPLOYMENT)
    assert (empty.deployment, empty.as_of, empty.elastic, empty.commitments) == (
        DEPLOYMENT,
        T0,
        (),
        (),
    )

    bought = provider.buy_commitment(DEPLOYMENT, 2, 30, idempotency_key="buy-1")
    provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="up-1")
    clock.advance(minutes=2)
    holdings = provider.holdings(DEPLOYMENT)

    assert holdings.as_of == T0 + minutes(2)
    assert holdings.as_of.tzinfo is dt.UTC
    (commitment,) = holdings.commitments
    assert commitment == bought.commitment
    assert (commitment.units, commitment.term_days) == (2, 30)
    assert (commitment.start, commitment.end) == (T0, T0 + dt.timedelta(days=30))
    (tranche,) = holdings.elastic
    assert (tranche.units, tranche.active_from, tranche.hold_until) == (
        3,
        T0 + minutes(5),
        T0 + minutes(65),
    )
    assert holdings.committed_at(holdings.as_of) == 2
    assert holdings.capacity_at(T0 + minutes(5)) == 5


def test_scale_up_is_pending_until_the_lead_time_has_passed(
    provider: HttpProvider, clock: ManualClock
) -> None:
    receipt = provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="up-1")

    assert (receipt.requested_units, receipt.accepted_units) == (3, 3)
    assert receipt.effective_at == T0 + minutes(LIMITS.lead_time_minutes)
    assert receipt.status is RequestStatus.DONE and not receipt.clamped
    before = provider.holdings(DEPLOYMENT)
    assert (before.elastic_active_units, before.elastic_pending_units) == (0, 3)
    assert before.elastic_target == 3

    clock.advance(minutes=4)
    assert provider.holdings(DEPLOYMENT).elastic_active_units == 0
    clock.advance(minutes=1)
    after = provider.holdings(DEPLOYMENT)
    assert (after.elastic_active_units, after.elastic_pending_units) == (3, 0)


def test_scale_down_inside_min_hold_is_clamped_and_says_so(
    provider: HttpProvider, clock: ManualClock
) -> None:
    provider.set_elastic_target(DEPLOYMENT, 4, idempotency_key="up-1")
    clock.advance(minutes=15)  # active since T0+5, held until T0+65

    early = provider.set_elastic_target(DEPLOYMENT, 1, idempotency_key="down-early")

    assert (early.requested_units, early.accepted_units) == (1, 4)
    assert early.clamped and early.clamp_reason == "min_hold"
    assert early.next_release_at == T0 + minutes(65)
    assert provider.holdings(DEPLOYMENT).elastic_active_units == 4

    clock.advance(minutes=50)  # T0+65: the hold has ended
    later = provider.set_elastic_target(DEPLOYMENT, 1, idempotency_key="down-later")
    assert (later.accepted_units, later.clamp_reason, later.effective_at) == (1, None, clock())
    assert provider.holdings(DEPLOYMENT).elastic_active_units == 1


def test_scale_down_releases_what_it_may_and_keeps_held_units(
    provider: HttpProvider, clock: ManualClock
) -> None:
    provider.set_elastic_target(DEPLOYMENT, 2, idempotency_key="up-1")  # held to T0+65
    clock.advance(minutes=30)
    provider.set_elastic_target(DEPLOYMENT, 5, idempotency_key="up-2")  # held to T0+95
    clock.advance(minutes=40)  # T0+70

    receipt = provider.set_elastic_target(DEPLOYMENT, 0, idempotency_key="down")

    assert receipt.accepted_units == 3
    assert receipt.next_release_at == T0 + minutes(95)
    (left,) = provider.holdings(DEPLOYMENT).elastic
    assert (left.units, left.active_from) == (3, T0 + minutes(35))


def test_scale_down_cancels_pending_units_at_once(provider: HttpProvider) -> None:
    provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="up-1")

    receipt = provider.set_elastic_target(DEPLOYMENT, 1, idempotency_key="down")

    # Pending units never served, so no hold applies; one unit stays pending.
    assert (receipt.accepted_units, receipt.clamp_reason) == (1, None)
    assert receipt.effective_at == T0 + minutes(5)
    holdings = provider.holdings(DEPLOYMENT)
    assert (holdings.elastic_pending_units, holdings.elastic_active_units) == (1, 0)


# -- idempotency -----------------------------------------------------------------------


def test_same_key_twice_applies_once(
    provider: HttpProvider, state: ReferenceState, clock: ManualClock
) -> None:
    first = provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")
    clock.advance(minutes=1)
    second = provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")

    assert second.replayed and not first.replayed
    assert (second.reference, second.effective_at) == (first.reference, first.effective_at)
    assert provider.holdings(DEPLOYMENT).elastic_target == 3
    assert len(provider.holdings(DEPLOYMENT).elastic) == 1
    assert state.applied_changes() == 1

    # A new key with the same target is a new (no-op) request: still 3 units.
    provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-2")
    assert provider.holdings(DEPLOYMENT).elastic_target == 3


def test_same_commitment_key_twice_buys_once(provider: HttpProvider) -> None:
    first = provider.buy_commitment(DEPLOYMENT, 2, 7, idempotency_key="buy-1")
    second = provider.buy_commitment(DEPLOYMENT, 2, 7, idempotency_key="buy-1")

    assert second.replayed and second.commitment == first.commitment
    assert len(provider.holdings(DEPLOYMENT).commitments) == 1


def test_reusing_a_key_for_another_request_is_a_conflict(provider: HttpProvider) -> None:
    provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")

    with pytest.raises(IdempotencyConflictError) as caught:
        provider.set_elastic_target(DEPLOYMENT, 4, idempotency_key="K-1")

    assert isinstance(caught.value, PermanentProviderError)
    assert caught.value.status == 409
    assert provider.holdings(DEPLOYMENT).elastic_target == 3


def test_lookup_tells_whether_a_request_arrived(provider: HttpProvider) -> None:
    assert provider.lookup_request("never-sent").status is RequestStatus.UNKNOWN

    receipt = provider.set_elastic_target(DEPLOYMENT, 2, idempotency_key="K-1")
    found = provider.lookup_request("K-1")

    assert found.status is RequestStatus.DONE
    assert (found.operation, found.deployment) == ("set_elastic_target", DEPLOYMENT)
    assert found.reference == receipt.reference
    assert found.details["accepted_units"] == 2


def test_a_rejected_key_stays_failed_and_replays_the_rejection(
    provider: HttpProvider, state: ReferenceState
) -> None:
    state.set_available_units(DEPLOYMENT, 1)
    with pytest.raises(OutOfCapacityError):
        provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")

    failed = provider.lookup_request("K-1")
    assert (failed.status, failed.error_code) == (RequestStatus.FAILED, "out_of_capacity")

    # Capacity comes back, but a key names one attempt: its outcome does not change.
    state.set_available_units(DEPLOYMENT, 10)
    with pytest.raises(OutOfCapacityError):
        provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")
    assert provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-2").accepted_units == 3


# -- errors ----------------------------------------------------------------------------


def test_wrong_token_is_a_permanent_authentication_error(server: ReferenceServer) -> None:
    provider = HttpProvider("shim", url=server.url, token="wrong", timeout=2.0)

    with pytest.raises(AuthenticationError) as caught:
        provider.holdings(DEPLOYMENT)

    error = caught.value
    assert isinstance(error, PermanentProviderError)
    assert (error.provider, error.operation, error.deployment, error.status) == (
        "shim",
        "holdings",
        DEPLOYMENT,
        401,
    )


@pytest.mark.parametrize("status", [503, 429])
def test_busy_server_is_temporary_with_retry_after(
    provider: HttpProvider, server: ReferenceServer, status: int
) -> None:
    server.inject(Fault(status=status, code="busy", retry_after=7))

    with pytest.raises(ProviderUnavailable) as caught:
        provider.set_elastic_target(DEPLOYMENT, 2, idempotency_key="K-1")

    assert isinstance(caught.value, TemporaryProviderError)
    assert (caught.value.status, caught.value.retry_after) == (status, 7.0)
    # The faulted request never reached the books: the key is unknown, and resending works.
    assert provider.lookup_request("K-1").status is RequestStatus.UNKNOWN
    assert provider.set_elastic_target(DEPLOYMENT, 2, idempotency_key="K-1").accepted_units == 2


def test_retry_helper_with_the_same_key_gets_through_once(
    provider: HttpProvider, server: ReferenceServer, state: ReferenceState
) -> None:
    server.inject(Fault(status=503, retry_after=1, times=2))
    slept: list[float] = []

    receipt = call_with_retry(
        lambda: provider.set_elastic_target(DEPLOYMENT, 4, idempotency_key="K-1"),
        policy=RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=4.0),
        sleep=slept.append,
        rng=random.Random(1),
    )

    assert receipt.accepted_units == 4
    assert len(slept) == 2 and all(delay >= 1.0 for delay in slept)  # retry-after honoured
    assert state.applied_changes() == 1


def test_out_of_capacity_is_its_own_error_with_retry_after(
    provider: HttpProvider, state: ReferenceState
) -> None:
    state.set_available_units(DEPLOYMENT, 2)

    with pytest.raises(OutOfCapacityError) as caught:
        provider.set_elastic_target(DEPLOYMENT, 5, idempotency_key="K-1")

    error = caught.value
    assert not isinstance(error, TemporaryProviderError | PermanentProviderError)
    assert (error.code, error.retry_after, error.deployment) == (
        "out_of_capacity",
        60.0,
        DEPLOYMENT,
    )
    assert provider.holdings(DEPLOYMENT).elastic_target == 0


def test_quota_exceeded(provider: HttpProvider) -> None:
    provider.buy_commitment(DEPLOYMENT, 15, 30, idempotency_key="buy-1")

    with pytest.raises(QuotaExceededError):
        provider.set_elastic_target(DEPLOYMENT, 8, idempotency_key="K-1")
    provider.set_elastic_target(DEPLOYMENT, 5, idempotency_key="K-2")  # 15 + 5 fits


def test_step_larger_than_max_step_is_invalid(provider: HttpProvider) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        provider.set_elastic_target(DEPLOYMENT, LIMITS.max_step + 1, idempotency_key="K-1")
    assert caught.value.code == "step_too_large"


def test_unknown_deployment_is_invalid(provider: HttpProvider) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        provider.holdings("nope")
    assert (caught.value.status, caught.value.code) == (404, "unknown_deployment")


def test_commitments_not_sold_raise_not_supported(provider: HttpProvider) -> None:
    with pytest.raises(NotSupportedError) as caught:
        provider.buy_commitment("no-commit", 1, 30, idempotency_key="buy-1")
    assert caught.value.provider == "shim"
    assert "shim" in str(caught.value)


def test_unsupported_term_is_invalid(provider: HttpProvider) -> None:
    with pytest.raises(InvalidRequestError):
        provider.buy_commitment(DEPLOYMENT, 1, 14, idempotency_key="buy-1")


def test_a_server_that_does_not_answer_in_time_is_a_timeout(server: ReferenceServer) -> None:
    server.inject(Fault(status=0, delay_seconds=1.5))
    provider = HttpProvider("shim", url=server.url, token=TOKEN, timeout=0.2)

    with pytest.raises(ProviderTimeout) as caught:
        provider.holdings(DEPLOYMENT)

    assert isinstance(caught.value, TemporaryProviderError)
    assert caught.value.operation == "holdings"


def test_a_lost_answer_is_confirmed_by_lookup_and_resent_safely(
    server: ReferenceServer, state: ReferenceState
) -> None:
    # The change is applied but the answer comes too late: the daemon's crash/timeout case.
    server.inject(Fault(apply_first=True, delay_seconds=1.5))
    provider = HttpProvider("shim", url=server.url, token=TOKEN, timeout=0.2)

    with pytest.raises(ProviderTimeout):
        provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")

    assert provider.lookup_request("K-1").status is RequestStatus.DONE
    resent = provider.set_elastic_target(DEPLOYMENT, 3, idempotency_key="K-1")
    assert resent.replayed
    assert provider.holdings(DEPLOYMENT).elastic_target == 3
    assert state.applied_changes() == 1


def test_a_slow_answer_within_the_timeout_is_fine(server: ReferenceServer) -> None:
    server.inject(Fault(status=0, delay_seconds=0.1))
    provider = HttpProvider("shim", url=server.url, token=TOKEN, timeout=2.0)
    assert provider.holdings(DEPLOYMENT).elastic == ()


def test_connection_refused_is_temporary() -> None:
    # Bind then close a port: nothing listens there afterwards.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = HttpProvider("shim", url=f"http://127.0.0.1:{port}", token=TOKEN, timeout=1.0)

    with pytest.raises(ProviderUnavailable) as caught:
        provider.limits(DEPLOYMENT)
    assert isinstance(caught.value, TemporaryProviderError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "refused" in str(caught.value)


def test_malformed_arguments_never_reach_the_wire(provider: HttpProvider) -> None:
    with pytest.raises(InvalidRequestError):
        provider.set_elastic_target(DEPLOYMENT, -1, idempotency_key="K-1")
    with pytest.raises(InvalidRequestError):
        provider.set_elastic_target(DEPLOYMENT, 1, idempotency_key="has space")
    with pytest.raises(InvalidRequestError):
        provider.buy_commitment(DEPLOYMENT, 0, 30, idempotency_key="K-2")
    assert provider.lookup_request("K-1").status is RequestStatus.UNKNOWN


# -- edge mapping, through the transport seam --------------------------------------------


def mock_provider(
    response: httpx.Response | Exception,
) -> tuple[HttpProvider, list[httpx.Request]]:
    """A provider whose every call is answered by ``response`` through httpx.MockTransport."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(response, Exception):
            raise response
        return response

    provider = HttpProvider(
        "shim", url="http://127.0.0.1:9/base/", token=TOKEN, transport=httpx.MockTransport(handler)
    )
    return provider, seen


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None
           ) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, content=body)


def test_request_carries_auth_key_timeout_and_quoted_path() -> None:
    body = (
        b'{"reference": "r1", "accepted_units": 2, "effective_at": "2025-03-03T09:05:00Z",'
        b' "status": "done"}'
    )
    provider, seen = mock_provider(answer(200, body))

    receipt = provider.set_elastic_target("team/a b", 2, idempotency_key="K-1")

    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:9/base/v1/deployments/team%2Fa%20b/elastic"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == "K-1"
    assert request.content == b'{"target_units":2}'
    # A timeout on every phase, on by default.
    phases = ("connect", "read", "write", "pool")
    assert request.extensions["timeout"] == dict.fromkeys(phases, 10.0)
    assert receipt.effective_at == T0 + minutes(5)


def _certificate_failure() -> httpx.ConnectError:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "bad cert")
        except ssl.SSLError as inner:
            raise httpx.ConnectError("certificate verify failed") from inner
    except httpx.ConnectError as outer:
        return outer


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(200, b"<html>not json</html>"), ProviderProtocolError),
        (answer(200, b"[1, 2]"), ProviderProtocolError),
        (answer(502, b"<html>bad gateway</html>"), ProviderUnavailable),
        (answer(500), ProviderUnavailable),
        (answer(403), AuthenticationError),
        (answer(422, b'{"error": {"code": "whatever"}}'), InvalidRequestError),
        (answer(409), IdempotencyConflictError),
        (answer(409, b'{"error": {"code": "request_in_progress"}}'), ProviderUnavailable),
        (answer(422, b'{"error": {"code": "quota_exceeded"}}'), QuotaExceededError),
        (answer(501), NotSupportedError),
        (answer(302, headers={"location": "http://elsewhere/"}), ProviderProtocolError),
        (httpx.RemoteProtocolError("closed"), ProviderUnavailable),
        (httpx.ReadError("reset"), ProviderUnavailable),
        (httpx.ConnectError("refused"), ProviderUnavailable),
        (httpx.ReadTimeout("timed out"), ProviderTimeout),
        (httpx.ConnectTimeout("timed out"), ProviderTimeout),
        (_certificate_failure(), PermanentProviderError),
    ],
)
def test_edge_mapping(response: httpx.Response | Exception, expected: type[ProviderError]) -> None:
    provider, _ = mock_provider(response)

    with pytest.raises(ProviderError) as caught:
        provider.lookup_request("K-1")

    assert type(caught.value) is expected
    assert (caught.value.provider, caught.value.operation) == ("shim", "lookup_request")


@pytest.mark.parametrize(
    "body",
    [
        b"<html>OK</html>",  # a proxy's page
        b"[1, 2]",  # JSON, not an object
        b'{"status": "done"}',  # an object without the receipt's fields
        b"x" * (2 << 20),  # too large to read
    ],
)
def test_an_unreadable_2xx_to_a_change_is_an_unknown_outcome_not_a_failure(body: bytes) -> None:
    # #10 item 11: the provider may have applied it; the journal must look the key up.
    provider, _ = mock_provider(answer(200, body))

    with pytest.raises(OutcomeUnknownError) as elastic:
        provider.set_elastic_target(DEPLOYMENT, 2, idempotency_key="K-1")
    with pytest.raises(OutcomeUnknownError) as commitment:
        provider.buy_commitment(DEPLOYMENT, 1, 30, idempotency_key="K-2")

    for caught in (elastic.value, commitment.value):
        assert isinstance(caught, TemporaryProviderError)
        assert not isinstance(caught, PermanentProviderError)
    # The same answer to a read is off-protocol, nothing more.
    with pytest.raises(ProviderProtocolError):
        provider.holdings(DEPLOYMENT)


def test_the_client_is_one_per_provider_and_closed_with_it() -> None:
    provider, seen = mock_provider(answer(200, b'{"idempotency_key": "K", "status": "unknown"}'))
    client = provider._client
    provider.lookup_request("K-1")
    provider.lookup_request("K-2")
    assert provider._client is client and len(seen) == 2
    provider.close()
    assert client.is_closed


def test_malformed_holdings_are_protocol_errors() -> None:
    naive = b'{"as_of": "2025-03-03T09:00:00", "elastic": [], "commitments": []}'
    provider, _ = mock_provider(answer(200, naive))
    with pytest.raises(ProviderProtocolError, match="no UTC offset"):
        provider.holdings(DEPLOYMENT)

    negative = (
        b'{"as_of": "2025-03-03T09:00:00Z", "commitments": [], "elastic": '
        b'[{"units": -1, "active_from": "2025-03-03T09:00:00Z",'
        b' "hold_until": "2025-03-03T10:00:00Z"}]}'
    )
    provider, _ = mock_provider(answer(200, negative))
    with pytest.raises(ProviderProtocolError, match="at least one unit"):
        provider.holdings(DEPLOYMENT)


def test_retry_after_from_the_body_and_as_http_date() -> None:
    body = b'{"error": {"code": "out_of_capacity", "retry_after_seconds": 120}}'
    provider, _ = mock_provider(answer(503, body))
    with pytest.raises(OutOfCapacityError) as caught:
        provider.set_elastic_target(DEPLOYMENT, 1, idempotency_key="K-1")
    assert caught.value.retry_after == 120.0

    now = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
    assert parse_retry_after("Mon, 03 Mar 2025 09:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("garbage", now=now) is None


# -- settings --------------------------------------------------------------------------


def test_token_from_file_env_or_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("SHIM_TOKEN", "from-env")
    base = {"url": "http://127.0.0.1:1/"}

    from_file = HttpProvider.from_settings("a", {**base, "token_file": str(token_file)})
    from_env = HttpProvider.from_settings("b", {**base, "token_env": "SHIM_TOKEN"}, timeout=3)
    inline = HttpProvider.from_settings("c", {**base, "token": "t", "timeout_seconds": 0.5})

    assert from_file._token == "from-file"  # the newline of the file is not part of it
    assert from_env._token == "from-env"
    assert (from_env.timeout, inline.timeout) == (3.0, 0.5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "t"}, "url is required"),
        ({"url": "ftp://x/", "token": "t"}, "http:// or https://"),
        ({"url": "http://x/"}, "exactly one of"),
        ({"url": "http://x/", "token": "t", "token_env": "X"}, "exactly one of"),
        ({"url": "http://x/", "token_env": "CAPSCHED_TEST_UNSET_VARIABLE"}, "is not set"),
        ({"url": "http://x/", "token_file": "/nonexistent/token"}, "cannot read"),
        ({"url": "http://x/", "token": "t", "tokenfile": "x"}, "unknown key 'tokenfile'"),
        ({"url": "http://x/", "token": "t", "timeout_seconds": 0}, "positive number"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        HttpProvider.from_settings("shim", settings)

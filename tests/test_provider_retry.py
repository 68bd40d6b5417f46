"""Retry and backoff: classification by type, capped exponential delays, injected randomness."""

from __future__ import annotations

import datetime as dt
import pickle
import random
from collections.abc import Callable

import pytest

from scheduler.providers import (
    AuthenticationError,
    Backoff,
    Disposition,
    IdempotencyConflictError,
    InvalidRequestError,
    NotSupportedError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
    RetryPolicy,
    TemporaryProviderError,
    call_with_retry,
    classify,
)

NOW = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)


class FixedRandom:
    """An rng that always returns the same fraction."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def err(cls: type[ProviderError], retry_after: float | None = None) -> ProviderError:
    if cls is NotSupportedError:
        return NotSupportedError(provider="p", operation="buy_commitment")
    return cls(
        "boom",
        provider="p",
        operation="set_elastic_target",
        deployment="d",
        retry_after=retry_after,
    )


@pytest.mark.parametrize(
    ("cls", "disposition"),
    [
        (TemporaryProviderError, Disposition.RETRY),
        (ProviderTimeout, Disposition.RETRY),
        (ProviderUnavailable, Disposition.RETRY),
        (OutOfCapacityError, Disposition.BACK_OFF),
        (QuotaExceededError, Disposition.BACK_OFF),
        (PermanentProviderError, Disposition.STOP),
        (AuthenticationError, Disposition.STOP),
        (InvalidRequestError, Disposition.STOP),
        (IdempotencyConflictError, Disposition.STOP),
        (ProviderProtocolError, Disposition.STOP),
        (NotSupportedError, Disposition.UNSUPPORTED),
    ],
)
def test_classification_is_by_type(cls: type[ProviderError], disposition: Disposition) -> None:
    assert classify(err(cls)) is disposition


def test_errors_carry_their_context_and_survive_pickling() -> None:
    error = OutOfCapacityError(
        "no units",
        provider="azure",
        operation="set_elastic_target",
        deployment="gpt-4o",
        retry_after=30,
        code="out_of_capacity",
        status=503,
    )
    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is OutOfCapacityError
    assert (copy.provider, copy.operation, copy.deployment, copy.retry_after) == (
        "azure",
        "set_elastic_target",
        "gpt-4o",
        30,
    )
    assert (
        str(copy)
        == str(error)
        == (
            "azure.set_elastic_target[gpt-4o]: no units "
            "(status=503, code=out_of_capacity, retry_after=30s)"
        )
    )


# -- the delay schedule -----------------------------------------------------------------


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, multiplier=2.0, jitter=0.5)
    no_jitter = FixedRandom(0.0)

    assert [policy.delay(n, no_jitter) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    # Jitter only ever shortens: u = 0.5 with jitter 0.5 takes a quarter off.
    assert [policy.delay(n, FixedRandom(0.5)) for n in (1, 4)] == [0.75, 3.75]


def test_jittered_delays_stay_within_bounds_even_for_huge_retry_numbers() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, jitter=1.0)
    rng = random.Random(7)
    for retry in [*range(1, 50), 10_000]:
        ceiling = min(8.0, 0.5 * 2.0 ** (retry - 1)) if retry < 100 else 8.0
        delay = policy.delay(retry, rng)
        assert 0.0 <= delay <= ceiling


def test_same_seed_same_delays() -> None:
    policy = RetryPolicy()
    first = [policy.delay(n, random.Random(3)) for n in range(1, 5)]
    assert first == [policy.delay(n, random.Random(3)) for n in range(1, 5)]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=10, max_delay=1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


# -- call_with_retry --------------------------------------------------------------------


def failing(errors: list[Exception], result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``errors`` in turn, then returns ``result``; counts its calls."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0, jitter=0.0)


def test_temporary_errors_are_retried_with_backoff_until_success() -> None:
    fn, calls = failing([err(ProviderTimeout), err(ProviderUnavailable)])
    slept: list[float] = []
    seen: list[tuple[int, float]] = []

    result = call_with_retry(
        fn,
        policy=POLICY,
        sleep=slept.append,
        rng=FixedRandom(0.0),
        on_retry=lambda n, e, delay: seen.append((n, delay)),
    )

    assert result == "ok"
    assert len(calls) == 3
    assert slept == [1.0, 2.0]
    assert seen == [(1, 1.0), (2, 2.0)]


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    errors: list[Exception] = [err(ProviderUnavailable) for _ in range(10)]
    last = errors[3]
    fn, calls = failing(errors)
    slept: list[float] = []

    with pytest.raises(ProviderUnavailable) as caught:
        call_with_retry(fn, policy=POLICY, sleep=slept.append, rng=FixedRandom(0.0))

    assert caught.value is last
    assert len(calls) == POLICY.max_attempts
    assert slept == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "error",
    [
        err(AuthenticationError),
        err(InvalidRequestError),
        err(OutOfCapacityError, retry_after=1),
        err(QuotaExceededError),
        err(NotSupportedError),
        ValueError("a bug, not a provider failure"),
    ],
)
def test_everything_but_temporary_errors_propagates_at_once(error: Exception) -> None:
    fn, calls = failing([error])
    slept: list[float] = []

    with pytest.raises(type(error)):
        call_with_retry(fn, policy=POLICY, sleep=slept.append, rng=FixedRandom(0.0))

    assert (len(calls), slept) == (1, [])


def test_retry_after_is_a_floor_on_the_delay() -> None:
    fn, _ = failing([err(ProviderUnavailable, retry_after=3.0)])
    slept: list[float] = []

    call_with_retry(fn, policy=POLICY, sleep=slept.append, rng=FixedRandom(0.0))

    assert slept == [3.0]


def test_retry_after_beyond_the_cap_is_left_to_the_caller() -> None:
    fn, calls = failing([err(ProviderUnavailable, retry_after=120.0)])
    slept: list[float] = []

    with pytest.raises(ProviderUnavailable):
        call_with_retry(fn, policy=POLICY, sleep=slept.append, rng=FixedRandom(0.0))

    assert (len(calls), slept) == (1, [])


# -- Backoff ----------------------------------------------------------------------------

BACKOFF = RetryPolicy(max_attempts=1, base_delay=60.0, max_delay=600.0, jitter=0.0)


def test_backoff_grows_with_consecutive_failures_and_caps() -> None:
    state = Backoff()
    assert not state.active(NOW)

    untils = []
    for _ in range(6):
        state = state.record_failure(
            NOW, err(OutOfCapacityError), policy=BACKOFF, rng=FixedRandom(0.0)
        )
        untils.append((state.until - NOW).total_seconds() if state.until else None)

    assert untils == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert state.failures == 6
    assert state.active(NOW + dt.timedelta(seconds=599))
    assert not state.active(NOW + dt.timedelta(seconds=600))


def test_backoff_honours_retry_after_within_the_cap() -> None:
    hinted = Backoff().record_failure(
        NOW, err(OutOfCapacityError, retry_after=300), policy=BACKOFF, rng=FixedRandom(0.0)
    )
    absurd = Backoff().record_failure(
        NOW, err(OutOfCapacityError, retry_after=86_400), policy=BACKOFF, rng=FixedRandom(0.0)
    )

    assert hinted.until == NOW + dt.timedelta(seconds=300)
    assert absurd.until == NOW + dt.timedelta(seconds=600)


def test_backoff_is_pure_and_success_resets_it() -> None:
    start = Backoff()
    failed = start.record_failure(
        NOW,
        OutOfCapacityError("x", provider="p", operation="o", code="out_of_capacity"),
        rng=random.Random(1),
    )

    assert start == Backoff()  # unchanged: a new state was returned
    assert (failed.failures, failed.reason) == (1, "out_of_capacity")
    # Default policy: one minute, jittered down by at most 20 %.
    assert failed.until is not None
    assert 48.0 <= (failed.until - NOW).total_seconds() <= 60.0
    assert failed.record_success() == Backoff()


def test_backoff_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Backoff().active(dt.datetime(2025, 3, 3, 9, 0))


def test_backoff_honours_a_retry_after_past_the_policy_cap_up_to_the_configured_maximum() -> None:
    # #10 item 12: Retry-After: 1800 against a 600 s policy cap was cut to 600 s.
    hint = err(OutOfCapacityError, retry_after=1800)
    honoured = Backoff().record_failure(
        NOW, hint, policy=BACKOFF, rng=FixedRandom(0.0), max_retry_after=3600
    )
    cut = Backoff().record_failure(
        NOW, err(OutOfCapacityError, retry_after=86_400), policy=BACKOFF, rng=FixedRandom(0.0),
        max_retry_after=3600,
    )
    # A hint shorter than the policy's own delay does not shorten it.
    short = Backoff(failures=3).record_failure(
        NOW, err(OutOfCapacityError, retry_after=5), policy=BACKOFF, rng=FixedRandom(0.0),
        max_retry_after=3600,
    )

    assert honoured.until == NOW + dt.timedelta(seconds=1800)
    assert cut.until == NOW + dt.timedelta(seconds=3600)
    assert short.until == NOW + dt.timedelta(seconds=480)

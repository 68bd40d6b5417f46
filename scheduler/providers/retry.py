"""Retrying provider calls, decided by the type of the error alone.

Two tools with different time scales:

* :func:`call_with_retry` retries *temporary* errors inline, a few times, with capped
  exponential backoff and jitter (seconds). Used around one provider call inside a tick.
* :class:`Backoff` is a pure, frozen state object the daemon keeps per provider+deployment
  for errors that must not be retried inline (out of capacity, quota): it says until when
  to leave the deployment alone (minutes), growing with consecutive failures.

Randomness and sleeping are injected (``rng``, ``sleep``) so tests are deterministic and
never wait. Jitter spreads retries of many daemons (or deployments) hitting the same
provider so they do not retry in lock-step.

The function given to :func:`call_with_retry` is called again unchanged, so it must reuse the
*same* idempotency key: build the key outside the function.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

import structlog

from scheduler.providers.base import require_utc
from scheduler.providers.errors import (
    NotSupportedError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderError,
    QuotaExceededError,
    TemporaryProviderError,
)

T = TypeVar("T")

log = structlog.get_logger()


class RandomSource(Protocol):
    """What the helpers need from a random generator; ``random.Random`` fits."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...


class Disposition(enum.Enum):
    """What the caller should do about a provider error."""

    #: Temporary: retry the same request (same key) after a short backoff.
    RETRY = "retry"
    #: Out of capacity or quota: do not retry now; set a Backoff for the deployment, keep
    #: planning, report it.
    BACK_OFF = "back_off"
    #: Permanent: stop sending this request to this provider and alert.
    STOP = "stop"
    #: The provider lacks the capability: skip it (e.g. plan without commitments).
    UNSUPPORTED = "unsupported"


def classify(error: ProviderError) -> Disposition:
    """The disposition of ``error``, by its type."""
    if isinstance(error, TemporaryProviderError):
        return Disposition.RETRY
    if isinstance(error, OutOfCapacityError | QuotaExceededError):
        return Disposition.BACK_OFF
    if isinstance(error, NotSupportedError):
        return Disposition.UNSUPPORTED
    if isinstance(error, PermanentProviderError):
        return Disposition.STOP
    # A ProviderError outside every branch is an adapter bug; treat it as the safe choice.
    return Disposition.STOP


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter.

    The delay before retry ``n`` (1-based) is ``d = min(max_delay, base_delay * multiplier **
    (n - 1))``, then jittered down to a uniform value in ``[d * (1 - jitter), d]``. ``jitter``
    of 1 is "full jitter"; 0 disables it. The cap applies after jitter too, so no delay ever
    exceeds ``max_delay``.
    """

    #: Total attempts of the call, the first included (1 = never retry).
    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    def delay(self, retry: int, rng: RandomSource) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        # Cap the exponent before exponentiating so huge retry counts cannot overflow.
        exponent = min(retry - 1, 64)
        ceiling = min(self.max_delay, self.base_delay * self.multiplier**exponent)
        return ceiling * (1.0 - self.jitter * rng.random())


#: Inline retries inside a tick: a few seconds at most, so one slow provider cannot stall
#: the minute loop.
DEFAULT_RETRY_POLICY = RetryPolicy()
#: Backing off a deployment after out-of-capacity/quota: 1 minute doubling to 30 minutes.
DEFAULT_BACKOFF_POLICY = RetryPolicy(
    max_attempts=1, base_delay=60.0, max_delay=1800.0, multiplier=2.0, jitter=0.2
)


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    sleep: Callable[[float], None],
    rng: RandomSource,
    on_retry: Callable[[int, TemporaryProviderError, float], None] | None = None,
) -> T:
    """Call ``fn``, retrying temporary provider errors with capped backoff.

    Only :class:`TemporaryProviderError` is retried; every other error (provider or not)
    propagates at once. After ``policy.max_attempts`` attempts the last temporary error is
    raised. A provider's ``retry_after`` is honoured as a floor on the delay; when it asks
    for more than ``policy.max_delay`` the error is raised instead of sleeping that long,
    since waiting is the caller's business (next tick), not this loop's.

    ``on_retry(retry_number, error, delay)`` is called before each sleep (for metrics).
    """
    retry = 0
    while True:
        try:
            return fn()
        except TemporaryProviderError as error:
            retry += 1
            if retry >= policy.max_attempts:
                raise
            delay = policy.delay(retry, rng)
            if error.retry_after is not None:
                if error.retry_after > policy.max_delay:
                    raise
                delay = max(delay, error.retry_after)
            log.info(
                "provider.retry",
                provider=error.provider,
                operation=error.operation,
                deployment=error.deployment,
                retry=retry,
                delay_seconds=round(delay, 3),
                error=str(error),
            )
            if on_retry is not None:
                on_retry(retry, error, delay)
            sleep(delay)


@dataclass(frozen=True)
class Backoff:
    """Per provider+deployment backoff state; pure and frozen, so easy to keep and persist.

    Usage in the daemon::

        state = backoffs.get(key, Backoff())
        if state.active(now):
            skip sending (keep planning)
        ...
        except OutOfCapacityError as e:
            backoffs[key] = state.record_failure(now, e, policy=..., rng=rng)
        else:
            backoffs[key] = state.record_success()
    """

    #: Consecutive failures so far (0 = healthy).
    failures: int = 0
    #: No request should be sent before this time (UTC); None = no backoff.
    until: dt.datetime | None = None
    #: ``code`` or class name of the last error, for reports.
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.until is not None:
            object.__setattr__(self, "until", require_utc(self.until, "until"))

    def active(self, now: dt.datetime) -> bool:
        """True while requests should be held back."""
        now = require_utc(now, "now")  # checked even with no backoff: a naive now is a bug
        return self.until is not None and now < self.until

    def record_failure(
        self,
        now: dt.datetime,
        error: ProviderError | None = None,
        *,
        policy: RetryPolicy = DEFAULT_BACKOFF_POLICY,
        rng: RandomSource,
        max_retry_after: float | None = None,
    ) -> Backoff:
        """The state after one more failure at ``now``.

        The wait grows exponentially with consecutive failures (``policy``, capped at
        ``policy.max_delay``) and is jittered; the provider's ``retry_after`` hint is a floor
        on it, honoured up to ``max_retry_after`` seconds (``None``: up to
        ``policy.max_delay``), so a ``Retry-After: 1800`` means 30 minutes, not the policy's
        cap, while an absurd hint (a week) is cut to the maximum and probed again then.
        """
        now = require_utc(now, "now")
        failures = self.failures + 1
        seconds = min(policy.delay(failures, rng), policy.max_delay)
        if error is not None and error.retry_after is not None:
            ceiling = policy.max_delay if max_retry_after is None else max_retry_after
            seconds = max(seconds, min(error.retry_after, ceiling))
        reason = None
        if error is not None:
            reason = error.code or type(error).__name__
        return replace(
            self,
            failures=failures,
            until=now + dt.timedelta(seconds=seconds),
            reason=reason,
        )

    def record_success(self) -> Backoff:
        """A success clears the backoff."""
        return Backoff()


__all__ = [
    "DEFAULT_BACKOFF_POLICY",
    "DEFAULT_RETRY_POLICY",
    "Backoff",
    "Disposition",
    "RandomSource",
    "RetryPolicy",
    "call_with_retry",
    "classify",
]

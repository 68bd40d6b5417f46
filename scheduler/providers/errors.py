"""The one error hierarchy every provider adapter raises.

The daemon decides what to do from the *type* of the error alone, so adapters must translate
whatever their SDK or transport raises into exactly one of these classes at the edge::

    ProviderError
    ├── TemporaryProviderError        retry inline with capped backoff (same idempotency key)
    │   ├── ProviderTimeout           the call did not finish within its timeout
    │   ├── OutcomeUnknownError       a change was answered (2xx) in a way we cannot read
    │   └── ProviderUnavailable       connection refused/reset, 5xx, 429, 503
    ├── PermanentProviderError        stop sending to this provider and alert a human
    │   ├── AuthenticationError       401/403, bad or missing token
    │   │   └── PermissionDeniedError the credentials lack one permission (named)
    │   ├── InvalidRequestError       400/404/422, unknown deployment, step too large...
    │   ├── IdempotencyConflictError  the key was already used for a *different* request
    │   ├── ProviderProtocolError     the provider answered something we cannot understand
    │   └── SpendLimitExceededError   capsched's spend guard refused the action (never sent)
    ├── OutOfCapacityError            no units to be had right now: back off, keep planning
    ├── QuotaExceededError            the request would pass the account's quota
    └── NotSupportedError             the provider does not offer this capability

``OutOfCapacityError``, ``QuotaExceededError`` and ``NotSupportedError`` deliberately sit
*beside* the temporary/permanent branches rather than under them: none of them is helped by
an inline retry, and none of them means the provider is broken. Keeping them apart lets
``except TemporaryProviderError`` be the exact set the retry helper may retry.

``ProviderConfigError`` is not a ``ProviderError``: it is raised once, at start-up, when
settings are wrong, and subclasses :class:`scheduler.config.ConfigError` so the CLI reports it
like any other configuration mistake.
"""

from __future__ import annotations

from typing import Any

from scheduler.config import ConfigError


class ProviderError(Exception):
    """A provider call failed.

    Every instance names the provider (its configured name, e.g. ``"azure-east"``) and the
    operation (``"holdings"``, ``"limits"``, ``"set_elastic_target"``, ``"buy_commitment"``,
    ``"lookup_request"``) so a log line or alert is actionable without a traceback.

    ``retry_after`` is in seconds, relative to when the error was raised: the provider's own
    hint (``Retry-After``), or ``None`` when it gave none. It is relative on purpose: the
    daemon owns the clock and turns it into an absolute time with its own ``now``.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        operation: str,
        deployment: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        if retry_after is not None and retry_after < 0:
            retry_after = 0.0
        self.message = message
        self.provider = provider
        self.operation = operation
        self.deployment = deployment
        self.retry_after = retry_after
        #: The provider's machine-readable error code, when it sent one.
        self.code = code
        #: The HTTP status (or SDK equivalent), when there was one.
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.provider}.{self.operation}"
        if self.deployment is not None:
            where += f"[{self.deployment}]"
        details = []
        if self.status is not None:
            details.append(f"status={self.status}")
        if self.code is not None:
            details.append(f"code={self.code}")
        if self.retry_after is not None:
            details.append(f"retry_after={self.retry_after:g}s")
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{where}: {self.message}{suffix}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor arguments break the default pickling of exceptions, and
        # errors may cross a process boundary (the backtest runs workers).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[ProviderError], message: str, state: dict[str, object]) -> ProviderError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class TemporaryProviderError(ProviderError):
    """Retry the same request (same idempotency key) after a capped, jittered backoff."""


class ProviderTimeout(TemporaryProviderError):
    """The call did not complete within its timeout; whether it arrived is unknown.

    For a mutating call, retry with the *same* idempotency key, or ask
    ``lookup_request(key)`` before deciding anything.
    """


class OutcomeUnknownError(TemporaryProviderError):
    """A change was answered with success (2xx) but the answer cannot be read.

    The provider may well have applied it (a commitment may be bought), so this is never a
    permanent failure: as after a :class:`ProviderTimeout`, the journal asks
    ``lookup_request(key)`` and resends only with the *same* idempotency key. Adapters raise
    it for mutating calls only; an unreadable answer to a read is a
    :class:`ProviderProtocolError`.
    """


class ProviderUnavailable(TemporaryProviderError):
    """The provider could not be reached or said it is busy (connection refused, 429, 5xx)."""


class PermanentProviderError(ProviderError):
    """Retrying will not help: stop sending this kind of request and alert."""


class AuthenticationError(PermanentProviderError):
    """The provider rejected our credentials (or we have none)."""


class PermissionDeniedError(AuthenticationError):
    """The credentials are valid but lack a permission the call needs.

    ``permission`` names it as the provider's IAM speaks (an AWS action such as
    ``bedrock:CreateProvisionedModelThroughput``, an Azure RBAC action such as
    ``Microsoft.CognitiveServices/accounts/deployments/write``), or None when the provider's
    answer did not say; docs/iam/ lists every permission each adapter needs.
    """

    def __init__(self, message: str, *, permission: str | None = None, **kw: Any) -> None:
        self.permission = permission
        super().__init__(message, **kw)


class SpendLimitExceededError(PermanentProviderError):
    """capsched's own spend guard refused the action before it was sent.

    Raised by :mod:`scheduler.daemon.spend_guard` when an action would take a deployment past
    its ``max_hourly_spend`` or ``max_commitment_spend``; nothing reached the provider.
    Permanent so the journal fails the action and alerts.
    """


class InvalidRequestError(PermanentProviderError):
    """The provider rejected the request itself (bad input, unknown deployment...)."""


class IdempotencyConflictError(PermanentProviderError):
    """The idempotency key was already used for a different request.

    Sending the *same* request again with the same key is never an error: the provider
    replays the original outcome. This error means the caller reused a key, which is a bug.
    """


class ProviderProtocolError(PermanentProviderError):
    """The provider answered with something that does not follow the protocol."""


class OutOfCapacityError(ProviderError):
    """The provider has no units to give right now.

    Not retried inline: the daemon records a backoff-until for this provider and deployment
    (see :class:`scheduler.providers.retry.Backoff`), keeps planning, and reports it.
    """


class QuotaExceededError(ProviderError):
    """The request would take the deployment or account past its quota.

    Not retried inline: the limit will not move by itself. Back off and report; a human
    raises the quota or lowers ``max_units``.
    """


class NotSupportedError(ProviderError):
    """The provider does not implement an optional capability (e.g. buying commitments)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        provider: str,
        operation: str,
        capability: str | None = None,
        deployment: str | None = None,
    ) -> None:
        self.capability = capability or operation
        super().__init__(
            message or f"provider {provider!r} does not support {self.capability}",
            provider=provider,
            operation=operation,
            deployment=deployment,
            code="not_supported",
        )


class ProviderConfigError(ConfigError):
    """A provider cannot be created from its settings (unknown name, missing url/token...)."""


__all__ = [
    "AuthenticationError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "NotSupportedError",
    "OutOfCapacityError",
    "OutcomeUnknownError",
    "PermanentProviderError",
    "PermissionDeniedError",
    "ProviderConfigError",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceededError",
    "SpendLimitExceededError",
    "TemporaryProviderError",
]

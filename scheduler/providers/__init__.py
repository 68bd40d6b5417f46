"""The provider boundary: one contract for everything that sells model units.

* :mod:`.base`: the :class:`Provider` ABC and its frozen value objects.
* :mod:`.errors`: the error hierarchy rooted at :class:`ProviderError`.
* :mod:`.registry`: :func:`create_provider`, finding implementations by entry point.
* :mod:`.retry`: :func:`call_with_retry` and the per-deployment :class:`Backoff`.
* :mod:`.http`: the ``http`` adapter; its reference server is
  ``examples/http_provider/reference_server.py``.

Importing this package imports no adapter (the registry loads them on demand), so a broken or
absent third-party provider never breaks the rest of capsched.
"""

from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    Commitment,
    CommitmentReceipt,
    ElasticReceipt,
    ElasticTranche,
    Holdings,
    Provider,
    ProviderLimits,
    RequestLookup,
    RequestStatus,
)
from scheduler.providers.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    InvalidRequestError,
    NotSupportedError,
    OutcomeUnknownError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
    TemporaryProviderError,
)
from scheduler.providers.registry import (
    ENTRY_POINT_GROUP,
    UnknownProviderError,
    available_providers,
    create_provider,
)
from scheduler.providers.retry import (
    Backoff,
    Disposition,
    RetryPolicy,
    call_with_retry,
    classify,
)

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "ENTRY_POINT_GROUP",
    "AuthenticationError",
    "Backoff",
    "Commitment",
    "CommitmentReceipt",
    "Disposition",
    "ElasticReceipt",
    "ElasticTranche",
    "Holdings",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "NotSupportedError",
    "OutOfCapacityError",
    "OutcomeUnknownError",
    "PermanentProviderError",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "ProviderLimits",
    "ProviderProtocolError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceededError",
    "RequestLookup",
    "RequestStatus",
    "RetryPolicy",
    "TemporaryProviderError",
    "UnknownProviderError",
    "available_providers",
    "call_with_retry",
    "classify",
    "create_provider",
]

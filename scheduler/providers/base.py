"""The provider contract: what capsched needs from anything that sells model units.

One narrow interface, :class:`Provider`, an abstract base class. An ABC rather than a
``typing.Protocol`` because the contract has *optional* capabilities (like cluster-autoscaler's
``cloudprovider`` methods that return ``ErrNotImplemented``): the base class supplies their
default, which raises :class:`NotSupportedError` naming the provider and the capability, so an
adapter only writes what its provider offers. An ABC also makes a third-party adapter that
forgets a *required* method fail when it is instantiated (at daemon start-up), not the first
time the method is called at three in the morning.

Required: :meth:`Provider.holdings`, :meth:`Provider.limits`,
:meth:`Provider.set_elastic_target`, :meth:`Provider.lookup_request`,
:meth:`Provider.from_settings`.
Optional: :meth:`Provider.buy_commitment` (advertised by a non-empty
``ProviderLimits.supported_terms``), :meth:`Provider.holdings_many` (batched reads; the
default loops over :meth:`Provider.holdings`), :meth:`Provider.close`.

Rules every implementation follows (the simulated provider and the HTTP adapter alike):

* **Times** are tz-aware UTC ``datetime`` values, in and out. Providers are I/O edges and may
  read real time; anything that must be deterministic in tests takes an injectable clock.
* **Timeouts**: every call is bounded by ``self.timeout`` seconds (default
  :data:`DEFAULT_TIMEOUT_SECONDS`); exceeding it raises :class:`ProviderTimeout`.
* **Errors**: only :class:`~scheduler.providers.errors.ProviderError` subclasses escape.
* **Idempotency**: every mutating call carries an ``idempotency_key``. A key names one attempt
  at one change. Sending the same request with the same key again must never apply it twice:
  the provider returns the original outcome (receipt or error) instead. Reusing a key for a
  different request raises :class:`IdempotencyConflictError`. Keys are unique per provider
  (not per deployment) so ``lookup_request(key)`` needs nothing else. Providers keep keys at
  least :data:`MIN_IDEMPOTENCY_RETENTION` so the daemon can confirm a send after a crash.
* **Min hold**: a provider never releases an elastic unit before its hold ends. A scale-down
  that would do so is *clamped*, not refused: the provider releases what it may, and the
  receipt says so (``accepted_units > requested_units``, ``clamp_reason == "min_hold"``,
  ``next_release_at``). Clamping rather than erroring keeps the call useful (partial
  scale-downs happen) and keeps errors for things a human must look at.
* **Lead time**: a scale-up is accepted at once and serves from ``effective_at`` (request time
  plus ``lead_time_minutes``); until then the new units are *pending* in :class:`Holdings`.
"""

from __future__ import annotations

import abc
import datetime as dt
import enum
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from scheduler.providers.errors import InvalidRequestError, NotSupportedError

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: Seconds any provider call may take unless configured otherwise (``timeout_seconds``).
DEFAULT_TIMEOUT_SECONDS = 10.0
#: The least time a provider must remember an idempotency key and its outcome.
MIN_IDEMPOTENCY_RETENTION = dt.timedelta(hours=24)
#: Idempotency keys travel in HTTP headers and database columns: keep them short and plain.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_.:")

# Operation names, used in errors, logs and the HTTP protocol's request lookup.
OP_HOLDINGS = "holdings"
OP_LIMITS = "limits"
OP_SET_ELASTIC_TARGET = "set_elastic_target"
OP_BUY_COMMITMENT = "buy_commitment"
OP_LOOKUP_REQUEST = "lookup_request"


def require_utc(value: dt.datetime, what: str) -> dt.datetime:
    """Return ``value`` in UTC; naive datetimes are a bug, so they raise ``ValueError``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(dt.UTC)


def check_idempotency_key(key: str, *, provider: str, operation: str) -> str:
    """Validate an idempotency key: 1-255 characters of ``[A-Za-z0-9-_.:]``.

    Raises :class:`InvalidRequestError` (permanent): a malformed key is a caller bug and no
    retry will fix it.
    """
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not set(key) <= _KEY_CHARS:
        raise InvalidRequestError(
            f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters of "
            f"[A-Za-z0-9-_.:], got {key!r}",
            provider=provider,
            operation=operation,
        )
    return key


@dataclass(frozen=True)
class ElasticTranche:
    """Elastic units requested together: they activate together and share one hold.

    ``active_from`` in the future means the units are still *pending* (lead time).
    ``hold_until`` is ``active_from + min_hold``: before it the units cannot be released.
    """

    units: int
    active_from: dt.datetime
    hold_until: dt.datetime

    def __post_init__(self) -> None:
        if self.units <= 0:
            raise ValueError(f"an elastic tranche holds at least one unit, got {self.units}")
        object.__setattr__(self, "active_from", require_utc(self.active_from, "active_from"))
        object.__setattr__(self, "hold_until", require_utc(self.hold_until, "hold_until"))
        if self.hold_until < self.active_from:
            raise ValueError("hold_until precedes active_from")

    def is_active(self, at: dt.datetime) -> bool:
        return self.active_from <= at

    def is_held(self, at: dt.datetime) -> bool:
        """True while the units may not be released (pending units are not held)."""
        return self.active_from <= at < self.hold_until


@dataclass(frozen=True)
class Commitment:
    """Units bought for a fixed term: active on ``[start, end)``, never cancelled or reduced.

    ``external``: bought outside capsched (an Azure reservation declared in the config).
    The planner counts its units like any other; the journal never expected it, so its
    reconcile does not report it as drift.
    """

    commitment_id: str
    units: int
    term_days: int
    start: dt.datetime
    end: dt.datetime
    external: bool = False

    def __post_init__(self) -> None:
        if self.units <= 0:
            raise ValueError(f"a commitment holds at least one unit, got {self.units}")
        object.__setattr__(self, "start", require_utc(self.start, "start"))
        object.__setattr__(self, "end", require_utc(self.end, "end"))
        if self.end <= self.start:
            raise ValueError("a commitment ends after it starts")

    def is_active(self, at: dt.datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class Holdings:
    """What the provider holds for one deployment, as the provider saw it at ``as_of``.

    ``elastic`` lists active and pending tranches alike (pending: ``active_from > as_of``);
    ``commitments`` lists commitments not yet ended at ``as_of`` (including any that start
    later). Both are sorted by start time.
    """

    deployment: str
    as_of: dt.datetime
    elastic: tuple[ElasticTranche, ...] = ()
    commitments: tuple[Commitment, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "as_of", require_utc(self.as_of, "as_of"))
        object.__setattr__(
            self, "elastic", tuple(sorted(self.elastic, key=lambda t: t.active_from))
        )
        object.__setattr__(
            self, "commitments", tuple(sorted(self.commitments, key=lambda c: c.start))
        )

    @property
    def elastic_active(self) -> tuple[ElasticTranche, ...]:
        return tuple(t for t in self.elastic if t.is_active(self.as_of))

    @property
    def elastic_pending(self) -> tuple[ElasticTranche, ...]:
        return tuple(t for t in self.elastic if not t.is_active(self.as_of))

    @property
    def elastic_active_units(self) -> int:
        return sum(t.units for t in self.elastic_active)

    @property
    def elastic_pending_units(self) -> int:
        return sum(t.units for t in self.elastic_pending)

    @property
    def elastic_target(self) -> int:
        """Elastic units once everything pending has activated: the current target."""
        return sum(t.units for t in self.elastic)

    def elastic_at(self, at: dt.datetime) -> int:
        """Elastic units serving at ``at``, assuming no further changes."""
        at = require_utc(at, "at")
        return sum(t.units for t in self.elastic if t.is_active(at))

    def held_at(self, at: dt.datetime) -> int:
        """Elastic units that may not be released at ``at`` (their min hold runs)."""
        at = require_utc(at, "at")
        return sum(t.units for t in self.elastic if t.is_held(at))

    def committed_at(self, at: dt.datetime) -> int:
        at = require_utc(at, "at")
        return sum(c.units for c in self.commitments if c.is_active(at))

    def capacity_at(self, at: dt.datetime) -> int:
        """``committed(t) + elastic(t)`` as defined in docs/economics.md."""
        return self.committed_at(at) + self.elastic_at(at)


@dataclass(frozen=True)
class ProviderLimits:
    """What the provider allows for one deployment.

    ``supported_terms`` empty means the provider cannot sell commitments for this deployment
    (``buy_commitment`` raises :class:`NotSupportedError`).
    """

    #: Quota: the most units (committed + elastic) the deployment may hold.
    max_units: int
    #: The largest change of elastic units one request may make.
    max_step: int
    #: Commitment terms on offer, in days (e.g. ``(7, 30)``).
    supported_terms: tuple[int, ...] = ()
    #: Minutes from a scale-up request until the units serve.
    lead_time_minutes: int = 0
    #: Minutes an elastic unit is held (and billed) at least once active.
    min_hold_minutes: int = 0
    #: The largest elastic target the provider could grant right now (regional capacity,
    #: e.g. Azure "insufficient capacity"), when it knows; None: unknown or unlimited.
    #: After an :class:`OutOfCapacityError` the daemon asks for this much and keeps
    #: asking for the rest.
    available_units: int | None = None

    def __post_init__(self) -> None:
        if self.max_units < 0 or self.max_step < 1:
            raise ValueError("max_units must be >= 0 and max_step >= 1")
        if self.available_units is not None and self.available_units < 0:
            raise ValueError("available_units must be >= 0")
        if self.lead_time_minutes < 0 or self.min_hold_minutes < 0:
            raise ValueError("lead_time_minutes and min_hold_minutes must be >= 0")
        object.__setattr__(self, "supported_terms", tuple(sorted(set(self.supported_terms))))

    @property
    def supports_commitments(self) -> bool:
        return bool(self.supported_terms)

    @property
    def lead_time(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.lead_time_minutes)

    @property
    def min_hold(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.min_hold_minutes)


class RequestStatus(enum.Enum):
    """What became of a mutating request, looked up by its idempotency key."""

    #: The provider never saw this key (or forgot it): the request did not arrive.
    UNKNOWN = "unknown"
    #: Accepted, not yet confirmed/applied (slow providers); ask again later.
    PENDING = "pending"
    #: Applied. Sending it again is harmless (it would be replayed, not re-applied).
    DONE = "done"
    #: Arrived and was rejected for good (out of capacity, quota...); use a new key to retry.
    FAILED = "failed"


@dataclass(frozen=True)
class ElasticReceipt:
    """The provider's answer to ``set_elastic_target``.

    ``accepted_units`` is the elastic target the provider will hold: equal to
    ``requested_units`` unless a min hold clamped a scale-down, in which case
    ``clamp_reason`` is ``"min_hold"`` and ``next_release_at`` says when more units can go.
    ``effective_at`` is when the accepted target serves in full (request time plus lead time
    for a scale-up; request time for a scale-down).
    """

    provider: str
    deployment: str
    idempotency_key: str
    reference: str
    requested_units: int
    accepted_units: int
    effective_at: dt.datetime
    status: RequestStatus = RequestStatus.DONE
    clamp_reason: str | None = None
    next_release_at: dt.datetime | None = None
    #: True when this answer replays an earlier request with the same key.
    replayed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "effective_at", require_utc(self.effective_at, "effective_at"))
        if self.next_release_at is not None:
            object.__setattr__(
                self, "next_release_at", require_utc(self.next_release_at, "next_release_at")
            )

    @property
    def clamped(self) -> bool:
        return self.accepted_units != self.requested_units


@dataclass(frozen=True)
class CommitmentReceipt:
    """The provider's answer to ``buy_commitment``: the commitment as bought."""

    provider: str
    deployment: str
    idempotency_key: str
    reference: str
    commitment: Commitment
    status: RequestStatus = RequestStatus.DONE
    replayed: bool = False


@dataclass(frozen=True)
class RequestLookup:
    """The provider's answer to ``lookup_request(key)``."""

    idempotency_key: str
    status: RequestStatus
    #: ``"set_elastic_target"`` or ``"buy_commitment"`` when known.
    operation: str | None = None
    deployment: str | None = None
    #: The provider's reference for the change, once it has one.
    reference: str | None = None
    #: For ``FAILED``: the provider's error code and message.
    error_code: str | None = None
    error_message: str | None = None
    #: Operation-specific details the provider returned (for logs; not interpreted).
    details: Mapping[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """One configured provider (one account, one API endpoint), serving many deployments.

    Instances are created by :func:`scheduler.providers.registry.create_provider` through
    :meth:`from_settings`; ``name`` is the configured name (the ``[providers.<name>]`` table),
    which errors and logs carry. Implementations must be safe to call from one thread at a
    time; the daemon does not share a provider between threads.
    """

    def __init__(self, name: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if not name:
            raise ValueError("a provider needs a name")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.name = name
        #: Seconds any one call may take before it raises ProviderTimeout.
        self.timeout = float(timeout)

    # -- construction ------------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def from_settings(
        cls,
        name: str,
        settings: Mapping[str, Any],
        *,
        engine: Engine | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Self:
        """Build the provider from its ``[providers.<name>]`` TOML table.

        ``engine`` is the scheduler's database (for providers whose state lives there, like
        the simulated one); adapters that do not need it ignore it. ``timeout`` is the
        daemon-wide default; a ``timeout_seconds`` key in ``settings`` overrides it.
        Raises :class:`~scheduler.providers.errors.ProviderConfigError` on bad settings.
        """

    # -- required ----------------------------------------------------------------------

    @abc.abstractmethod
    def holdings(self, deployment: str) -> Holdings:
        """What the provider holds for ``deployment`` now (elastic and committed)."""

    @abc.abstractmethod
    def limits(self, deployment: str) -> ProviderLimits:
        """Quota, step, terms, lead time and min hold for ``deployment``."""

    @abc.abstractmethod
    def set_elastic_target(
        self, deployment: str, target_units: int, *, idempotency_key: str
    ) -> ElasticReceipt:
        """Ask for ``target_units`` elastic units in total for ``deployment``.

        A target above the current one adds units that serve after the lead time; below it,
        pending units are cancelled first, then active units past their hold are released.
        Raises OutOfCapacityError, QuotaExceededError, InvalidRequestError (e.g. a step
        larger than ``max_step``), or a temporary error.
        """

    @abc.abstractmethod
    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        """What became of the mutating request sent with ``idempotency_key``.

        An unknown key is an answer (``RequestStatus.UNKNOWN``), not an error.
        """

    # -- optional ----------------------------------------------------------------------

    def holdings_many(self, deployments: Sequence[str]) -> dict[str, Holdings]:
        """The holdings of several deployments, for one tick over many of them.

        Optional: the default asks :meth:`holdings` once per deployment. An adapter whose
        API can answer for many deployments in one round trip overrides it (a daemon with
        1,000 deployments reads them all every minute). Errors propagate as from
        :meth:`holdings`; callers fall back to per-deployment calls to isolate one.
        """
        return {deployment: self.holdings(deployment) for deployment in deployments}

    def buy_commitment(
        self, deployment: str, units: int, term_days: int, *, idempotency_key: str
    ) -> CommitmentReceipt:
        """Buy ``units`` committed units for ``term_days`` days, starting now.

        Optional: the default raises :class:`NotSupportedError`.
        """
        raise NotSupportedError(
            provider=self.name,
            operation=OP_BUY_COMMITMENT,
            capability="commitments",
            deployment=deployment,
        )

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op by default
        """Release connections or sessions; the default has nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} timeout={self.timeout:g}s>"

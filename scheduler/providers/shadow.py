"""Shadow mode: compute and journal every action, log the exact SDK call, send nothing.

Adapters for real clouds (:mod:`.azure_openai`, :mod:`.bedrock`) split every elastic change
into a pure step, ``plan_elastic`` (tranches, target, key, now in; the SDK calls to make and
their effect out, as an :class:`ElasticChange`), and an I/O step that executes the calls.
:class:`ShadowProvider` wraps such an adapter (or any provider) and, for the deployments in
shadow mode, runs the same pure step against a *shadow book* instead of the cloud:

* the book is seeded once per deployment from one real read (``holdings``), which also
  proves the credentials and the deployment; after that holdings come from the book, so the
  daemon plans as if its actions had been applied;
* ``set_elastic_target`` / ``buy_commitment`` log ``provider.shadow_call`` with the exact
  method and parameters the adapter would send (and keep them in :attr:`calls`), apply the
  change to the book with the provider's lead time and minimum hold, and return the receipt
  the adapter would return;
* ``lookup_request`` answers from the book for keys it has seen (a restarted process has an
  empty book: the journal then resends with the same key, which only logs again).

Deployments not in shadow mode pass straight through to the wrapped provider. A provider
that cannot preview its calls (no ``plan_elastic``) is shadowed with a generic call record
(``set_elastic_target(...)``), so shadow mode works with the simulated and HTTP providers
too. The book lives in memory: shadow mode is a rehearsal, not a source of truth.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Self, runtime_checkable

import structlog

from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    OP_SET_ELASTIC_TARGET,
    Commitment,
    CommitmentReceipt,
    ElasticReceipt,
    ElasticTranche,
    Holdings,
    Provider,
    ProviderLimits,
    RequestLookup,
    RequestStatus,
    check_idempotency_key,
    require_utc,
)
from scheduler.providers.errors import (
    IdempotencyConflictError,
    NotSupportedError,
    ProviderConfigError,
)
from scheduler.providers.holds import plan_scale_down

log = structlog.get_logger()

Clock = Callable[[], dt.datetime]

MODE_LIVE = "live"
MODE_SHADOW = "shadow"
MODES = (MODE_LIVE, MODE_SHADOW)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class SdkCall:
    """One call on a vendor SDK: ``method`` (``"<client>.<operation>"``) and its parameters.

    Parameters are plain JSON values (strings, numbers, lists, dicts), exactly as passed to
    the SDK, so a logged call can be replayed by hand.
    """

    method: str
    params: Mapping[str, Any]

    def render(self) -> str:
        """``bedrock.delete_provisioned_model_throughput(provisionedModelId='...')``."""
        args = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in self.params.items())
        return f"{self.method}({args})"


@dataclass(frozen=True)
class Tranche:
    """Elastic units that started together, named by the provider's reference ``ref``.

    For Bedrock one Provisioned Throughput (``ref`` = its name); for Azure OpenAI the units one
    capacity change added (``ref`` = the idempotency key that added them).
    """

    ref: str
    units: int
    active_from: dt.datetime
    hold_until: dt.datetime


@dataclass(frozen=True)
class ElasticChange:
    """What an elastic target change does, computed without I/O.

    ``accepted`` is the elastic target the provider will hold (see ``ElasticReceipt``);
    ``released`` lists ``(ref, units)`` taken from existing tranches, ``created`` the tranches
    the calls add (they serve from ``effective_at``).
    """

    calls: tuple[SdkCall, ...]
    accepted: int
    effective_at: dt.datetime
    clamp_reason: str | None = None
    next_release_at: dt.datetime | None = None
    released: tuple[tuple[str, int], ...] = ()
    created: tuple[tuple[str, int], ...] = ()


@runtime_checkable
class PlansCalls(Protocol):
    """An adapter whose changes can be computed without sending them (shadow mode)."""

    def plan_elastic(
        self, deployment: str, tranches: Sequence[Tranche], target: int, *,
        idempotency_key: str, now: dt.datetime,
    ) -> ElasticChange: ...

    def plan_commitment(
        self, deployment: str, units: int, term_days: int, *, idempotency_key: str,
    ) -> tuple[SdkCall, ...]: ...


def apply_change(tranches: Sequence[Tranche], change: ElasticChange, *, lead: dt.timedelta,
                 hold: dt.timedelta) -> list[Tranche]:
    """The tranches after ``change``: releases taken away, creations added (from
    ``change.effective_at``, held ``hold`` once active)."""
    taken = dict(change.released)
    after: list[Tranche] = []
    for tranche in tranches:
        left = tranche.units - taken.pop(tranche.ref, 0)
        if left > 0:
            after.append(replace(tranche, units=left))
    start = change.effective_at
    after.extend(Tranche(ref, units, start, start + hold) for ref, units in change.created)
    del lead  # the adapter already put the lead time into effective_at
    return after


def scale_down(tranches: Sequence[Tranche], target: int, now: dt.datetime, *,
               whole_only: bool) -> tuple[int, str | None, dt.datetime | None,
                                          tuple[tuple[str, int], ...]]:
    """Which units go for a scale-down to ``target`` (the min-hold rule of
    :func:`scheduler.providers.holds.plan_scale_down`).

    With ``whole_only`` a tranche is released whole or not at all (a Bedrock Provisioned
    Throughput cannot shrink): what cannot go is clamped with reason
    ``"throughput_granularity"``. Returns ``(accepted, clamp_reason, next_release_at,
    released)``.
    """
    current = sum(t.units for t in tranches)
    plan = plan_scale_down(tranches, current, target, now)
    released: list[tuple[str, int]] = []
    reason = plan.clamp_reason
    for index, take in plan.releases:
        tranche = tranches[index]
        if whole_only and take < tranche.units:
            reason = reason or "throughput_granularity"
            continue
        released.append((tranche.ref, take))
    accepted = current - sum(units for _, units in released)
    return accepted, reason if accepted != target else None, plan.next_release, tuple(released)


@dataclass
class _Book:
    tranches: list[Tranche]
    commitments: list[Commitment]
    limits: ProviderLimits


@dataclass
class ShadowRecord:
    """One action handled in shadow mode and the SDK calls it stood for."""

    deployment: str
    idempotency_key: str
    operation: str
    at: dt.datetime
    calls: tuple[SdkCall, ...]
    receipt: ElasticReceipt | CommitmentReceipt
    request: tuple[Any, ...] = field(default=())


class ShadowProvider(Provider):
    """Wraps a provider; deployments in ``shadow`` are computed and logged, never sent."""

    def __init__(self, inner: Provider, shadow: Iterable[str], *,
                 clock: Clock | None = None) -> None:
        super().__init__(inner.name, timeout=inner.timeout)
        self.inner = inner
        self.shadow = frozenset(shadow)
        self._clock: Clock = clock or utc_now
        self._books: dict[str, _Book] = {}
        self._by_key: dict[str, ShadowRecord] = {}
        #: Every shadow action in order (tests and ``capsched`` logs read it).
        self.records: list[ShadowRecord] = []

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], *, engine: Any = None,
                      timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Self:
        raise ProviderConfigError("the shadow wrapper is built by the daemon, not configured")

    # -- clock -----------------------------------------------------------------------------

    def set_clock(self, clock: Clock) -> None:
        self._clock = clock
        setter = getattr(self.inner, "set_clock", None)
        if callable(setter):
            setter(clock)

    def _now(self) -> dt.datetime:
        return require_utc(self._clock(), "the shadow provider's clock")

    @property
    def calls(self) -> list[tuple[str, str, SdkCall]]:
        """``(deployment, idempotency_key, call)`` of every call shadow mode withheld."""
        return [(r.deployment, r.idempotency_key, c) for r in self.records for c in r.calls]

    # -- reads -----------------------------------------------------------------------------

    def limits(self, deployment: str) -> ProviderLimits:
        if deployment in self._books:
            return self._books[deployment].limits
        return self.inner.limits(deployment)

    def _book(self, deployment: str) -> _Book:
        book = self._books.get(deployment)
        if book is None:
            real = self.inner.holdings(deployment)
            limits = self.inner.limits(deployment)
            reader = getattr(self.inner, "read_tranches", None)
            # The adapter's own references (a Bedrock throughput's name) make the logged
            # calls exact for units held before shadow mode began.
            tranches = (list(reader(deployment)) if callable(reader) else
                        [Tranche(f"existing-{i}", t.units, t.active_from, t.hold_until)
                         for i, t in enumerate(real.elastic)])
            book = self._books[deployment] = _Book(tranches, list(real.commitments), limits)
            log.info("provider.shadow_seeded", provider=self.name, deployment=deployment,
                     elastic=real.elastic_target, committed=real.committed_at(real.as_of))
        return book

    def _holdings(self, deployment: str) -> Holdings:
        book = self._book(deployment)
        now = self._now()
        return Holdings(
            deployment=deployment, as_of=now,
            elastic=tuple(ElasticTranche(t.units, t.active_from, t.hold_until)
                          for t in book.tranches),
            commitments=tuple(c for c in book.commitments if c.end > now))

    def holdings(self, deployment: str) -> Holdings:
        if deployment not in self.shadow:
            return self.inner.holdings(deployment)
        return self._holdings(deployment)

    def holdings_many(self, deployments: Sequence[str]) -> dict[str, Holdings]:
        live = [d for d in deployments if d not in self.shadow]
        found = self.inner.holdings_many(live) if live else {}
        found.update({d: self._holdings(d) for d in deployments if d in self.shadow})
        return found

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        record = self._by_key.get(idempotency_key)
        if record is None:
            return self.inner.lookup_request(idempotency_key)
        receipt = record.receipt
        details: dict[str, Any] = {"shadow": True}
        if isinstance(receipt, ElasticReceipt):
            details.update(accepted_units=receipt.accepted_units,
                           effective_at=receipt.effective_at.isoformat())
        else:
            c = receipt.commitment
            details["commitment"] = {"commitment_id": c.commitment_id, "units": c.units,
                                     "start": c.start.isoformat()}
        return RequestLookup(idempotency_key, RequestStatus.DONE, operation=record.operation,
                             deployment=record.deployment, reference=receipt.reference,
                             details=details)

    # -- changes ---------------------------------------------------------------------------

    def _replay(self, key: str, request: tuple[Any, ...]) -> ShadowRecord | None:
        record = self._by_key.get(key)
        if record is not None and record.request != request:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was used for {record.request}, not {request}",
                provider=self.name, operation=record.operation, deployment=record.deployment)
        return record

    def _keep(self, record: ShadowRecord) -> None:
        self._by_key[record.idempotency_key] = record
        self.records.append(record)
        for call in record.calls:
            log.info("provider.shadow_call", provider=self.name, deployment=record.deployment,
                     key=record.idempotency_key, method=call.method, params=dict(call.params),
                     call=call.render())

    def set_elastic_target(self, deployment: str, target_units: int, *,
                           idempotency_key: str) -> ElasticReceipt:
        if deployment not in self.shadow:
            return self.inner.set_elastic_target(deployment, target_units,
                                                 idempotency_key=idempotency_key)
        key = check_idempotency_key(idempotency_key, provider=self.name,
                                    operation=OP_SET_ELASTIC_TARGET)
        request = ("set_elastic_target", deployment, target_units)
        previous = self._replay(key, request)
        if previous is not None:
            assert isinstance(previous.receipt, ElasticReceipt)
            return replace(previous.receipt, replayed=True)
        book = self._book(deployment)
        now = self._now()
        if isinstance(self.inner, PlansCalls):
            change = self.inner.plan_elastic(deployment, book.tranches, target_units,
                                             idempotency_key=key, now=now)
        else:
            change = _generic_change(deployment, book, target_units, key, now)
        book.tranches = apply_change(book.tranches, change, lead=book.limits.lead_time,
                                     hold=book.limits.min_hold)
        receipt = ElasticReceipt(
            provider=self.name, deployment=deployment, idempotency_key=key,
            reference=f"shadow:{key}", requested_units=target_units,
            accepted_units=change.accepted, effective_at=change.effective_at,
            clamp_reason=change.clamp_reason, next_release_at=change.next_release_at)
        self._keep(ShadowRecord(deployment, key, OP_SET_ELASTIC_TARGET, now, change.calls,
                                receipt, request))
        return receipt

    def buy_commitment(self, deployment: str, units: int, term_days: int, *,
                       idempotency_key: str) -> CommitmentReceipt:
        if deployment not in self.shadow:
            return self.inner.buy_commitment(deployment, units, term_days,
                                             idempotency_key=idempotency_key)
        key = check_idempotency_key(idempotency_key, provider=self.name,
                                    operation="buy_commitment")
        request = ("buy_commitment", deployment, units, term_days)
        previous = self._replay(key, request)
        if previous is not None:
            assert isinstance(previous.receipt, CommitmentReceipt)
            return replace(previous.receipt, replayed=True)
        book = self._book(deployment)
        if term_days not in book.limits.supported_terms:
            # The same refusal the live adapter gives.
            raise NotSupportedError(
                f"provider {self.name!r} does not sell {term_days}-day commitments for "
                f"{deployment!r} (sold: {list(book.limits.supported_terms)})",
                provider=self.name, operation="buy_commitment",
                capability=f"commitments of {term_days} days", deployment=deployment)
        now = self._now()
        calls = (self.inner.plan_commitment(deployment, units, term_days, idempotency_key=key)
                 if isinstance(self.inner, PlansCalls)
                 else (SdkCall("buy_commitment", {"deployment": deployment, "units": units,
                                                  "term_days": term_days,
                                                  "idempotency_key": key}),))
        commitment = Commitment(f"shadow:{key}", units, term_days, now,
                                now + dt.timedelta(days=term_days))
        book.commitments.append(commitment)
        receipt = CommitmentReceipt(self.name, deployment, key, commitment.commitment_id,
                                    commitment)
        self._keep(ShadowRecord(deployment, key, "buy_commitment", now, calls, receipt,
                                request))
        return receipt

    def close(self) -> None:
        self.inner.close()


def _generic_change(deployment: str, book: _Book, target: int, key: str,
                    now: dt.datetime) -> ElasticChange:
    """Shadow a provider without ``plan_elastic``: the contract's own semantics."""
    current = sum(t.units for t in book.tranches)
    call = SdkCall("set_elastic_target", {"deployment": deployment, "target_units": target,
                                          "idempotency_key": key})
    if target >= current:
        start = now + book.limits.lead_time if target > current else now
        created = ((key, target - current),) if target > current else ()
        return ElasticChange((call,), target, start, created=created)
    accepted, reason, next_release, released = scale_down(book.tranches, target, now,
                                                          whole_only=False)
    return ElasticChange((call,), accepted, now, reason, next_release, released)


__all__ = [
    "MODES",
    "MODE_LIVE",
    "MODE_SHADOW",
    "ElasticChange",
    "PlansCalls",
    "SdkCall",
    "ShadowProvider",
    "ShadowRecord",
    "Tranche",
    "apply_change",
    "scale_down",
]

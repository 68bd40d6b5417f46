"""The simulated provider: the provider contract with its books in PostgreSQL.

It follows the same semantics as the HTTP reference server
(:mod:`reference_server`) — lead time, min-hold clamping, quota, max step,
a finite pool, idempotency keys with replay and conflict detection — but keeps its state in
the scheduler's database (:mod:`scheduler.store.simulated`), so a request recorded by one
process is known to the next. That is what lets the daemon's crash recovery be tested for
real: kill the process, build a new provider on the same database, ``lookup_request(key)``.

Every mutating request runs in ONE transaction that also records its idempotency key and its
outcome: a crash leaves either nothing or the whole change.

Configuration (``[providers.<name>]``, ``type = "simulated"``)::

    [providers.sim]
    type = "simulated"
    lead_time_minutes = 5        # scale-up to serving
    min_hold_minutes = 60        # an active unit is held at least this long
    max_units = 1000             # quota: committed + elastic
    max_step = 1000              # largest change of elastic units per request
    supported_terms = [7, 30]    # commitment terms in days ([] = no commitments)
    available_units = 40         # optional pool per deployment (out_of_capacity beyond)
    timeout_seconds = 10
    [providers.sim.deployments.chat]
    available_units = 8          # per-deployment overrides of the keys above

The clock is real UTC time unless injected (``clock=`` or :meth:`SimulatedProvider.set_clock`),
so ``capsched run --once --now T`` and tests can run simulated time.

Faults are armed in the database (:func:`scheduler.store.simulated.arm_fault`) and consumed by
matching calls: ``timeout`` (optionally *apply first*: the change is made, the caller gets a
``ProviderTimeout``), ``temporary``, ``permanent`` (any operation), ``out_of_capacity``,
``quota`` (mutating operations; recorded under the key as FAILED, like a real rejection) and
``slow_confirm`` (mutating operations: booked at once but reported PENDING until
``confirm_after_seconds`` have passed or ``confirm_after_calls`` lookups of the key / holdings
of its deployment were made). Faults other than out_of_capacity/quota/slow_confirm fire
before the request reaches the books, so nothing is recorded under the key.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Self, TypeVar

import sqlalchemy as sa

from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    OP_BUY_COMMITMENT,
    OP_HOLDINGS,
    OP_LIMITS,
    OP_LOOKUP_REQUEST,
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
    InvalidRequestError,
    NotSupportedError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
)
from scheduler.providers.holds import plan_scale_down
from scheduler.store import simulated as store

if TYPE_CHECKING:
    from sqlalchemy import Engine

Clock = Callable[[], dt.datetime]
T = TypeVar("T")

CODE_OUT_OF_CAPACITY = "out_of_capacity"
CODE_QUOTA_EXCEEDED = "quota_exceeded"
CODE_STEP_TOO_LARGE = "step_too_large"
CODE_UNSUPPORTED_TERM = "unsupported_term"
CODE_INJECTED = "injected_fault"
#: Seconds the simulator suggests waiting after ``out_of_capacity``.
OUT_OF_CAPACITY_RETRY_AFTER = 60.0

_LIMIT_KEYS = frozenset(
    {
        "lead_time_minutes",
        "min_hold_minutes",
        "max_units",
        "max_step",
        "supported_terms",
        "available_units",
    }
)
_SETTINGS_KEYS = _LIMIT_KEYS | {"deployments", "timeout_seconds"}
#: PostgreSQL SQLSTATEs meaning "took too long": query_canceled, lock_not_available.
_TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})

_ERROR_CLASSES: dict[str, type[ProviderError]] = {
    cls.__name__: cls
    for cls in (
        OutOfCapacityError,
        QuotaExceededError,
        InvalidRequestError,
        PermanentProviderError,
    )
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class SimulatedLimits:
    """What the simulator allows one deployment; ``available_units`` None = unlimited pool."""

    lead_time_minutes: int = 5
    min_hold_minutes: int = 60
    max_units: int = 1000
    max_step: int = 1000
    supported_terms: tuple[int, ...] = (7, 30)
    available_units: int | None = None

    def provider_limits(self) -> ProviderLimits:
        return ProviderLimits(
            max_units=self.max_units,
            max_step=self.max_step,
            supported_terms=self.supported_terms,
            lead_time_minutes=self.lead_time_minutes,
            min_hold_minutes=self.min_hold_minutes,
            available_units=self.available_units,
        )


@dataclass(frozen=True)
class SimulatedSettings:
    """Defaults for every deployment, and per-deployment overrides."""

    defaults: SimulatedLimits = field(default_factory=SimulatedLimits)
    deployments: Mapping[str, SimulatedLimits] = field(default_factory=dict)

    def for_deployment(self, deployment: str) -> SimulatedLimits:
        return self.deployments.get(deployment, self.defaults)


def _int_setting(where: str, key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProviderConfigError(f"{where}: {key} must be an integer >= {minimum}")
    return value


def _parse_limits(where: str, table: Mapping[str, Any], base: SimulatedLimits) -> SimulatedLimits:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "supported_terms":
            if not isinstance(value, list | tuple):
                raise ProviderConfigError(f"{where}: supported_terms must be a list of days")
            values[key] = tuple(
                sorted({_int_setting(where, "supported_terms[]", v, minimum=1) for v in value})
            )
        elif key == "available_units":
            values[key] = None if value is None else _int_setting(where, key, value, minimum=0)
        elif key == "max_step":
            values[key] = _int_setting(where, key, value, minimum=1)
        else:
            values[key] = _int_setting(where, key, value, minimum=0)
    return replace(base, **values)


def parse_settings(
    name: str, settings: Mapping[str, Any]
) -> tuple[SimulatedSettings, float | None]:
    """Validate a ``[providers.<name>]`` table; returns the settings and ``timeout_seconds``."""
    where = f"[providers.{name}]"
    unknown = set(settings) - _SETTINGS_KEYS
    if unknown:
        raise ProviderConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r} "
            f"(known: {', '.join(sorted(_SETTINGS_KEYS))})"
        )
    defaults = _parse_limits(
        where, {k: v for k, v in settings.items() if k in _LIMIT_KEYS}, SimulatedLimits()
    )
    overrides: dict[str, SimulatedLimits] = {}
    raw_deployments = settings.get("deployments", {})
    if not isinstance(raw_deployments, Mapping):
        raise ProviderConfigError(f"{where}: deployments must be a table of tables")
    for deployment, table in raw_deployments.items():
        sub = f"{where}.deployments.{deployment}"
        if not isinstance(table, Mapping):
            raise ProviderConfigError(f"{sub} must be a table")
        bad = set(table) - _LIMIT_KEYS
        if bad:
            raise ProviderConfigError(
                f"{sub}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(_LIMIT_KEYS))})"
            )
        overrides[str(deployment)] = _parse_limits(sub, table, defaults)
    timeout: float | None = None
    if "timeout_seconds" in settings:
        raw = settings["timeout_seconds"]
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | float)
            or not math.isfinite(raw)
            or raw <= 0
        ):
            raise ProviderConfigError(f"{where}: timeout_seconds must be a positive number")
        timeout = float(raw)
    return SimulatedSettings(defaults=defaults, deployments=overrides), timeout


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _time(value: Any) -> dt.datetime:
    return require_utc(dt.datetime.fromisoformat(str(value)), "stored time")


@dataclass(frozen=True)
class _Rejection:
    """A request that reached the books and was refused: recorded, then raised."""

    error_class: type[ProviderError]
    code: str
    message: str
    retry_after: float | None = None


class SimulatedProvider(Provider):
    """A provider whose books live in PostgreSQL; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        engine: Engine,
        settings: SimulatedSettings | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.engine = engine
        self.settings = settings or SimulatedSettings()
        self._clock: Clock = clock or utc_now

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Mapping[str, Any],
        *,
        engine: Engine | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Self:
        if engine is None:
            raise ProviderConfigError(
                f"[providers.{name}]: the simulated provider keeps its state in the scheduler's "
                "database and needs its engine (engine=None given)"
            )
        parsed, own_timeout = parse_settings(name, settings)
        return cls(name, engine=engine, settings=parsed, timeout=own_timeout or timeout)

    # -- clock ---------------------------------------------------------------------------

    def set_clock(self, clock: Clock) -> None:
        """Use ``clock`` from now on (e.g. a fixed ``--now`` or a test's manual clock)."""
        self._clock = clock

    def now(self) -> dt.datetime:
        return require_utc(self._clock(), "the simulated provider's clock")

    # -- plumbing ------------------------------------------------------------------------

    def _transaction(
        self, operation: str, deployment: str | None, fn: Callable[[sa.Connection], T]
    ) -> T:
        """Run ``fn`` in one transaction; database errors become temporary provider errors."""
        try:
            with self.engine.begin() as conn:
                store.set_local_timeouts(conn, self.timeout)
                return fn(conn)
        except sa.exc.DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate in _TIMEOUT_SQLSTATES:
                raise ProviderTimeout(
                    f"database call exceeded {self.timeout:g}s",
                    provider=self.name,
                    operation=operation,
                    deployment=deployment,
                ) from exc
            raise self._unavailable(operation, deployment, exc) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise self._unavailable(operation, deployment, exc) from exc

    def _unavailable(
        self, operation: str, deployment: str | None, exc: Exception
    ) -> ProviderUnavailable:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return ProviderUnavailable(
            f"simulator database error: {type(exc).__name__}: {first_line}",
            provider=self.name,
            operation=operation,
            deployment=deployment,
        )

    def _take_fault(
        self, operation: str, deployment: str | None, *, mutating: bool
    ) -> store.FaultRow | None:
        kinds = ["timeout", "temporary", "permanent"]
        if mutating:
            kinds += ["out_of_capacity", "quota", "slow_confirm", "crash"]
        fault = self._transaction(
            operation,
            deployment,
            lambda conn: store.take_fault(
                conn, provider=self.name, deployment=deployment, operation=operation, kinds=kinds
            ),
        )
        if fault is None:
            return None
        if fault.kind == "crash" and not fault.apply_first:
            _crash()
        if fault.kind == "timeout" and not (fault.apply_first and mutating):
            raise ProviderTimeout(
                "injected timeout",
                provider=self.name,
                operation=operation,
                deployment=deployment,
                code=CODE_INJECTED,
            )
        if fault.kind == "temporary":
            raise ProviderUnavailable(
                "injected temporary failure",
                provider=self.name,
                operation=operation,
                deployment=deployment,
                retry_after=fault.retry_after,
                code=CODE_INJECTED,
                status=503,
            )
        if fault.kind == "permanent":
            raise PermanentProviderError(
                "injected permanent failure",
                provider=self.name,
                operation=operation,
                deployment=deployment,
                code=CODE_INJECTED,
            )
        return fault

    def _error(self, row: store.RequestRow) -> ProviderError:
        cls = _ERROR_CLASSES.get(row.error_class or "", PermanentProviderError)
        return cls(
            row.error_message or "request failed",
            provider=self.name,
            operation=row.operation,
            deployment=row.deployment,
            retry_after=row.retry_after,
            code=row.error_code,
        )

    def _limits_for(self, deployment: str) -> SimulatedLimits:
        return self.settings.for_deployment(deployment)

    # -- required ------------------------------------------------------------------------

    def limits(self, deployment: str) -> ProviderLimits:
        self._take_fault(OP_LIMITS, deployment, mutating=False)
        return self._limits_for(deployment).provider_limits()

    def holdings_many(self, deployments: Sequence[str]) -> dict[str, Holdings]:
        """All the deployments' holdings in one transaction (the daemon's per-tick read)."""
        names = list(deployments)
        if not names:
            return {}
        aimed = self._transaction(
            OP_HOLDINGS, None, lambda conn: store.faults_armed_for_deployments(
                conn, provider=self.name, operation=OP_HOLDINGS, deployments=names))
        if aimed:
            # A fault aimed at one deployment must hit that deployment's read alone.
            return super().holdings_many(names)
        self._take_fault(OP_HOLDINGS, None, mutating=False)
        now = self.now()
        return self._transaction(OP_HOLDINGS, None,
                                 lambda conn: self._read_holdings(conn, names, now))

    def holdings(self, deployment: str) -> Holdings:
        self._take_fault(OP_HOLDINGS, deployment, mutating=False)
        now = self.now()
        return self._transaction(
            OP_HOLDINGS, deployment,
            lambda conn: self._read_holdings(conn, [deployment], now)[deployment])

    def _read_holdings(self, conn: sa.Connection, names: Sequence[str], now: dt.datetime
                       ) -> dict[str, Holdings]:
        for row in store.pending_requests_many(conn, self.name, names):
            self._advance(conn, row, now)
        tranches = store.load_tranches_many(conn, self.name, names)
        commitments = store.load_commitments_many(conn, self.name, names, ending_after=now)
        return {
            name: Holdings(
                deployment=name, as_of=now,
                elastic=tuple(ElasticTranche(t.units, t.active_from, t.hold_until)
                              for t in tranches[name]),
                commitments=tuple(Commitment(c.commitment_id, c.units, c.term_days, c.start,
                                             c.end) for c in commitments[name]),
            )
            for name in names
        }

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        check_idempotency_key(idempotency_key, provider=self.name, operation=OP_LOOKUP_REQUEST)
        self._take_fault(OP_LOOKUP_REQUEST, None, mutating=False)
        now = self.now()

        def read(conn: sa.Connection) -> store.RequestRow | None:
            row = store.get_request(conn, self.name, idempotency_key)
            if row is not None and row.status == "pending":
                self._advance(conn, row, now)
                row = store.get_request(conn, self.name, idempotency_key)
            return row

        row = self._transaction(OP_LOOKUP_REQUEST, None, read)
        if row is None:
            return RequestLookup(idempotency_key=idempotency_key, status=RequestStatus.UNKNOWN)
        status = RequestStatus(row.status)
        return RequestLookup(
            idempotency_key=idempotency_key,
            status=status,
            operation=row.operation,
            deployment=row.deployment,
            reference=row.reference,
            error_code=row.error_code if status is RequestStatus.FAILED else None,
            error_message=row.error_message if status is RequestStatus.FAILED else None,
            details=dict(row.result or {}),
        )

    def _advance(self, conn: sa.Connection, row: store.RequestRow, now: dt.datetime) -> None:
        """One more look at a slowly confirming request; confirm it when its time has come."""
        calls = store.count_request_call(conn, self.name, row.idempotency_key)
        due_by_time = row.confirm_at is not None and row.confirm_at <= now
        due_by_calls = row.confirm_after_calls is not None and calls >= row.confirm_after_calls
        if due_by_time or due_by_calls:
            store.mark_request_done(conn, self.name, row.idempotency_key)

    def set_elastic_target(
        self, deployment: str, target_units: int, *, idempotency_key: str
    ) -> ElasticReceipt:
        operation = OP_SET_ELASTIC_TARGET
        check_idempotency_key(idempotency_key, provider=self.name, operation=operation)
        if isinstance(target_units, bool) or not isinstance(target_units, int) or target_units < 0:
            raise InvalidRequestError(
                f"target_units must be an integer >= 0, got {target_units!r}",
                provider=self.name,
                operation=operation,
                deployment=deployment,
            )
        row, fault = self._mutate(
            operation,
            deployment,
            idempotency_key,
            {"target_units": target_units},
            lambda conn, now: self._apply_elastic(conn, deployment, target_units, now,
                                                  idempotency_key),
        )
        result = row.result or {}
        receipt = ElasticReceipt(
            provider=self.name,
            deployment=deployment,
            idempotency_key=idempotency_key,
            reference=str(row.reference),
            requested_units=int(result["requested_units"]),
            accepted_units=int(result["accepted_units"]),
            effective_at=_time(result["effective_at"]),
            status=RequestStatus(row.status),
            clamp_reason=result.get("clamp_reason"),
            next_release_at=(
                None if result.get("next_release_at") is None
                else _time(result["next_release_at"])
            ),
            replayed=fault is _REPLAYED,
        )
        self._lost_response(fault, operation, deployment)
        return receipt

    def buy_commitment(
        self, deployment: str, units: int, term_days: int, *, idempotency_key: str
    ) -> CommitmentReceipt:
        operation = OP_BUY_COMMITMENT
        check_idempotency_key(idempotency_key, provider=self.name, operation=operation)
        if not self._limits_for(deployment).supported_terms:
            raise NotSupportedError(
                provider=self.name,
                operation=operation,
                capability="commitments",
                deployment=deployment,
            )
        for what, value in (("units", units), ("term_days", term_days)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(
                    f"{what} must be an integer >= 1, got {value!r}",
                    provider=self.name,
                    operation=operation,
                    deployment=deployment,
                )
        row, fault = self._mutate(
            operation,
            deployment,
            idempotency_key,
            {"units": units, "term_days": term_days},
            lambda conn, now: self._apply_commitment(
                conn, deployment, units, term_days, now, idempotency_key
            ),
        )
        c = (row.result or {})["commitment"]
        receipt = CommitmentReceipt(
            provider=self.name,
            deployment=deployment,
            idempotency_key=idempotency_key,
            reference=str(row.reference),
            commitment=Commitment(
                commitment_id=str(c["commitment_id"]),
                units=int(c["units"]),
                term_days=int(c["term_days"]),
                start=_time(c["start"]),
                end=_time(c["end"]),
            ),
            status=RequestStatus(row.status),
            replayed=fault is _REPLAYED,
        )
        self._lost_response(fault, operation, deployment)
        return receipt

    def _lost_response(
        self, fault: store.FaultRow | object | None, operation: str, deployment: str
    ) -> None:
        if isinstance(fault, store.FaultRow) and fault.kind == "crash":
            _crash()  # the change is committed at the provider; the caller never hears of it
        if isinstance(fault, store.FaultRow) and fault.kind == "timeout":
            raise ProviderTimeout(
                "injected timeout after the change was applied (response lost)",
                provider=self.name,
                operation=operation,
                deployment=deployment,
                code=CODE_INJECTED,
            )

    # -- the books -------------------------------------------------------------------------

    def _mutate(
        self,
        operation: str,
        deployment: str,
        key: str,
        values: Mapping[str, int],
        apply: Callable[[sa.Connection, dt.datetime], Mapping[str, Any] | _Rejection],
    ) -> tuple[store.RequestRow, store.FaultRow | object | None]:
        """Record-or-replay ``key`` and apply the change, all in one transaction.

        Returns the request's row and the fault that shaped the call (or ``_REPLAYED``).
        Raises the stored error of a failed request, and IdempotencyConflictError.
        """
        fault = self._take_fault(operation, deployment, mutating=True)
        fingerprint = json.dumps([operation, deployment, dict(values)], sort_keys=True)
        now = self.now()

        def run(conn: sa.Connection) -> tuple[store.RequestRow, bool]:
            store.lock_key(conn, self.name, key)
            existing = store.get_request(conn, self.name, key)
            if existing is not None:
                return existing, True
            store.lock_deployment(conn, self.name, deployment)
            outcome: Mapping[str, Any] | _Rejection
            if fault is not None and fault.kind == "out_of_capacity":
                outcome = _Rejection(
                    OutOfCapacityError,
                    CODE_OUT_OF_CAPACITY,
                    "injected: no units available",
                    fault.retry_after if fault.retry_after is not None
                    else OUT_OF_CAPACITY_RETRY_AFTER,
                )
            elif fault is not None and fault.kind == "quota":
                outcome = _Rejection(
                    QuotaExceededError, CODE_QUOTA_EXCEEDED, "injected: quota exceeded",
                    fault.retry_after,
                )
            else:
                outcome = apply(conn, now)
            slow = fault is not None and fault.kind == "slow_confirm"
            if isinstance(outcome, _Rejection):
                row = store.RequestRow(
                    provider=self.name, idempotency_key=key, operation=operation,
                    deployment=deployment, fingerprint=fingerprint, status="failed",
                    applied=False, reference=None, result=None,
                    error_class=outcome.error_class.__name__, error_code=outcome.code,
                    error_message=outcome.message, retry_after=outcome.retry_after,
                    requested_at=now, confirm_at=None, confirm_after_calls=None, calls=0,
                )
            else:
                confirm_at = None
                if slow and fault is not None and fault.confirm_after_seconds is not None:
                    confirm_at = now + dt.timedelta(seconds=fault.confirm_after_seconds)
                row = store.RequestRow(
                    provider=self.name, idempotency_key=key, operation=operation,
                    deployment=deployment, fingerprint=fingerprint,
                    status="pending" if slow else "done", applied=True,
                    reference=str(outcome["reference"]), result=outcome, error_class=None,
                    error_code=None, error_message=None, retry_after=None, requested_at=now,
                    confirm_at=confirm_at,
                    confirm_after_calls=(
                        fault.confirm_after_calls if slow and fault is not None else None
                    ),
                    calls=0,
                )
            store.insert_request(conn, row)
            return row, False

        row, replayed = self._transaction(operation, deployment, run)
        if replayed and row.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                f"idempotency key {key!r} was used for a different request "
                f"({row.operation} on {row.deployment!r})",
                provider=self.name,
                operation=operation,
                deployment=deployment,
                code="idempotency_conflict",
                status=409,
            )
        if row.status == "failed":
            raise self._error(row)
        return row, (_REPLAYED if replayed else fault)

    def _apply_elastic(
        self, conn: sa.Connection, deployment: str, target: int, now: dt.datetime, key: str
    ) -> Mapping[str, Any] | _Rejection:
        limits = self._limits_for(deployment)
        tranches = store.load_tranches(conn, self.name, deployment)
        current = sum(t.units for t in tranches)
        if abs(target - current) > limits.max_step:
            return _Rejection(
                InvalidRequestError,
                CODE_STEP_TOO_LARGE,
                f"change of {abs(target - current)} units exceeds max_step {limits.max_step}",
            )
        clamp_reason: str | None = None
        next_release: dt.datetime | None = None
        # (units, active_from) of what remains, to compute effective_at.
        remaining = [(t.units, t.active_from) for t in tranches]
        if target > current:
            delta = target - current
            committed = sum(
                c.units
                for c in store.load_commitments(conn, self.name, deployment, ending_after=now)
            )
            if committed + target > limits.max_units:
                return _Rejection(
                    QuotaExceededError,
                    CODE_QUOTA_EXCEEDED,
                    f"{committed} committed + {target} elastic exceeds quota {limits.max_units}",
                )
            if limits.available_units is not None and target > limits.available_units:
                return _Rejection(
                    OutOfCapacityError,
                    CODE_OUT_OF_CAPACITY,
                    f"{delta} units requested, {max(0, limits.available_units - current)} "
                    "available",
                    OUT_OF_CAPACITY_RETRY_AFTER,
                )
            # Billing is per minute (docs/economics.md): a unit requested during minute t
            # serves from the start of minute t + lead, whatever the second of the request.
            minute = now.replace(second=0, microsecond=0)
            active_from = minute + dt.timedelta(minutes=limits.lead_time_minutes)
            store.add_tranche(
                conn,
                self.name,
                deployment,
                units=delta,
                active_from=active_from,
                hold_until=active_from + dt.timedelta(minutes=limits.min_hold_minutes),
                idempotency_key=key,
            )
            remaining.append((delta, active_from))
            accepted = target
        elif target < current:
            # Tranches come ordered by (active_from, id): position breaks ties as id did.
            down = plan_scale_down(tranches, current, target, now)
            accepted, clamp_reason = down.accepted, down.clamp_reason
            next_release = down.next_release
            left = {t.id: t.units for t in tranches}
            for index, take in down.releases:
                tranche = tranches[index]
                left[tranche.id] -= take
                store.set_tranche_units(conn, tranche.id, left[tranche.id])
            remaining = [(left[t.id], t.active_from) for t in tranches if left[t.id] > 0]
        else:
            accepted = target
        effective_at = max([now, *(active_from for _, active_from in remaining)])
        return {
            "reference": store.next_reference(conn, "el"),
            "requested_units": target,
            "accepted_units": accepted,
            "effective_at": _iso(effective_at),
            "clamp_reason": clamp_reason,
            "next_release_at": None if next_release is None else _iso(next_release),
        }

    def _apply_commitment(
        self,
        conn: sa.Connection,
        deployment: str,
        units: int,
        term_days: int,
        now: dt.datetime,
        key: str,
    ) -> Mapping[str, Any] | _Rejection:
        limits = self._limits_for(deployment)
        if term_days not in limits.supported_terms:
            return _Rejection(
                InvalidRequestError,
                CODE_UNSUPPORTED_TERM,
                f"term {term_days} days not offered (terms: {list(limits.supported_terms)})",
            )
        committed = sum(
            c.units for c in store.load_commitments(conn, self.name, deployment, ending_after=now)
        )
        elastic = sum(t.units for t in store.load_tranches(conn, self.name, deployment))
        if committed + elastic + units > limits.max_units:
            return _Rejection(
                QuotaExceededError,
                CODE_QUOTA_EXCEEDED,
                f"{committed + elastic} held + {units} exceeds quota {limits.max_units}",
            )
        reference = store.next_reference(conn, "cm")
        row = store.CommitmentRow(
            commitment_id=reference,
            units=units,
            term_days=term_days,
            start=now,
            end=now + dt.timedelta(days=term_days),
        )
        store.add_commitment(conn, self.name, deployment, row, idempotency_key=key)
        return {
            "reference": reference,
            "commitment": {
                "commitment_id": reference,
                "units": units,
                "term_days": term_days,
                "start": _iso(row.start),
                "end": _iso(row.end),
            },
        }


#: Marks a call answered from the books (same key, same request) rather than applied.
_REPLAYED = object()


__all__ = [
    "SimulatedLimits",
    "SimulatedProvider",
    "SimulatedSettings",
    "parse_settings",
]


def _crash() -> None:
    """Die like a power cut: no cleanup, no exception handler, no flushed buffers."""
    os.kill(os.getpid(), signal.SIGKILL)

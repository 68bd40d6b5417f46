"""The simulated provider's books: elastic tranches, commitments, requests and armed faults.

The simulated provider (:mod:`scheduler.providers.simulated`) keeps its state here, in the
scheduler's own PostgreSQL database, so it survives a restart of the daemon exactly like a
real provider would: an idempotency key recorded by one process is known to the next, which
is what crash recovery needs.

Every row is scoped by ``provider`` (the configured provider name) so several simulated
providers can share one database. Idempotency keys are unique per provider.

``sim_request`` is the ledger of mutating requests that reached the books, one row per key:
``applied`` is true when the request changed holdings, so ``count_applied`` tells a test how
many changes were really made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.store.filters import one_of
from scheduler.store.metadata import metadata

#: What an armed fault does to the call it catches.
FAULT_KINDS = (
    "timeout",  # ProviderTimeout (optionally after applying the change: a lost response)
    "temporary",  # ProviderUnavailable
    "out_of_capacity",  # OutOfCapacityError (mutating calls; recorded as FAILED)
    "quota",  # QuotaExceededError (mutating calls; recorded as FAILED)
    "permanent",  # PermanentProviderError
    "slow_confirm",  # accepted as PENDING, DONE only later (mutating calls)
    "crash",  # SIGKILL of the calling process, before (or with apply_first, after) applying
)
REQUEST_STATUSES = ("pending", "done", "failed")

sim_tranche_table = sa.Table(
    "sim_tranche",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("deployment", sa.Text, nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("active_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("hold_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.CheckConstraint("units > 0", name="units_positive"),
    sa.Index("ix_sim_tranche_provider_deployment", "provider", "deployment"),
)

sim_commitment_table = sa.Table(
    "sim_commitment",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("deployment", sa.Text, nullable=False),
    sa.Column("commitment_id", sa.Text, nullable=False, unique=True),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("term_days", sa.Integer, nullable=False),
    sa.Column("start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.CheckConstraint("units > 0", name="units_positive"),
    sa.Index("ix_sim_commitment_provider_deployment", "provider", "deployment"),
)

sim_request_table = sa.Table(
    "sim_request",
    metadata,
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("deployment", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("applied", sa.Boolean, nullable=False),
    sa.Column("reference", sa.Text, nullable=True),
    sa.Column("result", pg.JSONB, nullable=True),
    sa.Column("error_class", sa.Text, nullable=True),
    sa.Column("error_code", sa.Text, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("retry_after", sa.Float, nullable=True),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("confirm_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("confirm_after_calls", sa.Integer, nullable=True),
    sa.Column("calls", sa.Integer, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("provider", "idempotency_key"),
    sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="status"),
)

sim_fault_table = sa.Table(
    "sim_fault",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("provider", sa.Text, nullable=True),
    sa.Column("deployment", sa.Text, nullable=True),
    sa.Column("operation", sa.Text, nullable=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("remaining", sa.Integer, nullable=False),
    sa.Column("apply_first", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("retry_after", sa.Float, nullable=True),
    sa.Column("confirm_after_seconds", sa.Float, nullable=True),
    sa.Column("confirm_after_calls", sa.Integer, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(
        "kind IN ('timeout', 'temporary', 'out_of_capacity', 'quota', 'permanent', "
        "'slow_confirm', 'crash')",
        name="kind",
    ),
    sa.CheckConstraint("remaining > 0", name="remaining_positive"),
)


# -- value objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrancheRow:
    id: int
    units: int
    active_from: dt.datetime
    hold_until: dt.datetime


@dataclass(frozen=True)
class CommitmentRow:
    commitment_id: str
    units: int
    term_days: int
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class RequestRow:
    """One idempotency key's record: what was asked and what became of it."""

    provider: str
    idempotency_key: str
    operation: str
    deployment: str
    fingerprint: str
    status: str
    applied: bool
    reference: str | None
    result: Mapping[str, Any] | None
    error_class: str | None
    error_code: str | None
    error_message: str | None
    retry_after: float | None
    requested_at: dt.datetime
    confirm_at: dt.datetime | None
    confirm_after_calls: int | None
    calls: int


@dataclass(frozen=True)
class FaultRow:
    id: int
    provider: str | None
    deployment: str | None
    operation: str | None
    kind: str
    remaining: int
    apply_first: bool
    retry_after: float | None
    confirm_after_seconds: float | None
    confirm_after_calls: int | None


# -- locking and limits -----------------------------------------------------------------


def set_local_timeouts(conn: sa.Connection, seconds: float) -> None:
    """Bound every statement (and lock wait) of the current transaction."""
    millis = str(max(1, int(seconds * 1000)))
    conn.execute(
        sa.text(
            "SELECT set_config('statement_timeout', :ms, true), "
            "set_config('lock_timeout', :ms, true)"
        ),
        {"ms": millis},
    )


def lock_key(conn: sa.Connection, provider: str, key: str) -> None:
    """Serialise requests carrying the same idempotency key (until the transaction ends)."""
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
        {"k": f"capsched.sim.key/{provider}/{key}"},
    )


def lock_deployment(conn: sa.Connection, provider: str, deployment: str) -> None:
    """Serialise changes to one deployment's books (until the transaction ends)."""
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
        {"k": f"capsched.sim.deployment/{provider}/{deployment}"},
    )


# -- tranches and commitments -----------------------------------------------------------


def load_tranches(conn: sa.Connection, provider: str, deployment: str) -> list[TrancheRow]:
    return load_tranches_many(conn, provider, [deployment])[deployment]



def load_tranches_many(
    conn: sa.Connection, provider: str, deployments: Sequence[str]
) -> dict[str, list[TrancheRow]]:
    t = sim_tranche_table
    rows = conn.execute(
        sa.select(t.c.deployment, t.c.id, t.c.units, t.c.active_from, t.c.hold_until)
        .where(t.c.provider == provider, one_of(t.c.deployment, deployments))
        .order_by(t.c.deployment, t.c.active_from, t.c.id)
    )
    out: dict[str, list[TrancheRow]] = {d: [] for d in deployments}
    for row in rows:
        values = dict(row._mapping)
        out[values.pop("deployment")].append(TrancheRow(**values))
    return out


def add_tranche(
    conn: sa.Connection,
    provider: str,
    deployment: str,
    *,
    units: int,
    active_from: dt.datetime,
    hold_until: dt.datetime,
    idempotency_key: str,
) -> None:
    conn.execute(
        sim_tranche_table.insert(),
        {
            "provider": provider,
            "deployment": deployment,
            "units": units,
            "active_from": active_from,
            "hold_until": hold_until,
            "idempotency_key": idempotency_key,
        },
    )


def set_tranche_units(conn: sa.Connection, tranche_id: int, units: int) -> None:
    """Shrink a tranche; zero units deletes it."""
    t = sim_tranche_table
    if units <= 0:
        conn.execute(t.delete().where(t.c.id == tranche_id))
    else:
        conn.execute(t.update().where(t.c.id == tranche_id).values(units=units))


def load_commitments(
    conn: sa.Connection, provider: str, deployment: str, *, ending_after: dt.datetime
) -> list[CommitmentRow]:
    """Commitments not yet ended at ``ending_after`` (including any starting later)."""
    return load_commitments_many(conn, provider, [deployment], ending_after=ending_after)[
        deployment]



def load_commitments_many(
    conn: sa.Connection, provider: str, deployments: Sequence[str], *, ending_after: dt.datetime
) -> dict[str, list[CommitmentRow]]:
    t = sim_commitment_table
    rows = conn.execute(
        sa.select(t.c.deployment, t.c.commitment_id, t.c.units, t.c.term_days, t.c.start,
                  t.c.end)
        .where(t.c.provider == provider, one_of(t.c.deployment, deployments),
               t.c.end > ending_after)
        .order_by(t.c.deployment, t.c.start, t.c.id)
    )
    out: dict[str, list[CommitmentRow]] = {d: [] for d in deployments}
    for row in rows:
        values = dict(row._mapping)
        out[values.pop("deployment")].append(CommitmentRow(**values))
    return out


def add_commitment(
    conn: sa.Connection,
    provider: str,
    deployment: str,
    row: CommitmentRow,
    *,
    idempotency_key: str,
) -> None:
    conn.execute(
        sim_commitment_table.insert(),
        {
            "provider": provider,
            "deployment": deployment,
            "commitment_id": row.commitment_id,
            "units": row.units,
            "term_days": row.term_days,
            "start": row.start,
            "end": row.end,
            "idempotency_key": idempotency_key,
        },
    )


def next_reference(conn: sa.Connection, prefix: str) -> str:
    """A provider reference unique in the database (``el-…`` / ``cm-…``)."""
    value = conn.execute(sa.text("SELECT md5(random()::text || clock_timestamp()::text)"))
    return f"{prefix}-{value.scalar_one()[:16]}"


# -- requests ---------------------------------------------------------------------------

_REQUEST_COLUMNS = tuple(sim_request_table.c)


def get_request(conn: sa.Connection, provider: str, key: str) -> RequestRow | None:
    t = sim_request_table
    row = conn.execute(
        sa.select(*_REQUEST_COLUMNS).where(t.c.provider == provider, t.c.idempotency_key == key)
    ).one_or_none()
    return None if row is None else RequestRow(**row._mapping)


def insert_request(conn: sa.Connection, row: RequestRow) -> None:
    values = {c.name: getattr(row, c.name) for c in _REQUEST_COLUMNS}
    if values["result"] is not None:
        values["result"] = dict(values["result"])
    conn.execute(sim_request_table.insert(), values)


def count_request_call(conn: sa.Connection, provider: str, key: str) -> int:
    """Count one more look at a request (for ``slow_confirm``); returns the new count."""
    t = sim_request_table
    value = conn.execute(
        t.update()
        .where(t.c.provider == provider, t.c.idempotency_key == key)
        .values(calls=t.c.calls + 1)
        .returning(t.c.calls)
    ).scalar_one_or_none()
    return 0 if value is None else int(value)


def pending_requests_many(
    conn: sa.Connection, provider: str, deployments: Sequence[str]
) -> list[RequestRow]:
    t = sim_request_table
    rows = conn.execute(
        sa.select(*_REQUEST_COLUMNS).where(
            t.c.provider == provider, one_of(t.c.deployment, deployments),
            t.c.status == "pending",
        )
    )
    return [RequestRow(**row._mapping) for row in rows]


def faults_armed_for_deployments(
    conn: sa.Connection, *, provider: str, operation: str, deployments: Sequence[str]
) -> bool:
    """Whether a fault aimed at one of these deployments waits for ``operation``."""
    t = sim_fault_table
    return conn.execute(
        sa.select(sa.exists().where(
            sa.or_(t.c.provider.is_(None), t.c.provider == provider),
            one_of(t.c.deployment, deployments),
            sa.or_(t.c.operation.is_(None), t.c.operation == operation),
        ))
    ).scalar_one()


def mark_request_done(conn: sa.Connection, provider: str, key: str) -> None:
    t = sim_request_table
    conn.execute(
        t.update()
        .where(t.c.provider == provider, t.c.idempotency_key == key, t.c.status == "pending")
        .values(status="done")
    )


def list_requests(
    conn: sa.Connection, provider: str | None = None, *, deployment: str | None = None
) -> list[RequestRow]:
    """Every recorded request, oldest first (tests and the CLI inspect the ledger)."""
    t = sim_request_table
    query = sa.select(*_REQUEST_COLUMNS).order_by(t.c.requested_at, t.c.idempotency_key)
    if provider is not None:
        query = query.where(t.c.provider == provider)
    if deployment is not None:
        query = query.where(t.c.deployment == deployment)
    return [RequestRow(**row._mapping) for row in conn.execute(query)]


def count_applied(
    conn: sa.Connection,
    provider: str | None = None,
    *,
    deployment: str | None = None,
    key: str | None = None,
) -> int:
    """How many requests changed holdings (each key counts at most once by construction)."""
    t = sim_request_table
    query = sa.select(sa.func.count()).select_from(t).where(t.c.applied)
    if provider is not None:
        query = query.where(t.c.provider == provider)
    if deployment is not None:
        query = query.where(t.c.deployment == deployment)
    if key is not None:
        query = query.where(t.c.idempotency_key == key)
    return int(conn.execute(query).scalar_one())


# -- faults -----------------------------------------------------------------------------


def arm_fault(
    conn: sa.Connection,
    kind: str,
    *,
    provider: str | None = None,
    deployment: str | None = None,
    operation: str | None = None,
    times: int = 1,
    apply_first: bool = False,
    retry_after: float | None = None,
    confirm_after_seconds: float | None = None,
    confirm_after_calls: int | None = None,
) -> int:
    """Arm a fault for the next ``times`` matching calls; ``None`` filters match anything.

    ``apply_first`` (``timeout`` only): apply the change, then raise ``ProviderTimeout`` (a
    lost response). ``slow_confirm`` needs ``confirm_after_seconds`` and/or
    ``confirm_after_calls`` (lookups of the key or holdings of its deployment); with
    neither, one later call confirms it. Returns the fault's id.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
    if times < 1:
        raise ValueError("times must be >= 1")
    if apply_first and kind not in ("timeout", "crash"):
        raise ValueError("apply_first only makes sense for a timeout or a crash")
    if kind == "slow_confirm" and confirm_after_seconds is None and confirm_after_calls is None:
        confirm_after_calls = 1
    t = sim_fault_table
    fault_id = conn.execute(
        t.insert().returning(t.c.id),
        {
            "provider": provider,
            "deployment": deployment,
            "operation": operation,
            "kind": kind,
            "remaining": times,
            "apply_first": apply_first,
            "retry_after": retry_after,
            "confirm_after_seconds": confirm_after_seconds,
            "confirm_after_calls": confirm_after_calls,
        },
    ).scalar_one()
    return int(fault_id)


def clear_faults(
    conn: sa.Connection, *, provider: str | None = None, deployment: str | None = None
) -> int:
    """Disarm faults (all, or those armed for ``provider``/``deployment``); returns how many."""
    t = sim_fault_table
    query = t.delete()
    if provider is not None:
        query = query.where(t.c.provider == provider)
    if deployment is not None:
        query = query.where(t.c.deployment == deployment)
    return int(conn.execute(query).rowcount)


def list_faults(conn: sa.Connection) -> list[FaultRow]:
    t = sim_fault_table
    rows = conn.execute(sa.select(*_FAULT_COLUMNS).order_by(t.c.id))
    return [FaultRow(**row._mapping) for row in rows]


_FAULT_COLUMNS = (
    sim_fault_table.c.id,
    sim_fault_table.c.provider,
    sim_fault_table.c.deployment,
    sim_fault_table.c.operation,
    sim_fault_table.c.kind,
    sim_fault_table.c.remaining,
    sim_fault_table.c.apply_first,
    sim_fault_table.c.retry_after,
    sim_fault_table.c.confirm_after_seconds,
    sim_fault_table.c.confirm_after_calls,
)


def take_fault(
    conn: sa.Connection,
    *,
    provider: str,
    deployment: str | None,
    operation: str,
    kinds: Sequence[str],
) -> FaultRow | None:
    """Consume one use of the oldest armed fault matching the call, if any.

    A fault with a ``deployment`` only matches calls about that deployment (so never
    ``lookup_request``, which names none).
    """
    t = sim_fault_table
    deployment_match: sa.ColumnElement[bool] = t.c.deployment.is_(None)
    if deployment is not None:
        deployment_match = sa.or_(deployment_match, t.c.deployment == deployment)
    row = conn.execute(
        sa.select(*_FAULT_COLUMNS)
        .where(
            sa.or_(t.c.provider.is_(None), t.c.provider == provider),
            deployment_match,
            sa.or_(t.c.operation.is_(None), t.c.operation == operation),
            t.c.kind.in_(list(kinds)),
        )
        .order_by(t.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).one_or_none()
    if row is None:
        return None
    fault = FaultRow(**row._mapping)
    if fault.remaining <= 1:
        conn.execute(t.delete().where(t.c.id == fault.id))
    else:
        conn.execute(t.update().where(t.c.id == fault.id).values(remaining=t.c.remaining - 1))
    return fault


__all__ = [
    "FAULT_KINDS",
    "CommitmentRow",
    "FaultRow",
    "RequestRow",
    "TrancheRow",
    "add_commitment",
    "add_tranche",
    "arm_fault",
    "clear_faults",
    "count_applied",
    "count_request_call",
    "get_request",
    "insert_request",
    "list_faults",
    "list_requests",
    "load_commitments",
    "load_tranches",
    "lock_deployment",
    "lock_key",
    "mark_request_done",
    "next_reference",
    "set_local_timeouts",
    "set_tranche_units",
    "sim_commitment_table",
    "sim_fault_table",
    "sim_request_table",
    "sim_tranche_table",
    "take_fault",
]

"""The action journal (an outbox), drift events, per-deployment backoff and daemon state.

``action``: one change at a provider, written (``planned``) with its idempotency key BEFORE
it is sent; then ``sent`` (committed before the provider is called), then ``confirmed`` or
``failed``; a still-planned elastic target replaced by a newer one becomes ``superseded``.
The orchestration lives in :mod:`scheduler.daemon.journal`; this module only reads and writes.

Users query ``pending_actions`` (a view created by migration 0004: planned or sent actions
with the deployment's name).

``drift_event``: the provider held something other than what the journal says it should.
``drift_event`` rows of kind ``sending_stopped`` / ``sending_resumed`` are markers: after
``[daemon] drift_stop_after`` actions in a row that the provider answered "done" without
changing its holdings, nothing more is sent to the deployment until it is resumed.
``deployment_backoff``: after out-of-capacity/quota or a temporary error of a send, no action
is sent to the deployment before ``until`` (the backoff belongs to the provider and
deployment, not to one action, so superseding an action does not reset it).
``daemon_state``: one row per daemon name: pause switch and heartbeat.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.store.filters import one_of
from scheduler.store.metadata import metadata

ACTION_KINDS = ("elastic_set_target", "buy_commitment")
ACTION_STATES = ("planned", "sent", "confirmed", "failed", "superseded")
KIND_ELASTIC = "elastic_set_target"
KIND_COMMITMENT = "buy_commitment"
#: The ``daemon_state`` row used when no name is given.
DEFAULT_DAEMON = "capsched"

action_table = sa.Table(
    "action",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("target_units", sa.Integer, nullable=True),
    sa.Column("units", sa.Integer, nullable=True),
    sa.Column("term_days", sa.Integer, nullable=True),
    sa.Column("plan_id", sa.BigInteger, nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("effective_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("error_class", sa.Text, nullable=True),
    sa.Column("provider_reference", sa.Text, nullable=True),
    sa.Column("accepted_units", sa.Integer, nullable=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint("kind IN ('elastic_set_target', 'buy_commitment')", name="kind"),
    sa.CheckConstraint(
        "state IN ('planned', 'sent', 'confirmed', 'failed', 'superseded')", name="state"
    ),
    sa.CheckConstraint(
        "(kind = 'elastic_set_target' AND target_units IS NOT NULL AND target_units >= 0) OR "
        "(kind = 'buy_commitment' AND units IS NOT NULL AND units > 0 "
        "AND term_days IS NOT NULL AND term_days > 0)",
        name="payload",
    ),
    sa.Index(
        "ix_action_due_planned",
        "due_at",
        postgresql_where=sa.text("state = 'planned'"),
    ),
    sa.Index(
        "ix_action_sent_unconfirmed",
        "deployment_id",
        "id",
        postgresql_where=sa.text("state = 'sent'"),
    ),
    sa.Index("ix_action_deployment_id", "deployment_id", "id"),
)

drift_event_table = sa.Table(
    "drift_event",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("expected", sa.Integer, nullable=True),
    sa.Column("actual", sa.Integer, nullable=True),
    sa.Column("detail", pg.JSONB, nullable=False),
    sa.Index("ix_drift_event_deployment_observed", "deployment_id", "observed_at"),
)

deployment_backoff_table = sa.Table(
    "deployment_backoff",
    metadata,
    sa.Column(
        "deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), primary_key=True
    ),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

daemon_state_table = sa.Table(
    "daemon_state",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("paused_reason", sa.Text, nullable=True),
    sa.Column("instance_id", sa.Text, nullable=True),
    sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_tick_id", sa.Text, nullable=True),
    sa.Column("last_tick_ok", sa.Boolean, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("leader_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)


# -- value objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class ActionRecord:
    """One row of ``action``."""

    id: int
    deployment_id: int
    idempotency_key: str
    kind: str
    target_units: int | None
    units: int | None
    term_days: int | None
    plan_id: int | None
    decided_at: dt.datetime
    due_at: dt.datetime
    effective_at: dt.datetime | None
    state: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    error_class: str | None
    provider_reference: str | None
    accepted_units: int | None
    sent_at: dt.datetime | None
    confirmed_at: dt.datetime | None
    reason: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class DriftRecord:
    id: int
    deployment_id: int
    observed_at: dt.datetime
    kind: str
    expected: int | None
    actual: int | None
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class BackoffRecord:
    deployment_id: int
    failures: int
    until: dt.datetime | None
    reason: str | None


@dataclass(frozen=True)
class DaemonState:
    """The pause switch and the heartbeat of one daemon (``name``)."""

    name: str
    paused: bool
    paused_at: dt.datetime | None
    paused_reason: str | None
    instance_id: str | None
    last_tick_at: dt.datetime | None
    last_tick_id: str | None
    last_tick_ok: bool | None
    last_error: str | None
    leader_since: dt.datetime | None


_ACTION_COLUMNS = tuple(action_table.c)


def _action(row: sa.Row[Any]) -> ActionRecord:
    return ActionRecord(**row._mapping)


# -- actions ----------------------------------------------------------------------------


def lock_deployment_actions(conn: sa.Connection, deployment_id: int) -> None:
    """Serialise planning for one deployment until the transaction ends."""
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
        {"k": f"capsched.action.deployment/{deployment_id}"},
    )


def insert_action(conn: sa.Connection, values: Mapping[str, Any]) -> ActionRecord:
    t = action_table
    row = conn.execute(t.insert().values(**values).returning(*_ACTION_COLUMNS)).one()
    return _action(row)


def get_action(conn: sa.Connection, action_id: int) -> ActionRecord | None:
    t = action_table
    row = conn.execute(sa.select(*_ACTION_COLUMNS).where(t.c.id == action_id)).one_or_none()
    return None if row is None else _action(row)


def get_action_by_key(conn: sa.Connection, key: str) -> ActionRecord | None:
    t = action_table
    row = conn.execute(
        sa.select(*_ACTION_COLUMNS).where(t.c.idempotency_key == key)
    ).one_or_none()
    return None if row is None else _action(row)


def list_actions(
    conn: sa.Connection,
    *,
    deployment_id: int | None = None,
    states: Collection[str] | None = None,
    kind: str | None = None,
) -> list[ActionRecord]:
    """Actions, oldest first, optionally filtered."""
    t = action_table
    query = sa.select(*_ACTION_COLUMNS).order_by(t.c.id)
    if deployment_id is not None:
        query = query.where(t.c.deployment_id == deployment_id)
    if states is not None:
        query = query.where(t.c.state.in_(list(states)))
    if kind is not None:
        query = query.where(t.c.kind == kind)
    return [_action(row) for row in conn.execute(query)]


def recent_failures(conn: sa.Connection, error_class: str, since: dt.datetime
                    ) -> dict[int, dt.datetime]:
    """Deployment id -> when its latest action failed with ``error_class`` at or after
    ``since`` (sent time, else decided time). Read once when a daemon starts."""
    t = action_table
    when = sa.func.coalesce(t.c.sent_at, t.c.decided_at)
    rows = conn.execute(
        sa.select(t.c.deployment_id, sa.func.max(when))
        .where(t.c.state == "failed", t.c.error_class == error_class, when >= since)
        .group_by(t.c.deployment_id))
    return {int(ident): at for ident, at in rows}


def latest_open_action(conn: sa.Connection, deployment_id: int, kind: str) -> ActionRecord | None:
    """The newest planned-or-sent action of ``kind`` for the deployment."""
    t = action_table
    row = conn.execute(
        sa.select(*_ACTION_COLUMNS)
        .where(
            t.c.deployment_id == deployment_id,
            t.c.kind == kind,
            t.c.state.in_(["planned", "sent"]),
        )
        .order_by(t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else _action(row)


def open_commitment_like(
    conn: sa.Connection, deployment_id: int, units: int, term_days: int
) -> ActionRecord | None:
    """A planned-or-sent purchase of the same commitment, if one is already under way."""
    t = action_table
    row = conn.execute(
        sa.select(*_ACTION_COLUMNS)
        .where(
            t.c.deployment_id == deployment_id,
            t.c.kind == KIND_COMMITMENT,
            t.c.units == units,
            t.c.term_days == term_days,
            t.c.state.in_(["planned", "sent"]),
        )
        .order_by(t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else _action(row)


def supersede_planned_elastic(
    conn: sa.Connection, deployment_id: int, *, except_id: int | None, reason: str
) -> list[int]:
    """Mark every still-planned elastic action of the deployment superseded; returns ids."""
    t = action_table
    query = (
        t.update()
        .where(
            t.c.deployment_id == deployment_id,
            t.c.kind == KIND_ELASTIC,
            t.c.state == "planned",
        )
        .values(state="superseded", last_error=reason)
        .returning(t.c.id)
    )
    if except_id is not None:
        query = query.where(t.c.id != except_id)
    return sorted(int(i) for i in conn.execute(query).scalars())


def move_due_earlier(conn: sa.Connection, action_id: int, due_at: dt.datetime) -> None:
    t = action_table
    conn.execute(
        t.update()
        .where(t.c.id == action_id, t.c.state == "planned", t.c.due_at > due_at)
        .values(due_at=due_at)
    )


def due_planned_actions(
    conn: sa.Connection,
    now: dt.datetime,
    deployment_ids: Collection[int],
    *,
    limit: int | None = None,
) -> list[ActionRecord]:
    """Planned actions due at ``now`` for the given deployments, in due order."""
    t = action_table
    query = (
        sa.select(*_ACTION_COLUMNS)
        .where(
            t.c.state == "planned",
            t.c.due_at <= now,
            one_of(t.c.deployment_id, deployment_ids),
        )
        .order_by(t.c.due_at, t.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [_action(row) for row in conn.execute(query)]


def sent_actions(
    conn: sa.Connection,
    now: dt.datetime,
    deployment_ids: Collection[int],
) -> list[ActionRecord]:
    """Sent, unconfirmed actions whose next attempt is due (NULL = at once), oldest first."""
    t = action_table
    query = (
        sa.select(*_ACTION_COLUMNS)
        .where(
            t.c.state == "sent",
            sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now),
            one_of(t.c.deployment_id, deployment_ids),
        )
        .order_by(t.c.id)
    )
    return [_action(row) for row in conn.execute(query)]


def older_elastic_in_flight(conn: sa.Connection, action: ActionRecord) -> bool:
    """True when an older elastic action of the same deployment is still ``sent``."""
    t = action_table
    query = sa.select(sa.literal(1)).where(
        t.c.deployment_id == action.deployment_id,
        t.c.kind == KIND_ELASTIC,
        t.c.state == "sent",
        t.c.id < action.id,
    )
    return conn.execute(query.limit(1)).first() is not None


def newer_elastic_exists(conn: sa.Connection, action: ActionRecord) -> bool:
    """True when a newer elastic action of the deployment is planned, sent or confirmed."""
    t = action_table
    query = sa.select(sa.literal(1)).where(
        t.c.deployment_id == action.deployment_id,
        t.c.kind == KIND_ELASTIC,
        t.c.state.in_(["planned", "sent", "confirmed"]),
        t.c.id > action.id,
    )
    return conn.execute(query.limit(1)).first() is not None


def mark_sent(conn: sa.Connection, action_id: int, now: dt.datetime) -> ActionRecord | None:
    """planned/sent -> sent, one more attempt; None if the action is no longer open."""
    t = action_table
    row = conn.execute(
        t.update()
        .where(t.c.id == action_id, t.c.state.in_(["planned", "sent"]))
        .values(state="sent", attempts=t.c.attempts + 1, sent_at=now, next_attempt_at=None)
        .returning(*_ACTION_COLUMNS)
    ).one_or_none()
    return None if row is None else _action(row)


def update_action(
    conn: sa.Connection, action_id: int, *, from_states: Sequence[str], **values: Any
) -> bool:
    """Update an action if it is in one of ``from_states``; True when a row changed."""
    t = action_table
    result = conn.execute(
        t.update().where(t.c.id == action_id, t.c.state.in_(list(from_states))).values(**values)
    )
    return bool(result.rowcount)


def last_confirmed_elastic(conn: sa.Connection, deployment_id: int) -> ActionRecord | None:
    t = action_table
    row = conn.execute(
        sa.select(*_ACTION_COLUMNS)
        .where(
            t.c.deployment_id == deployment_id,
            t.c.kind == KIND_ELASTIC,
            t.c.state == "confirmed",
        )
        .order_by(t.c.confirmed_at.desc(), t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else _action(row)


def confirmed_commitments(conn: sa.Connection, deployment_id: int) -> list[ActionRecord]:
    t = action_table
    rows = conn.execute(
        sa.select(*_ACTION_COLUMNS)
        .where(
            t.c.deployment_id == deployment_id,
            t.c.kind == KIND_COMMITMENT,
            t.c.state == "confirmed",
        )
        .order_by(t.c.id)
    )
    return [_action(row) for row in rows]


def latest_confirmed_at(conn: sa.Connection, deployment_id: int) -> dt.datetime | None:
    t = action_table
    value = conn.execute(
        sa.select(sa.func.max(t.c.confirmed_at)).where(
            t.c.deployment_id == deployment_id, t.c.state == "confirmed"
        )
    ).scalar_one()
    return value  # type: ignore[no-any-return]


def deployment_names(conn: sa.Connection, ids: Collection[int]) -> dict[int, str]:
    """``deployment.id -> name`` for the given ids (unknown ids are left out)."""
    from scheduler.store.deployments import deployment_table as d

    rows = conn.execute(sa.select(d.c.id, d.c.name).where(one_of(d.c.id, ids)))
    return {int(i): str(n) for i, n in rows}


def deployment_names_for_provider(conn: sa.Connection, provider: str) -> dict[int, str]:
    """``deployment.id -> name`` of the deployments configured on ``provider``."""
    from scheduler.store.deployments import deployment_table as d

    rows = conn.execute(sa.select(d.c.id, d.c.name).where(d.c.provider == provider))
    return {int(i): str(n) for i, n in rows}


# -- drift ------------------------------------------------------------------------------


def insert_drift(
    conn: sa.Connection,
    *,
    deployment_id: int,
    observed_at: dt.datetime,
    kind: str,
    expected: int | None,
    actual: int | None,
    detail: Mapping[str, Any],
) -> DriftRecord:
    t = drift_event_table
    row = conn.execute(
        t.insert()
        .values(
            deployment_id=deployment_id,
            observed_at=observed_at,
            kind=kind,
            expected=expected,
            actual=actual,
            detail=dict(detail),
        )
        .returning(*t.c)
    ).one()
    return DriftRecord(**row._mapping)


def latest_drift(conn: sa.Connection, deployment_id: int, kind: str) -> DriftRecord | None:
    t = drift_event_table
    row = conn.execute(
        sa.select(*t.c)
        .where(t.c.deployment_id == deployment_id, t.c.kind == kind)
        .order_by(t.c.observed_at.desc(), t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else DriftRecord(**row._mapping)


#: ``drift_event.kind`` of the markers that stop and resume sending to a deployment.
DRIFT_SENDING_STOPPED = "sending_stopped"
DRIFT_SENDING_RESUMED = "sending_resumed"


def sending_stops(
    conn: sa.Connection, deployment_ids: Collection[int]
) -> dict[int, DriftRecord]:
    """The deployments to which sending is stopped: their latest stop/resume marker is a
    stop. Maps the deployment id to that ``sending_stopped`` event."""
    t = drift_event_table
    markers = (
        sa.select(*t.c)
        .where(
            t.c.kind.in_([DRIFT_SENDING_STOPPED, DRIFT_SENDING_RESUMED]),
            one_of(t.c.deployment_id, deployment_ids),
        )
        .order_by(t.c.observed_at, t.c.id)
    )
    # Markers are rare (one per stop or resume): the latest per deployment wins.
    latest = {int(row.deployment_id): row for row in conn.execute(markers)}
    return {
        ident: DriftRecord(**row._mapping)
        for ident, row in latest.items()
        if row.kind == DRIFT_SENDING_STOPPED
    }


def drift_streak(conn: sa.Connection, deployment_id: int, *, limit: int) -> int:
    """How many of the deployment's latest confirmed elastic actions, in a row from the
    newest, have an ``elastic_target`` drift event naming them (``detail.action_id``): the
    provider said "done" and its holdings did not follow. The streak ends at the first
    confirmed action without one, and at the last stop/resume marker. At most ``limit``."""
    a, d = action_table, drift_event_table
    marker = (
        sa.select(sa.func.max(d.c.observed_at))
        .where(
            d.c.deployment_id == deployment_id,
            d.c.kind.in_([DRIFT_SENDING_STOPPED, DRIFT_SENDING_RESUMED]),
        )
        .scalar_subquery()
    )
    drifted = (
        sa.select(sa.literal(1))
        .where(
            d.c.deployment_id == a.c.deployment_id,
            d.c.kind == "elastic_target",
            d.c.detail["action_id"].astext == sa.cast(a.c.id, sa.Text),
        )
        .exists()
    )
    rows = conn.execute(
        sa.select(drifted)
        .where(
            a.c.deployment_id == deployment_id,
            a.c.kind == KIND_ELASTIC,
            a.c.state == "confirmed",
            sa.or_(marker.is_(None), a.c.confirmed_at > marker),
        )
        .order_by(a.c.confirmed_at.desc(), a.c.id.desc())
        .limit(limit)
    ).scalars()
    streak = 0
    for flag in rows:
        if not flag:
            break
        streak += 1
    return streak


def list_drift(conn: sa.Connection, *, deployment_id: int | None = None) -> list[DriftRecord]:
    t = drift_event_table
    query = sa.select(*t.c).order_by(t.c.observed_at, t.c.id)
    if deployment_id is not None:
        query = query.where(t.c.deployment_id == deployment_id)
    return [DriftRecord(**row._mapping) for row in conn.execute(query)]


# -- backoff ----------------------------------------------------------------------------


def read_backoffs(
    conn: sa.Connection, deployment_ids: Collection[int] | None = None
) -> dict[int, BackoffRecord]:
    t = deployment_backoff_table
    query = sa.select(t.c.deployment_id, t.c.failures, t.c.until, t.c.reason)
    if deployment_ids is not None:
        query = query.where(one_of(t.c.deployment_id, deployment_ids))
    return {int(row[0]): BackoffRecord(**row._mapping) for row in conn.execute(query)}


def write_backoff(conn: sa.Connection, record: BackoffRecord, now: dt.datetime) -> None:
    t = deployment_backoff_table
    stmt = pg.insert(t).values(
        deployment_id=record.deployment_id,
        failures=record.failures,
        until=record.until,
        reason=record.reason,
        updated_at=now,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.deployment_id],
            set_={c: stmt.excluded[c] for c in ("failures", "until", "reason", "updated_at")},
        )
    )


def clear_backoff(conn: sa.Connection, deployment_id: int) -> None:
    t = deployment_backoff_table
    conn.execute(t.delete().where(t.c.deployment_id == deployment_id))


# -- daemon state -----------------------------------------------------------------------

_STATE_COLUMNS = (
    daemon_state_table.c.name,
    daemon_state_table.c.paused,
    daemon_state_table.c.paused_at,
    daemon_state_table.c.paused_reason,
    daemon_state_table.c.instance_id,
    daemon_state_table.c.last_tick_at,
    daemon_state_table.c.last_tick_id,
    daemon_state_table.c.last_tick_ok,
    daemon_state_table.c.last_error,
    daemon_state_table.c.leader_since,
)


def read_daemon_state(conn: sa.Connection, name: str = DEFAULT_DAEMON) -> DaemonState | None:
    t = daemon_state_table
    row = conn.execute(sa.select(*_STATE_COLUMNS).where(t.c.name == name)).one_or_none()
    return None if row is None else DaemonState(**row._mapping)


def set_paused(
    conn: sa.Connection,
    paused: bool,
    *,
    now: dt.datetime,
    reason: str | None = None,
    name: str = DEFAULT_DAEMON,
) -> DaemonState:
    """Pause (sending stops, planning goes on) or resume the daemon ``name``.

    Pausing an already paused daemon keeps the original ``paused_at``; resuming clears
    ``paused_at`` and ``paused_reason``.
    """
    t = daemon_state_table
    stmt = pg.insert(t).values(
        name=name,
        paused=paused,
        paused_at=now if paused else None,
        paused_reason=reason if paused else None,
        updated_at=now,
    )
    keep_since = sa.case((t.c.paused, t.c.paused_at), else_=stmt.excluded.paused_at)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={
                "paused": stmt.excluded.paused,
                "paused_at": keep_since if paused else None,
                "paused_reason": stmt.excluded.paused_reason,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )
    state = read_daemon_state(conn, name)
    assert state is not None
    return state


def is_paused(conn: sa.Connection, name: str = DEFAULT_DAEMON) -> bool:
    t = daemon_state_table
    value = conn.execute(sa.select(t.c.paused).where(t.c.name == name)).scalar_one_or_none()
    return bool(value)


def record_heartbeat(
    conn: sa.Connection,
    *,
    instance_id: str,
    tick_at: dt.datetime,
    tick_id: str,
    ok: bool,
    error: str | None = None,
    name: str = DEFAULT_DAEMON,
) -> DaemonState:
    """Record one tick of ``instance_id``; ``leader_since`` moves when the instance changes."""
    t = daemon_state_table
    stmt = pg.insert(t).values(
        name=name,
        instance_id=instance_id,
        last_tick_at=tick_at,
        last_tick_id=tick_id,
        last_tick_ok=ok,
        last_error=error,
        leader_since=tick_at,
        updated_at=tick_at,
    )
    leader_since = sa.case(
        (
            sa.and_(
                t.c.instance_id.is_not_distinct_from(stmt.excluded.instance_id),
                t.c.leader_since.is_not(None),
            ),
            t.c.leader_since,
        ),
        else_=stmt.excluded.leader_since,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.name],
            set_={
                "instance_id": stmt.excluded.instance_id,
                "last_tick_at": stmt.excluded.last_tick_at,
                "last_tick_id": stmt.excluded.last_tick_id,
                "last_tick_ok": stmt.excluded.last_tick_ok,
                "last_error": stmt.excluded.last_error,
                "leader_since": leader_since,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    )
    state = read_daemon_state(conn, name)
    assert state is not None
    return state


def read_heartbeat(conn: sa.Connection, name: str = DEFAULT_DAEMON) -> DaemonState | None:
    """The daemon's state row (heartbeat fields included), or None before its first tick."""
    return read_daemon_state(conn, name)


__all__ = [
    "ACTION_KINDS",
    "ACTION_STATES",
    "DEFAULT_DAEMON",
    "DRIFT_SENDING_RESUMED",
    "DRIFT_SENDING_STOPPED",
    "KIND_COMMITMENT",
    "KIND_ELASTIC",
    "ActionRecord",
    "BackoffRecord",
    "DaemonState",
    "DriftRecord",
    "action_table",
    "clear_backoff",
    "confirmed_commitments",
    "daemon_state_table",
    "deployment_backoff_table",
    "deployment_names",
    "deployment_names_for_provider",
    "drift_event_table",
    "drift_streak",
    "due_planned_actions",
    "get_action",
    "get_action_by_key",
    "insert_action",
    "insert_drift",
    "is_paused",
    "last_confirmed_elastic",
    "latest_confirmed_at",
    "latest_drift",
    "latest_open_action",
    "list_actions",
    "list_drift",
    "lock_deployment_actions",
    "mark_sent",
    "move_due_earlier",
    "newer_elastic_exists",
    "older_elastic_in_flight",
    "open_commitment_like",
    "read_backoffs",
    "read_daemon_state",
    "read_heartbeat",
    "record_heartbeat",
    "sending_stops",
    "sent_actions",
    "set_paused",
    "supersede_planned_elastic",
    "update_action",
    "write_backoff",
]

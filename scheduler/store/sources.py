"""State of the pull sources: one ``pull_source`` row per (deployment, source name).

The high-water mark is the end (exclusive, a minute boundary) of the minutes a source has
read and written. It only moves forward after the minutes below it are committed, so a
pull killed half-way resumes from the last committed window; the minutes themselves are
idempotent by (deployment, source, minute), so reading a window twice never double counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from scheduler.store.deployments import deployment_table
from scheduler.store.filters import one_of
from scheduler.store.metadata import metadata

pull_source_table = sa.Table(
    "pull_source",
    metadata,
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("high_water", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("minutes_last", sa.Integer, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("deployment_id", "source"),
)


@dataclass(frozen=True)
class SourceState:
    deployment_id: int
    source: str
    kind: str
    high_water: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_success_at: dt.datetime | None
    failures: int
    stale: bool
    last_error: str | None
    minutes_last: int


def read_state(conn: sa.Connection, deployment_id: int, source: str) -> SourceState | None:
    t = pull_source_table
    row = conn.execute(
        sa.select(t).where(t.c.deployment_id == deployment_id, t.c.source == source)
    ).one_or_none()
    return None if row is None else SourceState(**row._mapping)


def states_by_deployment(conn: sa.Connection) -> dict[str, list[SourceState]]:
    """Every pull source's state, keyed by deployment name (sources in name order).

    Raises nothing of its own; an empty dict when no source has ever been pulled."""
    t = pull_source_table
    d = deployment_table
    rows = conn.execute(
        sa.select(d.c.name, t).join(d, d.c.id == t.c.deployment_id)
        .order_by(d.c.name, t.c.source)
    ).all()
    out: dict[str, list[SourceState]] = {}
    for row in rows:
        fields = dict(row._mapping)
        name = str(fields.pop("name"))
        out.setdefault(name, []).append(SourceState(**fields))
    return out


def _upsert(conn: sa.Connection, deployment_id: int, source: str, kind: str,
            insert: dict[str, object], update: dict[str, object] | None = None) -> None:
    """Insert the row with ``insert``, or update an existing one with ``update`` (which may
    refer to the stored columns) falling back to ``insert``."""
    t = pull_source_table
    stmt = pg_insert(t).values(deployment_id=deployment_id, source=source, kind=kind, **insert)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.deployment_id, t.c.source],
        set_={"kind": kind, **insert, **(update or {})}))


def record_success(
    conn: sa.Connection, deployment_id: int, source: str, kind: str, *,
    high_water: dt.datetime, now: dt.datetime, minutes: int, stale: bool | None = None,
) -> None:
    """A window up to ``high_water`` was read and its ``minutes`` committed.

    ``stale`` True (the source answered the latest window with nothing) marks the usage
    stale, False clears the mark, None leaves it (a backfill chunk of old minutes). The
    mark never moves backwards (a backfill of old minutes leaves a later mark in place).
    """
    t = pull_source_table
    insert: dict[str, object] = {
        "high_water": high_water, "last_attempt_at": now,
        "last_success_at": now if minutes else None, "failures": 0, "minutes_last": minutes,
        "stale": bool(stale), "last_error": "the source returned no minutes" if stale else None,
    }
    update: dict[str, object] = {
        "high_water": sa.func.greatest(t.c.high_water, high_water),
        "last_success_at": now if minutes else t.c.last_success_at,
    }
    if stale is None:
        update |= {"stale": t.c.stale, "last_error": t.c.last_error}
    _upsert(conn, deployment_id, source, kind, insert, update)


def record_failure(
    conn: sa.Connection, deployment_id: int, source: str, kind: str, *,
    now: dt.datetime, error: str,
) -> None:
    """A pull failed: the mark stays, the usage is stale until a pull succeeds."""
    t = pull_source_table
    _upsert(
        conn, deployment_id, source, kind,
        {"last_attempt_at": now, "stale": True, "last_error": error[:2000], "failures": 1,
         "minutes_last": 0},
        {"failures": t.c.failures + 1},
    )


def set_high_water(conn: sa.Connection, deployment_id: int, source: str, kind: str,
                   high_water: dt.datetime) -> None:
    """Set the mark outright (operators and tests: "read from here on")."""
    _upsert(conn, deployment_id, source, kind, {"high_water": high_water})


def stale_deployment_ids(conn: sa.Connection, deployment_ids: Sequence[int] | None = None
                         ) -> set[int]:
    """Deployments whose pull source last failed or answered with nothing."""
    t = pull_source_table
    query = sa.select(t.c.deployment_id).where(t.c.stale).distinct()
    if deployment_ids is not None:
        query = query.where(one_of(t.c.deployment_id, deployment_ids))
    return {int(i) for i in conn.execute(query).scalars()}


def clear_unconfigured(conn: sa.Connection, configured: Sequence[tuple[int, str]]) -> int:
    """Clear the stale mark of every source no longer configured (by (deployment id, source
    name)), so a removed source cannot hold its deployment forever. Returns rows changed."""
    t = pull_source_table
    query = sa.update(t).where(t.c.stale).values(stale=False)
    if configured:
        pairs = sa.tuple_(t.c.deployment_id, t.c.source)
        query = query.where(pairs.not_in([tuple(p) for p in configured]))
    return int(conn.execute(query).rowcount)

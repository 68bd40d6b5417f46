"""When each deployment last made its daily commitment decision.

Persisted so a restart (or a standby taking over) never decides twice in one local day:
a second decision the same day could buy the same commitment again.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.store.filters import one_of
from scheduler.store.metadata import metadata

commitment_decision_table = sa.Table(
    "commitment_decision",
    metadata,
    sa.Column("deployment_id", sa.Integer, primary_key=True),
    sa.Column("decided_on", sa.Date, nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)


def decided_on(conn: sa.Connection, deployment_ids: list[int]) -> dict[int, dt.date]:
    t = commitment_decision_table
    rows = conn.execute(sa.select(t.c.deployment_id, t.c.decided_on)
                        .where(one_of(t.c.deployment_id, deployment_ids)))
    return {int(i): d for i, d in rows}


def record_decision(conn: sa.Connection, deployment_id: int, local_day: dt.date,
                    now: dt.datetime) -> None:
    t = commitment_decision_table
    stmt = pg.insert(t).values(deployment_id=deployment_id, decided_on=local_day, decided_at=now)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.deployment_id],
        set_={"decided_on": stmt.excluded.decided_on, "decided_at": stmt.excluded.decided_at}))

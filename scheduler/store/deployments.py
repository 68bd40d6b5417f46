"""The ``deployment`` table: a mirror of the config's ``[[deployment]]`` tables.

Rows are never deleted (usage, forecasts and plans refer to them); a deployment that
leaves the config is marked inactive and comes back active if it returns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.config import Deployment
from scheduler.store.filters import one_of
from scheduler.store.metadata import metadata

deployment_table = sa.Table(
    "deployment",
    metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("unit_tpm", sa.Float, nullable=False),
    sa.Column("output_token_weight", sa.Float, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("settings", pg.JSONB, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)


@dataclass(frozen=True)
class DeploymentRow:
    id: int
    name: str
    provider: str
    active: bool


def settings_json(deployment: Deployment) -> dict[str, Any]:
    """The deployment's settings as stored for audit (secrets never live in deployments)."""
    raw = dataclasses.asdict(deployment)
    return json.loads(json.dumps(raw, default=_json_default))  # type: ignore[no-any-return]


def _json_default(value: object) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in deployment settings")


def sync_deployments(conn: sa.Connection, deployments: Sequence[Deployment]) -> dict[str, int]:
    """Upsert the configured deployments, deactivate the others; return name -> id."""
    rows = [_row(d) for d in deployments]
    t = deployment_table
    if rows:
        stmt = pg.insert(t).values(rows)
        changed = {
            c: stmt.excluded[c]
            for c in (
                "provider",
                "model",
                "unit_tpm",
                "output_token_weight",
                "timezone",
                "settings",
                "active",
            )
        }
        distinct = sa.tuple_(*[t.c[c] for c in changed]).is_distinct_from(
            sa.tuple_(*changed.values())
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.name],
                set_={**changed, "updated_at": sa.func.now()},
                where=distinct,
            )
        )
    names = [d.name for d in deployments]
    conn.execute(
        t.update()
        .where(t.c.active, t.c.name.not_in(names) if names else sa.true())
        .values(active=False, updated_at=sa.func.now())
    )
    return deployment_ids(conn, names)


def _row(d: Deployment) -> dict[str, Any]:
    return {
        "name": d.name,
        "provider": d.provider,
        "model": d.model,
        "unit_tpm": d.unit_tpm,
        "output_token_weight": d.output_token_weight,
        "timezone": d.timezone,
        "settings": settings_json(d),
        "active": True,
    }


def register_missing(conn: sa.Connection, deployments: Sequence[Deployment]) -> dict[str, int]:
    """Insert the configured deployments the table does not know yet; return name -> id.

    Rows that exist are left exactly as they are (settings, ``active``): a command that only
    needs the ids of the deployments it writes usage or plans for must not rewrite what the
    daemon synced from its own config (#10 item 4). ``sync_deployments`` is the full sync.
    """
    if deployments:
        conn.execute(
            pg.insert(deployment_table)
            .values([_row(d) for d in deployments])
            .on_conflict_do_nothing(index_elements=[deployment_table.c.name])
        )
    return deployment_ids(conn, [d.name for d in deployments])


@dataclass(frozen=True)
class SyncChanges:
    """What a sync of the deployment table to a config changes, by deployment name."""

    added: tuple[str, ...]
    updated: tuple[str, ...]
    reactivated: tuple[str, ...]
    deactivated: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.updated or self.reactivated or self.deactivated)


def sync_changes(conn: sa.Connection, deployments: Sequence[Deployment]) -> SyncChanges:
    """What :func:`sync_deployments` would change; reads only."""
    t = deployment_table
    columns = ("provider", "model", "unit_tpm", "output_token_weight", "timezone", "settings")
    stored = {
        row.name: row
        for row in conn.execute(sa.select(t.c.name, t.c.active, *[t.c[c] for c in columns]))
    }
    added, updated, reactivated = [], [], []
    for d in deployments:
        row = stored.get(d.name)
        if row is None:
            added.append(d.name)
            continue
        wanted = _row(d)
        if any(getattr(row, c) != wanted[c] for c in columns):
            updated.append(d.name)
        if not row.active:
            reactivated.append(d.name)
    names = {d.name for d in deployments}
    deactivated = sorted(n for n, row in stored.items() if row.active and n not in names)
    return SyncChanges(tuple(added), tuple(updated), tuple(reactivated), tuple(deactivated))


@dataclass(frozen=True)
class UnitSize:
    """What one unit of a stored deployment serves: for the ingest plausibility ceiling."""

    name: str
    unit_tpm: float
    output_token_weight: float
    max_units: int


def unit_sizes(conn: sa.Connection, ids: Sequence[int]) -> dict[int, UnitSize]:
    """Per deployment id: unit size and ``max_units`` as last synced from the config."""
    t = deployment_table
    rows = conn.execute(
        sa.select(t.c.id, t.c.name, t.c.unit_tpm, t.c.output_token_weight,
                  t.c.settings["max_units"].as_integer())
        .where(one_of(t.c.id, list(ids)))
    )
    return {
        ident: UnitSize(name, float(tpm), float(weight), int(max_units or 0))
        for ident, name, tpm, weight, max_units in rows
    }


def deployment_ids(conn: sa.Connection, names: Sequence[str]) -> dict[str, int]:
    t = deployment_table
    result = conn.execute(sa.select(t.c.name, t.c.id).where(one_of(t.c.name, names)))
    return {name: ident for name, ident in result}


def list_deployments(conn: sa.Connection, *, active_only: bool = True) -> list[DeploymentRow]:
    t = deployment_table
    query = sa.select(t.c.id, t.c.name, t.c.provider, t.c.active).order_by(t.c.name)
    if active_only:
        query = query.where(t.c.active)
    return [DeploymentRow(*row) for row in conn.execute(query)]

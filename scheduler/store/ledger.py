"""The capacity ledger: what the provider held for each deployment at each minute the
daemon observed, and the service level realised over a period from it.

* ``capacity_minute`` holds one row per (deployment, minute): committed and elastic units
  as the provider reported them at the daemon's tick of that minute. Re-recording a
  minute overwrites it (a retried tick never counts twice).
* Partitioned by month on ``minute`` (``capacity_minute_pYYYYMM``, created on demand):
  1,000 deployments write 4.5x10^7 rows a month, so retention drops whole partitions
  (:func:`prune` keeps the current and the previous UTC month) instead of deleting rows.
* The service level of a period is accounted over the minutes that have both a usage
  value and a ledger row: demand in units (``(input + output_token_weight x output) /
  unit_tpm``, summed over sources, as in ``usage_minute``), spill = demand above the
  capacity held. A minute no source reported (``-1``) is skipped, never read as zero;
  so is a minute the daemon did not observe. Users query it per UTC calendar month
  through the view ``service_level_month`` (migration 0006).
* Reading it costs a few microseconds per minute row (measured: a quarter hour of 1,000
  deployments ~50 ms, one day ~6 s, so a whole month ~3 min): the daemon keeps its month
  to date in memory and adds each settled quarter hour once (``scheduler/daemon.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from scheduler.store.metadata import metadata
from scheduler.store.partitions import (
    drop_monthly_partitions_before,
    ensure_monthly_partitions,
    month_start,
    previous_month,
)

PARTITION_PREFIX = "capacity_minute_p"
#: Calendar months :func:`prune` keeps: the current one and the one before.
KEEP_MONTHS = 2

capacity_minute_table = sa.Table(
    "capacity_minute",
    metadata,
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
    sa.Column("committed_units", sa.Integer, nullable=False),
    sa.Column("elastic_units", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("deployment_id", "minute"),
    postgresql_partition_by="RANGE (minute)",
)


@dataclass(frozen=True)
class CapacityRecord:
    """Capacity one deployment held at one minute (UTC, whole minute)."""

    deployment_id: int
    minute: dt.datetime
    committed_units: int
    elastic_units: int


@dataclass(frozen=True)
class ServiceLevel:
    """Realised service level of one deployment over a period (the planner's spill-to-date).

    Both sums run over the minutes covered (a usage value and a ledger row).
    """

    deployment_id: int
    demand_unit_minutes: float = 0.0
    spill_unit_minutes: float = 0.0
    minutes_covered: int = 0

    @property
    def spill_fraction(self) -> float | None:
        if self.demand_unit_minutes <= 0:
            return None
        return self.spill_unit_minutes / self.demand_unit_minutes

    def plus(self, other: ServiceLevel) -> ServiceLevel:
        """The account of two disjoint periods of the same deployment."""
        if other.deployment_id != self.deployment_id:
            raise ValueError("cannot add the service levels of two deployments")
        return ServiceLevel(
            self.deployment_id,
            self.demand_unit_minutes + other.demand_unit_minutes,
            self.spill_unit_minutes + other.spill_unit_minutes,
            self.minutes_covered + other.minutes_covered,
        )


def _require_minute(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(f"ledger minutes must be timezone-aware, got {at!r}")
    if at.second or at.microsecond:
        raise ValueError(f"ledger minutes must be whole minutes, got {at.isoformat()}")
    return at.astimezone(dt.UTC)


def record_capacity(conn: sa.Connection, rows: Sequence[CapacityRecord]) -> int:
    """Upsert the rows in one statement (in the caller's transaction); return how many.

    Idempotent: a minute recorded again is overwritten (within ``rows`` the last wins).
    """
    latest: dict[tuple[int, dt.datetime], CapacityRecord] = {}
    for row in rows:
        latest[(row.deployment_id, _require_minute(row.minute))] = row
    if not latest:
        return 0
    ensure_monthly_partitions(conn, "capacity_minute", PARTITION_PREFIX,
                              {month_start(minute) for _, minute in latest})
    conn.execute(
        sa.text(
            "INSERT INTO capacity_minute AS c "
            "(deployment_id, minute, committed_units, elastic_units) "
            "SELECT * FROM unnest(CAST(:ids AS int4[]), CAST(:minutes AS timestamptz[]), "
            "CAST(:committed AS int4[]), CAST(:elastic AS int4[])) "
            "ON CONFLICT (deployment_id, minute) DO UPDATE SET "
            "committed_units = excluded.committed_units, elastic_units = excluded.elastic_units "
            "WHERE (c.committed_units, c.elastic_units) IS DISTINCT FROM "
            "(excluded.committed_units, excluded.elastic_units)"
        ),
        {
            "ids": [key[0] for key in latest],
            "minutes": [key[1] for key in latest],
            "committed": [r.committed_units for r in latest.values()],
            "elastic": [r.elastic_units for r in latest.values()],
        },
    )
    return len(latest)


# Usage minutes of the period summed over sources (unreported ones skipped) in units,
# joined with the ledger. Deployments join the hour rows, before the unnest: joined to the
# minutes the planner misjudges the row counts and loops.
_SPILL_TO_DATE = sa.text(
    "WITH u AS ("
    " SELECT h.deployment_id, m.minute,"
    " sum((t.inp + d.output_token_weight * t.outp) / d.unit_tpm) AS demand"
    " FROM usage_hour h JOIN deployment d ON d.id = h.deployment_id"
    " CROSS JOIN LATERAL unnest(h.input_tokens, h.output_tokens)"
    " WITH ORDINALITY AS t(inp, outp, i)"
    " CROSS JOIN LATERAL (SELECT h.hour + make_interval(mins => t.i::int - 1) AS minute) m"
    " WHERE h.deployment_id = ANY(CAST(:ids AS int4[])) AND h.hour >= :first_hour"
    " AND h.hour < :until AND t.inp >= 0 AND m.minute >= :start AND m.minute < :until"
    " GROUP BY h.deployment_id, m.minute) "
    "SELECT c.deployment_id, sum(u.demand) AS demand,"
    " sum(greatest(0, u.demand - (c.committed_units + c.elastic_units))) AS spill,"
    " count(*) AS minutes "
    "FROM u JOIN capacity_minute c ON c.deployment_id = u.deployment_id AND c.minute = u.minute "
    "WHERE c.deployment_id = ANY(CAST(:ids AS int4[])) AND c.minute >= :start "
    "AND c.minute < :until "
    "GROUP BY c.deployment_id"
)


def spill_to_date(
    conn: sa.Connection,
    deployment_ids: Sequence[int],
    period_start: dt.datetime,
    until: dt.datetime,
) -> dict[int, ServiceLevel]:
    """Demand and spill unit-minutes over ``[period_start, until)`` per deployment, in one
    query; every requested deployment is in the answer (zero when nothing is covered)."""
    ids = sorted({int(i) for i in deployment_ids})
    out = {i: ServiceLevel(i) for i in ids}
    start, end = period_start.astimezone(dt.UTC), until.astimezone(dt.UTC)
    if not ids or end <= start:
        return out
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    rows = conn.execute(
        _SPILL_TO_DATE, {"ids": ids, "first_hour": first_hour, "start": start, "until": end}
    )
    for ident, demand, spill, minutes in rows:
        out[int(ident)] = ServiceLevel(int(ident), float(demand), float(spill), int(minutes))
    return out


def retention_cutoff(now: dt.datetime) -> dt.datetime:
    """Ledger rows before this are expired: keep the current and the previous UTC month."""
    start = month_start(now)
    for _ in range(KEEP_MONTHS - 1):
        start = previous_month(start)
    return start


def prune(conn: sa.Connection, now: dt.datetime) -> list[str]:
    """Retention: drop the ledger's months before the previous UTC month."""
    return drop_monthly_partitions_before(conn, "capacity_minute", PARTITION_PREFIX,
                                          retention_cutoff(now))

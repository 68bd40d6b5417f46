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
* Reading it raw costs a few microseconds per minute row (measured: a quarter hour of
  1,000 deployments ~50 ms, one day ~6 s, so a whole month ~3 min). So whole UTC days are
  rolled up into ``service_level_day`` on first read (migration 0007; :func:`month_to_date`)
  and a month to date reads at most about a day raw; a stored day is recomputed when usage
  of that day is written later, when the ledger records one of its minutes again, or when
  the deployment's unit size or output weight changed. The daemon also keeps its month to
  date in memory and adds each settled quarter hour once (``scheduler/daemon/tick.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


#: Whole UTC days of the service level, rolled up on first read (see :func:`month_to_date`).
service_level_day_table = sa.Table(
    "service_level_day",
    metadata,
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("demand_unit_minutes", sa.Float, nullable=False),
    sa.Column("spill_unit_minutes", sa.Float, nullable=False),
    sa.Column("minutes_covered", sa.Integer, nullable=False),
    sa.Column("unit_tpm", sa.Float, nullable=False),
    sa.Column("output_token_weight", sa.Float, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("deployment_id", "day"),
)

#: A minute's usage and ledger row are taken as complete this long after it: the daemon
#: records each minute's capacity at that minute's tick, and usage trickles in late. The
#: daemon's running account stops this long before now; a day is rolled up only once it
#: ended this long before the reader's clock.
SETTLE = dt.timedelta(minutes=30)
#: Usage written by a batch whose transaction started up to this long before a roll-up
#: may not have been visible to it (``ingest_batch.ingested_at`` is the transaction's
#: start): such a day is recomputed at the next read.
INGEST_MARGIN = dt.timedelta(hours=1)


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
    # A day rolled up already is recomputed at its next read (normally there is none: a
    # tick records its own minute, and today is never rolled up).
    conn.execute(
        sa.text(
            "DELETE FROM service_level_day WHERE deployment_id = ANY(CAST(:ids AS int4[])) "
            "AND day = ANY(CAST(:days AS date[]))"
        ),
        {
            "ids": sorted({key[0] for key in latest}),
            "days": sorted({key[1].date() for key in latest}),
        },
    )
    return len(latest)


# Usage minutes of the period summed over sources (unreported ones skipped) in units,
# joined with the ledger. Deployments join the hour rows, before the unnest: joined to the
# minutes the planner misjudges the row counts and loops.
_COVERED_MINUTES = (
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
    "SELECT c.deployment_id, {key} sum(u.demand) AS demand,"
    " sum(greatest(0, u.demand - (c.committed_units + c.elastic_units))) AS spill,"
    " count(*) AS minutes "
    "FROM u JOIN capacity_minute c ON c.deployment_id = u.deployment_id AND c.minute = u.minute "
    "WHERE c.deployment_id = ANY(CAST(:ids AS int4[])) AND c.minute >= :start "
    "AND c.minute < :until "
    "GROUP BY c.deployment_id {group}"
)
_SPILL_TO_DATE = sa.text(_COVERED_MINUTES.format(key="", group=""))
_SPILL_BY_DAY = sa.text(
    _COVERED_MINUTES.format(key="(c.minute AT TIME ZONE 'UTC')::date AS day,", group=", day")
)


def _covered(
    conn: sa.Connection, query: sa.TextClause, ids: Sequence[int], start: dt.datetime,
    end: dt.datetime,
) -> list[tuple[Any, ...]]:
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    rows = conn.execute(
        query, {"ids": list(ids), "first_hour": first_hour, "start": start, "until": end}
    )
    return [tuple(row) for row in rows]


def spill_to_date(
    conn: sa.Connection,
    deployment_ids: Sequence[int],
    period_start: dt.datetime,
    until: dt.datetime,
) -> dict[int, ServiceLevel]:
    """Demand and spill unit-minutes over ``[period_start, until)`` per deployment, in one
    query over the raw ledger; every requested deployment is in the answer (zero when
    nothing is covered). Costs a few microseconds per minute row: for long periods use
    :func:`month_to_date`."""
    ids = sorted({int(i) for i in deployment_ids})
    out = {i: ServiceLevel(i) for i in ids}
    start, end = period_start.astimezone(dt.UTC), until.astimezone(dt.UTC)
    if not ids or end <= start:
        return out
    for ident, demand, spill, minutes in _covered(conn, _SPILL_TO_DATE, ids, start, end):
        out[int(ident)] = ServiceLevel(int(ident), float(demand), float(spill), int(minutes))
    return out


def month_to_date(
    conn: sa.Connection,
    deployment_ids: Sequence[int],
    period_start: dt.datetime,
    until: dt.datetime,
    *,
    now: dt.datetime,
) -> dict[int, ServiceLevel]:
    """What :func:`spill_to_date` gives, from daily roll-ups where it can.

    Whole UTC days that ended at least ``SETTLE`` before ``now`` come from
    ``service_level_day``; a day missing there, or stale (usage of that day written since,
    or the deployment's unit size or output weight changed), is computed from the raw
    ledger and stored, in the caller's transaction. The rest of the period is read raw.
    So a month to date at 1,000 deployments costs at most about a day of raw ledger
    (seconds) once the days before are rolled up, instead of minutes.
    """
    ids = sorted({int(i) for i in deployment_ids})
    start, end = period_start.astimezone(dt.UTC), until.astimezone(dt.UTC)
    first_day = _day_ceil(start)
    last_day = _day_floor(min(end, now.astimezone(dt.UTC) - SETTLE))
    if not ids or last_day <= first_day:
        return spill_to_date(conn, ids, start, end)
    days = [
        (first_day + dt.timedelta(days=k)).date()
        for k in range((last_day - first_day) // dt.timedelta(days=1))
    ]
    rolled = _fresh_rollups(conn, ids, first_day, last_day)
    missing = [(i, day) for i in ids for day in days if (i, day) not in rolled]
    if missing:
        rolled.update(_roll_up(conn, missing))
    out = spill_to_date(conn, ids, start, first_day)
    tail = spill_to_date(conn, ids, last_day, end)
    for ident in ids:
        level = out[ident].plus(tail[ident])
        for day in days:
            level = level.plus(rolled[(ident, day)])
        out[ident] = level
    return out


def _day_floor(at: dt.datetime) -> dt.datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _day_ceil(at: dt.datetime) -> dt.datetime:
    floor = _day_floor(at)
    return floor if floor == at else floor + dt.timedelta(days=1)


def _fresh_rollups(
    conn: sa.Connection, ids: Sequence[int], first_day: dt.datetime, last_day: dt.datetime
) -> dict[tuple[int, dt.date], ServiceLevel]:
    """The stored days in ``[first_day, last_day)`` that are still right."""
    rows = conn.execute(
        sa.text(
            "WITH changed AS ("
            " SELECT h.deployment_id, (h.hour AT TIME ZONE 'UTC')::date AS day,"
            " max(b.ingested_at) AS at"
            " FROM usage_hour h JOIN ingest_batch b ON b.id = h.batch_id"
            " WHERE h.deployment_id = ANY(CAST(:ids AS int4[]))"
            " AND h.hour >= :first AND h.hour < :last GROUP BY 1, 2) "
            "SELECT r.deployment_id, r.day, r.demand_unit_minutes, r.spill_unit_minutes,"
            " r.minutes_covered "
            "FROM service_level_day r JOIN deployment d ON d.id = r.deployment_id "
            "LEFT JOIN changed c ON c.deployment_id = r.deployment_id AND c.day = r.day "
            "WHERE r.deployment_id = ANY(CAST(:ids AS int4[]))"
            " AND r.day >= :first_day AND r.day < :last_day"
            " AND r.unit_tpm = d.unit_tpm AND r.output_token_weight = d.output_token_weight"
            " AND (c.at IS NULL OR c.at < r.computed_at - :margin)"
        ),
        {
            "ids": list(ids), "first": first_day, "last": last_day, "margin": INGEST_MARGIN,
            # Dates from Python: a timestamptz cast to date would use the session's zone.
            "first_day": first_day.date(), "last_day": last_day.date(),
        },
    )
    return {
        (int(ident), day): ServiceLevel(int(ident), float(demand), float(spill), int(minutes))
        for ident, day, demand, spill, minutes in rows
    }


def _roll_up(
    conn: sa.Connection, missing: Sequence[tuple[int, dt.date]]
) -> dict[tuple[int, dt.date], ServiceLevel]:
    """Compute the missing days from the raw ledger (one query) and store them."""
    ids = sorted({ident for ident, _ in missing})
    start = _utc_midnight(min(day for _, day in missing))
    end = _utc_midnight(max(day for _, day in missing)) + dt.timedelta(days=1)
    computed = {
        (int(ident), day): ServiceLevel(int(ident), float(demand), float(spill), int(minutes))
        for ident, day, demand, spill, minutes in _covered(conn, _SPILL_BY_DAY, ids, start, end)
    }
    levels = {key: computed.get(key, ServiceLevel(key[0])) for key in missing}
    conn.execute(
        sa.text(
            "INSERT INTO service_level_day AS r (deployment_id, day, demand_unit_minutes,"
            " spill_unit_minutes, minutes_covered, unit_tpm, output_token_weight, computed_at) "
            "SELECT x.id, x.day, x.demand, x.spill, x.minutes, d.unit_tpm,"
            " d.output_token_weight, now() "
            "FROM unnest(CAST(:ids AS int4[]), CAST(:days AS date[]), CAST(:demand AS float8[]),"
            " CAST(:spill AS float8[]), CAST(:minutes AS int4[]))"
            " AS x(id, day, demand, spill, minutes) "
            "JOIN deployment d ON d.id = x.id "
            "ON CONFLICT (deployment_id, day) DO UPDATE SET"
            " demand_unit_minutes = excluded.demand_unit_minutes,"
            " spill_unit_minutes = excluded.spill_unit_minutes,"
            " minutes_covered = excluded.minutes_covered, unit_tpm = excluded.unit_tpm,"
            " output_token_weight = excluded.output_token_weight,"
            " computed_at = excluded.computed_at"
        ),
        {
            "ids": [key[0] for key in levels],
            "days": [key[1] for key in levels],
            "demand": [level.demand_unit_minutes for level in levels.values()],
            "spill": [level.spill_unit_minutes for level in levels.values()],
            "minutes": [level.minutes_covered for level in levels.values()],
        },
    )
    return levels


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def retention_cutoff(now: dt.datetime) -> dt.datetime:
    """Ledger rows before this are expired: keep the current and the previous UTC month."""
    start = month_start(now)
    for _ in range(KEEP_MONTHS - 1):
        start = previous_month(start)
    return start


def prune(conn: sa.Connection, now: dt.datetime) -> list[str]:
    """Retention: drop the ledger's months before the previous UTC month (and their
    daily roll-ups)."""
    cutoff = retention_cutoff(now)
    t = service_level_day_table
    conn.execute(t.delete().where(t.c.day < cutoff.date()))
    return drop_monthly_partitions_before(conn, "capacity_minute", PARTITION_PREFIX, cutoff)

"""Retention of everything the store keeps by time: one routine for the daemon's hourly
pass and for ``capsched db prune``.

Two rules keep it from losing data anyone still needs (#10 item 5):

* usage is dropped only by whole monthly partitions that end at or before
  ``now - retention_days`` *and* before the oldest usage the daemon still reads: the last
  ``keep_days`` of each active deployment's stored usage (its refit history plus the week of
  the headroom calibration), counted back from that deployment's own last stored hour. A
  deployment whose usage stopped long ago (the bundled example's 2025 trace, a replay) keeps
  the data the daemon would fit on;
* the capacity ledger keeps the current and the previous UTC month (the month-to-date
  service level), as :func:`scheduler.store.ledger.prune` defines.

Every drop is logged as a warning naming the partitions before they go; ``dry_run`` lists
them and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
import structlog

from scheduler.store import costs, ledger, usage
from scheduler.store.partitions import monthly_partitions_before

#: Days of each deployment's latest usage retention never drops: the daemon's default
#: ``history_days`` (28) plus the 7-day headroom calibration window.
DEFAULT_KEEP_DAYS = 35

log = structlog.get_logger("capsched.retention")


@dataclass(frozen=True)
class PrunePlan:
    """What a prune at ``now`` drops: partition names and the cut-offs that chose them."""

    usage_cutoff: dt.datetime
    ledger_cutoff: dt.datetime
    usage_partitions: tuple[str, ...]
    ledger_partitions: tuple[str, ...]

    @property
    def partitions(self) -> list[str]:
        return [*self.usage_partitions, *self.ledger_partitions]


def oldest_needed_usage(conn: sa.Connection, keep_days: int, now: dt.datetime) -> dt.datetime:
    """The start of the oldest usage hour the daemon still reads: ``keep_days`` before the
    earliest of the active deployments' last stored hours (``now`` when none has usage).
    One index probe per deployment (the primary key starts with the deployment)."""
    last = conn.execute(
        sa.text(
            "SELECT min(m.last) FROM deployment d CROSS JOIN LATERAL "
            "(SELECT max(hour) AS last FROM usage_hour x WHERE x.deployment_id = d.id) m "
            "WHERE d.active"
        )
    ).scalar_one()
    return (now if last is None else min(last, now)) - dt.timedelta(days=keep_days)


def plan_prune(
    conn: sa.Connection, now: dt.datetime, retention_days: int,
    keep_days: int = DEFAULT_KEEP_DAYS,
) -> PrunePlan:
    """What :func:`prune` would drop at ``now``; reads only."""
    usage_cutoff = min(now - dt.timedelta(days=retention_days),
                       oldest_needed_usage(conn, keep_days, now))
    ledger_cutoff = ledger.retention_cutoff(now)
    return PrunePlan(
        usage_cutoff=usage_cutoff,
        ledger_cutoff=ledger_cutoff,
        usage_partitions=tuple(monthly_partitions_before(
            conn, "usage_hour", usage.PARTITION_PREFIX, usage_cutoff)),
        ledger_partitions=tuple(monthly_partitions_before(
            conn, "capacity_minute", ledger.PARTITION_PREFIX, ledger_cutoff)),
    )


def prune(
    conn: sa.Connection, now: dt.datetime, retention_days: int, *,
    keep_days: int = DEFAULT_KEEP_DAYS, dry_run: bool = False,
) -> list[str]:
    """Drop usage months older than ``retention_days`` that no deployment still needs, and
    the capacity ledger (with its daily roll-ups) before the previous UTC month; return the
    partitions dropped (with ``dry_run``: that would be dropped, and drop nothing)."""
    plan = plan_prune(conn, now, retention_days, keep_days)
    if dry_run or not plan.partitions:
        return plan.partitions
    log.warning(
        "retention.dropping", partitions=plan.partitions,
        usage_before=plan.usage_cutoff.isoformat(), ledger_before=plan.ledger_cutoff.isoformat(),
        retention_days=retention_days,
    )
    if plan.ledger_partitions:
        # The realised cost of the ledger months about to go is rolled up first, while
        # their usage is still there (#13): cost_day outlives the raw minutes.
        ids = conn.execute(sa.text("SELECT id FROM deployment")).scalars().all()
        costs.roll_up(conn, [int(i) for i in ids], now)
    dropped = usage.drop_partitions_before(conn, plan.usage_cutoff)
    return dropped + ledger.prune(conn, now)

"""Monthly range partitions, shared by the usage table and the capacity ledger.

A partitioned table ``parent`` has one child ``{prefix}YYYYMM`` per UTC calendar month,
created on demand (serialised by an advisory lock, so two writers racing to create one
month do not collide) and dropped whole by retention.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa


def month_start(at: dt.datetime) -> dt.datetime:
    """The start of ``at``'s UTC calendar month."""
    at = at.astimezone(dt.UTC)
    return dt.datetime(at.year, at.month, 1, tzinfo=dt.UTC)


def next_month(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def previous_month(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year - (start.month == 1), month=(start.month - 2) % 12 + 1)


#: The most monthly partitions one batch may span: a safety net under ingest's time window
#: (``[ingest] max_span_days`` on either side of a file's median minute is at most ~27
#: months), so a stray far-future row can never create hundreds of tables in one statement.
MAX_PARTITIONS_PER_BATCH = 36


class PartitionLimitError(ValueError):
    """A batch would span more than :data:`MAX_PARTITIONS_PER_BATCH` monthly partitions."""


def months_between(first: dt.datetime, last: dt.datetime) -> int:
    """How many calendar months [first, last] touches (1 for the same month)."""
    return (last.year - first.year) * 12 + last.month - first.month + 1


def ensure_monthly_partitions(
    conn: sa.Connection, parent: str, prefix: str, months: Iterable[dt.datetime]
) -> None:
    """Create the partitions of ``parent`` for the months starting at ``months``.

    Raises :class:`PartitionLimitError` (creating nothing) for more than
    :data:`MAX_PARTITIONS_PER_BATCH` months."""
    wanted = sorted(set(months))
    if not wanted:
        return
    if len(wanted) > MAX_PARTITIONS_PER_BATCH:
        raise PartitionLimitError(
            f"a batch spanning {len(wanted)} months of {parent} (limit "
            f"{MAX_PARTITIONS_PER_BATCH}): {wanted[0]:%Y-%m} .. {wanted[-1]:%Y-%m}")
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                 {"key": f"capsched.{parent}.partitions"})
    for start in wanted:
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {prefix}{start:%Y%m} PARTITION OF {parent} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{next_month(start).isoformat()}')"
            )
        )


def monthly_partitions_before(
    conn: sa.Connection, parent: str, prefix: str, cutoff: dt.datetime
) -> list[str]:
    """The partitions of ``parent`` that end at or before ``cutoff`` (reads only)."""
    return [
        name
        for name in _partition_names(conn, parent)
        if next_month(_partition_start(name, prefix)) <= cutoff
    ]


def _partition_start(name: str, prefix: str) -> dt.datetime:
    return dt.datetime.strptime(name[len(prefix):], "%Y%m").replace(tzinfo=dt.UTC)


def _partition_names(conn: sa.Connection, parent: str) -> list[str]:
    return list(conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent ORDER BY 1"
        ),
        {"parent": parent},
    ).scalars().all())


def drop_monthly_partitions_before(
    conn: sa.Connection, parent: str, prefix: str, cutoff: dt.datetime
) -> list[str]:
    """Drop every partition of ``parent`` that ends at or before ``cutoff``; their names."""
    dropped = monthly_partitions_before(conn, parent, prefix, cutoff)
    for name in dropped:
        conn.execute(sa.text(f"DROP TABLE {name}"))
    return dropped

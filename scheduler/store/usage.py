"""Per-minute usage, stored in hour rows, and the record of ingested batches.

Design for a year of 1,000 deployments (about 5x10^8 minutes):

* ``usage_hour`` holds one row per (deployment, hour, source) with three 60-element
  ``int8[]`` arrays (input tokens, output tokens, requests); element *i* is minute *i* of
  the hour and ``-1`` marks a minute that source did not report (missing, never zero).
  That is 8.8x10^6 rows a year instead of 5x10^8: the primary key stays small enough to
  live in memory, each row carries one tuple header instead of sixty, and an ingest
  maintains one index entry per hour rather than per minute (a per-minute primary key
  alone costs 2 s per million rows, more than a plain ``COPY`` of the same data).
* Partitioned by month on ``hour`` (``usage_hour_pYYYYMM``, created on demand); retention
  drops whole partitions, and "the last N days of these deployments" is a primary-key
  range scan in one or two partitions.
* A re-sent (deployment, source, minute) replaces the stored value: the upsert merges the
  arrays element by element (``capsched_merge_minutes``), so a retried delivery never
  double counts and an identical re-send changes nothing on disk.
* Users query minutes through the views ``usage`` (per source) and ``usage_minute``
  (summed over sources, with demand in units).
* No foreign key to ``deployment``: deployments are never deleted, and ingest checks
  names before writing.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from scheduler.store.metadata import metadata
from scheduler.store.partitions import (
    MAX_PARTITIONS_PER_BATCH,
    PartitionLimitError,
    drop_monthly_partitions_before,
    ensure_monthly_partitions,
    months_between,
    next_month,
)

MINUTES_PER_ROW = 60
MISSING = -1

usage_source_table = sa.Table(
    "usage_source",
    metadata,
    sa.Column("id", sa.SmallInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
)

usage_hour_table = sa.Table(
    "usage_hour",
    metadata,
    sa.Column("deployment_id", sa.Integer, nullable=False),
    sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source_id", sa.SmallInteger, nullable=False),
    sa.Column("input_tokens", sa.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("output_tokens", sa.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("requests", sa.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("batch_id", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("deployment_id", "hour", "source_id"),
    sa.CheckConstraint(
        "cardinality(input_tokens) = 60 AND cardinality(output_tokens) = 60 "
        "AND cardinality(requests) = 60",
        name="sixty_minutes",
    ),
    postgresql_partition_by="RANGE (hour)",
)

ingest_batch_table = sa.Table(
    "ingest_batch",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("deployments", sa.ARRAY(sa.Text), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("first_minute", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_minute", sa.DateTime(timezone=True), nullable=False),
    sa.Column("checksum", sa.Text, nullable=False),
    sa.Column(
        "ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

_PG_EPOCH_US = np.datetime64("2000-01-01T00:00", "us").astype(np.int64)
_INT8_OID = 20
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
# A 60-element int8[] without NULLs in PostgreSQL's binary format: fixed size, so a whole
# batch encodes (and decodes) as one numpy structured array.
_ARRAY_DTYPE = np.dtype(
    [
        ("length", ">i4"),
        ("ndim", ">i4"),
        ("has_null", ">i4"),
        ("elem_oid", ">i4"),
        ("dim", ">i4"),
        ("lower", ">i4"),
        ("elems", [("elem_len", ">i4"), ("value", ">i8")], (MINUTES_PER_ROW,)),
    ]
)
_ARRAY_BYTES = _ARRAY_DTYPE.itemsize - 4
_ROW_DTYPE = np.dtype(
    [
        ("nfields", ">i2"),
        ("l_dep", ">i4"),
        ("deployment_id", ">i4"),
        ("l_hour", ">i4"),
        ("hour", ">i8"),
        ("input_tokens", _ARRAY_DTYPE),
        ("output_tokens", _ARRAY_DTYPE),
        ("requests", _ARRAY_DTYPE),
    ]
)
_COUNTS = ("input_tokens", "output_tokens", "requests")
#: Minute slots binned at once by load_demand (bounds its scratch memory).
_BIN_GROUP_MINUTES = 500_000


@dataclass(frozen=True)
class UsageBatch:
    """Validated rows ready to write: parallel arrays, minutes as datetime64[m] UTC."""

    deployment_ids: npt.NDArray[np.int32]
    minutes: npt.NDArray[np.datetime64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    requests: npt.NDArray[np.int64]


@dataclass(frozen=True)
class BatchRecord:
    id: int
    rows: int
    first_minute: dt.datetime
    last_minute: dt.datetime


@dataclass(frozen=True)
class DeploymentUsageStatus:
    name: str
    minutes_stored: int
    first_minute: dt.datetime | None
    last_minute: dt.datetime | None
    last_batch_at: dt.datetime | None
    last_batch_file: str | None


@dataclass(frozen=True)
class DemandSeries:
    """Usage of one deployment on a regular minute grid from ``start``, summed over sources.

    Float arrays with NaN where no source reported the minute: missing, never zero.
    """

    deployment_id: int
    start: dt.datetime
    input_tokens: npt.NDArray[np.float64]
    output_tokens: npt.NDArray[np.float64]
    requests: npt.NDArray[np.float64]


@dataclass(frozen=True)
class HourRows:
    """A batch folded into hour rows: (k,) keys and (k, 60) arrays, -1 = not reported."""

    deployment_ids: npt.NDArray[np.int32]
    hours: npt.NDArray[np.datetime64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    requests: npt.NDArray[np.int64]


def fold_into_hours(batch: UsageBatch) -> HourRows:
    hours = batch.minutes.astype("datetime64[h]")
    offsets = (batch.minutes - hours.astype("datetime64[m]")).astype(np.int64)
    key = batch.deployment_ids.astype(np.int64) << 32 | hours.astype(np.int64)
    unique, inverse = np.unique(key, return_inverse=True)
    arrays = []
    for values in (batch.input_tokens, batch.output_tokens, batch.requests):
        grid = np.full((unique.shape[0], MINUTES_PER_ROW), MISSING, dtype=np.int64)
        grid[inverse, offsets] = values
        arrays.append(grid)
    return HourRows(
        deployment_ids=(unique >> 32).astype(np.int32),
        hours=(unique & 0xFFFFFFFF).astype("datetime64[h]"),
        input_tokens=arrays[0],
        output_tokens=arrays[1],
        requests=arrays[2],
    )


def _fill_array(field: npt.NDArray[np.void], values: npt.NDArray[np.int64]) -> None:
    field["length"] = _ARRAY_BYTES
    field["ndim"] = 1
    field["has_null"] = 0
    field["elem_oid"] = _INT8_OID
    field["dim"] = MINUTES_PER_ROW
    field["lower"] = 1
    field["elems"]["elem_len"] = 8
    field["elems"]["value"] = values


def _binary_copy_payload(rows: HourRows) -> bytes:
    out = np.empty(rows.hours.shape[0], dtype=_ROW_DTYPE)
    out["nfields"] = 5
    out["l_dep"] = 4
    out["deployment_id"] = rows.deployment_ids
    out["l_hour"] = 8
    out["hour"] = rows.hours.astype("datetime64[us]").astype(np.int64) - _PG_EPOCH_US
    for name in _COUNTS:
        _fill_array(out[name], getattr(rows, name))
    return _COPY_HEADER + out.tobytes() + _COPY_TRAILER


def source_id(conn: sa.Connection, name: str) -> int:
    t = usage_source_table
    found = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
    if found is not None:
        return int(found)
    inserted = conn.execute(
        pg_insert(t)
        .values(name=name)
        .on_conflict_do_nothing(index_elements=[t.c.name])
        .returning(t.c.id)
    ).scalar()
    if inserted is None:
        inserted = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar_one()
    return int(inserted)


def _month_start(day: np.datetime64) -> dt.datetime:
    month: dt.date = day.astype("datetime64[M]").astype(dt.date)
    return dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)


def ensure_partitions(conn: sa.Connection, first: np.datetime64, last: np.datetime64) -> None:
    """Create the monthly partitions covering [first, last] that do not exist yet
    (:class:`~scheduler.store.partitions.PartitionLimitError` past the per-batch bound,
    raised before the month list is even built)."""
    span = months_between(_month_start(first), _month_start(last))
    if span > MAX_PARTITIONS_PER_BATCH:
        raise PartitionLimitError(
            f"a batch spanning {span} months of usage_hour (limit {MAX_PARTITIONS_PER_BATCH}): "
            f"{_month_start(first):%Y-%m} .. {_month_start(last):%Y-%m}")
    months = [_month_start(first)]
    while months[-1] < _month_start(last):
        months.append(next_month(months[-1]))
    ensure_monthly_partitions(conn, "usage_hour", PARTITION_PREFIX, months)


PARTITION_PREFIX = "usage_hour_p"


def _utc(value: np.datetime64) -> dt.datetime:
    naive: dt.datetime = value.astype("datetime64[s]").astype(dt.datetime)
    return naive.replace(tzinfo=dt.UTC)


def write_usage(
    conn: sa.Connection,
    batch: UsageBatch,
    *,
    source: str,
    file: str,
    deployment_names: Sequence[str],
    checksum: str,
) -> BatchRecord:
    """Write one validated batch in the caller's transaction: COPY to staging, one upsert."""
    first, last = _utc(batch.minutes.min()), _utc(batch.minutes.max())
    ensure_partitions(conn, batch.minutes.min(), batch.minutes.max())
    sid = source_id(conn, source)
    b = ingest_batch_table
    batch_id = conn.execute(
        b.insert()
        .values(
            source=source,
            file=file,
            deployments=sorted(set(deployment_names)),
            rows=int(batch.minutes.shape[0]),
            first_minute=first,
            last_minute=last,
            checksum=checksum,
        )
        .returning(b.c.id)
    ).scalar_one()
    conn.execute(
        sa.text(
            "CREATE TEMP TABLE usage_staging (deployment_id int4, hour timestamptz, "
            "input_tokens int8[], output_tokens int8[], requests int8[]) ON COMMIT DROP"
        )
    )
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    with (
        raw.cursor() as cur,
        cur.copy("COPY usage_staging FROM STDIN WITH (FORMAT binary)") as copy,
    ):
        copy.write(_binary_copy_payload(fold_into_hours(batch)))
    conn.execute(
        sa.text(
            "INSERT INTO usage_hour AS u (deployment_id, hour, source_id, input_tokens, "
            "output_tokens, requests, batch_id) "
            "SELECT deployment_id, hour, :sid, input_tokens, output_tokens, requests, :bid "
            "FROM usage_staging "
            "ON CONFLICT (deployment_id, hour, source_id) DO UPDATE SET "
            "input_tokens = capsched_merge_minutes(u.input_tokens, excluded.input_tokens), "
            "output_tokens = capsched_merge_minutes(u.output_tokens, excluded.output_tokens), "
            "requests = capsched_merge_minutes(u.requests, excluded.requests), "
            "batch_id = excluded.batch_id "
            "WHERE (u.input_tokens, u.output_tokens, u.requests) IS DISTINCT FROM "
            "(capsched_merge_minutes(u.input_tokens, excluded.input_tokens), "
            " capsched_merge_minutes(u.output_tokens, excluded.output_tokens), "
            " capsched_merge_minutes(u.requests, excluded.requests))"
        ),
        {"sid": sid, "bid": batch_id},
    )
    return BatchRecord(
        id=int(batch_id), rows=int(batch.minutes.shape[0]), first_minute=first, last_minute=last
    )


def drop_partitions_before(conn: sa.Connection, cutoff: dt.datetime) -> list[str]:
    """Retention: drop every monthly partition that ends at or before ``cutoff``."""
    return drop_monthly_partitions_before(conn, "usage_hour", PARTITION_PREFIX, cutoff)


def usage_status(conn: sa.Connection) -> list[DeploymentUsageStatus]:
    rows = conn.execute(
        sa.text(
            "SELECT d.name, s.minutes, s.first_minute, s.last_minute, lb.ingested_at, lb.file "
            "FROM deployment d "
            "LEFT JOIN LATERAL (SELECT count(*) AS minutes, min(minute) AS first_minute, "
            " max(minute) AS last_minute FROM usage_minute m WHERE m.deployment_id = d.id) s "
        "ON true "
            "LEFT JOIN LATERAL (SELECT b.ingested_at, b.file FROM ingest_batch b "
            " WHERE d.name = ANY(b.deployments) ORDER BY b.id DESC LIMIT 1) lb ON true "
            "WHERE d.active ORDER BY d.name"
        )
    ).all()
    return [
        DeploymentUsageStatus(name, int(minutes or 0), first, last, at, file)
        for name, minutes, first, last, at, file in rows
    ]


def last_usage_minutes(conn: sa.Connection, names: Sequence[str], now: dt.datetime
                       ) -> dict[str, dt.datetime | None]:
    """The end (exclusive) of the last reported minute that began before ``now`` per deployment
    name (None: no usage stored, or no such deployment). Reads only each deployment's
    latest hour rows, so it is cheap enough for ``capsched health``."""
    rows = conn.execute(
        sa.text(
            "SELECT d.name, h.hour, h.input_tokens FROM deployment d "
            "JOIN LATERAL (SELECT max(hour) AS hour FROM usage_hour x "
            " WHERE x.deployment_id = d.id AND x.hour < :now) m ON true "
            "JOIN usage_hour h ON h.deployment_id = d.id AND h.hour = m.hour "
            "WHERE d.name = ANY(:names)"
        ),
        {"names": list(names), "now": now},
    ).all()
    out: dict[str, dt.datetime | None] = dict.fromkeys(names)
    for name, hour, values in rows:
        # Minutes the source did not report are -1; a minute after now is not yet usage.
        begun = -(-(now - hour) // dt.timedelta(minutes=1))
        seen = [i for i, v in enumerate(values[:begun]) if v >= 0]
        if seen:
            end = hour + dt.timedelta(minutes=seen[-1] + 1)
            current = out[name]
            out[name] = end if current is None or end > current else current
    return out


def _decode_copy(payload: bytes) -> npt.NDArray[np.void]:
    body = payload[len(_COPY_HEADER) : len(payload) - len(_COPY_TRAILER)]
    return np.frombuffer(body, dtype=_ROW_DTYPE)


def load_demand(
    conn: sa.Connection, deployment_ids: Sequence[int], since: dt.datetime, until: dt.datetime
) -> dict[int, DemandSeries]:
    """Usage per deployment on the minute grid [since, until), summed over sources.

    Reads the hour rows with a binary ``COPY ... TO STDOUT`` decoded by numpy: 30 days of
    1,000 deployments is 720,000 rows, far too many to materialise as Python objects.
    """
    since_m = np.datetime64(since.astimezone(dt.UTC).replace(tzinfo=None), "m")
    until_m = np.datetime64(until.astimezone(dt.UTC).replace(tzinfo=None), "m")
    n = int((until_m - since_m).astype(np.int64))
    first_hour = since_m.astype("datetime64[h]")
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    chunks = []
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY (SELECT deployment_id, hour, input_tokens, output_tokens, requests "
            "FROM usage_hour WHERE deployment_id = ANY(%s) AND hour >= %s AND hour < %s) "
            "TO STDOUT WITH (FORMAT binary)",
            (list(deployment_ids), _utc(first_hour), until),
        ) as copy,
    ):
        for data in copy:
            chunks.append(bytes(data))
    out: dict[int, DemandSeries] = {}
    records = _decode_copy(b"".join(chunks)) if chunks else np.empty(0, dtype=_ROW_DTYPE)
    if n <= 0:
        return out
    hour_us = records["hour"].astype(np.int64) + _PG_EPOCH_US
    row_start = hour_us // 60_000_000 - since_m.astype(np.int64)  # minute index of element 0
    idents, owner = np.unique(records["deployment_id"], return_inverse=True)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(idents.size + 1))
    # Deployments are binned a group at a time: one bincount per group instead of one
    # np.add.at per deployment, with the group's scratch arrays bounded (about 30 MB).
    group = max(1, _BIN_GROUP_MINUTES // n)
    for first in range(0, idents.size, group):
        last = min(first + group, idents.size)
        rows = order[bounds[first] : bounds[last]]
        idx = row_start[rows, None] + np.arange(MINUTES_PER_ROW)[None, :]
        flat = (owner[rows] - first)[:, None] * n + idx
        inside = (idx >= 0) & (idx < n)
        size = (last - first) * n
        sums = []
        for name in _COUNTS:
            values = records[name]["elems"]["value"][rows]
            present = inside & (values >= 0)
            where = flat[present]
            # float64 sums of int counts are exact below 2**53 tokens per minute.
            total = np.bincount(where, weights=values[present], minlength=size)
            total[np.bincount(where, minlength=size) == 0] = np.nan
            sums.append(total.reshape(last - first, n))
        for k in range(last - first):
            ident = int(idents[first + k])
            out[ident] = DemandSeries(ident, since, sums[0][k], sums[1][k], sums[2][k])
    return out

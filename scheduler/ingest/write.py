"""Ingest: validated usage files into the ``usage`` table, all-or-nothing.

Every file is parsed and validated completely before anything is written: each deployment
it names exists, every minute lies in the accepted window around now (``[ingest]
max_age_days``, ``max_future_minutes``) and within ``max_span_days`` of the file's median
minute, and no minute exceeds the deployment's plausibility ceiling (``plausibility_factor``
x ``max_units`` x ``unit_tpm`` weighted tokens). A multi-file call (``capsched ingest a.csv
b.csv``) is all-or-nothing too: every file is read and validated first, then all are written
in one transaction (#10 item 6).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from scheduler.config import IngestSettings
from scheduler.ingest.files import DEPLOYMENT_COLUMN, ParsedUsage, UsageFileError, read_usage_file
from scheduler.store import deployments as deployment_store
from scheduler.store import usage as usage_store
from scheduler.store.partitions import PartitionLimitError


class IngestError(ValueError):
    """Usage was rejected before anything was written."""


@dataclass(frozen=True)
class IngestResult:
    file: str
    rows: int
    batch_id: int
    deployments: tuple[str, ...]
    first_minute: str
    last_minute: str


def resolve_deployments(
    conn: sa.Connection, parsed: ParsedUsage, deployment: str | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map each row to a deployment id; an unknown name is an error naming its line."""
    if parsed.deployments is None:
        if deployment is None:
            raise UsageFileError(
                parsed.path,
                1,
                len(parsed.header) + 1,
                DEPLOYMENT_COLUMN,
                "no deployment column in the file and no --deployment given",
            )
        known = deployment_store.deployment_ids(conn, [deployment])
        if deployment not in known:
            raise IngestError(
                f"{parsed.path}: unknown deployment {deployment!r} "
                "(declare it in the config; `capsched status` lists the known ones)"
            )
        return np.full(len(parsed), known[deployment], dtype=np.int32), (deployment,)
    names = parsed.deployments
    column = parsed.column_number(DEPLOYMENT_COLUMN)
    if deployment is not None:
        other = np.flatnonzero(names != deployment)
        if other.size:
            line = int(parsed.lines[other].min())
            raise UsageFileError(
                parsed.path,
                line,
                column,
                DEPLOYMENT_COLUMN,
                f"row names a deployment other than --deployment {deployment!r}",
            )
    unique = sorted(set(names.tolist()))
    known = deployment_store.deployment_ids(conn, unique)
    unknown = [name for name in unique if name not in known]
    if unknown:
        rows = np.flatnonzero(np.isin(names, unknown))
        first = rows[np.argmin(parsed.lines[rows])]
        raise UsageFileError(
            parsed.path,
            int(parsed.lines[first]),
            column,
            DEPLOYMENT_COLUMN,
            f"unknown deployment {str(names[first])!r}",
        )
    ids = np.array([known[str(name)] for name in names], dtype=np.int32)
    return ids, tuple(unique)


def _minute_text(value: np.datetime64) -> str:
    return f"{np.datetime_as_string(value, unit='m')}Z"


def check_window(parsed: ParsedUsage, now: dt.datetime, limits: IngestSettings) -> None:
    """Reject a minute outside [now - max_age_days, now + max_future_minutes], or farther
    than ``max_span_days`` from the file's median minute, naming its line and column.

    This bounds the monthly partitions one batch can create (``max_span_days`` / 30 + 2)
    and keeps a stray ``9999-12-31`` or ``0001-01-01`` from reaching the database."""
    if not len(parsed):
        return
    column = parsed.column_number("minute_utc")
    naive_now = np.datetime64(now.astimezone(dt.UTC).replace(tzinfo=None), "m")
    low = naive_now - np.timedelta64(limits.max_age_days * 1440, "m")
    high = naive_now + np.timedelta64(limits.max_future_minutes, "m")
    outside = np.flatnonzero((parsed.minutes < low) | (parsed.minutes > high))
    if outside.size:
        row = outside[np.argmin(parsed.lines[outside])]
        raise UsageFileError(
            parsed.path, int(parsed.lines[row]), column, "minute_utc",
            f"{_minute_text(parsed.minutes[row])} is outside the accepted window "
            f"{_minute_text(low)} .. {_minute_text(high)} ([ingest] max_age_days = "
            f"{limits.max_age_days}, max_future_minutes = {limits.max_future_minutes})",
        )
    median = np.sort(parsed.minutes)[len(parsed) // 2]
    distance = np.abs(parsed.minutes - median)
    span = np.timedelta64(limits.max_span_days * 1440, "m")
    far = np.flatnonzero(distance > span)
    if far.size:
        row = far[np.argmin(parsed.lines[far])]
        raise UsageFileError(
            parsed.path, int(parsed.lines[row]), column, "minute_utc",
            f"{_minute_text(parsed.minutes[row])} is more than {limits.max_span_days} days "
            f"from the file's median minute {_minute_text(median)} ([ingest] max_span_days)",
        )


def check_plausible(
    conn: sa.Connection, parsed: ParsedUsage, ids: npt.NDArray[np.int32], factor: float
) -> None:
    """Reject a minute whose weighted tokens (input + weight x output) exceed ``factor`` x
    ``max_units`` x ``unit_tpm`` of its deployment: no capacity the deployment may ever hold
    serves that, so it is a unit mix-up or a corrupt counter (0 turns the check off)."""
    if factor <= 0 or not len(parsed):
        return
    unique, position = np.unique(ids, return_inverse=True)
    sizes = deployment_store.unit_sizes(conn, unique.tolist())
    table = [sizes[int(ident)] for ident in unique]
    ceiling = np.array([factor * max(s.max_units, 1) * s.unit_tpm for s in table])[position]
    weight = np.array([s.output_token_weight for s in table])[position]
    weighted = parsed.input_tokens.astype(np.float64) + weight * parsed.output_tokens
    above = np.flatnonzero(weighted > ceiling)
    if above.size:
        row = above[np.argmin(parsed.lines[above])]
        size = table[position[row]]
        raise UsageFileError(
            parsed.path, int(parsed.lines[row]), parsed.column_number("input_tokens"),
            "input_tokens",
            f"implausible: {weighted[row]:,.0f} weighted tokens in one minute exceed "
            f"{factor:g} x max_units {size.max_units} x unit_tpm {size.unit_tpm:g} = "
            f"{ceiling[row]:,.0f} for deployment {size.name!r} ([ingest] plausibility_factor)",
        )


@dataclass(frozen=True)
class _Checked:
    parsed: ParsedUsage
    ids: npt.NDArray[np.int32]
    names: tuple[str, ...]


def _check(
    conn: sa.Connection, parsed: ParsedUsage, *, deployment: str | None,
    limits: IngestSettings, now: dt.datetime,
) -> _Checked:
    check_window(parsed, now, limits)
    ids, names = resolve_deployments(conn, parsed, deployment)
    check_plausible(conn, parsed, ids, limits.plausibility_factor)
    return _Checked(parsed, ids, names)


def _write(conn: sa.Connection, checked: _Checked, source: str) -> IngestResult:
    parsed = checked.parsed
    batch = usage_store.UsageBatch(
        checked.ids, parsed.minutes, parsed.input_tokens, parsed.output_tokens, parsed.requests
    )
    try:
        record = usage_store.write_usage(
            conn,
            batch,
            source=source,
            file=parsed.path,
            deployment_names=checked.names,
            checksum=parsed.checksum,
        )
    except PartitionLimitError as exc:
        raise IngestError(f"{parsed.path}: {exc}") from None
    return IngestResult(
        parsed.path,
        record.rows,
        record.id,
        checked.names,
        record.first_minute.isoformat(),
        record.last_minute.isoformat(),
    )


def ingest_parsed(
    engine: sa.Engine, parsed: ParsedUsage, *, deployment: str | None, source: str,
    limits: IngestSettings | None = None, now: dt.datetime | None = None,
) -> IngestResult:
    """Check (window, deployments, plausibility) and write one parsed file in one
    transaction. ``now`` defaults to the clock; ``limits`` to the ``[ingest]`` defaults."""
    limits = limits or IngestSettings()
    now = now or dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        return _write(conn, _check(conn, parsed, deployment=deployment, limits=limits,
                                   now=now), source)


def ingest_files(
    engine: sa.Engine,
    paths: Sequence[str],
    *,
    deployment: str | None,
    source: str,
    stdin: IO[bytes] | None = None,
    limits: IngestSettings | None = None,
    now: dt.datetime | None = None,
) -> list[IngestResult]:
    """Ingest files all-or-nothing: every file is read and checked before any is written,
    and all are written in one transaction, so a bad file (the first one found raises
    :class:`UsageFileError` naming it) leaves the database as it was. One batch per file."""
    limits = limits or IngestSettings()
    now = now or dt.datetime.now(dt.UTC)
    parsed = [read_usage_file(path, stdin=stdin) for path in paths]
    with engine.begin() as conn:
        checked = [_check(conn, p, deployment=deployment, limits=limits, now=now)
                   for p in parsed]
        return [_write(conn, c, source) for c in checked]

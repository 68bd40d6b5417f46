"""Ingest: validated usage files into the ``usage`` table, one transaction per file.

Every file is all-or-nothing: it is parsed and validated completely (including that each
deployment it names exists) before one COPY + upsert writes it in a single transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
import sqlalchemy as sa

from scheduler.ingest.files import DEPLOYMENT_COLUMN, ParsedUsage, UsageFileError, read_usage_file
from scheduler.store import deployments as deployment_store
from scheduler.store import usage as usage_store


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


def ingest_parsed(
    engine: sa.Engine, parsed: ParsedUsage, *, deployment: str | None, source: str
) -> IngestResult:
    with engine.begin() as conn:
        ids, names = resolve_deployments(conn, parsed, deployment)
        batch = usage_store.UsageBatch(
            ids, parsed.minutes, parsed.input_tokens, parsed.output_tokens, parsed.requests
        )
        record = usage_store.write_usage(
            conn,
            batch,
            source=source,
            file=parsed.path,
            deployment_names=names,
            checksum=parsed.checksum,
        )
    return IngestResult(
        parsed.path,
        record.rows,
        record.id,
        names,
        record.first_minute.isoformat(),
        record.last_minute.isoformat(),
    )


def ingest_files(
    engine: sa.Engine,
    paths: Sequence[str],
    *,
    deployment: str | None,
    source: str,
    stdin: IO[bytes] | None = None,
) -> list[IngestResult]:
    """Ingest files in order; the first bad file raises and later files are not read.

    Files before the bad one stay ingested: each file is its own unit of all-or-nothing.
    """
    results = []
    for path in paths:
        parsed = read_usage_file(path, stdin=stdin)
        results.append(ingest_parsed(engine, parsed, deployment=deployment, source=source))
    return results

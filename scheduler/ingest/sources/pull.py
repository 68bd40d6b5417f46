"""Running a pull: window, chunks, the one write path, the high-water mark, staleness.

One pull of one (deployment, source):

1. The window ends at the last whole minute before ``now`` (the minute under way is never
   read) and starts ``trailing_minutes`` before the source's high-water mark, so points
   that arrived late are read again; with no mark yet it starts ``trailing_minutes``
   before the end, and ``since`` (``capsched pull --since``) overrides the start for
   backfills.
2. The window is read in chunks of the source's ``max_minutes``. Each chunk's complete
   minutes go through :func:`scheduler.ingest.write.ingest_parsed`, the write path of
   ``capsched ingest`` (same validation, all-or-nothing, keyed by the source's ``name``),
   then the mark moves to the chunk's end in a second short transaction. Killed between
   the two, the next pull reads the chunk again: minutes are replaced, never added, so a
   kill neither loses nor duplicates anything.
3. A source that fails (after throttling backoff) or answers the latest chunk with nothing
   marks the deployment's usage stale (``pull_source.stale``) and writes nothing for it:
   minutes it did not see stay missing, never zero.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from scheduler.config import Deployment, PullSource
from scheduler.ingest.files import parse_usage_bytes, write_usage_csv
from scheduler.ingest.sources.base import Source, SourceError, SourceMinutes, with_backoff
from scheduler.ingest.write import ingest_parsed
from scheduler.store import deployments as deployment_store
from scheduler.store import sources as source_store

#: A failing source waits interval x 2^failures between pulls, at most this long.
MAX_FAILURE_BACKOFF = dt.timedelta(minutes=15)


class PullError(RuntimeError):
    """A pull failed; its state records the error and the deployment's usage is stale."""


@dataclass(frozen=True)
class PullResult:
    deployment: str
    source: str
    #: The window read, [start, end); start is None when there was nothing to read.
    start: dt.datetime | None
    end: dt.datetime
    minutes: int
    chunks: int
    stale: bool


def build_source(deployment: Deployment, spec: PullSource) -> Source:
    """The adapter for ``spec.kind``; SDK imports happen here, only for the kinds in use."""
    if spec.kind == "prometheus":
        from scheduler.ingest.sources.prometheus import PrometheusSource

        return PrometheusSource(spec)
    if spec.kind == "cloudwatch":
        from scheduler.ingest.sources.cloudwatch import CloudWatchSource

        return CloudWatchSource(spec)
    if spec.kind == "azure_monitor":
        from scheduler.ingest.sources.azure_monitor import AzureMonitorSource

        return AzureMonitorSource(spec, deployment_name=deployment.model)
    raise SourceError(f"unknown source kind {spec.kind!r}")


def floor_minute(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(second=0, microsecond=0)


def window(
    state: source_store.SourceState | None, spec: PullSource, now: dt.datetime,
    since: dt.datetime | None = None,
) -> tuple[dt.datetime, dt.datetime]:
    """The [start, end) minute boundaries the next pull reads (see the module docstring)."""
    end = floor_minute(now)
    trailing = dt.timedelta(minutes=max(spec.trailing_minutes, 1))
    if since is not None:
        start = floor_minute(since)
    elif state is not None and state.high_water is not None:
        start = min(state.high_water, end) - trailing
    else:
        start = end - trailing
    return start, end


def next_due(state: source_store.SourceState | None, spec: PullSource) -> dt.datetime | None:
    """When the source should next be pulled (None: now): ``interval_seconds`` after the
    last attempt, and interval x 2^failures (at most :data:`MAX_FAILURE_BACKOFF`) after a
    failure, so a failing or throttled source backs off across pulls too."""
    if state is None or state.last_attempt_at is None:
        return None
    wait = dt.timedelta(seconds=spec.interval_seconds)
    if state.failures:
        wait = min(wait * 2 ** min(state.failures, 20), MAX_FAILURE_BACKOFF)
    return state.last_attempt_at + wait


def due(state: source_store.SourceState | None, spec: PullSource, now: dt.datetime) -> bool:
    at = next_due(state, spec)
    return at is None or now >= at


def _csv_bytes(read: SourceMinutes) -> bytes:
    out = io.StringIO()
    stamps = read.minutes.astype("datetime64[s]").astype(dt.datetime)
    write_usage_csv(
        ((stamp, int(a), int(b), int(c)) for stamp, a, b, c in
         zip(stamps, read.input_tokens, read.output_tokens, read.requests, strict=True)),
        out,
    )
    return out.getvalue().encode()


def pull(
    engine: sa.Engine,
    deployment: Deployment,
    spec: PullSource,
    *,
    now: dt.datetime,
    since: dt.datetime | None = None,
    source: Source | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
) -> PullResult:
    """Pull one source of one deployment up to ``now``; raises :class:`PullError`.

    ``source`` is built from ``spec`` unless given (tests pass one on a stubbed client).
    ``progress(done, total)`` is called with minutes of the window after each chunk.
    """
    with engine.connect() as conn:
        ids = deployment_store.deployment_ids(conn, [deployment.name])
        if deployment.name not in ids:
            raise PullError(f"deployment {deployment.name!r} is not in the database "
                            "(is the config synced?)")
        ident = ids[deployment.name]
        state = source_store.read_state(conn, ident, spec.name)
    start, end = window(state, spec, now, since)
    label = f"{deployment.name}/{spec.name}"
    if start >= end:
        return PullResult(deployment.name, spec.name, None, end, 0, 0, False)
    owned = source is None
    total = int((end - start) / dt.timedelta(minutes=1))
    written = chunks = 0
    try:
        src = source if source is not None else build_source(deployment, spec)
        step = dt.timedelta(minutes=src.max_minutes)
        stale = False
        try:
            lo = start
            while lo < end:
                hi = min(lo + step, end)
                read = with_backoff(functools.partial(src.read, lo, hi), sleep=sleep)
                if len(read):
                    name = f"{spec.kind}:{spec.name}[{lo:%Y-%m-%dT%H:%MZ},{hi:%Y-%m-%dT%H:%MZ})"
                    parsed = parse_usage_bytes(_csv_bytes(read), name)
                    ingest_parsed(engine, parsed, deployment=deployment.name, source=spec.name)
                last = hi >= end
                stale = last and not len(read)
                with engine.begin() as conn:
                    source_store.record_success(
                        conn, ident, spec.name, spec.kind, high_water=hi, now=now,
                        minutes=len(read), stale=stale if last else None)
                written += len(read)
                chunks += 1
                if progress is not None:
                    progress(int((hi - start) / dt.timedelta(minutes=1)), total)
                lo = hi
        finally:
            if owned:
                src.close()
    except (SourceError, ValueError) as exc:
        # ValueError: the ingest path rejected what the source returned (UsageFileError,
        # IngestError), which is the source's fault too; nothing of the chunk was written.
        with engine.begin() as conn:
            source_store.record_failure(conn, ident, spec.name, spec.kind, now=now,
                                        error=str(exc))
        raise PullError(f"{label}: {exc}") from exc
    except Exception as exc:
        # Anything else (an adapter bug, an SDK error it did not translate) is a failed
        # pull all the same: the deployment's usage is marked stale so the daemon holds,
        # and the failure count drives the backoff. If even that cannot be written (the
        # database is down), the daemon's own staleness check still sees no new minutes.
        error = f"unexpected {type(exc).__name__}: {exc}"
        try:
            with engine.begin() as conn:
                source_store.record_failure(conn, ident, spec.name, spec.kind, now=now,
                                            error=error)
        except sa.exc.SQLAlchemyError:
            pass
        raise PullError(f"{label}: {error}") from exc
    return PullResult(deployment.name, spec.name, start, end, written, chunks, stale)

"""``capsched pull``: read usage from the configured pull sources now (backfills), and the
daemon's pull jobs (one APScheduler job per source, registered by ``capsched run``)."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

import structlog
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge
from tqdm import tqdm

from scheduler.cli import main as cli
from scheduler.config import Config, Deployment, PullSource
from scheduler.ingest.sources.pull import PullError, PullResult, due, next_due, pull
from scheduler.store import deployments as deployment_store
from scheduler.store import sources as source_store

log = structlog.get_logger()

#: APScheduler job ids of pull jobs start with this; the rest is "deployment/source".
JOB_PREFIX = "pull:"


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "pull", help="read usage from the configured [[deployment.source]] sources now "
                     "(CloudWatch, Azure Monitor, Prometheus); --since backfills")
    p.add_argument("--deployment", help="only this deployment (default: every one with sources)")
    p.add_argument("--source", help="only the source with this name")
    p.add_argument("--since", type=cli.parse_time, default=None,
                   help="read from this time instead of the high-water mark less the "
                        "trailing window (a backfill)")
    p.add_argument("--now", type=cli.parse_time, default=None,
                   help="pull as if it were this time: the window ends at its minute")
    p.set_defaults(handler=cmd_pull)


def selected(config: Config, deployment: str | None, source: str | None
             ) -> list[tuple[Deployment, PullSource]]:
    deployments = config.deployments if deployment is None else (config.deployment(deployment),)
    return [(d, s) for d in deployments for s in d.source if source in (None, s.name)]


def cmd_pull(ctx: cli.Context) -> int:
    now = ctx.args.now or cli.utc_now()
    pairs = selected(ctx.config, ctx.args.deployment, ctx.args.source)
    if not pairs:
        raise cli.CommandError("no [[deployment.source]] configured"
                               + (f" for {ctx.args.deployment!r}" if ctx.args.deployment
                                  else ""), cli.EXIT_USAGE)
    failed = 0
    with cli.connected(ctx) as engine:
        for deployment, spec in pairs:
            label = f"{deployment.name}/{spec.name}"
            with tqdm(desc=label, unit="min", disable=not sys.stderr.isatty(),
                      file=sys.stderr, leave=False) as bar:
                def progress(done: int, total: int, bar: Any = bar) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                try:
                    result = pull(engine, deployment, spec, now=now, since=ctx.args.since,
                                  progress=progress)
                except PullError as exc:
                    failed += 1
                    print(f"capsched: {exc}", file=sys.stderr)
                    continue
            print(_summary(label, result))
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


def _summary(label: str, result: PullResult) -> str:
    if result.start is None:
        return f"{label}: nothing to read before {result.end:%Y-%m-%dT%H:%MZ}"
    text = (f"{label}: {result.minutes:,} minutes from [{result.start:%Y-%m-%dT%H:%MZ}, "
            f"{result.end:%Y-%m-%dT%H:%MZ}) in {result.chunks} read(s)")
    if result.stale:
        text += "; the source returned nothing for the latest window: usage marked stale"
    return text


class PullMetrics:
    """The pull jobs' series on the daemon's registry (alert on ``capsched_pull_stale``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("deployment", "source")
        self.stale = Gauge("capsched_pull_stale", "1 while the source's last pull failed or "
                           "returned nothing (its deployment is held)", labels,
                           registry=registry)
        self.failures = Counter("capsched_pull_failures", "Failed pulls", labels,
                                registry=registry)
        self.minutes = Counter("capsched_pull_minutes", "Minutes read (re-reads included)",
                               labels, registry=registry)


def run_pull_job(daemon: Any, deployment_name: str, source_name: str,
                 clock: Callable[[], dt.datetime], next_at: dict[str, dt.datetime],
                 metrics: PullMetrics | None = None) -> PullResult | None:
    """One poll of one source by the daemon: a pull only on the leader and only when the
    source is due (``interval_seconds`` after its last attempt, longer after failures).
    ``next_at`` remembers when each source is next due, so a poll in between costs no
    query. Never raises: a failure is logged as an alert and the usage is marked stale."""
    if not daemon.leader.held:
        return None
    key = f"{deployment_name}/{source_name}"
    now = clock()
    if key in next_at and now < next_at[key]:
        return None
    config: Config = daemon.config
    pair = next(((d, s) for d, s in selected(config, None, None)
                 if d.name == deployment_name and s.name == source_name), None)
    if pair is None:
        return None
    deployment, spec = pair
    try:
        with daemon.engine.connect() as conn:
            ids = deployment_store.deployment_ids(conn, [deployment.name])
            state = (source_store.read_state(conn, ids[deployment.name], spec.name)
                     if deployment.name in ids else None)
        if not due(state, spec, now):
            next_at[key] = next_due(state, spec) or now
            return None
        next_at[key] = now + dt.timedelta(seconds=spec.interval_seconds)
        result = pull(daemon.engine, deployment, spec, now=now)
    except PullError as exc:
        log.error("pull_source_failed", deployment=deployment.name, source=spec.name,
                  kind=spec.kind, error=str(exc), alert="usage_stale")
        if metrics is not None:
            metrics.failures.labels(deployment.name, spec.name).inc()
            metrics.stale.labels(deployment.name, spec.name).set(1)
        next_at.pop(key, None)  # the stored failure count decides the backoff
        return None
    except Exception:  # a pull must never take the daemon down
        log.exception("pull_source_crashed", deployment=deployment.name, source=spec.name)
        return None
    if metrics is not None:
        metrics.minutes.labels(deployment.name, spec.name).inc(result.minutes)
        metrics.stale.labels(deployment.name, spec.name).set(int(result.stale))
    if result.stale:
        log.warning("pull_source_empty", deployment=deployment.name, source=spec.name,
                    kind=spec.kind, alert="usage_stale")
    else:
        log.info("pull_source", deployment=deployment.name, source=spec.name,
                 minutes=result.minutes,
                 start=result.start.isoformat() if result.start else None,
                 end=result.end.isoformat())
    return result


#: Wall seconds between two polls of a source by the daemon (at most; a source's own
#: interval, on the daemon's possibly replayed clock, decides when it is pulled).
POLL_SECONDS = 5.0


def sync_pull_jobs(scheduler: Any, daemon: Any, clock: Callable[[], dt.datetime],
                   speed: float, job_defaults: dict[str, Any],
                   next_at: dict[str, dt.datetime], metrics: PullMetrics | None = None
                   ) -> None:
    """One job per configured source (coalesced, one instance at a time, so one pull at a
    time per source), added and removed to follow the config (a SIGHUP reload takes
    effect at the next sync)."""
    wanted = {f"{JOB_PREFIX}{d.name}/{s.name}": (d, s)
              for d, s in selected(daemon.config, None, None)}
    try:
        with daemon.engine.begin() as conn:
            ids = deployment_store.deployment_ids(conn, [d.name for d, _ in wanted.values()])
            source_store.clear_unconfigured(
                conn, [(ids[d.name], s.name) for d, s in wanted.values() if d.name in ids])
    except Exception:  # the database may be away; the next sync tries again
        log.exception("pull_sync_failed")
    for job in scheduler.get_jobs():
        if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
            job.remove()
    for job_id, (deployment, spec) in wanted.items():
        seconds = min(spec.interval_seconds / speed, POLL_SECONDS)
        existing = scheduler.get_job(job_id)
        if existing is not None and existing.trigger.interval.total_seconds() == seconds:
            continue
        scheduler.add_job(run_pull_job, IntervalTrigger(seconds=seconds, timezone=dt.UTC),
                          args=(daemon, deployment.name, spec.name, clock, next_at, metrics),
                          id=job_id, replace_existing=True, **job_defaults)


def add_pull_jobs(scheduler: Any, daemon: Any, clock: Callable[[], dt.datetime],
                  speed: float, job_defaults: dict[str, Any]) -> None:
    """What ``capsched run`` calls where it builds its scheduler."""
    next_at: dict[str, dt.datetime] = {}
    metrics = PullMetrics(daemon.metrics.registry)
    sync_pull_jobs(scheduler, daemon, clock, speed, job_defaults, next_at, metrics)
    scheduler.add_job(sync_pull_jobs, IntervalTrigger(seconds=60, timezone=dt.UTC),
                      args=(scheduler, daemon, clock, speed, job_defaults, next_at, metrics),
                      id="pull-sync", **job_defaults)


cli.EXTENSIONS.append(add_commands)

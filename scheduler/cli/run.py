"""``capsched run`` (the daemon), ``run --once``, ``pause``, ``resume`` and ``health``."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import threading
from types import FrameType
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.cli import main as cli
from scheduler.cli import pull as pull_jobs
from scheduler.config import Config, ConfigError, load_config
from scheduler.credentials import SecretError, resolve_secret
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.tick import Daemon, set_provider_clocks
from scheduler.ingest.push import PushConfigError, PushServer, scoped_tokens
from scheduler.observe import sdnotify
from scheduler.observe.logs import configure_logging
from scheduler.observe.metrics import start_metrics_server
from scheduler.store import journal as journal_store
from scheduler.store import usage as usage_store

log = structlog.get_logger()


def add_commands(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon (one tick a minute) in the foreground")
    p.add_argument("--once", action="store_true", help="run exactly one tick, then exit")
    p.add_argument("--now", type=cli.parse_time, default=None,
                   help="with --once: tick at this time (simulated providers follow it)")
    p.add_argument("--replay-from", type=cli.parse_time, default=None,
                   help="run on a replayed clock starting at this time (a demo or a rehearsal "
                        "on stored usage; simulated providers follow it)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --replay-from: simulated seconds per wall second (default 1)")
    p.set_defaults(handler=cmd_run)
    pause = sub.add_parser("pause", help="stop sending actions (plans are still recorded)")
    pause.add_argument("--reason", default="paused by operator")
    pause.set_defaults(handler=cmd_pause)
    sub.add_parser("resume", help="resume sending actions").set_defaults(handler=cmd_resume)
    health = sub.add_parser("health", help="exit non-zero when the daemon is unhealthy")
    health.add_argument("--now", type=cli.parse_time, default=None)
    health.add_argument("--format", choices=("text", "json"), default="text")
    health.set_defaults(handler=cmd_health)


def cmd_pause(ctx: cli.Context) -> int:
    with cli.connected(ctx) as engine, engine.begin() as conn:
        journal_store.set_paused(conn, True, now=cli.utc_now(), reason=ctx.args.reason)
    print("paused: plans are still recorded, no action is sent")
    return cli.EXIT_OK


def cmd_resume(ctx: cli.Context) -> int:
    with cli.connected(ctx) as engine, engine.begin() as conn:
        journal_store.set_paused(conn, False, now=cli.utc_now())
    print("resumed")
    return cli.EXIT_OK


def cmd_health(ctx: cli.Context) -> int:
    now = ctx.args.now or cli.utc_now()
    names = [d.name for d in ctx.config.deployments]
    with cli.connected(ctx, sync=False) as engine, engine.connect() as conn:
        state = journal_store.read_heartbeat(conn)
        last_usage = usage_store.last_usage_minutes(conn, names, now)
    problems = []
    # Three missed ticks (plus the misfire grace) is unhealthy: one slow tick is not.
    limit = dt.timedelta(seconds=3 * ctx.config.daemon.tick_seconds
                         + ctx.config.daemon.misfire_grace_seconds)
    if state is None or state.last_tick_at is None:
        problems.append("no tick recorded yet")
    else:
        if now - state.last_tick_at > limit:
            problems.append(f"last tick at {state.last_tick_at.isoformat()} is older than "
                            f"{int(limit.total_seconds())} s")
        if state.last_tick_ok is False:
            problems.append(f"last tick failed: {state.last_error}")
    # Ingest lag past staleness_minutes: the daemon is holding capacity blind.
    staleness = dt.timedelta(minutes=ctx.config.daemon.staleness_minutes)
    lag_minutes: dict[str, float | None] = {}
    for name in names:
        last = last_usage.get(name)
        lag_minutes[name] = None if last is None else round((now - last).total_seconds() / 60, 1)
        if last is None:
            problems.append(f"{name}: no usage ingested (capacity held)")
        elif now - last > staleness:
            problems.append(
                f"{name}: usage ingest lags {lag_minutes[name]:g} min (last minute ends "
                f"{last:%Y-%m-%dT%H:%MZ}), past staleness_minutes = "
                f"{ctx.config.daemon.staleness_minutes}: capacity held, commitments deferred")
    result = {
        "healthy": not problems, "problems": problems,
        "paused": bool(state and state.paused),
        "instance": state.instance_id if state else None,
        "last_tick_at": state.last_tick_at.isoformat() if state and state.last_tick_at else None,
        "ingest_lag_minutes": lag_minutes,
    }
    if ctx.args.format == "json":
        print(json.dumps(result))
    else:
        print("healthy" if not problems else "unhealthy: " + "; ".join(problems))
    return cli.EXIT_OK if not problems else cli.EXIT_FAILED


def cmd_run(ctx: cli.Context) -> int:
    # The daemon's output is its log: JSON lines to stdout under systemd.
    configure_logging(ctx.config.log.level, ctx.config.log.format, stream=sys.stdout)
    with cli.connected(ctx) as engine:
        providers = ProviderSet(ctx.config, engine)
        daemon = Daemon(ctx.config, engine, providers)
        try:
            if ctx.args.once:
                return _run_once(daemon, ctx.args.now)
            return _run_forever(daemon, ctx)
        finally:
            daemon.close()


def _run_once(daemon: Daemon, now: dt.datetime | None) -> int:
    if now is not None:
        fixed = now
        set_provider_clocks(daemon.providers, daemon.config, lambda: fixed)
    report = daemon.tick(now or cli.utc_now())
    if not report.leader:
        print("capsched: another daemon is the leader; this tick did nothing", file=sys.stderr)
        return cli.EXIT_LOCKED
    return cli.EXIT_OK if report.ok else cli.EXIT_FAILED


def _ingest_token(config: Config) -> str | None:
    return resolve_secret(config.daemon.ingest_token, config.daemon.ingest_token_file,
                          "ingest-token", "CAPSCHED_DAEMON_INGEST_TOKEN")


class ReplayClock:
    """Time that starts at ``origin`` and runs ``speed`` times faster than the wall clock."""

    def __init__(self, origin: dt.datetime, speed: float) -> None:
        if speed <= 0:
            raise cli.CommandError("--speed must be > 0", cli.EXIT_USAGE)
        self.origin, self.speed, self.wall_origin = origin, speed, cli.utc_now()

    def __call__(self) -> dt.datetime:
        return self.origin + (cli.utc_now() - self.wall_origin) * self.speed


def _run_forever(daemon: Daemon, ctx: cli.Context) -> int:
    config = ctx.config
    clock: Any = cli.utc_now
    speed = 1.0
    if ctx.args.replay_from is not None:
        clock = ReplayClock(ctx.args.replay_from, ctx.args.speed)
        speed = ctx.args.speed
        set_provider_clocks(daemon.providers, config, clock)
    stop = threading.Event()
    reload_requested = threading.Event()
    metrics_server = start_metrics_server(config.daemon.metrics_address, daemon.metrics.registry)
    push: PushServer | None = None
    if config.daemon.ingest_address:
        try:
            token = _ingest_token(config)
            scoped = scoped_tokens(config)
        except (SecretError, PushConfigError) as exc:
            raise cli.CommandError(str(exc), cli.EXIT_USAGE) from exc
        if not token and not scoped:
            raise cli.CommandError("[daemon] ingest_address is set but no ingest token is "
                                   "configured (ingest_token_file, the ingest-token credential "
                                   "or CAPSCHED_DAEMON_INGEST_TOKEN, or [[push_token]])",
                                   cli.EXIT_USAGE)
        push = PushServer(daemon.engine, token or "", address=config.daemon.ingest_address,
                          default_source=config.ingest.default_source, scoped=scoped,
                          limits=config.ingest)
        push.start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            reload_requested.set()
        else:
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def tick_job() -> None:
        if reload_requested.is_set():
            reload_requested.clear()
            _reload(daemon, ctx, clock)
        try:
            daemon.tick(clock(), refit_inline=speed > 1 and daemon.refit_due(clock()))
        except Exception:  # a tick must never take the daemon down
            log.exception("tick_failed")
        sdnotify.watchdog()

    def refit_job() -> None:
        if not daemon.leader.held:
            return
        try:
            daemon.refit(clock())
        except Exception:
            log.exception("refit_failed")

    tick = config.daemon.tick_seconds
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    # coalesce: after a stall run one tick, not a burst of stale ones; max_instances=1: a
    # slow tick delays the next instead of overlapping it; misfire grace: a tick more than
    # that late is skipped (the next boundary comes soon) rather than run on old time.
    job_defaults = {"coalesce": True, "max_instances": 1,
                    "misfire_grace_time": config.daemon.misfire_grace_seconds}
    trigger = (CronTrigger(second=0, timezone=dt.UTC) if tick == 60 and speed == 1
               else IntervalTrigger(seconds=tick / speed, timezone=dt.UTC))
    scheduler.add_job(tick_job, trigger, id="tick", **job_defaults)
    # Usage pulled from [[deployment.source]]: one job per source (scheduler/cli/pull.py).
    pull_jobs.add_pull_jobs(scheduler, daemon, clock, speed, job_defaults)
    if speed == 1:
        # On a replayed clock the tick refits inline when due (interval jobs run on wall time).
        scheduler.add_job(refit_job, IntervalTrigger(minutes=config.daemon.refit_minutes,
                                                     timezone=dt.UTC), id="refit",
                          **job_defaults)
    interval = sdnotify.watchdog_interval()
    if interval:
        # Ping only while ticks make progress, so a hung tick lets systemd restart us.
        def watchdog_job() -> None:
            if daemon._perf_counter() - daemon.last_progress < 3 * tick + 30:
                sdnotify.watchdog()

        scheduler.add_job(watchdog_job, IntervalTrigger(seconds=max(interval / 2, 1)),
                          id="watchdog", **job_defaults)
    scheduler.start()
    sdnotify.ready("capsched running")
    log.info("daemon_started", instance=daemon.instance_id, tick_seconds=tick,
             deployments=len(config.deployments))
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sdnotify.stopping()
        log.info("daemon_stopping", instance=daemon.instance_id)
        scheduler.shutdown(wait=True)  # SIGTERM finishes the tick in flight
        if push is not None:
            push.stop()
        if metrics_server is not None:
            metrics_server.stop()
    return cli.EXIT_OK


def _reload(daemon: Daemon, ctx: cli.Context, clock: Any) -> None:
    sdnotify.reloading()
    try:
        config = load_config(ctx.args.config)
        config = cli.apply_flags(config, ctx.args)
        providers = ProviderSet(config, daemon.engine)
        if ctx.args.replay_from is not None:
            set_provider_clocks(providers, config, clock)
        daemon.reload(config, providers)
        log.info("config_reloaded", deployments=len(config.deployments))
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc))
    sdnotify.ready("capsched running")


cli.EXTENSIONS.append(add_commands)

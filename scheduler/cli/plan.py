"""``capsched plan --dry-run`` (safe under cron) and ``capsched backtest`` (no database)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import structlog

from scheduler.cli import main as cli
from scheduler.config import ConfigError
from scheduler.daemon.providers import provider_set
from scheduler.daemon.tick import set_provider_clocks
from scheduler.ingest.files import read_usage_file
from scheduler.pipeline.forecast import (
    headroom_by_deployment,
    load_histories,
    minute_floor,
    refit,
    staleness,
)
from scheduler.pipeline.plan import COMMIT_FORECAST_MINUTES, make_plan
from scheduler.planning.planner import SpillToDate
from scheduler.providers.errors import ProviderError
from scheduler.store import deployments as deployment_store
from scheduler.store import forecasts as forecast_store
from scheduler.store import ledger as ledger_store
from scheduler.store import locks, partitions
from scheduler.store import plans as plan_store

log = structlog.get_logger()


def add_commands(sub: Any) -> None:
    p = sub.add_parser("plan", help="plan capacity from stored usage (dry run: changes nothing "
                                    "at any provider) and store the plan")
    p.add_argument("--dry-run", action="store_true", required=True,
                   help="store the plan as a dry run and send nothing (required: live plans "
                        "are made by `capsched run`)")
    p.add_argument("--deployment", help="only this deployment (default: all)")
    p.add_argument("--horizon", type=cli.parse_duration_minutes, default=None,
                   help="planning horizon, e.g. 4h (default [daemon] plan_horizon_minutes)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--quiet", action="store_true", help="print nothing on success (for cron)")
    p.add_argument("--now", type=cli.parse_time, default=None,
                   help="plan as of this time instead of the clock")
    p.set_defaults(handler=cmd_plan)

    b = sub.add_parser("backtest", help="replay a usage trace through the forecaster and planner "
                                        "against the simulated provider (no database)")
    b.add_argument("--usage", required=True, help="usage file (CSV or JSON Lines)")
    b.add_argument("--deployment", required=True, help="deployment whose settings to use")
    b.add_argument("--out", required=True, type=Path, help="output directory")
    b.add_argument("--start", type=cli.parse_time, default=None,
                   help="first billed minute (default: the trace's first minute)")
    b.add_argument("--end", type=cli.parse_time, default=None,
                   help="end of the billed window, exclusive (default: the trace's end)")
    b.set_defaults(handler=cmd_backtest)


def cmd_plan(ctx: cli.Context) -> int:
    now = ctx.args.now or cli.utc_now()
    horizon = ctx.args.horizon or ctx.config.daemon.plan_horizon_minutes
    deployments = ctx.config.deployments
    if ctx.args.deployment:
        deployments = (ctx.config.deployment(ctx.args.deployment),)
    if not deployments:
        raise cli.CommandError("no deployments configured", cli.EXIT_USAGE)
    summaries: list[dict[str, Any]] = []
    failures: list[str] = []
    with cli.connected(ctx) as engine, locks.try_lock(engine, locks.DRY_RUN_PLAN) as acquired:
        if not acquired:
            raise cli.CommandError("another `capsched plan` is running; try again later",
                                   cli.EXIT_LOCKED)
        with engine.begin() as conn:  # begin: the month's read may store daily roll-ups
            ids = deployment_store.deployment_ids(conn, [d.name for d in deployments])
            histories = load_histories(conn, deployments, ids, now,
                                       ctx.config.daemon.history_days)
            # The service level realised this UTC month so far, as the daemon plans with.
            until = minute_floor(now)
            levels = ledger_store.month_to_date(conn, list(ids.values()),
                                                partitions.month_start(until), until, now=now)
        # Stale usage plans nothing: an all-zero or blind plan must not become the
        # deployment's current plan (cron mails the line and the exit code).
        for history in list(histories.values()):
            why = staleness(history, now, ctx.config.daemon.staleness_minutes)
            if why:
                failures.append(f"{why}: no plan stored")
                del histories[history.deployment.name]
        if not histories:
            raise cli.CommandError("; ".join(failures))
        ingest = ctx.config.ingest
        fits = refit(list(histories.values()), now, horizon,
                     zero_gap_minutes=ingest.zero_gap_minutes,
                     zero_load_after_minutes=ingest.zero_load_after_minutes)
        headroom = headroom_by_deployment(list(histories.values()),
                                          zero_gap_minutes=ingest.zero_gap_minutes,
                                          zero_load_after_minutes=ingest.zero_load_after_minutes)
        with provider_set(ctx.config, engine) as providers:
            if ctx.args.now is not None:
                # A simulated provider reports its holdings at --now, as the daemon's
                # `run --once --now` does, not at the wall clock.
                set_provider_clocks(providers, ctx.config, lambda: now)
            for deployment in deployments:
                if deployment.name not in histories:
                    continue  # stale: reported above
                try:
                    provider = providers.get(deployment.provider)
                    holdings = provider.holdings(deployment.name)
                    terms = tuple(provider.limits(deployment.name).supported_terms)
                except (ProviderError, ConfigError) as exc:
                    failures.append(f"{deployment.name}: cannot read provider holdings: {exc}")
                    continue
                fit = fits[deployment.name]
                with engine.begin() as conn:
                    (run_id,) = forecast_store.insert_forecasts(conn, [fit.record])
                    history = histories[deployment.name]
                    outcome = make_plan(
                        history=history, forecast=fit.forecast, holdings=holdings,
                        now=fit.record.as_of, mode="dry_run", horizon_minutes=horizon,
                        forecast_run_id=run_id,
                        spill_to_date=SpillToDate(
                            levels[history.deployment_id].demand_unit_minutes,
                            levels[history.deployment_id].spill_unit_minutes),
                        headroom=headroom.get(history.deployment.name),
                        commit_forecast=fit.model.predict(
                            history.demand, origin=fit.record.as_of,
                            horizon=COMMIT_FORECAST_MINUTES) if terms else None,
                        zero_load_after_minutes=ctx.config.ingest.zero_load_after_minutes,
                        commit_terms=terms)
                    plan_id = plan_store.insert_plan(conn, outcome.record)
                summaries.append(_summary(deployment.name, plan_id, outcome.record))
    for failure in failures:
        print(f"capsched: {failure}", file=sys.stderr)
    if not ctx.args.quiet:
        if ctx.args.format == "json":
            print(json.dumps(summaries, indent=2))
        elif summaries:
            print(cli.format_table(
                ["DEPLOYMENT", "PLAN", "HORIZON", "COMMITTED $", "ELASTIC $", "SPILL $",
                 "TOTAL $", "DEDICATED $", "PAYG $", "SPILL %", "NEW COMMITS"],
                [[s["deployment"], s["plan_id"], s["horizon_minutes"], s["committed_cost"],
                  s["elastic_cost"], s["spill_cost"], s["total_cost"], s["dedicated_cost"],
                  s["payg_cost"], s["spill_percent"], s["new_commitments"]] for s in summaries]))
    return cli.EXIT_FAILED if failures else cli.EXIT_OK


def _summary(name: str, plan_id: int, record: plan_store.PlanRecord) -> dict[str, Any]:
    return {
        "deployment": name, "plan_id": plan_id, "as_of": record.as_of.isoformat(),
        "horizon_minutes": record.horizon_minutes,
        "committed_cost": round(record.expected_committed_cost, 2),
        "elastic_cost": round(record.expected_elastic_cost, 2),
        "spill_cost": round(record.expected_spill_cost, 2),
        "total_cost": round(record.expected_total_cost, 2),
        "dedicated_cost": round(record.dedicated_cost, 2),
        "payg_cost": round(record.payg_cost, 2),
        "spill_percent": round(100 * record.expected_spill_fraction, 3),
        "new_commitments": sum(int(c["units"]) for c in record.commitments),
        "payg_cheaper_than_unit": record.payg_cheaper_than_unit,
    }


def cmd_backtest(ctx: cli.Context) -> int:
    from scheduler.planning.backtest import capacity_from_settings, run_backtest

    deployment = ctx.config.deployment(ctx.args.deployment)
    usage = read_usage_file(ctx.args.usage)
    # The simulated provider's capacity pool ([providers.<name>] available_units,
    # supported_terms) limits the backtest as it limits the daemon.
    try:
        capacity = capacity_from_settings(ctx.config.providers, deployment)
    except ValueError as exc:
        raise cli.CommandError(f"{ctx.config.path}: {exc}", cli.EXIT_USAGE) from exc
    summary = run_backtest(usage, deployment, ctx.args.out, start=ctx.args.start,
                           end=ctx.args.end, capacity=capacity)
    print(json.dumps(summary, indent=2, default=str))
    # A human line after the JSON, on stderr so stdout stays one JSON document (#13).
    from scheduler.report.text import backtest_line

    print(backtest_line(summary), file=sys.stderr)
    return cli.EXIT_OK


cli.EXTENSIONS.append(add_commands)

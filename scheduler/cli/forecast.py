"""``capsched forecast``: fit from stored usage, store and summarise; ``forecast eval``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

import numpy as np

import forecasting
from forecasting import evaluation
from forecasting.select import select_batch
from scheduler.cli import main as cli
from scheduler.ingest.files import read_usage_file
from scheduler.pipeline.forecast import (
    PLANNING_QUANTILES,
    History,
    Refit,
    calendar_days,
    load_histories,
    refit,
    staleness,
    to_record,
)
from scheduler.store import deployments as deployment_store
from scheduler.store import forecasts as forecast_store


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "forecast", help="fit forecasts from stored usage and store them; `forecast eval` "
                         "evaluates the forecaster on a usage file")
    p.add_argument("action", nargs="?", choices=("eval",), help="eval: rolling-origin evaluation")
    p.add_argument("--deployment", help="only this deployment (default: all)")
    p.add_argument("--horizon", type=cli.parse_duration_minutes, default=1440,
                   help="how far ahead, e.g. 90m, 24h (default 24h)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--now", type=cli.parse_time, default=None,
                   help="forecast as of this time instead of the clock")
    p.add_argument("--usage", help="eval: the usage file (CSV or JSON Lines)")
    p.add_argument("--train-days", type=float, default=None,
                   help="eval: history each fit may use (default: all before the origin)")
    p.add_argument("--eval-days", type=float, default=7.0,
                   help="eval: evaluate origins over the last N days (default 7)")
    p.add_argument("--horizons", default="5m,1h,24h",
                   help="eval: comma-separated horizons (default 5m,1h,24h)")
    p.add_argument("--choose-seconds", type=float, default=60.0,
                   help="time budget for choosing each deployment's model by rolling-origin "
                        "validation (0: the fast harmonic path only; default 60)")
    p.add_argument("--origin-every", type=cli.parse_duration_minutes, default=1,
                   help="eval: minutes between forecast origins (default 1m: every phase)")
    p.add_argument("--first-origin-days", type=float, default=None,
                   help="eval: origins from N days after the trace start to its end, instead "
                        "of the last --eval-days (e.g. 7 with --origin-every 180m)")
    p.add_argument("--window", type=cli.parse_duration_minutes, default=10,
                   help="eval: the trace's publication window, to count the origin phases "
                        "scored (default 10m, ServeGen's)")
    p.set_defaults(handler=cmd_forecast)


def cmd_forecast(ctx: cli.Context) -> int:
    if ctx.args.action == "eval":
        return cmd_forecast_eval(ctx)
    now = ctx.args.now or cli.utc_now()
    deployments = ctx.config.deployments
    if ctx.args.deployment:
        deployments = (ctx.config.deployment(ctx.args.deployment),)
    if not deployments:
        raise cli.CommandError("no deployments configured", cli.EXIT_USAGE)
    with cli.connected(ctx) as engine:
        with engine.connect() as conn:
            ids = deployment_store.deployment_ids(conn, [d.name for d in deployments])
            histories = load_histories(conn, deployments, ids, now,
                                       ctx.config.daemon.history_days)
        # Stale usage stores nothing: a forecast of nothing recent must not become the
        # latest forecast of a deployment (cron mails the line and the exit code).
        stale = [why for h in histories.values()
                 if (why := staleness(h, now, ctx.config.daemon.staleness_minutes))]
        fresh = [h for h in histories.values()
                 if not staleness(h, now, ctx.config.daemon.staleness_minutes)]
        if stale and not fresh:
            raise cli.CommandError("; ".join(stale) + ": nothing stored")
        fits = refit(fresh, now, ctx.args.horizon,
                     zero_gap_minutes=ctx.config.ingest.zero_gap_minutes,
                     zero_load_after_minutes=ctx.config.ingest.zero_load_after_minutes)
        if ctx.args.choose_seconds > 0:
            fits = _choose(fresh, fits, now, ctx)
        with engine.begin() as conn:
            run_ids = forecast_store.insert_forecasts(conn, [f.record for f in fits.values()])
    rows = []
    for (name, fit), run_id in zip(fits.items(), run_ids, strict=True):
        fc = fit.forecast
        hour = slice(0, min(60, fc.mean.shape[0]))
        rows.append({
            "deployment": name, "run_id": run_id, "model": fc.model,
            "chosen_model": fit.record.choice()[0],
            "validation_mase": fit.record.choice()[1],
            "selection": fit.record.choice()[2],
            "as_of": fit.record.as_of.isoformat(), "horizon_minutes": int(fc.mean.shape[0]),
            "minutes_observed": fit.record.minutes_observed,
            "next_hour_mean_units": _round(np.nanmean(fc.mean[hour])),
            "peak_p90_units": _round(np.nanmax(fc.quantile(0.9))),
            "peak_mean_units": _round(np.nanmax(fc.mean)),
            "accuracy": fc.accuracy,
        })
    if ctx.args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(cli.format_table(
            ["DEPLOYMENT", "RUN", "MODEL", "VALIDATION MASE", "MINUTES SEEN",
             "NEXT HOUR (units)", "PEAK MEAN", "PEAK P90"],
            [[r["deployment"], r["run_id"], r["chosen_model"],
              "n/a" if r["validation_mase"] is None else f"{r['validation_mase']:.3f}",
              r["minutes_observed"], r["next_hour_mean_units"], r["peak_mean_units"],
              r["peak_p90_units"]]
             for r in rows]))
    for why in stale:
        print(f"capsched: {why}: nothing stored", file=sys.stderr)
    return cli.EXIT_FAILED if stale else cli.EXIT_OK


def _choose(histories: list[History], fits: dict[str, Refit], now: dt.datetime,
            ctx: cli.Context) -> dict[str, Refit]:
    """Replace each fast-path forecast by the model its own validation chooses, for the whole
    batch under one ``--choose-seconds`` budget (:func:`forecasting.select.select_batch`:
    the fast path is kept unless a candidate beats it at every validation origin; the
    series the budget does not reach keep it too, with one log line)."""
    out = dict(fits)
    deadline = time.monotonic() + ctx.args.choose_seconds
    late: list[str] = []
    # One batch per forecast horizon (all deployments share one unless configured apart).
    groups: dict[int, list[History]] = {}
    for h in histories:
        if h.deployment.name in fits:
            horizon = int(fits[h.deployment.name].forecast.mean.shape[0])
            groups.setdefault(horizon, []).append(h)
    for horizon, chosen in groups.items():
        fast = [fits[h.deployment.name].forecast for h in chosen]
        batch = select_batch(
            [h.demand for h in chosen], step_minutes=1, horizon=horizon, fast=fast,
            quantiles=PLANNING_QUANTILES, starts=[h.start for h in chosen],
            timezones=[h.deployment.timezone for h in chosen],
            calendars=[calendar_days(h.deployment) for h in chosen],
            zero_gap_minutes=ctx.config.ingest.zero_gap_minutes,
            clock=time.monotonic, deadline=deadline)
        for h, fc in zip(chosen, batch.forecasts, strict=True):
            fit = fits[h.deployment.name]
            selection = dict(fc.parameters.get("selection", {}))
            if selection.get("fast_path"):
                # The fast path the daemon plans from stays (no second fast fit).
                selection = {**selection, "chosen": fit.forecast.model}
                fc = _with_parameters(fit.forecast, {**fit.forecast.parameters,
                                                     "selection": selection})
            out[h.deployment.name] = Refit(fit.model, fc, to_record(h, fc, fit.record.as_of))
        late += [chosen[i].deployment.name for i in batch.out_of_time]
    if late:
        cli.log.warning("forecast_choice_out_of_time", budget_seconds=ctx.args.choose_seconds,
                        fast_path=len(late), deployments=late[:10])
    return out


def _with_parameters(fc: forecasting.Forecast, parameters: dict[str, Any]) -> forecasting.Forecast:
    return forecasting.Forecast(fc.mean, fc.quantile_levels, fc.quantiles, fc.start,
                                fc.step_minutes, fc.model, parameters, fc.accuracy)


def _round(value: float | np.floating[Any]) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 3)


def cmd_forecast_eval(ctx: cli.Context) -> int:
    if not ctx.args.usage:
        raise cli.CommandError("forecast eval needs --usage FILE", cli.EXIT_USAGE)
    weight, timezone = 3.0, "UTC"
    calendar: tuple[forecasting.CalendarDay, ...] = ()
    if ctx.args.deployment:
        deployment = ctx.config.deployment(ctx.args.deployment)
        weight, timezone = deployment.output_token_weight, deployment.timezone
        calendar = tuple(forecasting.CalendarDay(e.date, e.like_weekday, e.multiplier)
                         for e in deployment.calendar)
    parsed = read_usage_file(ctx.args.usage)
    if parsed.deployments is not None and len(set(parsed.deployments.tolist())) > 1:
        raise cli.CommandError(f"{parsed.path}: holds several deployments; evaluate one at a time",
                               cli.EXIT_USAGE)
    try:
        horizons = [cli.parse_duration_minutes(h.strip()) for h in ctx.args.horizons.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise cli.CommandError(f"--horizons: {exc}", cli.EXIT_USAGE) from None
    series, start = parsed.load_series(weight)
    report = forecasting.rolling_origin_eval(
        series, step_minutes=1, start=start, timezone=timezone, calendar=calendar,
        train_days=ctx.args.train_days, horizons=horizons, eval_days=ctx.args.eval_days,
        zero_gap_minutes=ctx.config.ingest.zero_gap_minutes,
        origin_every_minutes=ctx.args.origin_every,
        first_origin_minutes=(None if ctx.args.first_origin_days is None
                              else ctx.args.first_origin_days * 1440),
        window_minutes=ctx.args.window,
    )
    result = report.to_dict()
    result["usage"] = parsed.path
    # A horizon longer than the trace allows has no scored point: say so, exit 1.
    short = [h for h, s in result["horizons"].items() if not s.get("n_points")]
    if ctx.args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"{parsed.path}: naive = {result['naive']}, origins = {result['n_origins']} "
              f"every {result['origin_every_minutes']:g} min from {result['first_origin']}, "
              f"covering {result['window_phases']} of the {ctx.args.window}-minute window's "
              "phases")
        print(cli.format_table(
            ["HORIZON(min)", "MAE", "REL MAE", "REL MAE 90%", "MASE(in-sample)", "sMAPE",
             "PINBALL", "COVER80", "COVER95", "MSIS", "POINTS"],
            [[h, _fmt(s.get("mae"), ".4g"), _fmt(s.get("mase"), ".3f"),
              _fmt_range(s.get("mase_range")),
              _fmt(s.get("mase_insample"), ".3f"), _fmt(s.get("smape"), ".2f"),
              _fmt(s.get("pinball"), ".4g"), _fmt(s.get("coverage_80"), ".3f"),
              _fmt(s.get("coverage_95"), ".3f"), _fmt(s.get("msis"), ".3f"),
              s.get("n_points", 0)]
             for h, s in result["horizons"].items()]))
        days = max((s.get("n_days", 0) for s in result["horizons"].values()), default=0)
        if days:
            print(f"REL MAE 90%: 5th-95th percentile of a day-block bootstrap over {days} "
                  f"origin day(s) ({evaluation.BOOTSTRAP_RESAMPLES} resamples of whole days; "
                  f"n/a with fewer than {evaluation.BOOTSTRAP_MIN_DAYS})")
    if short:
        # Every scored point needs the seasonal naive of a day (or week) earlier.
        print(f"capsched: {parsed.path}: {series.size} minute(s) of usage are too short to "
              f"score the {', '.join(str(h) for h in short)}-minute horizon(s) (n/a above): "
              f"each point needs a {result['naive']} seasonal-naive value a "
              f"{'week' if result['naive'] == 'weekly' else 'day'} earlier and the horizon "
              "after its origin; evaluate a longer trace", file=sys.stderr)
        return cli.EXIT_FAILED
    return cli.EXIT_OK


def _fmt_range(value: Any) -> str:
    """A bootstrap range ``[lo, hi]`` as ``0.771-0.893``; ``n/a`` when there is none."""
    if not value or not all(isinstance(v, float) and np.isfinite(v) for v in value):
        return "n/a"
    return f"{value[0]:.3f}-{value[1]:.3f}"


def _fmt(value: Any, spec: str) -> str:
    """A score for the table; ``n/a`` where the horizon had nothing to score."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


cli.EXTENSIONS.append(add_commands)

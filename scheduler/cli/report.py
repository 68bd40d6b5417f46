"""``capsched report``: the savings report of a backtest directory or a deployment's live
history, as one self-contained HTML file or one PNG (scheduler/report/). Reads only."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from scheduler.cli import main as cli
from scheduler.config import ConfigError
from scheduler.report.data import ReportData, ReportInputError, from_backtest, from_store
from scheduler.store import deployments as deployment_store


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="draw what a backtest (a `backtest --out` directory) or a deployment's "
                       "live history cost: one self-contained HTML file, or --format png")
    p.add_argument("backtest_dir", nargs="?", type=Path,
                   help="a `capsched backtest --out` directory (or use --deployment)")
    p.add_argument("--deployment", help="report this deployment's live history instead")
    p.add_argument("--since", type=cli.parse_time, default=None,
                   help="with --deployment: start of the window (default: 7 days ago)")
    p.add_argument("--until", type=cli.parse_time, default=None,
                   help="with --deployment: end of the window (default: now)")
    p.add_argument("--now", type=cli.parse_time, default=None,
                   help="with --deployment: take this as the clock")
    p.add_argument("--format", choices=("html", "png"), default="html")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default: report.html/.png in the backtest directory, "
                        "or report-DEPLOYMENT.html/.png here)")
    p.set_defaults(handler=cmd_report)


def _backtest(ctx: cli.Context, directory: Path) -> ReportData:
    pricing = None
    try:
        import json

        name = json.loads((directory / "summary.json").read_text(encoding="utf-8")).get(
            "deployment")
        pricing = ctx.config.deployment(str(name)).pricing
    except (OSError, ValueError, ConfigError):
        pricing = None  # the contract's default discounts weigh the ladder's terms
    return from_backtest(directory, pricing)


def _live(ctx: cli.Context) -> ReportData:
    name = ctx.args.deployment
    now = ctx.args.now or cli.utc_now()
    until = ctx.args.until or now
    since = ctx.args.since or until - dt.timedelta(days=7)
    if since >= until:
        raise cli.CommandError("--since must be before --until", cli.EXIT_USAGE)
    bound = None
    # A deployment since removed from the config still has its history.
    with contextlib.suppress(ConfigError):
        bound = ctx.config.deployment(name).max_spill_fraction
    with cli.connected(ctx, sync=False) as engine, engine.connect() as conn:
        ids = deployment_store.deployment_ids(conn, [name])
        if name not in ids:
            raise cli.CommandError(f"unknown deployment {name!r} (not in the database)",
                                   cli.EXIT_USAGE)
        return from_store(conn, ids[name], name, since, until, now=now,
                          max_spill_fraction=bound)


def cmd_report(ctx: cli.Context) -> int:
    args = ctx.args
    if (args.backtest_dir is None) == (args.deployment is None):
        raise cli.CommandError("give a backtest directory or --deployment (one of them)",
                               cli.EXIT_USAGE)
    try:
        data = _backtest(ctx, args.backtest_dir) if args.backtest_dir else _live(ctx)
    except ReportInputError as exc:
        raise cli.CommandError(str(exc), cli.EXIT_USAGE) from exc
    suffix = "." + args.format
    out = args.out or (args.backtest_dir / f"report{suffix}" if args.backtest_dir
                       else Path(f"report-{args.deployment}{suffix}"))
    # matplotlib takes ~0.4 s to import: only the command that draws pays for it.
    from scheduler.report import render

    if args.format == "png":
        render.png(data, out)
    else:
        render.html(data, out)
    print(render.summary_line(data))
    print(f"wrote {out}")
    return cli.EXIT_OK


cli.EXTENSIONS.append(add_commands)

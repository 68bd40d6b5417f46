"""The ``capsched`` command line.

Global options are mirrored by environment variables (shown in ``--help``); the config
file supplies everything else. Exit codes:

* 0 success
* 1 the command failed (bad input, provider or database error during the work)
* 2 usage or configuration error
* 3 the database schema is outdated (the message names the upgrade command)
* 4 the database cannot be reached or started
* 75 another instance holds the lock (EX_TEMPFAIL: cron may simply try again later)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
import structlog

from scheduler import __version__
from scheduler import database as db
from scheduler.config import Config, ConfigError, load_config
from scheduler.ingest.files import UsageFileError
from scheduler.ingest.write import IngestError, ingest_files
from scheduler.observe.logs import configure_logging
from scheduler.store import deployments as deployment_store
from scheduler.store import retention
from scheduler.store import sources as source_store
from scheduler.store import usage as usage_store

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SCHEMA, EXIT_DATABASE, EXIT_LOCKED = 0, 1, 2, 3, 4, 75

log = structlog.get_logger()


class CommandError(RuntimeError):
    """A failure to report to the user as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Context:
    """What every command gets: the config, and (for database commands) an engine."""

    config: Config
    args: argparse.Namespace


def utc_now() -> dt.datetime:
    """The one place the CLI reads the clock; commands pass the value down."""
    return dt.datetime.now(dt.UTC)


def parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_duration_minutes(text: str) -> int:
    """A positive duration in minutes from ``90``, ``90m``, ``24h`` or ``7d``.

    Raises ``argparse.ArgumentTypeError`` for anything else, zero and negatives included
    (a zero horizon has nothing to forecast or plan)."""
    units = {"m": 1, "h": 60, "d": 1440}
    try:
        minutes = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration like 90m, 24h or 7d: {text!r}") from None
    if minutes <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive: {text!r}")
    return minutes


def _env_default(name: str) -> str | None:
    return os.environ.get(name) or None


#: The options every command takes, before or after the subcommand name.
GLOBAL_OPTIONS = ("--config", "--database-url", "--data-dir", "--log-format", "--log-level")


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The global options; after a subcommand they default to SUPPRESS so that, absent there,
    they do not overwrite what was given before the subcommand (or the environment default)."""

    def default(env: str) -> str | None:
        return argparse.SUPPRESS if after_command else _env_default(env)

    parser.add_argument(
        "--config",
        default=default("CAPSCHED_CONFIG"),
        help="config file [env CAPSCHED_CONFIG; default ./capsched.toml, "
        "then /etc/capsched/capsched.toml]",
    )
    parser.add_argument(
        "--database-url",
        default=default("CAPSCHED_DATABASE_URL"),
        help="PostgreSQL URL; without one capsched runs an embedded server "
        "[env CAPSCHED_DATABASE_URL]",
    )
    parser.add_argument(
        "--data-dir",
        default=default("CAPSCHED_DATABASE_DATA_DIR"),
        help="data directory of the embedded PostgreSQL [env "
        "CAPSCHED_DATABASE_DATA_DIR; default $XDG_DATA_HOME/capsched/pgdata]",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=default("CAPSCHED_LOG_FORMAT"),
        help="log format [env CAPSCHED_LOG_FORMAT; default auto: JSON unless a terminal]",
    )
    parser.add_argument(
        "--log-level",
        default=default("CAPSCHED_LOG_LEVEL"),
        help="debug, info, warning or error [env CAPSCHED_LOG_LEVEL]",
    )


def _add_global_options_to_subcommands(parser: argparse.ArgumentParser) -> None:
    # `capsched backtest --usage X --config C` (as the README writes it) and
    # `capsched db upgrade --config C` work like `capsched --config C backtest ...` (#10 item 1).
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                known = {o for a in subparser._actions for o in a.option_strings}
                if not known.intersection(GLOBAL_OPTIONS):
                    _add_global_options(subparser, after_command=True)
                _add_global_options_to_subcommands(subparser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capsched",
        description="Elastic capacity scheduler for LLM provisioned throughput.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Every setting of the config file can be overridden by CAPSCHED_<SECTION>_<KEY>\n"
            "(for example CAPSCHED_DATABASE_URL, CAPSCHED_DAEMON_REFIT_MINUTES) and a\n"
            "deployment's by CAPSCHED_DEPLOYMENT__<NAME>__<KEY>. See the README."
        ),
    )
    parser.add_argument("--version", action="version", version=f"capsched {__version__}")
    _add_global_options(parser, after_command=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_db = sub.add_parser("db", help="database schema: upgrade, status, downgrade")
    db_sub = p_db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply all migrations (creates the schema)").set_defaults(
        handler=cmd_db_upgrade
    )
    db_sub.add_parser("status", help="show the schema revision").set_defaults(handler=cmd_db_status)
    p_down = db_sub.add_parser("downgrade", help="revert migrations to REVISION")
    p_down.add_argument("revision")
    p_down.set_defaults(handler=cmd_db_downgrade)
    p_psql = db_sub.add_parser(
        "psql", help="run psql on the capsched database (the embedded one is started for "
                     "the session); arguments after -- go to psql")
    p_psql.add_argument("psql_args", nargs=argparse.REMAINDER, metavar="PSQL_ARG")
    p_psql.set_defaults(handler=cmd_db_psql)
    p_prune = db_sub.add_parser(
        "prune", help="drop usage months older than retention_days (never a deployment's "
                      "latest history_days + 7 days, as the daemon) and capacity ledger "
                      "months before the previous one")
    p_prune.add_argument("--dry-run", action="store_true",
                         help="list the partitions that would be dropped, drop nothing")
    p_prune.set_defaults(handler=cmd_db_prune)

    p_ingest = sub.add_parser(
        "ingest", help="ingest per-minute usage files (CSV, JSON Lines, .gz, -)"
    )
    p_ingest.add_argument("files", nargs="+", metavar="FILE")
    p_ingest.add_argument(
        "--deployment",
        default=_env_default("CAPSCHED_INGEST_DEPLOYMENT"),
        help="deployment of files without a deployment column [env CAPSCHED_INGEST_DEPLOYMENT]",
    )
    p_ingest.add_argument(
        "--source",
        default=None,
        help="name of the reporting source (gateway); a re-sent (source, minute)"
        " replaces the earlier one [env CAPSCHED_INGEST_DEFAULT_SOURCE]",
    )
    p_ingest.set_defaults(handler=cmd_ingest)

    p_status = sub.add_parser("status", help="usage stored per deployment")
    p_status.add_argument("--format", choices=("table", "json"), default="table")
    p_status.add_argument(
        "--now",
        type=parse_time,
        default=None,
        help="evaluate lag at this time instead of the clock",
    )
    p_status.set_defaults(handler=cmd_status)

    for extension in EXTENSIONS:
        extension(sub)
    _add_global_options_to_subcommands(parser)
    return parser


#: Functions that add further subcommands (forecast, plan, backtest, run...).
EXTENSIONS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        config = apply_flags(config, args)
    except ConfigError as exc:
        print(f"capsched: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log.level, config.log.format)
    handler: Callable[[Context], int] = args.handler
    try:
        return handler(Context(config=config, args=args))
    except CommandError as exc:
        print(f"capsched: {exc}", file=sys.stderr)
        return exc.code
    except (UsageFileError, IngestError, ConfigError) as exc:
        print(f"capsched: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except db.SchemaError as exc:
        print(f"capsched: {exc}", file=sys.stderr)
        return EXIT_SCHEMA
    except db.DatabaseUnavailable as exc:
        print(f"capsched: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except KeyboardInterrupt:
        return 130


def _load_extensions() -> None:
    # Imported here so `capsched ingest` does not pay for statsmodels and APScheduler. Every
    # module of this package but this one adds its subcommands on import (EXTENSIONS), so a new
    # command is a new file: no list here to edit. Sorted, so `--help` lists a stable order.
    import importlib
    import pkgutil

    import scheduler.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name == "main" or info.name.startswith("_"):
            continue
        module = f"{package.__name__}.{info.name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # An optional extra (a vendor SDK) that is not installed hides its commands only.
            if exc.name == module:
                raise
            structlog.get_logger("capsched.cli").debug(
                "cli.extension_unavailable", module=module, missing=exc.name
            )


def apply_flags(config: Config, args: argparse.Namespace) -> Config:
    database = config.database
    if args.database_url:
        database = replace(database, url=args.database_url)
    if args.data_dir:
        database = replace(database, data_dir=args.data_dir)
    log_settings = config.log
    if args.log_format:
        log_settings = replace(log_settings, format=args.log_format)
    if args.log_level:
        log_settings = replace(log_settings, level=args.log_level)
    return replace(config, database=database, log=log_settings)


@contextmanager
def connected(ctx: Context, *, check_schema: bool = True, sync: bool = True) -> Iterator[sa.Engine]:
    """Open the database (embedded if no URL) and check the schema.

    ``sync`` (for commands that write usage, forecasts or plans) inserts the configured
    deployments the table lacks, and changes no existing row; read-only commands pass
    ``sync=False`` and write nothing. Only ``db upgrade``, the daemon and ``capsched
    deployments sync`` update or deactivate deployments (#10 item 4)."""
    with db.open_database(ctx.config.database) as database:
        engine = db.make_engine(
            database.url,
            pool_size=ctx.config.database.pool_size,
            connect_timeout=ctx.config.database.connect_timeout_seconds,
        )
        try:
            if check_schema:
                db.require_current_schema(engine)
                if sync:
                    with engine.begin() as conn:
                        deployment_store.register_missing(conn, ctx.config.deployments)
            yield engine
        except sa.exc.OperationalError as exc:
            raise db.DatabaseUnavailable(f"database error: {exc.orig}") from exc
        finally:
            engine.dispose()


def cmd_db_upgrade(ctx: Context) -> int:
    with db.open_database(ctx.config.database) as database:
        before = _revision_or_unavailable(database.url)
        db.upgrade(database.url)
        engine = db.make_engine(database.url)
        try:
            with engine.begin() as conn:
                deployment_store.sync_deployments(conn, ctx.config.deployments)
        finally:
            engine.dispose()
    log.info("db.upgrade", from_revision=before, to_revision=db.head_revision())
    return EXIT_OK


def _revision_or_unavailable(url: str) -> str | None:
    engine = db.make_engine(url)
    try:
        return db.current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise db.DatabaseUnavailable(f"cannot connect to the database: {exc.orig}") from exc
    finally:
        engine.dispose()


def cmd_db_status(ctx: Context) -> int:
    with db.open_database(ctx.config.database) as database:
        current = _revision_or_unavailable(database.url)
    head = db.head_revision()
    state = ("up to date" if current == head
             else "unknown to this capsched (migrated by a newer one?)"
             if current is not None and not db.known_revision(current)
             else f"outdated: run `{db.UPGRADE_COMMAND}`")
    print(f"schema revision: {current or 'none'} (head {head}): {state}")
    return EXIT_OK if current == head else EXIT_SCHEMA


def cmd_db_downgrade(ctx: Context) -> int:
    with db.open_database(ctx.config.database) as database:
        db.downgrade(database.url, ctx.args.revision)
    return EXIT_OK


def _psql_binary() -> str:
    # The pgserver wheel ships psql next to its server: no client install needed.
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        bundled = POSTGRES_BIN_PATH / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:  # pragma: no cover - pgserver is a hard dependency
        pass
    found = shutil.which("psql")
    if found is None:
        raise CommandError("no psql found (neither pgserver's nor on PATH)")
    return found


def cmd_db_psql(ctx: Context) -> int:
    """psql on the database: the one way to reach the embedded server, which runs only while
    a capsched process uses it (its socket lives in a private directory)."""
    args = list(ctx.args.psql_args)
    if args[:1] == ["--"]:
        args = args[1:]
    with db.open_database(ctx.config.database) as database:
        return subprocess.run([_psql_binary(), db.libpq_url(database.url), *args],
                              check=False).returncode


def cmd_db_prune(ctx: Context) -> int:
    now = utc_now()
    days = ctx.config.database.retention_days
    # The same margin as the daemon's hourly pass: never usage the next refit still reads.
    keep = ctx.config.daemon.history_days + 7
    if ctx.args.dry_run:
        with connected(ctx, sync=False) as engine, engine.connect() as conn:
            plan = retention.plan_prune(conn, now, days, keep_days=keep)
        print(f"usage before {plan.usage_cutoff:%Y-%m-%dT%H:%MZ}, capacity ledger before "
              f"{plan.ledger_cutoff:%Y-%m-%d}: "
              + (f"would drop {', '.join(plan.partitions)}" if plan.partitions
                 else "nothing to drop"))
        return EXIT_OK
    with connected(ctx, sync=False) as engine, engine.begin() as conn:
        dropped = retention.prune(conn, now, days, keep_days=keep)
    print(f"dropped {', '.join(dropped)}" if dropped else "nothing to drop")
    return EXIT_OK


def cmd_ingest(ctx: Context) -> int:
    source = ctx.args.source or ctx.config.ingest.default_source
    with connected(ctx) as engine:
        # All files or none (#10 item 6): every file is checked before any is written.
        for result in ingest_files(
            engine, ctx.args.files, deployment=ctx.args.deployment, source=source,
            limits=ctx.config.ingest, now=utc_now(),
        ):
            log.info(
                "ingest.file",
                file=result.file,
                rows=result.rows,
                batch=result.batch_id,
                deployments=list(result.deployments),
                first_minute=result.first_minute,
                last_minute=result.last_minute,
                source=source,
            )
    return EXIT_OK


def _fmt_time(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def cmd_status(ctx: Context) -> int:
    now = ctx.args.now or utc_now()
    with connected(ctx, sync=False) as engine, engine.connect() as conn:
        statuses = usage_store.usage_status(conn)
        pulls = source_store.states_by_deployment(conn)
    records = []
    for s in statuses:
        lag = None if s.last_minute is None else (now - s.last_minute).total_seconds() / 60 - 1
        records.append(
            {
                "deployment": s.name,
                "minutes_stored": s.minutes_stored,
                "first_minute": _fmt_time(s.first_minute),
                "last_minute": _fmt_time(s.last_minute),
                "ingest_lag_minutes": None if lag is None else round(max(lag, 0.0), 1),
                "last_batch_at": _fmt_time(s.last_batch_at),
                "last_batch_file": s.last_batch_file,
                # Pull sources ([[deployment.source]]): where each one stands, so that a
                # stale or failing feed is visible without SQL.
                "pull_sources": [
                    {
                        "source": p.source,
                        "kind": p.kind,
                        "high_water": _fmt_time(p.high_water),
                        "last_success_at": _fmt_time(p.last_success_at),
                        "failures": p.failures,
                        "stale": p.stale,
                        "last_error": p.last_error,
                    }
                    for p in pulls.get(s.name, [])
                ],
            }
        )
    if ctx.args.format == "json":
        print(json.dumps(records, indent=2))
    elif not records:
        print("no deployments configured")
    else:
        print(
            format_table(
                ["DEPLOYMENT", "MINUTES", "FIRST", "LAST", "LAG(min)", "LAST BATCH", "FILE"],
                [
                    [
                        r["deployment"],
                        r["minutes_stored"],
                        r["first_minute"],
                        r["last_minute"],
                        "-" if r["ingest_lag_minutes"] is None else r["ingest_lag_minutes"],
                        r["last_batch_at"],
                        r["last_batch_file"] or "-",
                    ]
                    for r in records
                ],
            )
        )
        shown = {s.name for s in statuses}
        sources = [(name, p) for name, ps in pulls.items() if name in shown for p in ps]
        if sources:
            print()
            print(format_table(
                ["DEPLOYMENT", "SOURCE", "KIND", "READ UP TO", "LAST SUCCESS", "FAILURES",
                 "STALE", "LAST ERROR"],
                [[name, p.source, p.kind, _fmt_time(p.high_water), _fmt_time(p.last_success_at),
                  p.failures, "yes" if p.stale else "no", (p.last_error or "-")[:60]]
                 for name, p in sources],
            ))
    return EXIT_OK


if __name__ == "__main__":
    # Run as a script this module is __main__; the subcommand modules register on the
    # imported scheduler.cli.main, so dispatch through that one.
    from scheduler.cli import main as _cli

    sys.exit(_cli.main())

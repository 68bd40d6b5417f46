"""``capsched deployments list`` and ``capsched deployments sync``.

The ``deployment`` table mirrors the config of the daemon. Only ``db upgrade``, the daemon
and ``deployments sync`` update or deactivate its rows (#10 item 4): a read-only command run
with a partial config must not make the running daemon's deployments vanish from
``current_plan`` and ``cost_summary``.
"""

from __future__ import annotations

from typing import Any

from scheduler.cli import main as cli
from scheduler.store import deployments as deployment_store


def add_commands(sub: Any) -> None:
    p = sub.add_parser("deployments", help="the deployment table: list, sync with the config")
    actions = p.add_subparsers(dest="deployments_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="deployments in the database (reads only)")
    listing.add_argument("--all", action="store_true", help="include inactive deployments")
    listing.set_defaults(handler=cmd_list)
    sync = actions.add_parser(
        "sync",
        help="make the table match the config: add, update, reactivate, and deactivate "
        "deployments the config no longer lists",
    )
    sync.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    sync.set_defaults(handler=cmd_sync)


def cmd_list(ctx: cli.Context) -> int:
    with cli.connected(ctx, sync=False) as engine, engine.connect() as conn:
        rows = deployment_store.list_deployments(conn, active_only=not ctx.args.all)
    print(
        cli.format_table(
            ["ID", "DEPLOYMENT", "PROVIDER", "ACTIVE"],
            [[r.id, r.name, r.provider, "yes" if r.active else "no"] for r in rows],
        )
    )
    return cli.EXIT_OK


def cmd_sync(ctx: cli.Context) -> int:
    deployments = ctx.config.deployments
    with cli.connected(ctx, sync=False) as engine, engine.begin() as conn:
        changes = deployment_store.sync_changes(conn, deployments)
        if not ctx.args.dry_run and not changes.empty:
            deployment_store.sync_deployments(conn, deployments)
    verb = "would" if ctx.args.dry_run else "did"
    if changes.empty:
        print("deployment table matches the config: nothing to change")
    for label, names in (
        ("add", changes.added),
        ("update", changes.updated),
        ("reactivate", changes.reactivated),
        ("deactivate", changes.deactivated),
    ):
        if names:
            print(f"{verb} {label}: {', '.join(names)}")
    return cli.EXIT_OK


cli.EXTENSIONS.append(add_commands)

"""``capsched providers check``: credentials, permissions and deployments, changing nothing.

For each configured deployment (or ``--deployment``), build its provider from the config and
run the adapter's read-only ``check`` (the cloud adapters: credentials, the deployment or
model, the permissions the API lets one read), else read its holdings and limits. One line
per deployment, ``ok`` or ``FAIL`` with what to do; exit 0 when every check passed, 1
otherwise. Never a traceback, never a write: no action is sent, nothing is journalled.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from scheduler.cli import main as cli
from scheduler.config import Deployment
from scheduler.providers.base import Provider
from scheduler.providers.errors import (
    AuthenticationError,
    PermissionDeniedError,
    ProviderConfigError,
    ProviderError,
)
from scheduler.providers.registry import create_provider


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "providers", help="`providers check`: validate provider credentials, permissions and "
                          "deployments without changing anything")
    p.add_argument("action", choices=("check",))
    p.add_argument("--deployment", help="only this deployment (default: all)")
    p.set_defaults(handler=cmd_providers)


def _hint(error: ProviderError) -> str:
    if isinstance(error, PermissionDeniedError):
        return (f"missing permission {error.permission or '(not named by the provider)'}: "
                f"grant it (docs/iam/)")
    if isinstance(error, AuthenticationError):
        return "credentials missing or rejected"
    return type(error).__name__


def _check_one(provider: Provider, deployment: Deployment) -> list[str]:
    check = getattr(provider, "check", None)
    if callable(check):
        return [str(line) for line in check(deployment.name)]
    held = provider.holdings(deployment.name)
    limits = provider.limits(deployment.name)
    return [f"holds {held.elastic_target} elastic and {held.committed_at(held.as_of)} "
            f"committed unit(s); max_units {limits.max_units}, terms sold "
            f"{list(limits.supported_terms) or 'none'}"]


def cmd_providers(ctx: cli.Context) -> int:
    with contextlib.ExitStack() as stack:
        return _check_all(ctx, stack)


def _check_all(ctx: cli.Context, stack: contextlib.ExitStack) -> int:
    config = ctx.config
    deployments = config.deployments
    if ctx.args.deployment:
        deployments = (config.deployment(ctx.args.deployment),)
    if not deployments:
        raise cli.CommandError("no deployments configured", cli.EXIT_USAGE)
    built: dict[str, Provider | str] = {}
    engine = None
    failed = 0
    for deployment in deployments:
        name = deployment.provider
        if name not in built:
            settings = config.providers.get(name, {})
            try:
                try:
                    built[name] = create_provider(
                        name, settings, timeout=config.daemon.provider_timeout_seconds)
                except ProviderConfigError as exc:
                    if "engine" not in str(exc):
                        raise
                    # A provider whose books are in capsched's database (simulated): read it.
                    if engine is None:
                        engine = stack.enter_context(cli.connected(ctx, sync=False))
                    built[name] = create_provider(
                        name, settings, engine=engine,
                        timeout=config.daemon.provider_timeout_seconds)
            except ProviderConfigError as exc:
                built[name] = f"provider configuration: {exc}"
        provider = built[name]
        label = f"{deployment.name} (provider {name}, mode {deployment.mode})"
        if isinstance(provider, str):
            print(f"FAIL {label}: {provider}")
            failed += 1
            continue
        try:
            lines = _check_one(provider, deployment)
        except ProviderError as exc:
            print(f"FAIL {label}: {_hint(exc)}: {exc}")
            failed += 1
            continue
        except Exception as exc:  # an adapter bug must still not print a traceback
            print(f"FAIL {label}: unexpected {type(exc).__name__}: {exc}")
            failed += 1
            continue
        print(f"ok   {label}: {'; '.join(lines)}")
    for provider in built.values():
        if isinstance(provider, Provider):
            provider.close()
    if failed:
        print(f"capsched: {failed} of {len(deployments)} deployment check(s) failed",
              file=sys.stderr)
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


cli.EXTENSIONS.append(add_commands)

"""Shared by the pull-source tests: a config with one source, reading stored minutes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from scheduler.config import Config, Deployment, PullSource, parse_config
from scheduler.store import deployments as deployment_store


def source_config(source: dict[str, Any], name: str = "bot") -> Config:
    return parse_config({"deployment": [{
        "name": name, "provider": "simulated", "unit_tpm": 2500,
        "pricing": {"elastic_unit_hour": 38.0}, "source": [source],
    }]})


def synced(engine: sa.Engine, config: Config) -> tuple[Deployment, PullSource]:
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, config.deployments)
    deployment = config.deployments[0]
    return deployment, deployment.source[0]


def stored(engine: sa.Engine, source: str | None = None
           ) -> dict[dt.datetime, tuple[int, int, int]]:
    """minute -> (input, output, requests) of the ``usage`` view, one source or all."""
    query = ("SELECT minute, input_tokens, output_tokens, requests FROM usage "
             + ("WHERE source = :s " if source else "") + "ORDER BY minute")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(query), {"s": source}).all()
    return {m: (int(a), int(b), int(c)) for m, a, b, c in rows}


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]

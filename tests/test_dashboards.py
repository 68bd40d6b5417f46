"""The Grafana dashboard (dashboards/capsched.json, #13) cannot drift from the schema or
the metrics: every panel's and variable's SQL runs, as ``capsched_reader``, against a
migrated test database holding a rolled-up day, and every Prometheus expression names a
series the daemon's registry declares."""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.config import parse_config
from scheduler.observe.metrics import Metrics
from scheduler.store import costs, ledger
from scheduler.store import deployments as deployment_store
from tests.daemon_support import CONFIG

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "capsched.json"
FROM = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TO = dt.datetime(2026, 3, 8, tzinfo=dt.UTC)


def _walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _walk(p.get("panels", []))


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _sql_queries() -> list[tuple[str, str]]:
    d = _dashboard()
    out = [(f"panel {p['id']} {p['title']!r} target {t['refId']}", t["rawSql"])
           for p in _walk(d["panels"]) for t in p.get("targets", []) if "rawSql" in t]
    out += [(f"variable {v['name']}", v["query"]) for v in d["templating"]["list"]
            if v["datasource"]["type"] == "grafana-postgresql-datasource"]
    return out


def grafana_expand(sql: str, deployments: list[str]) -> str:
    """What Grafana's PostgreSQL data source sends: its macros and the multi-value
    ``$deployment`` (quoted, comma-separated) expanded."""
    span = f"'{FROM.isoformat()}'::timestamptz AND '{TO.isoformat()}'::timestamptz"
    sql = re.sub(r"\$__timeFilter\(((?:[^()]|\([^()]*\))*)\)", rf"\1 BETWEEN {span}", sql)
    sql = sql.replace("$__timeFrom()", f"'{FROM.isoformat()}'")
    sql = sql.replace("$__timeTo()", f"'{TO.isoformat()}'")
    sql = sql.replace("$deployment", ", ".join(f"'{d}'" for d in deployments))
    assert "$" not in sql, f"an unexpanded Grafana variable or macro: {sql}"
    return sql


@pytest.fixture
def seeded(engine: sa.Engine) -> sa.Engine:
    """One deployment with a day of ledger minutes, usage, a commitment and its roll-up."""
    from scheduler.ingest.files import write_usage_csv
    from scheduler.ingest.write import ingest_files

    with engine.begin() as conn:
        ids = deployment_store.sync_deployments(
            conn, parse_config(tomllib.loads(CONFIG)).deployments)
    day = FROM + dt.timedelta(days=2)
    minutes = [day + dt.timedelta(minutes=i) for i in range(1440)]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "usage.csv"
        with path.open("w") as handle:
            write_usage_csv(((t, 3750 if 8 <= t.hour < 18 else 1249, 1250, 10)
                             for t in minutes), handle)
        ingest_files(engine, [str(path)], deployment="bot", source="gw")
    with engine.begin() as conn:
        ledger.record_capacity(conn, [ledger.CapacityRecord(ids["bot"], t, 1, 1)
                                      for t in minutes])
        costs.record_commitments(conn, {ids["bot"]: [("c1", 1, 30, day, day + dt.timedelta(
            days=30))]})
        assert costs.roll_up(conn, [ids["bot"]], TO) == 1
    return engine


@pytest.mark.parametrize("where,sql", _sql_queries(), ids=lambda v: str(v)[:60])
def test_every_dashboard_query_runs_against_the_schema(seeded: sa.Engine, where: str,
                                                       sql: str) -> None:
    with seeded.connect() as conn:
        # As Grafana's data source should connect: the read-only role of migration 0008.
        conn.execute(sa.text("SET ROLE capsched_reader"))
        rows = conn.execute(sa.text(grafana_expand(sql, ["bot"]))).all()
    # Panels over the seeded views show it (the others may well be empty).
    if re.search(r"\b(cost_month|cost_daily|capacity_demand_minute|service_level_month)\b",
                 sql):
        assert rows, f"{where}: no rows from a seeded database"


def test_cost_panels_print_the_rolled_up_dollars(seeded: sa.Engine) -> None:
    cost = next(t["rawSql"] for p in _walk(_dashboard()["panels"])
                for t in p.get("targets", []) if "FROM cost_month" in t.get("rawSql", ""))
    with seeded.connect() as conn:
        row = conn.execute(sa.text(grafana_expand(cost, ["bot"]))).mappings().one()
        month = conn.execute(sa.text("SELECT * FROM cost_month")).mappings().one()
    assert row["total"] == month["total_cost"] > 0
    # One committed and one elastic unit all day at $38.0264/h, the commitment at 30 days.
    assert round(row["committed"], 2) == round(24 * 38.0264 * 0.70, 2)
    assert round(row["elastic"], 2) == round(24 * 38.0264, 2)


def test_every_prometheus_expression_names_a_declared_series() -> None:
    declared = set()
    for family in Metrics().registry.collect():
        declared |= {family.name, f"{family.name}_total", f"{family.name}_bucket",
                     f"{family.name}_count", f"{family.name}_sum"}
    d = _dashboard()
    exprs = [t["expr"] for p in _walk(d["panels"]) for t in p.get("targets", []) if "expr" in t]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\bcapsched_[a-z_]+", expr))
        assert names and names <= declared, (expr, names - declared)


def test_data_sources_are_the_declared_inputs() -> None:
    d = _dashboard()
    inputs = {f"${{{i['name']}}}" for i in d["__inputs"]}
    for p in _walk(d["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in inputs, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == p["datasource"]["uid"], p["title"]

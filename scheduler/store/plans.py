"""Plans: one row per planning run of one deployment, with run-length-encoded intervals.

Users query them through the views created by migration 0003: ``current_plan``,
``current_plan_interval``, ``next_actions`` and ``cost_summary`` (see the README).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.store.metadata import metadata

PLAN_MODES = ("live", "dry_run")

plan_table = sa.Table(
    "plan",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("deployment_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
              server_default=sa.func.now()),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("horizon_minutes", sa.Integer, nullable=False),
    sa.Column("forecast_run_id", sa.BigInteger, nullable=True),
    sa.Column("expected_committed_cost", sa.Float, nullable=False),
    sa.Column("expected_elastic_cost", sa.Float, nullable=False),
    sa.Column("expected_spill_cost", sa.Float, nullable=False),
    sa.Column("expected_total_cost", sa.Float, nullable=False),
    sa.Column("dedicated_cost", sa.Float, nullable=False),
    sa.Column("payg_cost", sa.Float, nullable=False),
    sa.Column("expected_spill_fraction", sa.Float, nullable=False),
    sa.Column("payg_cheaper_than_unit", sa.Boolean, nullable=False),
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reasons", pg.JSONB, nullable=False),
    sa.Column("commitments", pg.JSONB, nullable=False),
    sa.Column("actions", pg.JSONB, nullable=False),
    sa.CheckConstraint("mode IN ('live', 'dry_run')", name="mode"),
    sa.Index("ix_plan_deployment_as_of", "deployment_id", "as_of"),
)

plan_interval_table = sa.Table(
    "plan_interval",
    metadata,
    sa.Column("plan_id", sa.BigInteger, sa.ForeignKey("plan.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("committed_units", sa.Integer, nullable=False),
    sa.Column("elastic_target", sa.Integer, nullable=False),
    sa.Column("demand_quantiles", pg.JSONB, nullable=False),
    sa.Column("expected_spill_units", sa.Float, nullable=False),
    sa.PrimaryKeyConstraint("plan_id", "start"),
)


@dataclass(frozen=True)
class IntervalRecord:
    start: dt.datetime
    end: dt.datetime
    committed_units: int
    elastic_target: int
    #: quantile level (as text, e.g. "0.9") -> the largest demand in the interval
    demand_quantiles: Mapping[str, float]
    expected_spill_units: float


@dataclass(frozen=True)
class PlanRecord:
    deployment_id: int
    as_of: dt.datetime
    mode: str
    horizon_minutes: int
    forecast_run_id: int | None
    expected_committed_cost: float
    expected_elastic_cost: float
    expected_spill_cost: float
    dedicated_cost: float
    payg_cost: float
    expected_spill_fraction: float
    payg_cheaper_than_unit: bool
    held: bool
    reasons: Sequence[Mapping[str, Any]]
    commitments: Sequence[Mapping[str, Any]]
    actions: Sequence[Mapping[str, Any]]
    intervals: Sequence[IntervalRecord]

    @property
    def expected_total_cost(self) -> float:
        return self.expected_committed_cost + self.expected_elastic_cost + self.expected_spill_cost


def insert_plan(conn: sa.Connection, record: PlanRecord) -> int:
    (plan_id,) = insert_plans(conn, [record])
    return plan_id


def insert_plans(conn: sa.Connection, records: Sequence[PlanRecord]) -> list[int]:
    """Insert plans and their intervals in two statements; ids in the order given."""
    if not records:
        return []
    for record in records:
        if record.mode not in PLAN_MODES:
            raise ValueError(f"plan mode must be one of {PLAN_MODES}, got {record.mode!r}")
    t = plan_table
    ids = [int(i) for i in conn.execute(
        t.insert().returning(t.c.id, sort_by_parameter_order=True),
        [_plan_row(r) for r in records]).scalars()]
    intervals = [
        {"plan_id": plan_id, "start": i.start, "end": i.end,
         "committed_units": i.committed_units, "elastic_target": i.elastic_target,
         "demand_quantiles": dict(i.demand_quantiles),
         "expected_spill_units": i.expected_spill_units}
        for plan_id, record in zip(ids, records, strict=True) for i in record.intervals
    ]
    if intervals:
        conn.execute(plan_interval_table.insert(), intervals)
    return ids


def _plan_row(record: PlanRecord) -> dict[str, Any]:
    return {
        "deployment_id": record.deployment_id, "as_of": record.as_of, "mode": record.mode,
        "horizon_minutes": record.horizon_minutes, "forecast_run_id": record.forecast_run_id,
        "expected_committed_cost": record.expected_committed_cost,
        "expected_elastic_cost": record.expected_elastic_cost,
        "expected_spill_cost": record.expected_spill_cost,
        "expected_total_cost": record.expected_total_cost,
        "dedicated_cost": record.dedicated_cost, "payg_cost": record.payg_cost,
        "expected_spill_fraction": record.expected_spill_fraction,
        "payg_cheaper_than_unit": record.payg_cheaper_than_unit, "held": record.held,
        "reasons": list(record.reasons), "commitments": list(record.commitments),
        "actions": list(record.actions),
    }

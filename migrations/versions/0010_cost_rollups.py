"""Realised cost (#13): the commitments each deployment held (``capacity_commitment``), the
daily cost roll-up by tier (``cost_day``) and its calendar-month view (``cost_month``).

* ``capacity_commitment``: every commitment the provider reported at a tick (id, units,
  term, ``[start, end)``), so the ledger's committed units can be priced at their term's
  discount (docs/economics.md: ``k * elastic_unit_hour * (1 - discount_T) / 60`` a minute).
* ``cost_day``: per deployment and UTC day, over the minutes the capacity ledger holds,
  the dollars by tier (committed, elastic, spill) and the baselines' inputs (pay-as-you-go
  dollars of the same minutes, the peak demand in units and the dedicated price), kept
  like ``service_level_day`` by ``scheduler/store/costs.py`` so that a year of them
  outlives the raw ledger minutes (pruned after two months).
* ``cost_month``: ``cost_day`` summed per UTC calendar month; dedicated at peak is
  ``ceil(max demand_units) x dedicated_unit_month x minutes / 43,200``.
* Views for SQL readers and the Grafana dashboard (``dashboards/``), granted to
  ``capsched_reader`` (migration 0008) with ``cost_month``: ``cost_daily`` (``cost_day``
  with the deployment's name, total and dedicated at the day's peak),
  ``capacity_demand_minute`` (the ledger with the usage of the same minutes, in units) and
  ``recent_alerts`` (drift events and failed actions).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "capacity_commitment",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("commitment_id", sa.Text, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("term_days", sa.Integer, nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "commitment_id",
                                name="pk_capacity_commitment"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"],
            name="fk_capacity_commitment_deployment_id_deployment",
        ),
    )
    op.create_table(
        "cost_day",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        # Minutes with a ledger row (billed) and those of them with a usage value (covered).
        sa.Column("minutes_billed", sa.Integer, nullable=False),
        sa.Column("minutes_covered", sa.Integer, nullable=False),
        sa.Column("committed_cost", sa.Float, nullable=False),
        sa.Column("elastic_cost", sa.Float, nullable=False),
        sa.Column("spill_cost", sa.Float, nullable=False),
        sa.Column("payg_cost", sa.Float, nullable=False),
        sa.Column("demand_unit_minutes", sa.Float, nullable=False),
        sa.Column("spill_unit_minutes", sa.Float, nullable=False),
        sa.Column("peak_demand_units", sa.Float, nullable=False),
        sa.Column("committed_unit_minutes", sa.BigInteger, nullable=False),
        sa.Column("elastic_unit_minutes", sa.BigInteger, nullable=False),
        sa.Column("dedicated_unit_month", sa.Float, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "day", name="pk_cost_day"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"],
            name="fk_cost_day_deployment_id_deployment",
        ),
    )
    op.execute(
        "CREATE VIEW cost_month AS "
        "SELECT d.id AS deployment_id, d.name AS deployment, "
        "date_trunc('month', r.day::timestamp) AS month, "
        "sum(r.minutes_billed)::int AS minutes_billed, "
        "sum(r.minutes_covered)::int AS minutes_covered, "
        "sum(r.committed_cost)::float8 AS committed_cost, "
        "sum(r.elastic_cost)::float8 AS elastic_cost, "
        "sum(r.spill_cost)::float8 AS spill_cost, "
        "(sum(r.committed_cost) + sum(r.elastic_cost) + sum(r.spill_cost))::float8 AS total_cost, "
        "sum(r.payg_cost)::float8 AS payg_cost, "
        "(ceil(max(r.peak_demand_units)) * max(r.dedicated_unit_month) "
        "* sum(r.minutes_billed) / 43200.0)::float8 AS dedicated_cost, "
        "sum(r.demand_unit_minutes)::float8 AS demand_unit_minutes, "
        "sum(r.spill_unit_minutes)::float8 AS spill_unit_minutes, "
        "CASE WHEN sum(r.demand_unit_minutes) > 0 THEN "
        "(sum(r.spill_unit_minutes) / sum(r.demand_unit_minutes))::float8 END AS spill_fraction, "
        "(d.settings ->> 'max_spill_fraction')::float8 AS max_spill_fraction "
        "FROM cost_day r JOIN deployment d ON d.id = r.deployment_id "
        "GROUP BY d.id, date_trunc('month', r.day::timestamp)"
    )
    op.execute(
        "CREATE VIEW cost_daily AS "
        "SELECT d.name AS deployment, r.*, "
        "(r.committed_cost + r.elastic_cost + r.spill_cost)::float8 AS total_cost, "
        "(ceil(r.peak_demand_units) * r.dedicated_unit_month * r.minutes_billed / 43200.0)"
        "::float8 AS dedicated_cost "
        "FROM cost_day r JOIN deployment d ON d.id = r.deployment_id"
    )
    op.execute(
        "CREATE VIEW capacity_demand_minute AS "
        "SELECT d.name AS deployment, c.deployment_id, c.minute, c.committed_units, "
        "c.elastic_units, u.demand_units, "
        "greatest(0, u.demand_units - (c.committed_units + c.elastic_units)) AS spill_units "
        "FROM capacity_minute c JOIN deployment d ON d.id = c.deployment_id "
        "LEFT JOIN usage_minute u ON u.deployment_id = c.deployment_id AND u.minute = c.minute"
    )
    op.execute(
        "CREATE VIEW recent_alerts AS "
        "SELECT e.observed_at AS at, d.name AS deployment, 'drift: ' || e.kind AS alert, "
        "e.expected::text AS expected, e.actual::text AS actual "
        "FROM drift_event e JOIN deployment d ON d.id = e.deployment_id "
        "UNION ALL "
        "SELECT a.decided_at, d.name, "
        "'failed ' || a.kind || coalesce(' (' || a.error_class || ')', ''), "
        "a.target_units::text, a.last_error "
        "FROM action a JOIN deployment d ON d.id = a.deployment_id WHERE a.state = 'failed'"
    )
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'capsched_reader') "
        "THEN GRANT SELECT ON cost_month, cost_daily, capacity_demand_minute, recent_alerts "
        "TO capsched_reader; END IF; END $$;"
    )


def downgrade() -> None:
    op.execute("DROP VIEW recent_alerts")
    op.execute("DROP VIEW capacity_demand_minute")
    op.execute("DROP VIEW cost_daily")
    op.execute("DROP VIEW cost_month")
    op.drop_table("cost_day")
    op.drop_table("capacity_commitment")

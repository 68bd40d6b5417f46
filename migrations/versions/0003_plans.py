"""Plans, run-length-encoded plan intervals, and the views users query.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plan",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_plan"),
        sa.CheckConstraint("mode IN ('live', 'dry_run')", name="ck_plan_mode"),
    )
    op.create_index("ix_plan_deployment_as_of", "plan", ["deployment_id", "as_of"])
    op.create_table(
        "plan_interval",
        sa.Column("plan_id", sa.BigInteger, nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_units", sa.Integer, nullable=False),
        sa.Column("elastic_target", sa.Integer, nullable=False),
        sa.Column("demand_quantiles", pg.JSONB, nullable=False),
        sa.Column("expected_spill_units", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("plan_id", "start", name="pk_plan_interval"),
        sa.ForeignKeyConstraint(["plan_id"], ["plan.id"], ondelete="CASCADE",
                                name="fk_plan_interval_plan_id_plan"),
    )
    # The plan in force per deployment: the latest live plan, else the latest dry run.
    op.execute(
        "CREATE VIEW current_plan AS "
        "SELECT DISTINCT ON (p.deployment_id) d.name AS deployment, p.* "
        "FROM plan p JOIN deployment d ON d.id = p.deployment_id WHERE d.active "
        "ORDER BY p.deployment_id, (p.mode = 'live') DESC, p.as_of DESC, p.id DESC"
    )
    op.execute(
        "CREATE VIEW current_plan_interval AS "
        "SELECT c.deployment, c.mode, i.* FROM current_plan c "
        "JOIN plan_interval i ON i.plan_id = c.id"
    )
    # Every planned change of capacity still ahead in the current plans.
    op.execute(
        "CREATE VIEW next_actions AS "
        "SELECT deployment, mode, plan_id, start AS effective_at, "
        "previous_capacity, committed_units + elastic_target AS capacity, "
        "committed_units, elastic_target, "
        "CASE WHEN committed_units + elastic_target > previous_capacity THEN 'scale_up' "
        "ELSE 'scale_down' END AS change "
        "FROM (SELECT i.*, c.as_of, lag(i.committed_units + i.elastic_target) "
        "OVER (PARTITION BY i.plan_id ORDER BY i.start) AS previous_capacity "
        "FROM current_plan_interval i JOIN current_plan c ON c.id = i.plan_id) x "
        "WHERE previous_capacity IS DISTINCT FROM committed_units + elastic_target "
        "AND previous_capacity IS NOT NULL AND start >= as_of "
        "UNION ALL "
        "SELECT c.deployment, c.mode, c.id, (a ->> 'start')::timestamptz, NULL, NULL, "
        "(a ->> 'units')::int, NULL, 'commit_' || (a ->> 'term_days') || 'd' "
        "FROM current_plan c CROSS JOIN LATERAL jsonb_array_elements(c.commitments) a"
    )
    op.execute(
        "CREATE VIEW cost_summary AS "
        "SELECT deployment, mode, as_of, horizon_minutes, expected_committed_cost, "
        "expected_elastic_cost, expected_spill_cost, expected_total_cost, dedicated_cost, "
        "payg_cost, expected_spill_fraction, "
        "dedicated_cost - expected_total_cost AS savings_vs_dedicated, "
        "payg_cost - expected_total_cost AS savings_vs_payg, "
        "CASE WHEN dedicated_cost > 0 THEN 1 - expected_total_cost / dedicated_cost END "
        "AS savings_fraction_vs_dedicated, payg_cheaper_than_unit "
        "FROM current_plan"
    )


def downgrade() -> None:
    op.execute("DROP VIEW cost_summary")
    op.execute("DROP VIEW next_actions")
    op.execute("DROP VIEW current_plan_interval")
    op.execute("DROP VIEW current_plan")
    op.drop_table("plan_interval")
    op.drop_index("ix_plan_deployment_as_of", table_name="plan")
    op.drop_table("plan")

"""Forecast runs (arrays per run) and the per-minute forecast_point view.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forecast_run",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("parameters", pg.JSONB, nullable=False),
        sa.Column("data_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("minutes_observed", sa.Integer, nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_minutes", sa.Integer, nullable=False),
        sa.Column("horizon", sa.Integer, nullable=False),
        sa.Column("quantile_levels", pg.ARRAY(sa.Float), nullable=False),
        sa.Column("mean", pg.ARRAY(sa.Float), nullable=False),
        sa.Column("quantiles", pg.ARRAY(sa.Float, dimensions=2), nullable=False),
        sa.Column("accuracy", pg.JSONB, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_forecast_run"),
    )
    op.create_index("ix_forecast_run_deployment_as_of", "forecast_run",
                    ["deployment_id", "as_of"])
    # One row per run and forecast minute: mean, every quantile as an array aligned with
    # quantile_levels, and the common p50 / p90 as columns.
    op.execute(
        "CREATE VIEW forecast_point AS "
        "SELECT r.id AS run_id, r.deployment_id, d.name AS deployment, r.as_of, "
        "r.start + make_interval(mins => (i - 1) * r.step_minutes) AS minute, "
        "r.mean[i] AS mean, "
        "r.quantiles[array_position(r.quantile_levels, 0.5::float8)][i] AS p50, "
        "r.quantiles[array_position(r.quantile_levels, 0.9::float8)][i] AS p90, "
        "r.quantile_levels, "
        "ARRAY(SELECT r.quantiles[k][i] FROM generate_subscripts(r.quantile_levels, 1) AS k "
        "ORDER BY k) AS quantile_values "
        "FROM forecast_run r JOIN deployment d ON d.id = r.deployment_id "
        "CROSS JOIN LATERAL generate_series(1, r.horizon) AS i"
    )
    op.execute(
        "CREATE VIEW latest_forecast AS "
        "SELECT DISTINCT ON (deployment_id) * FROM forecast_run "
        "ORDER BY deployment_id, as_of DESC, id DESC"
    )


def downgrade() -> None:
    op.execute("DROP VIEW latest_forecast")
    op.execute("DROP VIEW forecast_point")
    op.drop_index("ix_forecast_run_deployment_as_of", table_name="forecast_run")
    op.drop_table("forecast_run")

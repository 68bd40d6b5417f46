"""The capacity ledger (what the provider held at each minute the daemon observed, in
monthly partitions) and the ``service_level_month`` view users query.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "capacity_minute",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("committed_units", sa.Integer, nullable=False),
        sa.Column("elastic_units", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "minute", name="pk_capacity_minute"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"],
            name="fk_capacity_minute_deployment_id_deployment",
        ),
        postgresql_partition_by="RANGE (minute)",
    )
    # Per deployment and UTC calendar month, over the minutes that have both a usage value
    # (a minute no source reported is skipped, never read as zero) and a ledger row.
    # Demand is in units (weighted tokens / unit_tpm, as in usage_minute); spill is the
    # demand above the capacity held that minute. max_spill_fraction comes from the
    # deployment's stored settings (the config mirror in deployment.settings).
    op.execute(
        "CREATE VIEW service_level_month AS "
        "SELECT d.id AS deployment_id, d.name AS deployment, "
        "date_trunc('month', c.minute, 'UTC') AS month, "
        "sum(u.demand_units)::float8 AS demand_unit_minutes, "
        "sum(greatest(0, u.demand_units - (c.committed_units + c.elastic_units)))::float8 "
        "AS spill_unit_minutes, "
        "CASE WHEN sum(u.demand_units) > 0 THEN (sum(greatest(0, u.demand_units "
        "- (c.committed_units + c.elastic_units))) / sum(u.demand_units))::float8 END "
        "AS spill_fraction, "
        "(d.settings ->> 'max_spill_fraction')::float8 AS max_spill_fraction, "
        "count(*)::int AS minutes_covered "
        "FROM capacity_minute c "
        "JOIN usage_minute u ON u.deployment_id = c.deployment_id AND u.minute = c.minute "
        "JOIN deployment d ON d.id = c.deployment_id "
        "GROUP BY d.id, date_trunc('month', c.minute, 'UTC')"
    )


def downgrade() -> None:
    op.execute("DROP VIEW service_level_month")
    op.drop_table("capacity_minute")  # drops its partitions too

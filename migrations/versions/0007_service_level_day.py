"""Daily roll-up of the realised service level (``service_level_day``), so that reading a
month to date costs a day of raw ledger at most.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_level_day",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("demand_unit_minutes", sa.Float, nullable=False),
        sa.Column("spill_unit_minutes", sa.Float, nullable=False),
        sa.Column("minutes_covered", sa.Integer, nullable=False),
        # What the demand in units was computed with: a changed unit size or output
        # weight makes the row stale.
        sa.Column("unit_tpm", sa.Float, nullable=False),
        sa.Column("output_token_weight", sa.Float, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "day", name="pk_service_level_day"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"],
            name="fk_service_level_day_deployment_id_deployment",
        ),
    )


def downgrade() -> None:
    op.drop_table("service_level_day")

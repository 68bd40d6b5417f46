"""Pull sources (#14): one state row per (deployment, pull source).

``pull_source`` keeps each configured CloudWatch / Azure Monitor / Prometheus source's
high-water mark (the end, exclusive, of the minutes it has read), when it last ran and
succeeded, its consecutive failures and whether its last pull left the deployment's usage
stale (a failure or an empty answer). The minutes themselves go to ``usage_hour`` through
the ingest write path, keyed by the source's name.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pull_source",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("high_water", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("stale", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("minutes_last", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("deployment_id", "source", name="pk_pull_source"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"],
            name="fk_pull_source_deployment_id_deployment",
        ),
    )


def downgrade() -> None:
    op.drop_table("pull_source")

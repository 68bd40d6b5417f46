"""The daily commitment decision per deployment (so a restart never decides twice a day),
and the simulated provider's ``crash`` fault (SIGKILL at a step of sending an action).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "commitment_decision",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("decided_on", sa.Date, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", name="pk_commitment_decision"),
    )
    op.drop_constraint("ck_sim_fault_kind", "sim_fault", type_="check")
    op.create_check_constraint(
        "ck_sim_fault_kind", "sim_fault",
        "kind IN ('timeout', 'temporary', 'out_of_capacity', 'quota', 'permanent', "
        "'slow_confirm', 'crash')")


def downgrade() -> None:
    op.execute("DELETE FROM sim_fault WHERE kind = 'crash'")
    op.drop_constraint("ck_sim_fault_kind", "sim_fault", type_="check")
    op.create_check_constraint(
        "ck_sim_fault_kind", "sim_fault",
        "kind IN ('timeout', 'temporary', 'out_of_capacity', 'quota', 'permanent', "
        "'slow_confirm')")
    op.drop_table("commitment_decision")

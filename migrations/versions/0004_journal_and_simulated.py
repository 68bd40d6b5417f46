"""The action journal (outbox), drift events, backoff, daemon state, and the simulated
provider's books.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _ts(name: str, nullable: bool = True, **kw: Any) -> sa.Column[Any]:
    """A timestamptz column."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, **kw)


def upgrade() -> None:
    op.create_table(
        "action",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("target_units", sa.Integer, nullable=True),
        sa.Column("units", sa.Integer, nullable=True),
        sa.Column("term_days", sa.Integer, nullable=True),
        sa.Column("plan_id", sa.BigInteger, nullable=True),
        _ts("decided_at", nullable=False),
        _ts("due_at", nullable=False),
        _ts("effective_at"),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _ts("next_attempt_at"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("error_class", sa.Text, nullable=True),
        sa.Column("provider_reference", sa.Text, nullable=True),
        sa.Column("accepted_units", sa.Integer, nullable=True),
        _ts("sent_at"),
        _ts("confirmed_at"),
        sa.Column("reason", sa.Text, nullable=True),
        _ts("created_at", nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_action"),
        sa.UniqueConstraint("idempotency_key", name="uq_action_idempotency_key"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"], name="fk_action_deployment_id_deployment"
        ),
        sa.CheckConstraint(
            "kind IN ('elastic_set_target', 'buy_commitment')", name="ck_action_kind"
        ),
        sa.CheckConstraint(
            "state IN ('planned', 'sent', 'confirmed', 'failed', 'superseded')",
            name="ck_action_state",
        ),
        sa.CheckConstraint(
            "(kind = 'elastic_set_target' AND target_units IS NOT NULL AND target_units >= 0) OR "
            "(kind = 'buy_commitment' AND units IS NOT NULL AND units > 0 "
            "AND term_days IS NOT NULL AND term_days > 0)",
            name="ck_action_payload",
        ),
    )
    op.create_index(
        "ix_action_due_planned", "action", ["due_at"], postgresql_where=sa.text("state = 'planned'")
    )
    op.create_index(
        "ix_action_sent_unconfirmed",
        "action",
        ["deployment_id", "id"],
        postgresql_where=sa.text("state = 'sent'"),
    )
    op.create_index("ix_action_deployment_id", "action", ["deployment_id", "id"])
    op.execute(
        "CREATE VIEW pending_actions AS "
        "SELECT d.name AS deployment, a.* FROM action a "
        "JOIN deployment d ON d.id = a.deployment_id "
        "WHERE a.state IN ('planned', 'sent')"
    )

    op.create_table(
        "drift_event",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("deployment_id", sa.Integer, nullable=False),
        _ts("observed_at", nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("expected", sa.Integer, nullable=True),
        sa.Column("actual", sa.Integer, nullable=True),
        sa.Column("detail", pg.JSONB, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drift_event"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployment.id"], name="fk_drift_event_deployment_id_deployment"
        ),
    )
    op.create_index(
        "ix_drift_event_deployment_observed", "drift_event", ["deployment_id", "observed_at"]
    )

    op.create_table(
        "deployment_backoff",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        _ts("until"),
        sa.Column("reason", sa.Text, nullable=True),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", name="pk_deployment_backoff"),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployment.id"],
            name="fk_deployment_backoff_deployment_id_deployment",
        ),
    )

    op.create_table(
        "daemon_state",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        _ts("paused_at"),
        sa.Column("paused_reason", sa.Text, nullable=True),
        sa.Column("instance_id", sa.Text, nullable=True),
        _ts("last_tick_at"),
        sa.Column("last_tick_id", sa.Text, nullable=True),
        sa.Column("last_tick_ok", sa.Boolean, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _ts("leader_since"),
        _ts("updated_at", nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", name="pk_daemon_state"),
    )

    # -- the simulated provider's books --------------------------------------------------
    op.create_table(
        "sim_tranche",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("deployment", sa.Text, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        _ts("active_from", nullable=False),
        _ts("hold_until", nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sim_tranche"),
        sa.CheckConstraint("units > 0", name="ck_sim_tranche_units_positive"),
    )
    op.create_index(
        "ix_sim_tranche_provider_deployment", "sim_tranche", ["provider", "deployment"]
    )
    op.create_table(
        "sim_commitment",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("deployment", sa.Text, nullable=False),
        sa.Column("commitment_id", sa.Text, nullable=False),
        sa.Column("units", sa.Integer, nullable=False),
        sa.Column("term_days", sa.Integer, nullable=False),
        _ts("start", nullable=False),
        _ts("end", nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sim_commitment"),
        sa.UniqueConstraint("commitment_id", name="uq_sim_commitment_commitment_id"),
        sa.CheckConstraint("units > 0", name="ck_sim_commitment_units_positive"),
    )
    op.create_index(
        "ix_sim_commitment_provider_deployment", "sim_commitment", ["provider", "deployment"]
    )
    op.create_table(
        "sim_request",
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.Text, nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("deployment", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("reference", sa.Text, nullable=True),
        sa.Column("result", pg.JSONB, nullable=True),
        sa.Column("error_class", sa.Text, nullable=True),
        sa.Column("error_code", sa.Text, nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("retry_after", sa.Float, nullable=True),
        _ts("requested_at", nullable=False),
        _ts("confirm_at"),
        sa.Column("confirm_after_calls", sa.Integer, nullable=True),
        sa.Column("calls", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("provider", "idempotency_key", name="pk_sim_request"),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed')", name="ck_sim_request_status"
        ),
    )
    op.create_table(
        "sim_fault",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("provider", sa.Text, nullable=True),
        sa.Column("deployment", sa.Text, nullable=True),
        sa.Column("operation", sa.Text, nullable=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("remaining", sa.Integer, nullable=False),
        sa.Column("apply_first", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("retry_after", sa.Float, nullable=True),
        sa.Column("confirm_after_seconds", sa.Float, nullable=True),
        sa.Column("confirm_after_calls", sa.Integer, nullable=True),
        _ts("created_at", nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_sim_fault"),
        sa.CheckConstraint(
            "kind IN ('timeout', 'temporary', 'out_of_capacity', 'quota', 'permanent', "
            "'slow_confirm')",
            name="ck_sim_fault_kind",
        ),
        sa.CheckConstraint("remaining > 0", name="ck_sim_fault_remaining_positive"),
    )


def downgrade() -> None:
    op.drop_table("sim_fault")
    op.drop_table("sim_request")
    op.drop_index("ix_sim_commitment_provider_deployment", table_name="sim_commitment")
    op.drop_table("sim_commitment")
    op.drop_index("ix_sim_tranche_provider_deployment", table_name="sim_tranche")
    op.drop_table("sim_tranche")
    op.drop_table("daemon_state")
    op.drop_table("deployment_backoff")
    op.drop_index("ix_drift_event_deployment_observed", table_name="drift_event")
    op.drop_table("drift_event")
    op.execute("DROP VIEW pending_actions")
    op.drop_index("ix_action_deployment_id", table_name="action")
    op.drop_index("ix_action_sent_unconfirmed", table_name="action")
    op.drop_index("ix_action_due_planned", table_name="action")
    op.drop_table("action")

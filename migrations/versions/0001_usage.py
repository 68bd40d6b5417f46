"""Deployments, usage in hour rows (monthly partitions), minute views and ingest batches.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("id", sa.Integer, sa.Identity(), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("unit_tpm", sa.Float, nullable=False),
        sa.Column("output_token_weight", sa.Float, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("settings", pg.JSONB, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployment"),
        sa.UniqueConstraint("name", name="uq_deployment_name"),
    )
    op.create_table(
        "usage_source",
        sa.Column("id", sa.SmallInteger, sa.Identity(), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_source"),
        sa.UniqueConstraint("name", name="uq_usage_source_name"),
    )
    op.create_table(
        "usage_hour",
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_id", sa.SmallInteger, nullable=False),
        sa.Column("input_tokens", sa.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("output_tokens", sa.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("requests", sa.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("batch_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("deployment_id", "hour", "source_id", name="pk_usage_hour"),
        sa.CheckConstraint(
            "cardinality(input_tokens) = 60 AND cardinality(output_tokens) = 60 "
            "AND cardinality(requests) = 60",
            name="ck_usage_hour_sixty_minutes",
        ),
        postgresql_partition_by="RANGE (hour)",
    )
    # Element-wise merge of two minute arrays: a reported minute (>= 0) in the new array
    # replaces the old value; a minute the new delivery did not report (-1) keeps the old.
    # A complete new hour (the usual bulk case) is taken as it is without unnesting.
    op.execute(
        "CREATE FUNCTION capsched_merge_minutes(old int8[], new int8[]) RETURNS int8[] "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
        "SELECT CASE WHEN -1 = ANY(new) THEN (SELECT array_agg(CASE WHEN n >= 0 THEN n "
        "ELSE o END ORDER BY i) FROM unnest(old, new) WITH ORDINALITY AS t(o, n, i)) "
        "ELSE new END $$"
    )
    op.create_table(
        "ingest_batch",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("deployments", sa.ARRAY(sa.Text), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("first_minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checksum", sa.Text, nullable=False),
        sa.Column(
            "ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_batch"),
    )
    # One row per reported minute and source, as users expect to query usage.
    op.execute(
        "CREATE VIEW usage AS "
        "SELECT h.deployment_id, h.hour + make_interval(mins => m.i - 1) AS minute, "
        "s.name AS source, h.input_tokens[m.i] AS input_tokens, "
        "h.output_tokens[m.i] AS output_tokens, h.requests[m.i] AS requests, h.batch_id "
        "FROM usage_hour h JOIN usage_source s ON s.id = h.source_id "
        "CROSS JOIN generate_series(1, 60) AS m(i) WHERE h.input_tokens[m.i] >= 0"
    )
    # Demand per deployment and minute, summed over sources: what users usually want.
    op.execute(
        "CREATE VIEW usage_minute AS "
        "SELECT u.deployment_id, d.name AS deployment, u.minute, "
        "sum(u.input_tokens)::int8 AS input_tokens, sum(u.output_tokens)::int8 AS output_tokens, "
        "sum(u.requests)::int8 AS requests, "
        "((sum(u.input_tokens) + d.output_token_weight * sum(u.output_tokens)) / d.unit_tpm)"
        "::float8 AS demand_units, count(*)::int AS sources "
        "FROM usage u JOIN deployment d ON d.id = u.deployment_id "
        "GROUP BY u.deployment_id, d.name, d.output_token_weight, d.unit_tpm, u.minute"
    )


def downgrade() -> None:
    op.execute("DROP VIEW usage_minute")
    op.execute("DROP VIEW usage")
    op.drop_table("ingest_batch")
    op.drop_table("usage_hour")  # drops its partitions too
    op.execute("DROP FUNCTION capsched_merge_minutes(int8[], int8[])")
    op.drop_table("usage_source")
    op.drop_table("deployment")

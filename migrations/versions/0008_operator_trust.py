"""The read-only role ``capsched_reader``: SELECT on the documented views, nothing else.

Users who query plans and usage with SQL connect as a login role that is a member of
``capsched_reader`` (README "The schema, and querying it"). The role may read the views the
README documents and no base table, so it can neither change nor see raw tables (the action
journal's idempotency keys, provider state). PostgreSQL views run with their owner's rights
(``security_invoker`` is off), so SELECT on a view needs no grant on the tables behind it.

Roles belong to the cluster, not the database: the role is created only when missing (several
capsched databases, or test databases, share one cluster), and a migrating user without
CREATEROLE gets a warning instead of a failed upgrade (a DBA then creates the role and runs
``GRANT`` as in this file). The downgrade revokes this database's grants and leaves the role:
other databases of the cluster may still use it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

ROLE = "capsched_reader"

#: The views the README documents for SQL users (created by 0001-0006).
VIEWS = (
    "usage",
    "usage_minute",
    "forecast_point",
    "latest_forecast",
    "current_plan",
    "current_plan_interval",
    "next_actions",
    "cost_summary",
    "pending_actions",
    "service_level_month",
)


def upgrade() -> None:
    grants = "\n".join(
        f"    EXECUTE format('GRANT SELECT ON %I TO {ROLE}', '{view}');" for view in VIEWS
    )
    op.execute(
        f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
    BEGIN
      CREATE ROLE {ROLE} NOLOGIN;
    EXCEPTION
      -- Another database of the cluster created it at the same moment.
      WHEN duplicate_object OR unique_violation THEN NULL;
      WHEN insufficient_privilege THEN
        RAISE WARNING 'role {ROLE} not created (needs CREATEROLE): create it and grant '
          'SELECT on the capsched views as migration 0008 does';
        RETURN;
    END;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO {ROLE}', current_database());
  GRANT USAGE ON SCHEMA public TO {ROLE};
{grants}
END
$$;
"""
    )


def downgrade() -> None:
    views = ", ".join(VIEWS)
    op.execute(
        f"""
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
    REVOKE SELECT ON {views} FROM {ROLE};
    REVOKE USAGE ON SCHEMA public FROM {ROLE};
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {ROLE}', current_database());
  END IF;
END
$$;
"""
    )

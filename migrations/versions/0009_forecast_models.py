"""Forecast runs record the model chosen by validation and its validation score.

``forecast_run`` gains ``chosen_model`` (the member or combination the per-series
rolling-origin validation picked, or the fast path's name), ``validation_mase`` (that
choice's validation MASE: MAE over the daily seasonal-naive in-sample MAE) and ``selection``
(JSONB: every candidate's score, the weights, the origins, and ``degraded`` when the time
budget sent the run to the fast path). All three are NULL for runs stored before.
``latest_forecast`` is re-created with ``CREATE OR REPLACE`` so that its ``*`` carries the
new columns while keeping the read-only role's grant of migration 0008.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_LATEST = (
    "SELECT DISTINCT ON (deployment_id) * FROM forecast_run "
    "ORDER BY deployment_id, as_of DESC, id DESC"
)


def upgrade() -> None:
    op.add_column("forecast_run", sa.Column("chosen_model", sa.Text, nullable=True))
    op.add_column("forecast_run", sa.Column("validation_mase", sa.Float, nullable=True))
    op.add_column("forecast_run", sa.Column("selection", pg.JSONB, nullable=True))
    op.execute(f"CREATE OR REPLACE VIEW latest_forecast AS {_LATEST}")


def downgrade() -> None:
    # A view cannot lose columns by CREATE OR REPLACE: drop it, drop the columns, re-create
    # it as 0002 did and give the read-only role (0008) its grant back when the role exists.
    op.execute("DROP VIEW latest_forecast")
    op.drop_column("forecast_run", "selection")
    op.drop_column("forecast_run", "validation_mase")
    op.drop_column("forecast_run", "chosen_model")
    op.execute(f"CREATE VIEW latest_forecast AS {_LATEST}")
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'capsched_reader') "
        "THEN GRANT SELECT ON latest_forecast TO capsched_reader; END IF; END $$;"
    )

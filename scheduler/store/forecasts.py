"""Forecast runs: one row per fit of one deployment, the forecast itself stored as arrays.

A 24-hour forecast is 1,440 minutes; refitting 1,000 deployments hourly would add 1.4x10^6
point rows an hour. One row per run with ``mean float8[]`` and ``quantiles float8[][]``
(levels x minutes) keeps writes cheap; the view ``forecast_point`` unnests it into one row
per minute for SQL users.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.store.metadata import metadata

forecast_run_table = sa.Table(
    "forecast_run",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
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
    # Migration 0009: the per-series model choice (NULL for runs stored before it).
    sa.Column("chosen_model", sa.Text, nullable=True),
    sa.Column("validation_mase", sa.Float, nullable=True),
    sa.Column("selection", pg.JSONB, nullable=True),
    sa.Index("ix_forecast_run_deployment_as_of", "deployment_id", "as_of"),
)


@dataclass(frozen=True)
class ForecastRecord:
    """What a forecast run stores; demand in model units per minute."""

    deployment_id: int
    as_of: dt.datetime
    model: str
    parameters: Mapping[str, Any]
    data_start: dt.datetime | None
    data_end: dt.datetime | None
    minutes_observed: int
    start: dt.datetime
    step_minutes: int
    quantile_levels: tuple[float, ...]
    mean: npt.NDArray[np.float64]
    quantiles: npt.NDArray[np.float64]  # shape (len(quantile_levels), horizon)
    accuracy: Mapping[str, Any]
    #: The model choice (``forecasting.Choice.to_dict()``); taken from
    #: ``parameters["selection"]`` when not given, absent for a plain fast-path fit.
    selection: Mapping[str, Any] | None = None

    def choice(self) -> tuple[str, float | None, dict[str, Any]]:
        """(chosen model, validation MASE or None, selection evidence) to store."""
        sel = self.selection
        if sel is None:
            found = self.parameters.get("selection")
            sel = found if isinstance(found, Mapping) else None
        if sel is None:
            return self.model, None, {"chosen": self.model, "validated": False}
        score = sel.get("validation_mase")
        value = float(score) if isinstance(score, int | float) and np.isfinite(score) else None
        return str(sel.get("chosen") or self.model), value, dict(sel)


def _finite_list(values: npt.NDArray[np.float64]) -> list[Any]:
    # NaN survives float8[] but not JSON; keep it as SQL NULL so users see "unknown".
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values).ravel()]


def insert_forecasts(conn: sa.Connection, records: Sequence[ForecastRecord]) -> list[int]:
    if not records:
        return []
    t = forecast_run_table
    rows = [
        {
            "deployment_id": r.deployment_id, "as_of": r.as_of, "model": r.model,
            "parameters": dict(r.parameters), "data_start": r.data_start,
            "data_end": r.data_end, "minutes_observed": r.minutes_observed, "start": r.start,
            "step_minutes": r.step_minutes, "horizon": int(r.mean.shape[0]),
            "quantile_levels": list(r.quantile_levels), "mean": _finite_list(r.mean),
            "quantiles": [_finite_list(row) for row in np.atleast_2d(r.quantiles)],
            "accuracy": dict(r.accuracy),
            **dict(zip(("chosen_model", "validation_mase", "selection"), r.choice(),
                       strict=True)),
        }
        for r in records
    ]
    result = conn.execute(t.insert().returning(t.c.id), rows)
    return [int(i) for i in result.scalars().all()]

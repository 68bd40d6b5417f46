"""Why a deployment held the capacity it held at a minute (``capsched explain``, #13):
the stored plan in force, its interval and reasons, the forecast it planned on, the ledger
and usage of that minute and the last action that took effect. Reads only."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class PlanAt:
    """The latest plan made at or before the minute, and its interval covering it."""

    plan_id: int
    as_of: dt.datetime
    mode: str
    held: bool
    expected_spill_fraction: float
    expected_total_cost: float
    reasons: tuple[dict[str, Any], ...]
    interval_start: dt.datetime | None
    interval_end: dt.datetime | None
    committed_units: int | None
    elastic_target: int | None
    demand_quantiles: dict[str, float] | None
    expected_spill_units: float | None


@dataclass(frozen=True)
class ForecastAt:
    """The forecast run a plan used, read at the minute (units per minute)."""

    run_id: int
    as_of: dt.datetime
    model: str
    chosen_model: str | None
    validation_mase: float | None
    mean: float | None
    quantiles: dict[str, float]


@dataclass(frozen=True)
class ActionAt:
    """The last action effective at or before the minute."""

    kind: str
    target_units: int | None
    units: int | None
    term_days: int | None
    decided_at: dt.datetime
    effective_at: dt.datetime | None
    state: str
    reason: str


@dataclass(frozen=True)
class Explanation:
    """Everything stored about one deployment's minute; any part may be missing."""

    at: dt.datetime
    settings: dict[str, Any]
    committed_units: int | None
    elastic_units: int | None
    demand_units: float | None
    plan: PlanAt | None
    forecast: ForecastAt | None
    action: ActionAt | None


def explain_at(conn: sa.Connection, deployment_id: int, at: dt.datetime) -> Explanation:
    """What was stored about ``deployment_id`` at the whole minute ``at`` (UTC)."""
    params = {"id": deployment_id, "at": at}
    settings = conn.execute(sa.text("SELECT settings FROM deployment WHERE id = :id"),
                            params).scalar_one()
    held = conn.execute(sa.text(
        "SELECT committed_units, elastic_units FROM capacity_minute "
        "WHERE deployment_id = :id AND minute = :at"), params).one_or_none()
    demand = conn.execute(sa.text(
        "SELECT demand_units FROM usage_minute WHERE deployment_id = :id AND minute = :at"),
        params).scalar_one_or_none()
    plan = conn.execute(sa.text(
        "SELECT p.id, p.as_of, p.mode, p.held, p.expected_spill_fraction,"
        " p.expected_total_cost, p.reasons, p.forecast_run_id, i.start, i.\"end\","
        " i.committed_units, i.elastic_target, i.demand_quantiles, i.expected_spill_units "
        "FROM plan p LEFT JOIN plan_interval i ON i.plan_id = p.id"
        " AND i.start <= :at AND i.\"end\" > :at "
        "WHERE p.deployment_id = :id AND p.as_of <= :at "
        "ORDER BY (p.mode = 'live') DESC, p.as_of DESC, p.id DESC LIMIT 1"), params).one_or_none()
    forecast = None
    plan_at = None
    if plan is not None:
        plan_at = PlanAt(int(plan[0]), plan[1], plan[2], bool(plan[3]), float(plan[4]),
                         float(plan[5]), tuple(plan[6] or ()), plan[8], plan[9],
                         plan[10], plan[11], plan[12], plan[13])
        if plan[7] is not None:
            row = conn.execute(sa.text(
                "SELECT f.id, f.as_of, f.model, f.chosen_model, f.validation_mase,"
                " f.quantile_levels, k.i, f.mean[k.i],"
                " ARRAY(SELECT f.quantiles[q][k.i]"
                "  FROM generate_subscripts(f.quantile_levels, 1) AS q ORDER BY q) "
                "FROM forecast_run f CROSS JOIN LATERAL (SELECT (floor(extract(epoch FROM"
                " (:at - f.start)) / 60 / f.step_minutes))::int + 1 AS i) k "
                "WHERE f.id = :run"), {**params, "run": plan[7]}).one_or_none()
            # Outside the run's horizon the array reads give NULL: no forecast values.
            if row is not None:
                levels = list(row[5])
                values = list(row[8] or [])
                forecast = ForecastAt(
                    int(row[0]), row[1], row[2], row[3],
                    None if row[4] is None else float(row[4]),
                    None if row[7] is None else float(row[7]),
                    {f"{lvl:g}": float(v) for lvl, v in zip(levels, values, strict=False)
                     if v is not None})
    action = conn.execute(sa.text(
        "SELECT kind, target_units, units, term_days, decided_at, effective_at, state,"
        " coalesce(reason, '') FROM action WHERE deployment_id = :id"
        " AND state = 'confirmed' AND coalesce(effective_at, decided_at) <= :at "
        "ORDER BY coalesce(effective_at, decided_at) DESC, id DESC LIMIT 1"),
        params).one_or_none()
    return Explanation(
        at=at, settings=dict(settings),
        committed_units=None if held is None else int(held[0]),
        elastic_units=None if held is None else int(held[1]),
        demand_units=None if demand is None else float(demand),
        plan=plan_at, forecast=forecast,
        action=None if action is None else ActionAt(*action))

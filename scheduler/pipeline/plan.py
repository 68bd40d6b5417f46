"""Turning a forecast and what the provider holds into a stored plan (pure).

Shared by ``capsched plan --dry-run`` and the daemon's tick, so both decide alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import numpy as np
import structlog

import forecasting
from scheduler.config import Deployment
from scheduler.pipeline.forecast import History
from scheduler.planning import economics, planner
from scheduler.planning.headroom import HeadroomCurve, ProviderPool
from scheduler.planning.inputs import SEASONAL_HISTORY_MINUTES, planning_forecast
from scheduler.providers import base as provider_base
from scheduler.store.plans import IntervalRecord, PlanRecord

#: How much recent usage sets the token mix used to price spill and pay-as-you-go.
MIX_WINDOW_MINUTES = 1440
#: Observations the model's level correction reads (as the backtest does).
PREDICT_RECENT_MINUTES = 360
#: Commitment decisions read a week of forecast: the planner repeats it as a weekly profile
#: over a 30-day term (a plan horizon of a few hours would read as "always at peak").
COMMIT_FORECAST_MINUTES = 7 * 1440
#: The recent demand whose peak bounds the capacity held (as the backtest).
EVIDENCE_MINUTES = 7 * 1440

log = structlog.get_logger()
_alerted: dict[str, dt.date] = {}


def _alert_once(deployment: str, now: dt.datetime, text: str) -> None:
    """Log the service-level alert of a plan once per deployment and UTC day."""
    if _alerted.get(deployment) == now.date():
        return
    _alerted[deployment] = now.date()
    log.warning("service_level_bound_alert", deployment=deployment, detail=text)


def planner_holdings(holdings: provider_base.Holdings) -> planner.Holdings:
    """The provider's view of capacity in the planner's terms."""
    commitments = tuple(
        economics.Commitment(start=c.start, term_days=c.term_days, units=c.units)
        for c in holdings.commitments if c.term_days in economics.TERMS_DAYS
    )
    elastic = tuple(
        planner.ElasticBlock(units=t.units, requested_at=t.active_from, active_from=t.active_from)
        for t in holdings.elastic
    )
    return planner.Holdings(commitments=commitments, elastic=elastic)


def payg_price_per_unit_minute(history: History, deployment: Deployment) -> float | None:
    """Dollars for one unit-minute served at pay-as-you-go, at the recent token mix."""
    tail = slice(-MIX_WINDOW_MINUTES, None)
    inp, out = history.input_tokens[tail], history.output_tokens[tail]
    seen = ~np.isnan(inp) & ~np.isnan(out)
    units = float(np.sum(economics.demand_units(inp[seen], out[seen], deployment)))
    if units <= 0:
        return None
    dollars = economics.payg_total_cost(inp[seen], out[seen], deployment.pricing)
    return dollars / units


@dataclass(frozen=True)
class PlanOutcome:
    plan: planner.Plan
    record: PlanRecord


def make_plan(
    *,
    history: History,
    forecast: forecasting.Forecast,
    holdings: provider_base.Holdings,
    now: dt.datetime,
    mode: str,
    horizon_minutes: int,
    forecast_run_id: int | None,
    commit_forecast: forecasting.Forecast | None,
    held: bool = False,
    spill_to_date: planner.SpillToDate | None = None,
    headroom: HeadroomCurve | None = None,
    zero_run: bool = False,
    zero_load_after_minutes: int = forecasting.ZERO_LOAD_AFTER_MINUTES,
    commit_terms: tuple[int, ...] = (30, 7),
    pool: ProviderPool | None = None,
) -> PlanOutcome:
    """Plan one deployment; commitments are decided only when ``commit_forecast`` is given.

    ``spill_to_date`` is the service level realised so far this period (the UTC month):
    when it spilled above ``max_spill_fraction``, the plan tightens to pay the excess back.
    ``headroom`` is the deployment's calibrated curve (``pipeline.headroom_by_deployment``).
    ``held`` (usage stale) and ``zero_run`` (a sustained run of reported zeros) defer
    commitment decisions (:func:`scheduler.planning.planner.commitment_block`); a zero run
    is also found here from the history (``zero_load_after_minutes``, the ``[ingest]``
    setting). ``commit_terms`` are the commitment terms (days) the provider sells
    (``ProviderLimits.supported_terms``): the plan never leans on a term that cannot be
    bought. Capacity stays within a factor of the highest demand of the last
    ``EVIDENCE_MINUTES``. ``pool`` is what the provider lets the deployment hold
    (``ProviderLimits``: its ``available_units`` when no term is sold, and the terms sold):
    the cover on the replay, and the bound alert, are priced under it (issue #9).
    """
    deployment = history.deployment
    if pool is not None and headroom is not None:
        headroom = replace(headroom, pool=pool)
    recent = history.demand[-PREDICT_RECENT_MINUTES:]
    past = history.demand[-SEASONAL_HISTORY_MINUTES:]
    fc = planning_forecast(forecast, now, recent, past,
                           zero_load_after_minutes=zero_load_after_minutes,
                           calendar=deployment.calendar,
                           calendar_timezone=deployment.timezone)
    zero_run = zero_run or bool(
        forecasting.sustained_zeros(past, min_run=zero_load_after_minutes))
    price = payg_price_per_unit_minute(history, deployment)
    settings = planner.PlannerSettings(horizon_minutes=horizon_minutes,
                                       commit_terms=tuple(commit_terms))
    evidence = history.demand[-EVIDENCE_MINUTES:]
    seen = evidence[np.isfinite(evidence)]
    result = planner.plan(
        fc, planner_holdings(holdings), deployment, now, settings=settings,
        commit_forecast=(None if commit_forecast is None
                         else planning_forecast(commit_forecast, now, recent, past,
                                                zero_load_after_minutes=zero_load_after_minutes,
                                                calendar=deployment.calendar,
                                                calendar_timezone=deployment.timezone)),
        spill_to_date=spill_to_date, spill_price=price, headroom=headroom,
        recent_peak=float(seen.max()) if seen.size else None,
        commit_evidence=(None if commit_forecast is None else planner.CommitEvidence(
            np.asarray(evidence, dtype=np.float64), stale=held, zero_run=zero_run)),
        recent=recent,
    )
    if result.bound_alert is not None:
        _alert_once(deployment.name, now, result.bound_alert)
    expected = result.expected_demand
    unit_minute_payg = price if price is not None else planner.default_spill_price(deployment)
    dedicated = economics.dedicated_at_peak_cost(expected, deployment)
    record = PlanRecord(
        deployment_id=history.deployment_id, as_of=now, mode=mode,
        horizon_minutes=result.horizon_minutes, forecast_run_id=forecast_run_id,
        expected_committed_cost=result.expected_cost.committed,
        expected_elastic_cost=result.expected_cost.elastic,
        expected_spill_cost=result.expected_cost.spill,
        dedicated_cost=dedicated, payg_cost=float(np.sum(expected)) * unit_minute_payg,
        expected_spill_fraction=result.expected_spill_fraction,
        payg_cheaper_than_unit=result.payg_cheaper_than_unit, held=held,
        reasons=[{"at": r.at.isoformat(), "tier": r.tier, "rule": r.rule,
                  "quantile": r.quantile, "detail": r.detail} for r in result.reasons],
        commitments=[{"start": c.start.isoformat(), "term_days": c.term_days,
                      "units": c.units} for c in result.new_commitments],
        actions=[{"kind": a.kind, "decided_at": a.decided_at.isoformat(),
                  "issue_at": a.issue_at.isoformat(), "effective_at": a.effective_at.isoformat(),
                  "units": a.units, "term_days": a.term_days, "reason": a.reason}
                 for a in result.actions],
        intervals=[IntervalRecord(
            start=i.start, end=i.end, committed_units=i.committed_units,
            elastic_target=i.elastic_units,
            demand_quantiles={f"{level:g}": value for level, value in i.demand_quantiles},
            expected_spill_units=i.expected_spill_units) for i in result.intervals],
    )
    return PlanOutcome(result, record)

"""Replay a usage trace through the real forecaster and planner against a simulated provider.

Online: the decision at minute ``t`` sees usage before ``t`` only; capacity at ``t`` is
what earlier decisions set up (elastic requested at ``t - lead`` or earlier, commitments
bought at or before ``t``). Deterministic, no database, no clock.

Logging gaps: runs of at least ``zero_gap_minutes`` all-zero minutes (and minutes absent
from the file) are missing data, so the forecaster sees NaN there, and a zero run still in
progress at a decision is treated as missing too (holding capacity is the safe reading).
Billing follows the file: a gap minute has zero demand, so nothing spills, while the
capacity held through it is paid like any other minute.

Provider capacity (``capacity=``, :class:`~scheduler.planning.simulator.ProviderCapacity`):
a scale-up beyond what the provider can grant is refused whole, as the simulated provider
does; then, as the daemon (scheduler/daemon/tick.py), the elastic target is capped at what
the provider says it can grant (asked for in the same minute as the refusal) for
``retry_minutes`` (never releasing units for it) and the full target is asked for again
after that. Demand above the capacity held spills and is
billed per the deployment's ``spill`` mode. Commitments are bought on the terms sold only.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from scheduler.config import Deployment
from scheduler.ingest.files import ParsedUsage
from scheduler.planning.economics import (
    Commitment,
    CostBreakdown,
    FloatArray,
    as_datetime,
    dedicated_at_peak_cost,
    demand_units,
    payg_cost_per_minute,
    payg_total_cost,
    schedule_cost,
)
from scheduler.planning.follow import FollowedPlan, FollowSettings
from scheduler.planning.grid import minute_grid
from scheduler.planning.headroom import (
    HeadroomCurve,
    ProviderPool,
    applies_to,
    constant_level_spill,
    headroom_curves,
)
from scheduler.planning.hindsight import hindsight_optimum, reachable_pool
from scheduler.planning.inputs import ForecastLike, planning_forecast
from scheduler.planning.planner import (
    CommitEvidence,
    PlannerSettings,
    SpillToDate,
    plan,
)
from scheduler.planning.simulator import ProviderCapacity, ProviderEvent, SimulatedProvider

MINUTE = dt.timedelta(minutes=1)


class ModelLike(Protocol):
    def predict(self, recent: npt.ArrayLike, *, origin: dt.datetime,
                horizon: int) -> ForecastLike: ...


class ForecasterLike(Protocol):
    """The part of the ``forecasting`` package the backtest uses (injectable for tests)."""

    def fit(self, history: npt.ArrayLike, *, step_minutes: float, start: dt.datetime | None,
            timezone: str, calendar: Any, quantiles: Sequence[float],
            zero_gap_minutes: float) -> ModelLike: ...


@dataclass(frozen=True)
class BacktestSettings:
    planner: PlannerSettings = field(default_factory=lambda: PlannerSettings(
        horizon_minutes=120))
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.975)
    #: Refit the forecaster this often (the daemon's default refit cadence is hourly;
    #: daily keeps a 30-day backtest within its time budget, predictions stay per minute).
    refit_minutes: int = 1440
    history_days: int = 28
    #: Observations passed to ``predict`` (it uses the last few hours).
    recent_minutes: int = 360
    #: Commitment decisions once a day at this UTC hour (and at the first minute).
    commit_hour_utc: int = 0
    commit_forecast_minutes: int = 10_080
    zero_gap_minutes: int = 10
    #: Zero runs this long are load, not gaps (``forecasting._gaps``; 0: never).
    zero_load_after_minutes: int = 120
    #: As the daemon: no row in the last this many minutes means stale usage, which holds
    #: the elastic target where it is and buys nothing (scheduler.daemon.rails).
    staleness_minutes: int = 10
    reactive_window_minutes: int = 5
    reactive_headroom: float = 0.2
    #: Re-plan at least this often (and whenever the followed plan changes or an
    #: observation leaves its forecast band; see :mod:`scheduler.planning.follow`).
    replan_minutes: int = 10
    #: Also re-plan where the followed plan's own target changes (its forward-dilated
    #: holds over-state the tail; a fresh plan releases a unit once its own hold is over).
    replan_on_change: bool = True
    #: ... and where the capacity the forecast requires changes.
    replan_on_required: bool = False
    #: ... and when an observation falls below the forecast band (above it always does).
    replan_below_band: bool = True
    #: "plan": follow the plan's own target schedule. "capped": hold the plan's target of
    #: its first minute (never more), re-planning early only when the plan's *median*
    #: requirement at the serving minute rises (an expected step, not the forecast band
    #: widening with the horizon, which otherwise makes every plan's target ramp up and
    #: forces a re-plan nearly every minute on bursty traces).
    follow: str = "capped"
    #: Lay the trusted seasonal envelope of the history over the model's quantiles
    #: (:mod:`scheduler.planning.seasonal`).
    seasonal: bool = True
    seasonal_rel_tol: float = 0.01
    #: History handed to the seasonal component (enough for its 3 weeks + horizon).
    seasonal_history_minutes: int = 4 * 10_080
    #: Re-calibrate the elastic headroom (:mod:`scheduler.planning.headroom`) at each
    #: refit on this many days of usage; 0 keeps the planner's per-minute rule.
    headroom_days: float = 7.0
    #: Days of observed demand whose peak bounds the capacity held (the evidence).
    evidence_days: float = 7.0


def _load_forecaster() -> ForecasterLike:
    import forecasting

    return forecasting  # type: ignore[return-value]


def _gap_mask(values: FloatArray, missing: npt.NDArray[np.bool_], min_run: int,
              max_run: int = 120) -> Any:
    """Missing minutes, and runs of ``min_run`` to ``max_run`` zero-or-missing minutes
    (the one rule: :func:`forecasting.gap_mask`)."""
    import forecasting

    return forecasting.gap_mask(values, missing, min_run=min_run, max_run=max_run)


def _calendar(forecaster: Any, deployment: Deployment) -> Any:
    if not deployment.calendar or not hasattr(forecaster, "CalendarDay"):
        return None
    return [forecaster.CalendarDay(e.date, like_weekday=e.like_weekday,
                                   multiplier=e.multiplier) for e in deployment.calendar]


def capacity_from_settings(providers: Mapping[str, Mapping[str, Any]],
                           deployment: Deployment) -> ProviderCapacity | None:
    """The capacity pool of ``[providers.<deployment.provider>]`` for this deployment
    (``available_units`` and ``supported_terms``, with the ``deployments.<name>``
    override, as scheduler/providers/simulated.py reads them); None when neither is set."""
    table = providers.get(deployment.provider) or {}
    merged = dict(table)
    merged.update((table.get("deployments") or {}).get(deployment.name) or {})
    available = merged.get("available_units")
    terms = merged.get("supported_terms")
    if available is None and terms is None:
        return None
    if available is not None and (isinstance(available, bool) or not isinstance(available, int)
                                  or available < 0):
        raise ValueError(f"[providers.{deployment.provider}]: available_units must be an "
                         "integer >= 0")
    if terms is not None and (not isinstance(terms, list | tuple) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in terms)):
        raise ValueError(f"[providers.{deployment.provider}]: supported_terms must be a "
                         "list of days")
    return ProviderCapacity(available_units=available,
                            supported_terms=None if terms is None else tuple(sorted(set(terms))))


def run_backtest(
    usage: ParsedUsage,
    deployment: Deployment,
    out_dir: Path,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    settings: BacktestSettings | None = None,
    forecaster: ForecasterLike | None = None,
    capacity: ProviderCapacity | None = None,
) -> dict[str, Any]:
    """Backtest one deployment over ``[start, end)``; write the outputs; return the summary.

    ``capacity``: what the provider can grant (None: an unlimited pool, every term sold).
    """
    cfg = settings or BacktestSettings()
    if capacity is not None and capacity.supported_terms is not None:
        cfg = replace(cfg, planner=replace(cfg.planner, commit_terms=tuple(
            t for t in cfg.planner.commit_terms if t in capacity.supported_terms)))
    fcst = forecaster if forecaster is not None else _load_forecaster()
    dep = deployment
    # A dense minute grid from the trace's first minute to the window's end; minutes absent
    # from the file are missing (zero tokens, flagged).
    grid = minute_grid(usage, dep.name, start, end)
    first, w0, i0 = grid.first, grid.w0, grid.i0
    inp, out, missing = grid.input_tokens, grid.output_tokens, grid.missing
    n_all = grid.size
    demand = demand_units(inp, out, dep)
    gaps = _gap_mask(demand, missing, cfg.zero_gap_minutes, cfg.zero_load_after_minutes)
    observed = np.where(gaps, np.nan, demand)
    # Start of the zero-or-missing run each minute belongs to (the minute itself otherwise).
    zero = (demand == 0) | missing
    idx_all = np.arange(n_all)
    breaks = np.where(~zero, idx_all + 1, 0)
    run_start = np.maximum.accumulate(np.concatenate([[0], breaks]))[:n_all]
    run_start = np.where(zero, run_start, idx_all)
    n = n_all - i0
    origin = grid.origin

    # Trailing sums for the recent price of a spilled unit (payg per demand unit).
    payg = payg_cost_per_minute(inp, out, dep.pricing)
    cum_payg = np.concatenate([[0.0], np.cumsum(np.where(gaps, 0.0, payg))])
    cum_dem = np.concatenate([[0.0], np.cumsum(np.where(gaps, 0.0, demand))])

    provider = SimulatedProvider(origin, n, dep.scale_up_lead_minutes, dep.min_hold_minutes,
                                 None if capacity is None else capacity.series(origin, n))
    pool = _pool(capacity)
    #: After a refusal: (units the provider said it can grant, minute to ask in full again).
    grantable: tuple[int, int] | None = None
    committed = np.zeros(n + 1, dtype=np.int64)
    horizon = cfg.planner.horizon_minutes
    history = cfg.history_days * 1440
    calendar = _calendar(fcst, dep)
    model: ModelLike | None = None
    last_fit = -math.inf
    spilled = 0.0
    demanded = 0.0
    last: FollowedPlan | None = None
    follow = FollowSettings(
        replan_minutes=cfg.replan_minutes, capped=cfg.follow == "capped",
        replan_on_change=cfg.replan_on_change, replan_on_required=cfg.replan_on_required,
        replan_below_band=cfg.replan_below_band)
    n_plans = 0
    first_alert: tuple[int, str] | None = None
    first_cover: dict[str, Any] | None = None
    evidence = int(cfg.evidence_days * 1440)
    headroom: HeadroomCurve | None = None
    headrooms: list[float | None] = []
    for k in range(n):
        t = i0 + k
        now = origin + k * MINUTE
        decide = k == 0 or (now.hour == cfg.commit_hour_utc and now.minute == 0)
        seen = demand[t - 1] if t > 0 and demand[t - 1] > 0 and not missing[t - 1] else None
        # Stale usage (no row for staleness_minutes) holds capacity, as the daemon's rail.
        stale = (cfg.staleness_minutes > 0 and t >= cfg.staleness_minutes
                 and bool(missing[t - cfg.staleness_minutes:t].all()))
        if decide or last is None or last.due(now, seen, follow):
            # What is known at t: the whole-trace gap mask cannot tell whether a zero run
            # still in progress will reach the gap length, so that run is missing here
            # (the safe reading) whatever its final length.
            # A run that has lasted zero_load_after_minutes is load (forecasting._gaps).
            in_gap = seen is None and t > 0 and (
                cfg.zero_load_after_minutes <= 0
                or t - int(run_start[t - 1]) < cfg.zero_load_after_minutes)
            if in_gap:
                a = int(run_start[t - 1])
                saved = observed[a:t].copy()
                observed[a:t] = np.nan
            if model is None or t - last_fit >= cfg.refit_minutes:
                h0 = max(0, t - history)
                model = fcst.fit(observed[h0:t], step_minutes=1,
                                 start=as_datetime(first) + h0 * MINUTE,
                                 timezone=dep.timezone, calendar=calendar,
                                 quantiles=cfg.quantiles, zero_gap_minutes=cfg.zero_gap_minutes)
                last_fit = t
                headroom = _headroom_curve(observed[:t], dep, cfg, pool)
                headrooms.append(None if headroom is None else headroom.headroom_for(
                    dep.max_spill_fraction * cfg.planner.payg_safety))
            recent = observed[max(0, t - cfg.recent_minutes):t].copy()
            past = observed[max(0, t - cfg.seasonal_history_minutes):t]
            fc = planning_forecast(model.predict(recent, origin=now, horizon=horizon), now,
                                   recent, past, use_seasonal=cfg.seasonal,
                                   rel_tol=cfg.seasonal_rel_tol, calendar=dep.calendar,
                                   calendar_timezone=dep.timezone)
            commit_fc = None
            if decide:
                commit_fc = planning_forecast(
                    model.predict(recent, origin=now, horizon=cfg.commit_forecast_minutes),
                    now, recent, past, use_seasonal=cfg.seasonal, rel_tol=cfg.seasonal_rel_tol,
                    calendar=dep.calendar, calendar_timezone=dep.timezone)
            d_recent = cum_dem[t] - cum_dem[max(0, t - 1440)]
            price = ((cum_payg[t] - cum_payg[max(0, t - 1440)]) / d_recent
                     if d_recent > 0 else None)
            seen_recent = observed[max(0, t - evidence):t]
            seen_recent = seen_recent[np.isfinite(seen_recent)]
            p = plan(fc, provider.holdings(k), dep, now, settings=cfg.planner,
                     commit_forecast=commit_fc, spill_to_date=SpillToDate(demanded, spilled),
                     spill_price=price, headroom=headroom,
                     recent_peak=float(seen_recent.max()) if seen_recent.size else None,
                     commit_evidence=(CommitEvidence(observed[max(0, t - evidence):t].copy())
                                      if decide else None), recent=recent)
            n_plans += 1
            if first_cover is None and p.cover is not None:
                first_cover = _cover_summary(p, k, origin, dep.max_spill_fraction)
            if first_alert is None and p.bound_alert is not None:
                first_alert = (k, p.bound_alert)
            if in_gap:
                observed[a:t] = saved
            for c in (() if stale else p.new_commitments):
                provider.buy(k, c.term_days, c.units,
                             "utilisation above break-even over the term")
                committed[k:min(n, k + c.term_minutes)] += c.units
            last = FollowedPlan(p, dep.scale_up_lead_minutes, capped=follow.capped)
        if stale:
            provider.set_target(k, provider.units_held(), "stale_usage_hold")
        else:
            target, reason = last.target(now), last.reason
            if grantable is not None and k >= grantable[1]:
                grantable = None  # ask for the full target again
            held = provider.units_held()
            if grantable is not None and target > max(grantable[0], held):
                # Out of capacity: take what the provider can grant, never release for it.
                target = max(grantable[0], held)
                reason = f"{reason} [out_of_capacity: {grantable[0]} grantable]"
            refused = len(provider.refusals)
            provider.set_target(k, target, reason)
            if len(provider.refusals) > refused:
                assert capacity is not None  # only a limited pool refuses
                grantable = (provider.grantable(k) or 0, k + capacity.retry_minutes)
                # Take what can be granted in the same minute, not at the next one.
                capped = max(grantable[0], provider.units_held())
                if capped > provider.units_held():
                    provider.set_target(
                        k, capped, f"{reason} [out_of_capacity: {grantable[0]} grantable]")
        serving = committed[k] + provider.active_elastic_at(k)
        demanded += demand[t]
        spilled += max(0.0, demand[t] - serving)

    elastic = provider.elastic_series()
    commitments = [c for _, c in provider.commitments]
    w_inp, w_out, w_dem = inp[i0:], out[i0:], demand[i0:]
    cost = schedule_cost(start=w0, input_tokens=w_inp, output_tokens=w_out,
                         elastic_units=elastic, commitments=commitments, deployment=dep)
    committed_units = committed[:n]
    spill = np.maximum(0.0, w_dem - committed_units - elastic)

    reactive = _reactive(observed[i0 - min(i0, cfg.reactive_window_minutes):], w_dem, dep,
                         origin, n, min(i0, cfg.reactive_window_minutes), cfg,
                         provider.available)
    reactive_cost = schedule_cost(start=w0, input_tokens=w_inp, output_tokens=w_out,
                                  elastic_units=reactive, commitments=[], deployment=dep)
    # The hindsight optimum under the same pool and terms (issue #9): a lower bound for
    # any policy this provider could have served.
    terms = None if capacity is None else capacity.supported_terms
    best = hindsight_optimum(w_inp, w_out, dep, grantable=provider.available, terms=terms,
                             lead_minutes=dep.scale_up_lead_minutes)
    dedicated = dedicated_at_peak_cost(w_dem, dep)
    payg_all = payg_total_cost(w_inp, w_out, dep.pricing)

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_schedule(out_dir / "schedule.csv", w0, w_dem, committed_units, elastic, spill)
    _write_commitments(out_dir / "commitments.csv", provider.commitments, origin)
    # Refused scale-ups (out of capacity) are listed too: kind "elastic_refused".
    _write_actions(out_dir / "actions.csv",
                   sorted([*provider.events, *provider.refusals], key=lambda e: e.decided),
                   origin)
    summary = _summary(dep, origin, n, cost, reactive_cost, best, dedicated, payg_all, w_dem,
                       int(gaps[i0:].sum()), len(commitments), len(provider.events), cfg,
                       n_plans,
                       headrooms)
    if capacity is not None:
        summary["provider_capacity"] = _capacity_summary(capacity, provider, committed_units,
                                                         elastic, w_dem, origin)
    summary["bound"] = {
        "first_alert_utc": None if first_alert is None else _fmt_minute(origin, first_alert[0]),
        "first_alert": None if first_alert is None else first_alert[1],
        "first_cover": first_cover,
        "hindsight_constant_level": _hindsight_level(w0, w_inp, w_out, w_dem, dep, terms,
                                                     provider.available),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n",
                                          encoding="utf-8")
    return summary


def _capacity_summary(capacity: ProviderCapacity, provider: SimulatedProvider,
                      committed: Any, elastic: Any, demand: FloatArray,
                      origin: dt.datetime) -> dict[str, Any]:
    """What the pool allowed: the refused scale-ups, and the demand above commitments +
    pool (what new requests could have served; units held before a pool shrinks are kept,
    so this is not a bound on the spill of every schedule)."""
    free = provider.available
    short = 0.0
    if free is not None:
        reach = committed + np.minimum(free[:demand.size], np.iinfo(np.int64).max - committed)
        short = float(np.maximum(0.0, demand - reach).sum())
    return {
        "available_units": capacity.available_units,
        "windows": [{"start_utc": f"{w.start:%Y-%m-%dT%H:%MZ}",
                     "end_utc": f"{w.end:%Y-%m-%dT%H:%MZ}", "units": w.units}
                    for w in capacity.windows],
        "supported_terms": (None if capacity.supported_terms is None
                            else list(capacity.supported_terms)),
        "retry_minutes": capacity.retry_minutes,
        "refused_requests": len(provider.refusals),
        "first_refused_utc": (_fmt_minute(origin, provider.refusals[0].decided)
                              if provider.refusals else None),
        "unit_minutes_above_pool": round(short, 4),
        "peak_elastic_units": int(elastic.max(initial=0)),
    }


def _cover_summary(p: Any, k: int, origin: dt.datetime, bound: float) -> dict[str, Any]:
    """What the first plan with a cover estimated, per day (the backtest's day-1 view)."""
    c = p.cover
    return {"at_utc": _fmt_minute(origin, k), "kind": c.kind, "level": c.level,
            "headroom": c.headroom, "replayed_spill_fraction": round(c.spill_fraction, 6),
            "bound_cost_per_day": round(c.bound_cost_per_minute * 1440, 2),
            # The same on resampled replays (low, high percentile); null when unknown.
            "bound_cost_range_per_day": (
                [round(c.bound_cost_low_per_minute * 1440, 2),
                 round(c.bound_cost_high_per_minute * 1440, 2)]
                if math.isfinite(c.bound_cost_low_per_minute)
                and math.isfinite(c.bound_cost_high_per_minute) else None),
            "bound_uncertain": c.bound_uncertain,
            "bound_replayed_spill_fraction": round(c.bound_spill_fraction, 6),
            "ceiling_per_day": round(c.ceiling_per_minute * 1440, 2),
            "ceiling_spill_fraction": round(c.ceiling_spill_fraction, 6),
            "payg_per_day": round(c.payg_cost_per_minute * 1440, 2),
            "payg_cheaper_than_any_reservation": c.payg_cheapest,
            "bound_within_ceiling": c.bound_within_ceiling,
            "detail": c.describe(bound)}


def _hindsight_level(w0: np.datetime64, inp: FloatArray, out: FloatArray, dem: FloatArray,
                     dep: Deployment, terms: Sequence[int] | None = None,
                     grantable: Any = None) -> dict[str, Any]:
    """The cheapest constant capacity meeting the bound in hindsight, held all along at
    the 30-day rate (the yardstick of what meeting the bound really costs).

    On the terms sold only (``terms``; None: all): at the 7-day rate when 30 is not sold;
    as elastic units when no term is, as many of them as the pool (``grantable``) lets one
    take and keep, the least spill when no level meets the bound under it."""
    top = math.ceil(float(dem.max(initial=0.0)) - 1e-9)
    term = 30 if terms is None or 30 in terms else 7 if 7 in terms else None
    reach = (reachable_pool(grantable, dem.size)
             if term is None and grantable is not None else None)
    if reach is None:
        spill = constant_level_spill(dem, top + 1)
    else:
        total = float(dem.sum())
        spill = np.array([float(np.maximum(0.0, dem - np.minimum(u, reach)).sum())
                          / total if total > 0 else 0.0 for u in range(top + 1)])
    ok = np.flatnonzero(spill <= dep.max_spill_fraction + 1e-12)
    units = int(ok[0]) if ok.size else int(np.argmin(spill))
    elastic = np.zeros(dem.size, dtype=np.int64)
    commitments: list[Commitment] = []
    if term is None:
        elastic = np.full(dem.size, units, dtype=np.int64)
        if reach is not None:
            elastic = np.minimum(float(units), reach).astype(np.int64)
    elif units:
        # Renewed every term so the level is held over a window of any length.
        commitments = [Commitment(as_datetime(w0) + dt.timedelta(days=term * i), term, units)
                       for i in range(math.ceil(dem.size / (term * 1440)))]
    c = schedule_cost(start=w0, input_tokens=inp, output_tokens=out,
                      elastic_units=elastic, commitments=commitments, deployment=dep)
    days = dem.size / 1440
    out_: dict[str, Any] = {"units": units, "cost": round(c.total, 2),
                            "cost_per_day": round(c.total / days, 2) if days else None,
                            "spill_fraction": c.spill_fraction}
    if terms is not None or grantable is not None:
        out_["held_as"] = "elastic" if term is None else f"{term}-day"
    return out_


def _headroom_curve(observed: FloatArray, dep: Deployment,
                    cfg: BacktestSettings, pool: ProviderPool | None = None
                    ) -> HeadroomCurve | None:
    if cfg.headroom_days <= 0 or not applies_to(dep):
        return None
    days = observed[-int(cfg.headroom_days * 1440):]
    curve = headroom_curves(days, lead=dep.scale_up_lead_minutes,
                            hold=dep.min_hold_minutes)[0]
    return curve if curve is None or pool is None else replace(curve, pool=pool)


def _pool(capacity: ProviderCapacity | None) -> ProviderPool | None:
    """The pool the planner's cover is priced under: the provider's ``available_units``
    bound what can be held only when no commitment term is sold (commitments are not
    drawn from the elastic pool); the terms sold, when known."""
    if capacity is None:
        return None
    units = (capacity.available_units
             if capacity.supported_terms is not None and not capacity.supported_terms
             else None)
    return ProviderPool(units=units, terms=capacity.supported_terms)


def _reactive(observed: FloatArray, demand: FloatArray, dep: Deployment, origin: dt.datetime,
              n: int, pre: int, cfg: BacktestSettings, available: Any = None) -> Any:
    """A reactive autoscaler: the last minutes' peak plus headroom, same lead and hold,
    and the same capacity pool (``available`` per minute; it asks for no more than the
    pool grants, as if it knew the pool: the kindest reading of the baseline)."""
    provider = SimulatedProvider(origin, n, dep.scale_up_lead_minutes, dep.min_hold_minutes,
                                 available)
    w = cfg.reactive_window_minutes
    target = dep.min_units
    for k in range(n):
        t = pre + k
        window = observed[max(0, t - w):t]
        window = window[np.isfinite(window) & (window > 0)]
        # Missing or zero data keeps the last target: scaling to zero on a gap is an outage.
        if window.size:
            level = float(window.max()) * (1 + cfg.reactive_headroom)
            target = min(dep.max_units, max(dep.min_units, math.ceil(level - 1e-9)))
        free = provider.grantable(k)
        provider.set_target(k, target if free is None
                            else min(target, max(free, provider.units_held())))
    return provider.elastic_series()


def _fmt_minute(origin: dt.datetime, k: int) -> str:
    return f"{origin + k * MINUTE:%Y-%m-%dT%H:%MZ}"


def _write_schedule(path: Path, w0: np.datetime64, demand: FloatArray, committed: Any,
                    elastic: Any, spill: FloatArray) -> None:
    stamps = np.datetime_as_string(w0 + np.arange(demand.size).astype("timedelta64[m]"),
                                   unit="m")
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("minute_utc,demand_units,committed_units,elastic_units,spill_units\n")
        f.writelines(
            f"{s}Z,{d!r},{c},{e},{p!r}\n"
            for s, d, c, e, p in zip(stamps.tolist(), demand.tolist(), committed.tolist(),
                                     elastic.tolist(), spill.tolist(), strict=True)
        )


def _write_commitments(path: Path, bought: Sequence[tuple[int, Any]], origin: dt.datetime
                       ) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["start_utc", "term_days", "units"])
        for k, c in bought:
            w.writerow([_fmt_minute(origin, k), c.term_days, c.units])


def _write_actions(path: Path, events: Sequence[ProviderEvent], origin: dt.datetime) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["decided_utc", "effective_utc", "kind", "units", "target_units",
                    "term_days", "reason"])
        for e in events:
            w.writerow([_fmt_minute(origin, e.decided), _fmt_minute(origin, e.effective),
                        e.kind, e.units, "" if e.target is None else e.target,
                        "" if e.term_days is None else e.term_days, e.reason])


def _costs(c: CostBreakdown) -> dict[str, float]:
    return {"committed": round(c.committed, 2), "elastic": round(c.elastic, 2),
            "spill": round(c.spill, 2), "total": round(c.total, 2)}


def _summary(dep: Deployment, origin: dt.datetime, n: int, cost: CostBreakdown,
             reactive: CostBreakdown, best: Any, dedicated: float, payg: float,
             demand: FloatArray, gap_minutes: int, n_commitments: int, n_actions: int,
             cfg: BacktestSettings, n_plans: int,
             headrooms: Sequence[float | None] = ()) -> dict[str, Any]:
    total = cost.total

    def versus(base: float) -> dict[str, float | None]:
        if base <= 0:
            return {"ratio": None, "saving": None}
        return {"ratio": round(total / base, 4), "saving": round(1 - total / base, 4)}

    bound = dep.max_spill_fraction
    return {
        "deployment": dep.name,
        "start_utc": f"{origin:%Y-%m-%dT%H:%MZ}",
        "end_utc": f"{origin + n * MINUTE:%Y-%m-%dT%H:%MZ}",
        "minutes": n,
        "unit_tpm": dep.unit_tpm,
        "peak_demand_units": round(float(demand.max(initial=0.0)), 4),
        "spill_mode": dep.spill,
        "max_spill_fraction": bound,
        "cost": {**_costs(cost), "commitment_tail": round(cost.commitment_tail, 2)},
        "spill_fraction": cost.spill_fraction,
        "service_level_met": cost.service_level_met(bound),
        "commitments_bought": n_commitments,
        "provider_events": n_actions,
        "plans_made": n_plans,
        # One per refit; null where the per-minute rule decided (see planning/headroom.py).
        "calibrated_headrooms": [None if h is None else round(h, 4) for h in headrooms],
        "gap_minutes": gap_minutes,
        "gap_billing": "gap minutes have zero demand in the file: no spill, held capacity "
                       "billed as usual",
        "baselines": {
            "dedicated_at_peak": {
                "units": math.ceil(float(demand.max(initial=0.0)) - 1e-9),
                "cost": round(dedicated, 2)},
            "payg": {"cost": round(payg, 2)},
            "hindsight_optimum": {
                **_costs(best.cost), "lower_bound": round(best.lower_bound, 2),
                "commit_30d_units": best.commit_30d_units,
                "topup_7d_units": list(best.topup_7d_units),
                "spill_fraction": best.cost.spill_fraction,
                # Under the provider's pool and terms sold (False: unlimited, all terms);
                # bound_feasible False: no schedule meets the bound there, the optimum has
                # the least achievable spill (min_spill_fraction).
                "capped": best.capped, "bound_feasible": best.bound_feasible,
                "min_spill_fraction": best.min_spill_fraction},
            "reactive": {
                **_costs(reactive), "spill_fraction": reactive.spill_fraction,
                "service_level_met": reactive.service_level_met(bound),
                "window_minutes": cfg.reactive_window_minutes,
                "headroom": cfg.reactive_headroom},
        },
        "versus": {
            "dedicated_at_peak": versus(dedicated),
            "payg": versus(payg),
            "hindsight_optimum": versus(best.cost.total),
            "reactive": versus(reactive.total),
        },
        "settings": {"planner": asdict(cfg.planner), "quantiles": list(cfg.quantiles),
                     "refit_minutes": cfg.refit_minutes, "history_days": cfg.history_days,
                     "replan_minutes": cfg.replan_minutes,
                     "replan_on_change": cfg.replan_on_change,
                     "replan_on_required": cfg.replan_on_required,
                     "replan_below_band": cfg.replan_below_band, "follow": cfg.follow,
                     "seasonal": cfg.seasonal,
                     "seasonal_rel_tol": cfg.seasonal_rel_tol},
    }

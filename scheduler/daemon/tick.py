"""The daemon: one tick per minute turns forecasts and plans into capacity, safely.

Each tick reads the clock once (the caller passes ``now``) and, while this process is the
leader (a PostgreSQL advisory lock; a second daemon waits as a standby):

1. checks ingest freshness: usage older than ``staleness_minutes`` means *hold* capacity;
2. updates the level correction: the fitted model predicts from the latest minutes;
3. re-plans elastic targets (and, once a local day, commitments) and applies the rails;
4. journals the resulting actions, then recovers and sends due actions (exactly once);
5. reconciles the journal with what each provider holds and records drift.

Each tick also records the capacity every deployment holds at its minute (the capacity
ledger), and the service level realised this UTC month (spill-to-date, read from the
ledger and the usage) feeds the plans, so a month that spilled above the bound is paid back.

Forecast refits run on their own cadence (``refit_minutes``) and swap the models in
atomically, so a tick never waits for a refit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
import time
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
import structlog

import forecasting
from scheduler.config import Config, ConfigError, Deployment
from scheduler.daemon import journal, rails
from scheduler.daemon.providers import ProviderSet
from scheduler.observe.metrics import Metrics
from scheduler.pipeline.forecast import (
    History,
    HistoryBuffer,
    headroom_by_deployment,
    load_histories,
    minute_floor,
    refit,
)
from scheduler.pipeline.plan import COMMIT_FORECAST_MINUTES, make_plan
from scheduler.planning.economics import Commitment
from scheduler.planning.follow import ROUTINE, FollowedPlan, FollowSettings
from scheduler.planning.headroom import HeadroomCurve, ProviderPool
from scheduler.planning.planner import SpillToDate
from scheduler.providers.base import Holdings, Provider
from scheduler.providers.errors import OutOfCapacityError, ProviderError
from scheduler.store import costs as cost_store
from scheduler.store import decisions as decision_store
from scheduler.store import deployments as deployment_store
from scheduler.store import forecasts as forecast_store
from scheduler.store import journal as journal_store
from scheduler.store import ledger as ledger_store
from scheduler.store import partitions, retention
from scheduler.store import plans as plan_store
from scheduler.store import sources as source_store
from scheduler.store.locks import LeaderLock
from scheduler.store.plans import PlanRecord

log = structlog.get_logger()

#: Usage each tick re-reads; older minutes come from the history kept since the refit.
RELOAD_MINUTES = 120
#: The elastic headroom is recalibrated on refits at most this often: it replays a week,
#: which an hour more barely moves, and costs seconds at a thousand deployments (the
#: backtest also recalibrates daily).
HEADROOM_RECALIBRATE = dt.timedelta(days=1)
#: The service-level account (spill-to-date of the UTC month) is brought up to date this
#: often (daemon clock); plans in between use the cached account.
ACCOUNT_REFRESH_MINUTES = 15
#: A tick adds at most this much to the account itself; a longer stretch (a start late in
#: the month, a long stall) is read in the background unless the tick may work inline.
ACCOUNT_INLINE_MINUTES = 180
#: How long the elastic target stays capped at what an out-of-capacity provider said it
#: could grant before the full target is asked for again.
GRANTABLE_RETRY = dt.timedelta(minutes=10)


@dataclass
class DeploymentOutcome:
    deployment: str
    replan: str | None = None
    planned_target: int | None = None
    sent_target: int | None = None
    held: bool = False
    error: str | None = None
    commitments: int = 0


@dataclass
class TickReport:
    tick_id: str
    now: dt.datetime
    leader: bool
    paused: bool = False
    deployments: list[DeploymentOutcome] = field(default_factory=list)
    actions_planned: int = 0
    actions_confirmed: int = 0
    actions_failed: int = 0
    actions_retrying: int = 0
    drift: int = 0
    refitted: bool = False
    #: Re-plans this tick by reason (the rest of the deployments followed their plan).
    replans: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    _by_name: dict[str, DeploymentOutcome] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    def outcome(self, deployment: str) -> DeploymentOutcome:
        found = self._by_name.get(deployment)
        if found is None:
            found = self._by_name[deployment] = DeploymentOutcome(deployment)
            self.deployments.append(found)
        return found


@dataclass
class _Decision:
    deployment: Deployment
    record: PlanRecord | None
    target: int
    current: int
    reason: str
    commitments: tuple[Commitment, ...]
    decided_day: dt.date | None
    outcome: DeploymentOutcome
    plan_id: int | None = None


@dataclass(frozen=True)
class _Followed:
    plan: FollowedPlan
    #: What the plan stands on: committed units, staleness and the model generation.
    basis: tuple[Any, ...]


def _signature(holdings: Holdings) -> tuple[Any, ...]:
    return (holdings.elastic, holdings.commitments)


@dataclass(frozen=True)
class ServiceAccount:
    """Spill-to-date of the UTC month ``period`` over ``[period, settled_until)``."""

    period: dt.datetime
    settled_until: dt.datetime
    #: Daemon clock of the last refresh (None: never refreshed).
    refreshed_at: dt.datetime | None
    levels: Mapping[int, ledger_store.ServiceLevel]
    #: The UTC day of the read from ``period`` this account grew from (its last rebase).
    based_on: dt.date | None = None

    def plus(self, added: Mapping[int, ledger_store.ServiceLevel]
             ) -> dict[int, ledger_store.ServiceLevel]:
        """The levels with a later, disjoint stretch ``added`` to them."""
        levels = dict(self.levels)
        for ident, level in added.items():
            levels[ident] = levels[ident].plus(level) if ident in levels else level
        return levels

    @functools.cached_property
    def spill_to_date(self) -> Mapping[int, SpillToDate]:
        """The planner's view, per deployment id (built once per account)."""
        return {ident: SpillToDate(level.demand_unit_minutes, level.spill_unit_minutes)
                for ident, level in self.levels.items()}


@dataclass(frozen=True)
class Models:
    """The fitted models of one refit, swapped in as a whole."""

    fitted_at: dt.datetime
    by_name: Mapping[str, forecasting.FittedModel]
    run_ids: Mapping[str, int]
    #: Elastic headroom calibrated on each deployment's last week (None: per-minute rule).
    headroom: Mapping[str, HeadroomCurve | None] = field(default_factory=dict)
    headroom_at: dt.datetime | None = None


class Daemon:
    def __init__(
        self,
        config: Config,
        engine: sa.Engine,
        providers: ProviderSet,
        *,
        instance_id: str | None = None,
        metrics: Metrics | None = None,
        perf_counter: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.engine = engine
        self.providers = providers
        self.instance_id = instance_id or f"capsched-{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or Metrics()
        self.leader = LeaderLock(engine)
        self._perf_counter = perf_counter
        self._models: Models | None = None
        self._ids: dict[str, int] = {}
        self._last_target: dict[str, int] = {}
        self._buffers: dict[str, HistoryBuffer] = {}
        self._followed: dict[str, _Followed] = {}
        self._reconciled: dict[str, tuple[Any, ...]] = {}
        #: Deployments whose usage is stale, and since when (daemon clock).
        self._stale_since: dict[str, dt.datetime] = {}
        #: Deployments whose pull source last failed or answered with nothing.
        self._pull_stale: set[int] = set()
        #: After an out-of-capacity refusal: the elastic target the provider said it could
        #: grant, until when that cap holds (then the full target is asked for again).
        self._grantable: dict[str, tuple[int, dt.datetime]] = {}
        #: The caps of refusals journalled before this process started are read once.
        self._grantable_loaded = False
        #: Commitments last written to ``capacity_commitment`` per deployment (#13): the
        #: realised cost prices committed units at their term, written only on change.
        self._commitments_recorded: dict[int, tuple[Any, ...]] = {}
        #: Whether each deployment's provider sells commitments (read once a day).
        self._terms_on_offer: dict[str, tuple[tuple[int, ...], dt.date]] = {}
        # The service-level account: owned by the tick; a background read (a cold start
        # late in the month) hands its result over through _warmed.
        self._account: ServiceAccount | None = None
        self._warmed: tuple[int, ServiceAccount] | None = None
        self._warming: threading.Thread | None = None
        self._account_generation = 0
        self.follow_settings = FollowSettings()
        self.last_progress = perf_counter()
        self._sync_deployments()

    # -- configuration ---------------------------------------------------------------------

    def _sync_deployments(self) -> None:
        with self.engine.begin() as conn:
            self._ids = deployment_store.sync_deployments(conn, self.config.deployments)

    def reload(self, config: Config, providers: ProviderSet) -> None:
        """SIGHUP: a new config takes effect at the next tick; models refit for new ones."""
        removed = {d.name for d in self.config.deployments} - {d.name for d in config.deployments}
        for name in removed:
            self.metrics.forget_deployment(name)
        old_providers = self.providers
        self.config, self.providers = config, providers
        old_providers.close()
        self._sync_deployments()
        self._models = None  # deployments or their settings may have changed: refit
        self._followed.clear()
        self._reset_account()  # deployments may have been added: re-read the month

    # -- forecasting -------------------------------------------------------------------------

    def refit(self, now: dt.datetime) -> Models:
        """Fit every deployment's model on ``history_days`` of usage; store the runs."""
        deployments = self.config.deployments
        with self.engine.connect() as conn:
            histories = load_histories(conn, deployments, self._ids, now,
                                       self.config.daemon.history_days)
        ingest = self.config.ingest
        fits = refit(list(histories.values()), now, self.config.daemon.plan_horizon_minutes,
                     zero_gap_minutes=ingest.zero_gap_minutes,
                     zero_load_after_minutes=ingest.zero_load_after_minutes)
        with self.engine.begin() as conn:
            run_ids = forecast_store.insert_forecasts(conn, [f.record for f in fits.values()])
            # Settled days' realised cost is rolled up before retention may drop their
            # ledger minutes (#13).
            cost_store.roll_up(conn, list(self._ids.values()), now)
            # Retention rides on the refit: dropping whole expired months is cheap and
            # idempotent, so doing it hourly keeps at most a month past the limit.
            dropped = retention.prune(conn, now, self.config.database.retention_days,
                                      keep_days=self.config.daemon.history_days + 7)
        if dropped:
            log.info("retention", dropped=dropped)
        self._set_cost_gauges(now)
        previous = self._models
        if (previous is not None and previous.headroom_at is not None
                and dt.timedelta(0) <= now - previous.headroom_at < HEADROOM_RECALIBRATE):
            headroom, headroom_at = previous.headroom, previous.headroom_at
        else:
            headroom = headroom_by_deployment(
                list(histories.values()), zero_gap_minutes=ingest.zero_gap_minutes,
                zero_load_after_minutes=ingest.zero_load_after_minutes)
            headroom_at = now
        models = Models(
            fitted_at=now,
            by_name={name: f.model for name, f in fits.items()},
            run_ids=dict(zip(fits, run_ids, strict=True)),
            headroom=headroom,
            headroom_at=headroom_at,
        )
        buffers = {name: HistoryBuffer(history) for name, history in histories.items()}
        # Two assignments, buffers first: a tick that sees the new models finds their
        # histories; one that still sees the old models reads newer buffers, which is safe.
        self._buffers = buffers
        self._models = models
        log.info("refit", deployments=len(fits), as_of=now.isoformat())
        return models

    def _set_cost_gauges(self, now: dt.datetime) -> None:
        """Month-to-date cost by tier and spill fraction per deployment (#13)."""
        with self.engine.connect() as conn:
            month = cost_store.month_to_date(conn, list(self._ids.values()), now)
        for name, ident in self._ids.items():
            t = month[ident]
            self.metrics.set_cost_month_to_date(
                name, {"committed": t.committed, "elastic": t.elastic, "spill": t.spill,
                       "dedicated": t.dedicated, "payg": t.payg}, t.spill_fraction)

    def refit_due(self, now: dt.datetime) -> bool:
        models = self._models
        return models is None or now - models.fitted_at >= dt.timedelta(
            minutes=self.config.daemon.refit_minutes)

    # -- the tick ----------------------------------------------------------------------------

    def tick(self, now: dt.datetime, *, refit_inline: bool = True) -> TickReport:
        """One unit of work at ``now``. Never raises for a provider or per-deployment error."""
        started = self._perf_counter()
        now = now.astimezone(dt.UTC)
        report = TickReport(tick_id=f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}", now=now,
                            leader=False)
        try:
            report.leader = self.leader.try_acquire()
            if report.leader:
                self._lead(now, report, refit_inline=refit_inline)
        except sa.exc.DBAPIError as exc:
            # The database went away mid-tick: drop leadership (the lock died with the
            # connection anyway) and try again next tick.
            report.errors.append(f"database: {exc.orig}")
            self.leader.release()
        report.duration_seconds = self._perf_counter() - started
        self.last_progress = self._perf_counter()
        if report.leader:
            self._finish(report)
        log.info("tick", tick_id=report.tick_id, leader=report.leader, paused=report.paused,
                 deployments=len(report.deployments), actions_planned=report.actions_planned,
                 actions_sent=report.actions_confirmed, actions_failed=report.actions_failed,
                 retrying=report.actions_retrying, drift=report.drift, refitted=report.refitted,
                 replans=report.replans,
                 held=sum(d.held for d in report.deployments),
                 lag_seconds=round(report.duration_seconds, 3), errors=report.errors[:5])
        return report

    def _lead(self, now: dt.datetime, report: TickReport, *, refit_inline: bool) -> None:
        # Without any model there is nothing to plan from; otherwise refits run on their own
        # cadence (the daemon's refit job) unless the caller asks for one inline.
        if self._models is None or (refit_inline and self.refit_due(now)):
            self.refit(now)
            report.refitted = True
        models = self._models
        assert models is not None
        origin = minute_floor(now)
        deployments = self.config.deployments
        with self.engine.connect() as conn:
            report.paused = journal_store.is_paused(conn)
            fresh = load_histories(conn, deployments, self._ids, now, RELOAD_MINUTES / 1440)
            decided = decision_store.decided_on(conn, list(self._ids.values()))
            self._pull_stale = source_store.stale_deployment_ids(conn)
        spill = self._spill_to_date(origin, inline=refit_inline)
        self.metrics.set_paused(report.paused)
        holdings = self._read_holdings(report)
        capacity = [
            ledger_store.CapacityRecord(self._ids[name], origin, held.committed_at(origin),
                                        held.elastic_at(origin))
            for name, held in holdings.items() if name in self._ids]
        self._record_commitments(holdings)
        month_start, month_end = rails.month_bounds(origin)
        committed_spend = sum(
            rails.committed_spend_in(
                [Commitment(c.start, c.term_days, c.units) for c in held.commitments
                 if c.term_days in (7, 30)], self.config.deployment(name), month_start,
                month_end)
            for name, held in holdings.items())
        if not self._grantable_loaded:
            self._load_grantable(now)
        decisions: list[_Decision] = []
        budget_ends = self._perf_counter() + self.config.daemon.replan_budget_seconds
        for deployment in deployments:
            outcome = report.outcome(deployment.name)
            held = holdings.get(deployment.name)
            if held is None:
                continue
            buffer = self._buffers.get(deployment.name)
            if deployment.name not in models.by_name or buffer is None:
                outcome.error = "no forecast model yet"
                continue
            history = buffer.update(fresh[deployment.name])
            try:
                decision = self._decide(deployment, history, held, models, origin, outcome,
                                        decided.get(self._ids[deployment.name]),
                                        spill.get(self._ids[deployment.name]),
                                        routine_allowed=self._perf_counter() < budget_ends)
            except (ValueError, ProviderError) as exc:
                outcome.error = f"plan: {exc}"
                continue
            decisions.append(decision)
        for decision in decisions:
            if decision.outcome.replan:
                report.replans[decision.outcome.replan] = (
                    report.replans.get(decision.outcome.replan, 0) + 1)
        self._record(decisions, origin, capacity)
        if not report.paused:
            for decision in decisions:
                committed_spend += self._journal(decision, report, now, committed_spend)
        for outcome in report.deployments:
            if outcome.error:
                report.errors.append(f"{outcome.deployment}: {outcome.error}")
        touched = set()
        if not report.paused:
            touched = self._send(now, report)
        self._reconcile(now, report, holdings, touched)

    def _read_holdings(self, report: TickReport) -> dict[str, Holdings]:
        """One batched read per provider; a failing batch is retried per deployment."""
        by_provider: dict[str, list[str]] = {}
        for deployment in self.config.deployments:
            report.outcome(deployment.name)
            by_provider.setdefault(deployment.provider, []).append(deployment.name)
        holdings: dict[str, Holdings] = {}
        for provider_name, names in by_provider.items():
            try:
                provider = self.providers.get(provider_name)
                holdings.update(provider.holdings_many(names))
                continue
            except ProviderError:
                pass
            except ConfigError as exc:
                for name in names:
                    report.outcome(name).error = f"provider: {exc}"
                continue
            for name in names:
                try:
                    holdings[name] = provider.holdings(name)
                except ProviderError as exc:
                    report.outcome(name).error = f"holdings: {exc}"
                    self.metrics.record_provider_error(provider_name, type(exc).__name__)
        return holdings

    def _decide(
        self,
        deployment: Deployment,
        history: History,
        holdings: Holdings,
        models: Models,
        origin: dt.datetime,
        outcome: DeploymentOutcome,
        decided_on: dt.date | None,
        spill_to_date: SpillToDate | None = None,
        *,
        routine_allowed: bool = True,
    ) -> _Decision:
        """Follow or re-plan one deployment and apply the rails (no database writes)."""
        stale = (self._stale(history, origin)
                 or self._ids.get(deployment.name) in self._pull_stale)
        self._note_staleness(deployment.name, stale, history, origin)
        local_now = origin.astimezone(zoneinfo.ZoneInfo(deployment.timezone))
        # Stale usage defers the day's commitment decision (it is not recorded as made), so
        # it is taken on the first fresh tick instead of on a forecast nothing supports.
        decide = (local_now.strftime("%H:%M") >= self.config.daemon.commit_decision_time
                  and decided_on != local_now.date() and not stale
                  and bool(self._terms_on_offer_for(deployment, local_now.date())))
        # Re-plan when what the plan stood on moved: committed units, staleness, the model,
        # or an elastic target other than the one this daemon last asked for (a rejected
        # action or a change by hand). Our own confirmed actions are what the plan wanted.
        committed_now = holdings.committed_at(origin)
        basis = (committed_now, stale, models.fitted_at)
        surprised = holdings.elastic_target != self._last_target.get(
            deployment.name, holdings.elastic_target)
        last_value = history.demand[-1] if history.demand.size else np.nan
        observed = None if np.isnan(last_value) else float(last_value)
        followed = self._followed.get(deployment.name)
        record: PlanRecord | None = None
        new_commitments: tuple[Commitment, ...] = ()
        why = None if followed is None else followed.plan.why_due(
            origin, observed, self.follow_settings, phase=self._ids[deployment.name])
        if why in ROUTINE and not routine_allowed:
            why = None  # the plan covers this minute; re-plan on a quieter tick
        replan = ("first" if followed is None else "basis" if followed.basis != basis
                  else "commitment_decision" if decide else "surprised" if surprised else why)
        if replan is not None:
            outcome.replan = replan
            model = models.by_name[deployment.name]
            fc = model.predict(history.demand, origin=origin,
                               horizon=self.config.daemon.plan_horizon_minutes)
            commit_fc = (model.predict(history.demand, origin=origin,
                                       horizon=COMMIT_FORECAST_MINUTES) if decide else None)
            # What the provider lets the deployment hold, once a refusal has said so and
            # no commitment term is sold: the plan's bound alert then says the bound cannot
            # be met with those units instead of pricing a cover the provider cannot grant.
            grant = self._grantable.get(deployment.name)
            sold = (self._terms_on_offer_for(deployment, local_now.date())
                    if grant is not None else None)
            pool = (ProviderPool(units=grant[0], terms=sold)
                    if grant is not None and sold is not None and not sold else None)
            result = make_plan(
                history=history, forecast=fc, holdings=holdings, now=origin, mode="live",
                horizon_minutes=self.config.daemon.plan_horizon_minutes,
                forecast_run_id=models.run_ids.get(deployment.name), commit_forecast=commit_fc,
                held=stale, spill_to_date=spill_to_date,
                headroom=models.headroom.get(deployment.name),
                zero_load_after_minutes=self.config.ingest.zero_load_after_minutes,
                commit_terms=(self._terms_on_offer_for(deployment, local_now.date())
                              if decide else (30, 7)), pool=pool)
            record = result.record
            new_commitments, cut = rails.commitments_with_evidence(
                result.plan.new_commitments, committed_now=committed_now,
                recent_demand=history.demand, deployment=deployment, stale=stale)
            if cut:
                log.warning("commitment_rail", deployment=deployment.name, reasons=list(cut))
                record = dataclasses.replace(
                    record,
                    commitments=[{"start": c.start.isoformat(), "term_days": c.term_days,
                                  "units": c.units} for c in new_commitments],
                    reasons=[*record.reasons, *({"at": origin.isoformat(), "tier": "committed",
                                                 "rule": "commitment_evidence", "quantile": None,
                                                 "detail": why} for why in cut)])
            # The plan expects its own purchases to be held from the next tick on.
            bought = sum(c.units for c in new_commitments)
            followed = _Followed(FollowedPlan(result.plan, deployment.scale_up_lead_minutes),
                                 (committed_now + bought, stale, models.fitted_at))
            self._followed[deployment.name] = followed
        assert followed is not None  # planned above when there was none
        current = holdings.elastic_target
        committed = committed_now
        planned = followed.plan.target(origin)
        rail = rails.elastic_target(
            planned=planned, current=current, committed=committed, deployment=deployment,
            stale=stale, max_change_per_tick=self.config.daemon.max_change_per_tick)
        target, rail_reasons = rail.target, list(rail.reasons)
        capped = self._grantable.get(deployment.name)
        if capped is not None and origin >= capped[1]:
            del self._grantable[deployment.name]  # ask for the full target again
            capped = None
        if capped is not None and target > max(capped[0], current):
            # Out of capacity: take what the provider can grant now, ask for the rest
            # when the cap expires (never release units because of the cap).
            target = max(capped[0], current)
            rail_reasons.append(f"out_of_capacity: {capped[0]} grantable")
        outcome.planned_target, outcome.held = planned, rail.held
        self.metrics.set_held(deployment.name, rail.held)
        if observed is not None:
            self.metrics.set_demand(deployment.name, observed)
            self.metrics.set_spill(deployment.name,
                                   max(0.0, observed - holdings.capacity_at(origin)))
        self.metrics.set_capacity(deployment.name, committed=committed,
                                  elastic=holdings.elastic_at(origin))
        reason = followed.plan.reason or "follow plan"
        if rail_reasons:
            reason += f" [rails: {', '.join(rail_reasons)}]"
        return _Decision(deployment=deployment, record=record, target=target,
                         current=current, reason=reason, commitments=new_commitments,
                         decided_day=local_now.date() if decide else None, outcome=outcome)

    def _record_commitments(self, holdings: Mapping[str, Holdings]) -> None:
        """Store the commitments the provider reports when they changed (realised cost)."""
        changed = {
            self._ids[name]: tuple((c.commitment_id, c.units, c.term_days, c.start, c.end)
                                   for c in held.commitments)
            for name, held in holdings.items() if name in self._ids}
        changed = {i: c for i, c in changed.items()
                   if c and self._commitments_recorded.get(i) != c}
        if changed:
            with self.engine.begin() as conn:
                cost_store.record_commitments(conn, changed)
            self._commitments_recorded.update(changed)

    def _record(self, decisions: list[_Decision], origin: dt.datetime,
                capacity: list[ledger_store.CapacityRecord]) -> None:
        """Store every new plan (and commitment decision) of this tick and the capacity held
        at its minute (one statement for all deployments) in one transaction."""
        fresh = [d for d in decisions if d.record is not None]
        if not fresh and not capacity and not any(d.decided_day for d in decisions):
            return
        with self.engine.begin() as conn:
            ledger_store.record_capacity(conn, capacity)
            ids = plan_store.insert_plans(conn, [d.record for d in fresh if d.record])
            for decision, plan_id in zip(fresh, ids, strict=True):
                decision.plan_id = plan_id
            for decision in decisions:
                if decision.decided_day is not None:
                    decision_store.record_decision(
                        conn, self._ids[decision.deployment.name], decision.decided_day, origin)

    def _journal(self, decision: _Decision, report: TickReport, now: dt.datetime,
                 committed_spend: float) -> float:
        """Journal this decision's actions; return the commitment spend it adds this month."""
        deployment, ident = decision.deployment, self._ids[decision.deployment.name]
        origin = minute_floor(now)
        # No memory of "already asked" here: the journal returns an identical open action
        # instead of a duplicate, and after a failure (out of capacity) the same target
        # must be asked for again; it waits in the journal until the backoff ends.
        if decision.target != decision.current:
            journal.plan_action(self.engine, journal.ActionRequest(
                deployment_id=ident, kind=journal_store.KIND_ELASTIC, target_units=decision.target,
                due_at=origin, effective_at=origin + dt.timedelta(
                    minutes=deployment.scale_up_lead_minutes),
                plan_id=decision.plan_id, reason=decision.reason[:500]), now)
            report.actions_planned += 1
            decision.outcome.sent_target = decision.target
        self._last_target[deployment.name] = decision.target
        added = 0.0
        month_start, month_end = rails.month_bounds(origin)
        for commitment in decision.commitments:
            if not rails.commitment_within_budget(
                    new=commitment, existing_spend_this_month=committed_spend + added,
                    deployment=deployment, now=origin,
                    monthly_budget=self.config.daemon.monthly_budget):
                report.errors.append(
                    f"{deployment.name}: commitment of {commitment.units} unit(s) for "
                    f"{commitment.term_days} days blocked by the monthly budget")
                continue
            journal.plan_action(self.engine, journal.ActionRequest(
                deployment_id=ident, kind=journal_store.KIND_COMMITMENT, units=commitment.units,
                term_days=commitment.term_days, due_at=origin, effective_at=commitment.start,
                plan_id=decision.plan_id, reason="daily commitment decision"), now)
            added += rails.committed_spend_in([commitment], deployment, month_start, month_end)
            report.actions_planned += 1
            decision.outcome.commitments += commitment.units
        return added

    # -- the service-level account -------------------------------------------------------------

    def _spill_to_date(self, origin: dt.datetime, *, inline: bool) -> Mapping[int, SpillToDate]:
        """Spill-to-date of the UTC month per deployment id ({} while the account is cold).

        Every ``ACCOUNT_REFRESH_MINUTES`` the account adds the minutes that have settled
        since the last refresh (one query for all deployments, a quarter hour of ledger).
        The first read of a month already under way (a start or a reload mid-month) covers
        up to a month: whole days come from the daily roll-ups (computed and stored on first
        read), the rest from the raw ledger, up to a day of it, still seconds at a thousand
        deployments: it runs in the background and plans go without the account meanwhile,
        unless ``inline`` (a replay, ``--once``, tests) allows the tick to wait.

        Once a UTC day the month is read again from its start the same way (a rebase), so
        usage that arrived after its minutes were added reaches the account within a day;
        until the rebase is in, plans keep the account they had.
        """
        period = partitions.month_start(origin)
        # The account stops ledger_store.SETTLE before now; a minute once added is read again
        # only at the next daily rebase.
        settle = max(period, origin - ledger_store.SETTLE)
        account = self._account
        warmed = self._warmed
        if warmed is not None and warmed[0] == self._account_generation:
            self._warmed = None
            if warmed[1].period == period and (
                    account is None or account.period != period
                    or account.settled_until < warmed[1].settled_until
                    or (account.based_on or dt.date.min) < (warmed[1].based_on or dt.date.min)):
                account = warmed[1]
        if (account is not None and account.refreshed_at is not None
                and account.period == period and account.settled_until <= settle
                and origin - account.refreshed_at < dt.timedelta(minutes=ACCOUNT_REFRESH_MINUTES)
                and origin >= account.refreshed_at):
            return account.spill_to_date  # fresh enough
        ids = sorted(self._ids.values())
        if account is None or account.period != period or account.settled_until > settle:
            # A new month starts from nothing; a clock that went back starts over.
            account = ServiceAccount(period, period, None, {}, settle.date())
        elif account.based_on != settle.date():
            rebase = ServiceAccount(period, period, None, {}, settle.date())
            if inline:
                account = rebase
            else:
                self._warm_in_background(ids, rebase, settle, origin)
        gap = settle - account.settled_until
        if gap > dt.timedelta(minutes=ACCOUNT_INLINE_MINUTES) and not inline:
            self._warm_in_background(ids, account, settle, origin)
            # Behind after a stall: the account so far is still the best estimate.
            return {} if account.refreshed_at is None else account.spill_to_date
        if gap > dt.timedelta(0):
            with self.engine.begin() as conn:
                added = ledger_store.month_to_date(conn, ids, account.settled_until, settle,
                                                   now=origin)
            account = ServiceAccount(period, settle, origin, account.plus(added),
                                     account.based_on)
        else:
            account = ServiceAccount(period, account.settled_until, origin, account.levels,
                                     account.based_on)
        self._account = account
        return account.spill_to_date

    def _warm_in_background(self, ids: list[int], base: ServiceAccount,
                            until: dt.datetime, now: dt.datetime) -> None:
        """Add ``[base.settled_until, until)`` to ``base`` in a thread; the tick installs it."""
        running = self._warming
        if running is not None and running.is_alive():
            return
        generation = self._account_generation

        def read() -> None:
            try:
                with self.engine.begin() as conn:
                    added = ledger_store.month_to_date(conn, ids, base.settled_until, until,
                                                       now=now)
            except Exception:  # the next tick that finds the account behind tries again
                log.exception("service_level_read_failed")
                return
            self._warmed = (generation, ServiceAccount(base.period, until, None,
                                                       base.plus(added), base.based_on))
            log.info("service_level_read", deployments=len(ids),
                     since=base.settled_until.isoformat(), until=until.isoformat())

        self._warming = threading.Thread(target=read, name="capsched-service-level",
                                         daemon=True)
        self._warming.start()

    def _reset_account(self) -> None:
        self._account_generation += 1
        self._account = None
        self._warmed = None

    def _stale(self, history: History, origin: dt.datetime) -> bool:
        """No usage seen in the last ``staleness_minutes`` before ``origin``.

        Only that tail is looked at: scanning weeks of history per deployment per tick
        added up to a tenth of a tick at 1,000 deployments.
        """
        window = dt.timedelta(minutes=self.config.daemon.staleness_minutes)
        first_fresh = (origin - window - history.start) // dt.timedelta(minutes=1)
        tail = history.demand[max(0, first_fresh):]
        return bool(tail.size == 0 or np.isnan(tail).all())

    def _note_staleness(self, name: str, stale: bool, history: History,
                        origin: dt.datetime) -> None:
        """Log the change into and out of stale usage (the tick line and the ``held``
        gauge carry it on every tick)."""
        was = name in self._stale_since
        if stale and not was:
            self._stale_since[name] = origin
            seen = np.flatnonzero(~np.isnan(history.demand))
            last = (None if seen.size == 0 else
                    (history.start + dt.timedelta(minutes=int(seen[-1]) + 1)).isoformat())
            log.warning("stale_usage", deployment=name, last_usage_until=last,
                        staleness_minutes=self.config.daemon.staleness_minutes,
                        action="holding capacity, commitments deferred")
        elif not stale and was:
            since = self._stale_since.pop(name)
            log.info("usage_fresh_again", deployment=name, stale_since=since.isoformat())

    def _load_grantable(self, now: dt.datetime) -> None:
        """At start (``run --once`` is always a start): the out-of-capacity refusals of the
        last ``GRANTABLE_RETRY`` still cap their deployments' targets."""
        self._grantable_loaded = True
        with self.engine.connect() as conn:
            failed = journal_store.recent_failures(conn, OutOfCapacityError.__name__,
                                                   minute_floor(now) - GRANTABLE_RETRY)
        if not failed:
            return
        names = {ident: name for name, ident in self._ids.items()}
        for ident, at in failed.items():
            name = names.get(ident)
            if name is None:
                continue
            try:
                provider = self.providers.get(self.config.deployment(name).provider)
            except Exception:  # reported by the planning pass
                continue
            self._learn_grantable(provider, name, at)

    def _learn_grantable(self, provider: Provider, name: str | None, now: dt.datetime
                         ) -> None:
        """After an out-of-capacity refusal, cap the deployment's elastic target at what
        the provider says it can grant (``ProviderLimits.available_units``) for
        ``GRANTABLE_RETRY``; then the full target is asked for again."""
        if name is None:
            return
        try:
            available = provider.limits(name).available_units
        except ProviderError:
            return
        if available is None:
            return  # the provider does not say: back off and ask again as before
        self._grantable[name] = (available, minute_floor(now) + GRANTABLE_RETRY)
        log.warning("out_of_capacity_partial", deployment=name, grantable=available,
                    retry_full_at=(minute_floor(now) + GRANTABLE_RETRY).isoformat())

    def _take_what_is_grantable(self, provider: Provider, ident: int, name: str,
                                now: dt.datetime, report: TickReport) -> None:
        """Right after an out-of-capacity refusal of a scale-up, in the same tick: journal
        and send the capped target max(grantable, held), so the units the provider can
        grant are asked for now rather than at the next tick (a minute of spill a refusal).

        It is one more journalled action (fresh idempotency key, planned before it is sent,
        :func:`journal.send_due`), so it is applied exactly once like any other. The refusal
        set the deployment's backoff; that backoff guards against asking for the refused
        target again, not for what the provider has just said it can grant, so it is lifted
        for this one send and put back (if still stronger) unless the capped target is
        accepted. One capped request per refusal: a refused capped target is not retried
        in this tick.
        """
        capped = self._grantable.get(name)
        if capped is None:
            return  # the provider did not say what it can grant: back off as before
        try:
            held = provider.holdings(name).elastic_target
        except ProviderError as exc:
            report.errors.append(f"{name}: holdings after out_of_capacity: {exc}")
            return
        target = max(capped[0], held)
        if target <= held:
            return  # nothing more can be granted now
        deployment = self.config.deployment(name)
        origin = minute_floor(now)
        action = journal.plan_action(self.engine, journal.ActionRequest(
            deployment_id=ident, kind=journal_store.KIND_ELASTIC, target_units=target,
            due_at=origin, effective_at=origin + dt.timedelta(
                minutes=deployment.scale_up_lead_minutes),
            reason=f"out_of_capacity: {capped[0]} grantable, taken in the refusal's tick"),
            now)
        report.actions_planned += 1
        self._last_target[name] = target
        with self.engine.begin() as conn:
            before = journal_store.read_backoffs(conn, [ident]).get(ident)
            journal_store.clear_backoff(conn, ident)
        step = journal.send_due(self.engine, provider, {ident: name}, now,
                                max_retry_after=self.config.daemon.provider_max_retry_after_seconds)
        accepted = False
        for outcome in step.outcomes:
            if outcome.action_id == action.id and outcome.outcome in ("confirmed", "pending"):
                accepted = True
            self.metrics.record_action(deployment.provider, outcome.kind or "unknown",
                                       outcome.outcome)
            if outcome.error_class:
                self.metrics.record_provider_error(deployment.provider, outcome.error_class)
        report.actions_confirmed += len(step.confirmed)
        report.actions_failed += len(step.failed)
        report.actions_retrying += len(step.retrying)
        report.errors.extend(step.stopped.values())
        for alert in step.alerts:
            report.errors.append(f"provider {deployment.provider}: {alert.error}")
        if not accepted and before is not None:
            with self.engine.begin() as conn:
                now_backoff = journal_store.read_backoffs(conn, [ident]).get(ident)
                if (now_backoff is None or now_backoff.until is None
                        or (before.until is not None and before.until > now_backoff.until)):
                    journal_store.write_backoff(conn, before, now)

    def _terms_on_offer_for(self, deployment: Deployment, day: dt.date) -> tuple[int, ...]:
        """Commitment terms (days) the deployment's provider sells, asked once a local day
        (empty: it sells none). A plan must not lean on a purchase that cannot happen (it
        would hold no elastic unit for load the commitment was to serve)."""
        known = self._terms_on_offer.get(deployment.name)
        if known is not None and known[1] == day:
            return known[0]
        try:
            terms = tuple(self.providers.get(deployment.provider).limits(
                deployment.name).supported_terms)
        except (ProviderError, ConfigError):
            return (30, 7)  # unknown: decide as before; a refusal is journalled
        self._terms_on_offer[deployment.name] = (terms, day)
        return terms

    def _providers_in_use(self) -> dict[str, tuple[Provider, dict[int, str]]]:
        grouped: dict[str, tuple[Provider, dict[int, str]]] = {}
        for deployment in self.config.deployments:
            try:
                provider = self.providers.get(deployment.provider)
            except Exception:  # reported by the planning pass already
                continue
            grouped.setdefault(deployment.provider, (provider, {}))[1][
                self._ids[deployment.name]] = deployment.name
        return grouped

    def _send(self, now: dt.datetime, report: TickReport) -> set[int]:
        """Recover and send due actions; return the deployments whose journal moved."""
        touched: set[int] = set()
        hint = self.config.daemon.provider_max_retry_after_seconds
        for name, (provider, names) in self._providers_in_use().items():
            stopped: dict[int, str] = {}
            #: Deployments whose elastic scale-up was refused out of capacity this tick.
            refused: set[int] = set()
            for step in (journal.recover(self.engine, provider, now, deployment_name_by_id=names,
                                         max_retry_after=hint),
                         journal.send_due(self.engine, provider, names, now,
                                          max_retry_after=hint)):
                # A deployment stopped after drift alerts on every tick until resumed.
                report.errors.extend(step.stopped.values())
                stopped.update(step.stopped)
                report.actions_confirmed += len(step.confirmed)
                report.actions_failed += len(step.failed)
                report.actions_retrying += len(step.retrying)
                for outcome in step.outcomes:
                    touched.add(outcome.deployment_id)
                    if outcome.error_class == OutOfCapacityError.__name__:
                        self._learn_grantable(provider, names.get(outcome.deployment_id), now)
                        if outcome.kind == journal_store.KIND_ELASTIC:
                            refused.add(outcome.deployment_id)
                    self.metrics.record_action(name, outcome.kind or "unknown", outcome.outcome)
                    if outcome.error_class:
                        self.metrics.record_provider_error(name, outcome.error_class)
                for alert in step.alerts:
                    report.errors.append(f"provider {name}: {alert.error}")
            for ident in sorted(refused - set(stopped)):
                self._take_what_is_grantable(provider, ident, names[ident], now, report)
            for ident, dep in names.items():
                self.metrics.set_sending_stopped(dep, ident in stopped)
        return touched

    def _reconcile(self, now: dt.datetime, report: TickReport,
                   holdings: Mapping[str, Holdings], touched: set[int]) -> None:
        """Compare journal and provider where either side may have moved since last tick.

        Drift can only appear where the provider's holdings changed or the journal
        confirmed something; comparing the other deployments again would find the same.
        """
        for name, (provider, names) in self._providers_in_use().items():
            changed = {
                ident: dep for ident, dep in names.items()
                if ident in touched or dep not in holdings
                or self._reconciled.get(dep) != _signature(holdings[dep])
            }
            if not changed:
                continue
            # The tick's snapshot predates this tick's sends: re-read where the journal moved.
            current = dict(holdings)
            moved = [dep for ident, dep in changed.items() if ident in touched]
            try:
                if moved:
                    current.update(provider.holdings_many(moved))
                drifts = journal.reconcile(
                    self.engine, provider, changed, now, holdings=current,
                    drift_stop_after=self.config.daemon.drift_stop_after)
            except ProviderError as exc:
                report.errors.append(f"reconcile {name}: {exc}")
                continue
            for dep in changed.values():
                if dep in current:
                    self._reconciled[dep] = _signature(current[dep])
            for drift in drifts:
                if drift.event_id is not None:
                    report.drift += 1
                    log.warning("drift", deployment=drift.deployment, kind=drift.kind,
                                expected=drift.expected, actual=drift.actual)

    def _finish(self, report: TickReport) -> None:
        self.metrics.observe_tick(report.duration_seconds, report.now)
        try:
            with self.engine.begin() as conn:
                journal_store.record_heartbeat(
                    conn, instance_id=self.instance_id, tick_at=report.now,
                    tick_id=report.tick_id, ok=report.ok,
                    error="; ".join(report.errors)[:2000] or None)
        except sa.exc.DBAPIError as exc:
            log.error("heartbeat_failed", error=str(exc.orig))

    def close(self) -> None:
        self.leader.release()
        self.providers.close()


def set_provider_clocks(providers: ProviderSet, config: Config, clock: Callable[[], dt.datetime]
                        ) -> None:
    """For ``--now``: simulated providers follow the given time instead of the wall clock."""
    for deployment in config.deployments:
        try:
            provider: Any = providers.get(deployment.provider)
        except Exception:
            continue
        if hasattr(provider, "set_clock"):
            provider.set_clock(clock)

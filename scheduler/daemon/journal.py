"""The action journal: an outbox that applies each planned change at the provider exactly once.

Life of an action (``action`` table, :mod:`scheduler.store.journal`)::

    plan_action -> planned -(1) mark sent, COMMIT-> sent -(2) provider call (same key)
                     |                                 |
                     +-> superseded (newer target)     +-(3) receipt DONE -> confirmed
                                                       +- temporary error -> sent, next_attempt_at,
                                                       |    backoff of the deployment
                                                       +- out of capacity/quota -> failed, backoff
                                                       +- permanent/not supported -> failed, alert

The idempotency key is written with the action BEFORE anything is sent and is reused for every
attempt, so resending is always safe: the provider replays instead of applying twice. A crash
between (1) and (3) leaves the action ``sent``; :func:`recover` asks the provider what became
of the key (``lookup_request``) and confirms it, fails it, leaves it (pending) or resends it
with the same key (the provider never saw it).

Ordering per deployment: an elastic target is not sent while an older elastic action of the
same deployment is still ``sent`` (unresolved), and :func:`recover` supersedes an unresolved
older target the provider never saw once a newer one exists, so an old target can never be
applied after a newer one.

:func:`reconcile` compares what the provider holds with what the journal says it should hold
and records ``drift_event`` rows; it never corrects anything (the daemon plans from what the
provider really holds).

Backoff belongs to the deployment (its provider), not to an action: a temporary error of a
send (5xx, 429, timeout, an unreadable 2xx) or an out-of-capacity/quota refusal sets
``deployment_backoff``, growing with consecutive failures and honouring the provider's
``Retry-After`` up to ``max_retry_after`` seconds; while it lasts no action of the deployment
is sent or resent (lookups of keys already sent go on), and superseding an action by a newer
target does not reset it. Only a confirmed action clears it.

A provider that answers "done" and does not change its holdings is caught by
:func:`reconcile`: after ``drift_stop_after`` such actions in a row it writes a
``sending_stopped`` marker, and :func:`send_due` sends nothing more to that deployment (the
capacity it holds is held) and reports it in :attr:`SendReport.stopped` on every call, until
the holdings match the journal again or :func:`resume_sending` is called.

No function here reads the clock: ``now`` is always a parameter. Provider errors never escape;
they are reported in the returned value objects. ``BaseException`` (a crash, ``SystemExit``)
propagates untouched: the journal's state on disk is what recovery relies on.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog

from scheduler.providers.base import (
    CommitmentReceipt,
    ElasticReceipt,
    Holdings,
    Provider,
    RequestLookup,
    RequestStatus,
    require_utc,
)
from scheduler.providers.errors import (
    NotSupportedError,
    OutOfCapacityError,
    ProviderError,
    QuotaExceededError,
)
from scheduler.providers.retry import (
    DEFAULT_BACKOFF_POLICY,
    Backoff,
    Disposition,
    RandomSource,
    RetryPolicy,
    classify,
)
from scheduler.store import journal as store
from scheduler.store.journal import KIND_COMMITMENT, KIND_ELASTIC, ActionRecord

log = structlog.get_logger()

#: An action as stored in the journal.
Action = ActionRecord

#: Retrying a ``sent`` action after a temporary error: from the next tick or so, up to 10 min.
JOURNAL_RETRY_POLICY = RetryPolicy(
    max_attempts=1, base_delay=15.0, max_delay=600.0, multiplier=2.0, jitter=0.5
)
#: The longest provider ``Retry-After`` honoured by default (``[daemon]
#: provider_max_retry_after_seconds``); a longer hint is cut to it.
DEFAULT_MAX_RETRY_AFTER = 3600.0
#: Actions in a row answered "done" without a change before sending stops (``[daemon]
#: drift_stop_after``).
DEFAULT_DRIFT_STOP_AFTER = 3
#: Provider error codes (``RequestLookup.error_code``) that mean "back off this deployment".
BACKOFF_CODES = frozenset({"out_of_capacity", "quota_exceeded"})
DRIFT_ELASTIC = "elastic_target"
DRIFT_COMMITTED = "committed_units"

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


# -- value objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class ActionRequest:
    """A change the planner decided on, to be journalled before it is sent.

    ``kind`` is ``"elastic_set_target"`` (with ``target_units``) or ``"buy_commitment"``
    (with ``units`` and ``term_days``). ``due_at`` is when to send it (``now`` if omitted at
    planning time), ``effective_at`` when it is expected to serve.
    """

    deployment_id: int
    kind: str
    target_units: int | None = None
    units: int | None = None
    term_days: int | None = None
    due_at: dt.datetime | None = None
    effective_at: dt.datetime | None = None
    plan_id: int | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind == KIND_ELASTIC:
            if self.target_units is None or self.target_units < 0:
                raise ValueError("an elastic action needs target_units >= 0")
            if self.units is not None or self.term_days is not None:
                raise ValueError("an elastic action takes no units/term_days")
        elif self.kind == KIND_COMMITMENT:
            if self.units is None or self.units < 1 or self.term_days is None or self.term_days < 1:
                raise ValueError("a commitment action needs units >= 1 and term_days >= 1")
            if self.target_units is not None:
                raise ValueError("a commitment action takes no target_units")
        else:
            raise ValueError(f"action kind must be one of {store.ACTION_KINDS}, got {self.kind!r}")
        for name in ("due_at", "effective_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(value, name))


@dataclass(frozen=True)
class ActionOutcome:
    """What one send/recover step did to one action.

    ``outcome`` is one of ``confirmed``, ``pending`` (accepted, not yet confirmed; looked up
    later), ``retry`` (temporary error, stays ``sent``), ``failed``, ``superseded``,
    ``skipped`` (backoff, an older target still in flight, or no longer open).
    """

    action_id: int
    deployment_id: int
    idempotency_key: str
    outcome: str
    disposition: Disposition | None = None
    error_class: str | None = None
    error: str | None = None
    next_attempt_at: dt.datetime | None = None
    #: The action's kind (``elastic_set_target``, ``buy_commitment``): the metrics label.
    kind: str = ""


@dataclass(frozen=True)
class SendReport:
    """What :func:`send_due` or :func:`recover` did; provider errors end up here."""

    outcomes: tuple[ActionOutcome, ...] = ()
    #: Deployments backing off after failed sends (state after this call).
    backoffs: Mapping[int, Backoff] = field(default_factory=dict)
    #: Deployments to which sending is stopped (provider said "done" without a change),
    #: with a line for the alert. Filled by :func:`send_due`.
    stopped: Mapping[int, str] = field(default_factory=dict)

    def with_outcome(self, outcome: ActionOutcome) -> SendReport:
        return SendReport((*self.outcomes, outcome), self.backoffs, self.stopped)

    def _by(self, name: str) -> tuple[ActionOutcome, ...]:
        return tuple(o for o in self.outcomes if o.outcome == name)

    @property
    def confirmed(self) -> tuple[ActionOutcome, ...]:
        return self._by("confirmed")

    @property
    def failed(self) -> tuple[ActionOutcome, ...]:
        return self._by("failed")

    @property
    def retrying(self) -> tuple[ActionOutcome, ...]:
        return self._by("retry")

    @property
    def pending(self) -> tuple[ActionOutcome, ...]:
        return self._by("pending")

    @property
    def skipped(self) -> tuple[ActionOutcome, ...]:
        return self._by("skipped")

    @property
    def superseded(self) -> tuple[ActionOutcome, ...]:
        return self._by("superseded")

    @property
    def alerts(self) -> tuple[ActionOutcome, ...]:
        """Failures a human must look at (permanent provider errors)."""
        return tuple(o for o in self.outcomes if o.disposition is Disposition.STOP)


@dataclass(frozen=True)
class Drift:
    """The provider holds something other than what the journal expects."""

    deployment_id: int
    deployment: str
    kind: str
    expected: int
    actual: int
    observed_at: dt.datetime
    detail: Mapping[str, Any]
    #: The ``drift_event`` row written for it; None when the same drift was already recorded.
    event_id: int | None


# -- planning ---------------------------------------------------------------------------


def new_idempotency_key(deployment: str, kind: str) -> str:
    """``cs-<deployment>-<kind>-<uuid4 hex>``, restricted to the characters keys allow."""
    safe = _KEY_UNSAFE.sub("_", deployment)[:100] or "deployment"
    short = "elastic" if kind == KIND_ELASTIC else "commit"
    return f"cs-{safe}-{short}-{uuid.uuid4().hex}"


def plan_action(engine: sa.Engine, request: ActionRequest, now: dt.datetime) -> Action:
    """Journal a planned action (with a fresh idempotency key) before anything is sent.

    In one transaction: an identical planned-or-sent action of the deployment (the newest
    open elastic target equal to ``target_units``, or an open purchase of the same
    commitment) is returned instead of a duplicate (a planned one is made due no later than
    requested); a new elastic target supersedes every still-planned elastic action of the
    deployment.
    """
    now = require_utc(now, "now")
    due_at = request.due_at or now
    with engine.begin() as conn:
        store.lock_deployment_actions(conn, request.deployment_id)
        existing: ActionRecord | None
        if request.kind == KIND_ELASTIC:
            existing = store.latest_open_action(conn, request.deployment_id, KIND_ELASTIC)
            if existing is not None and existing.target_units != request.target_units:
                existing = None
        else:
            assert request.units is not None and request.term_days is not None
            existing = store.open_commitment_like(
                conn, request.deployment_id, request.units, request.term_days
            )
        if existing is not None:
            store.move_due_earlier(conn, existing.id, due_at)
            if request.kind == KIND_ELASTIC:
                # Anything planned after it is now outdated by this same target.
                store.supersede_planned_elastic(
                    conn, request.deployment_id, except_id=existing.id,
                    reason=f"superseded by action {existing.id}",
                )
            current = store.get_action(conn, existing.id)
            assert current is not None
            return current
        names = store.deployment_names(conn, [request.deployment_id])
        if request.deployment_id not in names:
            raise ValueError(f"no deployment with id {request.deployment_id}")
        action = store.insert_action(
            conn,
            {
                "deployment_id": request.deployment_id,
                "idempotency_key": new_idempotency_key(
                    names[request.deployment_id], request.kind
                ),
                "kind": request.kind,
                "target_units": request.target_units,
                "units": request.units,
                "term_days": request.term_days,
                "plan_id": request.plan_id,
                "decided_at": now,
                "due_at": due_at,
                "effective_at": request.effective_at,
                "state": "planned",
                "reason": request.reason,
            },
        )
        if request.kind == KIND_ELASTIC:
            store.supersede_planned_elastic(
                conn, request.deployment_id, except_id=action.id,
                reason=f"superseded by action {action.id}",
            )
        log.info(
            "journal.planned", action_id=action.id, deployment_id=action.deployment_id,
            kind=action.kind, key=action.idempotency_key,
        )
        return action


# -- sending ----------------------------------------------------------------------------


def _backoff(record: store.BackoffRecord | None) -> Backoff:
    if record is None:
        return Backoff()
    return Backoff(failures=record.failures, until=record.until, reason=record.reason)


def _call(
    provider: Provider, action: ActionRecord, deployment: str
) -> ElasticReceipt | CommitmentReceipt:
    if action.kind == KIND_ELASTIC:
        assert action.target_units is not None
        return provider.set_elastic_target(
            deployment, action.target_units, idempotency_key=action.idempotency_key
        )
    assert action.units is not None and action.term_days is not None
    return provider.buy_commitment(
        deployment, action.units, action.term_days, idempotency_key=action.idempotency_key
    )


@dataclass
class _Context:
    engine: sa.Engine
    provider: Provider
    now: dt.datetime
    retry_policy: RetryPolicy
    backoff_policy: RetryPolicy
    rng: RandomSource
    backoffs: dict[int, Backoff]
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    stopped: Mapping[int, store.DriftRecord] = field(default_factory=dict)


def _outcome(action: ActionRecord, outcome: str, **kw: Any) -> ActionOutcome:
    return ActionOutcome(
        action_id=action.id,
        deployment_id=action.deployment_id,
        idempotency_key=action.idempotency_key,
        outcome=outcome,
        kind=action.kind,
        **kw,
    )


def _confirm(
    ctx: _Context,
    action: ActionRecord,
    *,
    reference: str | None,
    accepted_units: int | None,
    effective_at: dt.datetime | None,
) -> ActionOutcome:
    values: dict[str, Any] = {
        "state": "confirmed",
        "confirmed_at": ctx.now,
        "provider_reference": reference,
        "accepted_units": accepted_units,
        "next_attempt_at": None,
    }
    if effective_at is not None:
        values["effective_at"] = effective_at
    with ctx.engine.begin() as conn:
        store.update_action(conn, action.id, from_states=("sent",), **values)
        if action.deployment_id in ctx.backoffs:
            store.clear_backoff(conn, action.deployment_id)
    ctx.backoffs.pop(action.deployment_id, None)
    log.info("journal.confirmed", action_id=action.id, key=action.idempotency_key)
    return _outcome(action, "confirmed")


def _retry_later(
    ctx: _Context, action: ActionRecord, error: BaseException | None, outcome: str
) -> ActionOutcome:
    delay = ctx.retry_policy.delay(max(1, action.attempts), ctx.rng)
    if isinstance(error, ProviderError) and error.retry_after is not None:
        # The provider's hint wins over the policy's cap, up to the configured maximum.
        delay = max(delay, min(error.retry_after, ctx.max_retry_after))
    next_at = ctx.now + dt.timedelta(seconds=delay)
    values: dict[str, Any] = {"next_attempt_at": next_at}
    if error is not None:
        values["last_error"] = str(error) or type(error).__name__
        values["error_class"] = type(error).__name__
    with ctx.engine.begin() as conn:
        store.update_action(conn, action.id, from_states=("sent",), **values)
    return _outcome(
        action,
        outcome,
        disposition=Disposition.RETRY if error is not None else None,
        error_class=None if error is None else type(error).__name__,
        error=None if error is None else str(error),
        next_attempt_at=next_at,
    )


def _fail(
    ctx: _Context,
    action: ActionRecord,
    *,
    error_class: str,
    message: str,
    disposition: Disposition,
    error: ProviderError | None = None,
) -> ActionOutcome:
    with ctx.engine.begin() as conn:
        store.update_action(
            conn, action.id, from_states=("sent",), state="failed", last_error=message,
            error_class=error_class, next_attempt_at=None,
        )
        if disposition is Disposition.BACK_OFF:
            _record_backoff(ctx, conn, action.deployment_id, error, ctx.backoff_policy)
    log.warning(
        "journal.failed", action_id=action.id, key=action.idempotency_key,
        error_class=error_class, error=message, disposition=disposition.value,
    )
    return _outcome(
        action, "failed", disposition=disposition, error_class=error_class, error=message
    )


def _record_backoff(
    ctx: _Context,
    conn: sa.Connection,
    deployment_id: int,
    error: ProviderError | None,
    policy: RetryPolicy,
) -> Backoff:
    """One more failed send to the deployment: grow its backoff and store it."""
    state = ctx.backoffs.get(deployment_id, Backoff()).record_failure(
        ctx.now, error, policy=policy, rng=ctx.rng, max_retry_after=ctx.max_retry_after
    )
    ctx.backoffs[deployment_id] = state
    store.write_backoff(
        conn, store.BackoffRecord(deployment_id, state.failures, state.until, state.reason),
        ctx.now,
    )
    log.info("journal.backoff", deployment_id=deployment_id, failures=state.failures,
             until=None if state.until is None else state.until.isoformat(),
             reason=state.reason)
    return state


def _send_one(ctx: _Context, action: ActionRecord, deployment: str) -> ActionOutcome:
    """Steps (1)-(3): mark sent and commit, call the provider, record the outcome."""
    with ctx.engine.begin() as conn:
        sent = store.mark_sent(conn, action.id, ctx.now)
    if sent is None:
        return _outcome(action, "skipped", error="no longer open")
    try:
        receipt = _call(ctx.provider, sent, deployment)
    except ProviderError as error:
        disposition = classify(error)
        if disposition is Disposition.RETRY:
            # Whether it arrived is unknown (a timeout, an unreadable 2xx) or the provider
            # is failing (5xx): the key is looked up from the next attempt on, and nothing
            # more goes to this deployment until its backoff ends, whichever action asks.
            log.info("journal.retry", action_id=sent.id, error=str(error))
            with ctx.engine.begin() as conn:
                _record_backoff(ctx, conn, sent.deployment_id, error, ctx.retry_policy)
            return _retry_later(ctx, sent, error, "retry")
        return _fail(
            ctx, sent, error_class=type(error).__name__, message=str(error),
            disposition=disposition, error=error,
        )
    except Exception as error:  # an adapter bug: keep the action sent, look it up later
        log.exception("journal.provider_bug", action_id=sent.id)
        return _retry_later(ctx, sent, error, "retry")
    if isinstance(receipt, ElasticReceipt):
        reference, accepted, effective = (
            receipt.reference, receipt.accepted_units, receipt.effective_at
        )
    else:
        reference = receipt.commitment.commitment_id
        accepted, effective = receipt.commitment.units, receipt.commitment.start
    if receipt.status is RequestStatus.PENDING:
        with ctx.engine.begin() as conn:
            store.update_action(
                conn, sent.id, from_states=("sent",), provider_reference=reference,
                accepted_units=accepted,
            )
        return _retry_later(ctx, sent, None, "pending")
    return _confirm(ctx, sent, reference=reference, accepted_units=accepted,
                    effective_at=effective)


def _context(
    engine: sa.Engine,
    provider: Provider,
    now: dt.datetime,
    deployment_ids: list[int],
    retry_policy: RetryPolicy,
    backoff_policy: RetryPolicy,
    rng: RandomSource | None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> _Context:
    if max_retry_after <= 0:
        raise ValueError("max_retry_after must be > 0")
    with engine.connect() as conn:
        records = store.read_backoffs(conn, deployment_ids)
        stopped = store.sending_stops(conn, deployment_ids)
    return _Context(
        engine=engine,
        provider=provider,
        now=now,
        retry_policy=retry_policy,
        backoff_policy=backoff_policy,
        rng=rng or random.Random(),
        backoffs={i: _backoff(r) for i, r in records.items()},
        max_retry_after=max_retry_after,
        stopped=stopped,
    )


def _stop_line(deployment: str, marker: store.DriftRecord) -> str:
    streak = marker.detail.get("streak")
    return (f"{deployment}: sending stopped since {marker.observed_at.isoformat()}: the "
            f"provider answered {streak} action(s) in a row 'done' without changing its "
            "holdings; capacity held until they match the journal or sending is resumed")


def _report(ctx: _Context, outcomes: list[ActionOutcome],
            names: Mapping[int, str] | None = None) -> SendReport:
    active = {i: b for i, b in ctx.backoffs.items() if b.active(ctx.now)}
    stopped = {} if names is None else {
        i: _stop_line(names.get(i, str(i)), marker) for i, marker in ctx.stopped.items()}
    return SendReport(tuple(outcomes), active, stopped)


def send_due(
    engine: sa.Engine,
    provider: Provider,
    deployment_name_by_id: Mapping[int, str],
    now: dt.datetime,
    *,
    retry_policy: RetryPolicy = JOURNAL_RETRY_POLICY,
    backoff_policy: RetryPolicy = DEFAULT_BACKOFF_POLICY,
    rng: RandomSource | None = None,
    limit: int | None = None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> SendReport:
    """Send the planned actions due at ``now`` for the given deployments (this provider's).

    Actions of a deployment under backoff, or to which sending is stopped, stay planned; an
    elastic target waits while an older elastic action of its deployment is still ``sent``.
    ``max_retry_after`` (seconds) caps the provider's ``Retry-After`` hints. Never raises a
    provider error.
    """
    now = require_utc(now, "now")
    ids = sorted(deployment_name_by_id)
    ctx = _context(engine, provider, now, ids, retry_policy, backoff_policy, rng,
                   max_retry_after)
    with engine.connect() as conn:
        due = store.due_planned_actions(conn, now, ids, limit=limit)
    outcomes: list[ActionOutcome] = []
    for action in due:
        if action.deployment_id in ctx.stopped:
            outcomes.append(_outcome(action, "skipped", error="sending stopped (drift)"))
            continue
        backoff = ctx.backoffs.get(action.deployment_id)
        if backoff is not None and backoff.active(now):
            outcomes.append(_outcome(action, "skipped", error=f"backoff until {backoff.until}"))
            continue
        if action.kind == KIND_ELASTIC:
            with engine.connect() as conn:
                waiting = store.older_elastic_in_flight(conn, action)
            if waiting:
                outcomes.append(
                    _outcome(action, "skipped", error="an older elastic target is in flight")
                )
                continue
        outcomes.append(_send_one(ctx, action, deployment_name_by_id[action.deployment_id]))
    for marker in ctx.stopped.values():
        log.error("journal.sending_stopped", deployment=deployment_name_by_id.get(
            marker.deployment_id), since=marker.observed_at.isoformat(),
            streak=marker.detail.get("streak"))
    return _report(ctx, outcomes, deployment_name_by_id)


def _details_int(details: Mapping[str, Any], key: str) -> int | None:
    value = details.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _details_time(details: Mapping[str, Any], key: str) -> dt.datetime | None:
    value = details.get(key)
    if not isinstance(value, str):
        return None
    try:
        return require_utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")), key)
    except ValueError:
        return None


def _confirm_from_lookup(
    ctx: _Context, action: ActionRecord, found: RequestLookup
) -> ActionOutcome:
    details = found.details
    if action.kind == KIND_COMMITMENT:
        commitment = details.get("commitment")
        if isinstance(commitment, Mapping):
            return _confirm(
                ctx, action,
                reference=str(commitment.get("commitment_id") or found.reference),
                accepted_units=_details_int(commitment, "units") or action.units,
                effective_at=_details_time(commitment, "start"),
            )
        return _confirm(ctx, action, reference=found.reference, accepted_units=action.units,
                        effective_at=None)
    return _confirm(
        ctx, action,
        reference=found.reference,
        accepted_units=_details_int(details, "accepted_units") or action.target_units,
        effective_at=_details_time(details, "effective_at"),
    )


def recover(
    engine: sa.Engine,
    provider: Provider,
    now: dt.datetime,
    *,
    deployment_name_by_id: Mapping[int, str] | None = None,
    retry_policy: RetryPolicy = JOURNAL_RETRY_POLICY,
    backoff_policy: RetryPolicy = DEFAULT_BACKOFF_POLICY,
    rng: RandomSource | None = None,
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
) -> SendReport:
    """Resolve every ``sent`` action whose next attempt is due, by asking the provider.

    ``lookup_request(key)``: DONE -> confirmed; PENDING -> left; FAILED -> failed;
    UNKNOWN -> resent with the SAME key (or superseded, for an elastic target the provider
    never saw when a newer one exists). Deployments default to those whose ``provider``
    column names this provider. Run at start-up and every tick before :func:`send_due`.
    """
    now = require_utc(now, "now")
    if deployment_name_by_id is None:
        with engine.connect() as conn:
            deployment_name_by_id = store.deployment_names_for_provider(conn, provider.name)
    ids = sorted(deployment_name_by_id)
    ctx = _context(engine, provider, now, ids, retry_policy, backoff_policy, rng,
                   max_retry_after)
    with engine.connect() as conn:
        sent = store.sent_actions(conn, now, ids)
    outcomes: list[ActionOutcome] = []
    for action in sent:
        try:
            found = provider.lookup_request(action.idempotency_key)
        except ProviderError as error:
            if classify(error) is Disposition.RETRY:
                outcomes.append(_retry_later(ctx, action, error, "retry"))
            else:
                outcomes.append(
                    _outcome(action, "skipped", disposition=classify(error),
                             error_class=type(error).__name__, error=str(error))
                )
            continue
        except Exception as error:  # an adapter bug
            log.exception("journal.provider_bug", action_id=action.id)
            outcomes.append(_retry_later(ctx, action, error, "retry"))
            continue
        if found.status is RequestStatus.DONE:
            outcomes.append(_confirm_from_lookup(ctx, action, found))
        elif found.status is RequestStatus.PENDING:
            outcomes.append(_outcome(action, "pending"))
        elif found.status is RequestStatus.FAILED:
            code = found.error_code or "failed"
            disposition = Disposition.BACK_OFF if code in BACKOFF_CODES else Disposition.STOP
            error_class = {
                "out_of_capacity": OutOfCapacityError.__name__,
                "quota_exceeded": QuotaExceededError.__name__,
                "not_supported": NotSupportedError.__name__,
            }.get(code, code)
            outcomes.append(
                _fail(ctx, action, error_class=error_class,
                      message=found.error_message or code, disposition=disposition)
            )
        else:
            outcomes.append(_resend(ctx, action, deployment_name_by_id[action.deployment_id]))
    return _report(ctx, outcomes)


def _resend(ctx: _Context, action: ActionRecord, deployment: str) -> ActionOutcome:
    """The provider never saw ``action``: send it again with its key, unless outdated."""
    if action.kind == KIND_ELASTIC:
        with ctx.engine.begin() as conn:
            if store.newer_elastic_exists(conn, action):
                store.update_action(
                    conn, action.id, from_states=("sent",), state="superseded",
                    next_attempt_at=None,
                    last_error="never reached the provider; a newer target exists",
                )
                return _outcome(action, "superseded")
    if action.deployment_id in ctx.stopped:
        return _outcome(action, "skipped", error="sending stopped (drift)")
    backoff = ctx.backoffs.get(action.deployment_id)
    if backoff is not None and backoff.active(ctx.now):
        # Look the key up again when the backoff ends, not every tick before.
        with ctx.engine.begin() as conn:
            store.update_action(conn, action.id, from_states=("sent",),
                                next_attempt_at=backoff.until)
        return _outcome(action, "skipped", error=f"backoff until {backoff.until}",
                        next_attempt_at=backoff.until)
    return _send_one(ctx, action, deployment)


# -- reconciliation ---------------------------------------------------------------------


def _expected_committed(actions: list[ActionRecord], now: dt.datetime) -> dict[str, int]:
    """reference -> units of the journal's confirmed commitments active at ``now``."""
    expected: dict[str, int] = {}
    for action in actions:
        assert action.term_days is not None
        start = action.effective_at or action.confirmed_at or action.decided_at
        if start <= now < start + dt.timedelta(days=action.term_days):
            key = action.provider_reference or action.idempotency_key
            expected[key] = action.accepted_units or action.units or 0
    return expected


def reconcile(
    engine: sa.Engine,
    provider: Provider,
    deployments: Mapping[int, str],
    now: dt.datetime,
    *,
    holdings: Mapping[str, Holdings] | None = None,
    drift_stop_after: int = DEFAULT_DRIFT_STOP_AFTER,
) -> list[Drift]:
    """Compare the provider's holdings with the journal; record differences as drift.

    ``holdings`` lets a caller that has just read them (the daemon's tick) pass them in
    instead of asking the provider again.

    Expected elastic target: the accepted units of the last confirmed elastic action
    (deployments with none, or with an elastic action in flight, are not compared).
    Expected committed units: the journal's confirmed commitments active at ``now`` (not
    compared while a purchase is in flight). A drift is recorded once: an identical one
    (same expected and actual, no confirmed action since) is returned with ``event_id``
    None. Nothing is corrected. Provider errors skip the deployment (logged).

    Stopping: when the last ``drift_stop_after`` confirmed elastic actions of a deployment
    in a row each drifted (the provider said "done", its holdings did not follow), a
    ``sending_stopped`` marker is written and :func:`send_due` sends nothing more to it; a
    later comparison that finds the holdings equal to the journal resumes it. ``0`` never
    stops.
    """
    if drift_stop_after < 0:
        raise ValueError("drift_stop_after must be >= 0")
    now = require_utc(now, "now")
    drifts: list[Drift] = []
    for deployment_id, name in sorted(deployments.items()):
        held = holdings.get(name) if holdings is not None else None
        if held is None:
            try:
                held = provider.holdings(name)
            except ProviderError as error:
                log.warning("journal.reconcile_skipped", deployment=name, error=str(error))
                continue
        with engine.begin() as conn:
            drifts.extend(_reconcile_one(conn, deployment_id, name, held, now,
                                         drift_stop_after))
    return drifts


def _reconcile_one(
    conn: sa.Connection,
    deployment_id: int,
    name: str,
    holdings: Holdings,
    now: dt.datetime,
    drift_stop_after: int = DEFAULT_DRIFT_STOP_AFTER,
) -> list[Drift]:
    found: list[tuple[str, int, int, dict[str, Any]]] = []
    in_flight = store.list_actions(conn, deployment_id=deployment_id, states=("sent",))
    compared_elastic = False
    if not any(a.kind == KIND_ELASTIC for a in in_flight):
        last = store.last_confirmed_elastic(conn, deployment_id)
        if last is not None:
            compared_elastic = True
            expected = last.accepted_units if last.accepted_units is not None else last.target_units
            assert expected is not None
            actual = holdings.elastic_target
            if expected != actual:
                found.append((DRIFT_ELASTIC, expected, actual, {
                    "action_id": last.id,
                    "idempotency_key": last.idempotency_key,
                    "active_units": holdings.elastic_active_units,
                    "pending_units": holdings.elastic_pending_units,
                }))
    if not any(a.kind == KIND_COMMITMENT for a in in_flight):
        expected_refs = _expected_committed(store.confirmed_commitments(conn, deployment_id), now)
        # An external commitment (a reservation bought outside capsched) was never in the
        # journal: counting it would report the same drift after every confirmed action.
        actual_refs = {
            c.commitment_id: c.units for c in holdings.commitments
            if c.is_active(now) and not c.external
        }
        expected_units, actual_units = sum(expected_refs.values()), sum(actual_refs.values())
        if expected_units != actual_units:
            found.append((DRIFT_COMMITTED, expected_units, actual_units, {
                "missing": sorted(set(expected_refs) - set(actual_refs)),
                "unexpected": sorted(set(actual_refs) - set(expected_refs)),
            }))
    drifts: list[Drift] = []
    last_confirmed = store.latest_confirmed_at(conn, deployment_id)
    for kind, expected, actual, detail in found:
        previous = store.latest_drift(conn, deployment_id, kind)
        repeat = (
            previous is not None
            and previous.expected == expected
            and previous.actual == actual
            and (last_confirmed is None or previous.observed_at >= last_confirmed)
        )
        event_id = None
        if not repeat:
            event_id = store.insert_drift(
                conn, deployment_id=deployment_id, observed_at=now, kind=kind,
                expected=expected, actual=actual, detail={"deployment": name, **detail},
            ).id
            log.warning("journal.drift", deployment=name, kind=kind, expected=expected,
                        actual=actual)
        drifts.append(Drift(deployment_id, name, kind, expected, actual, now, detail, event_id))
    if drift_stop_after > 0 and compared_elastic:
        _stop_or_resume(conn, deployment_id, name, now, drift_stop_after,
                        drifted=any(kind == DRIFT_ELASTIC for kind, *_ in found))
    return drifts


def _stop_or_resume(conn: sa.Connection, deployment_id: int, name: str, now: dt.datetime,
                    stop_after: int, *, drifted: bool) -> None:
    stopped = deployment_id in store.sending_stops(conn, [deployment_id])
    if drifted and not stopped:
        streak = store.drift_streak(conn, deployment_id, limit=stop_after)
        if streak >= stop_after:
            store.insert_drift(
                conn, deployment_id=deployment_id, observed_at=now,
                kind=store.DRIFT_SENDING_STOPPED, expected=None, actual=None,
                detail={"deployment": name, "streak": streak,
                        "reason": "provider answered done without changing its holdings"})
            log.error("journal.sending_stopped", deployment=name, streak=streak,
                      action="holding capacity; no more actions sent to this deployment")
    elif stopped and not drifted:
        _resume(conn, deployment_id, name, now, "holdings match the journal again")


def _resume(conn: sa.Connection, deployment_id: int, name: str, now: dt.datetime,
            reason: str) -> None:
    store.insert_drift(
        conn, deployment_id=deployment_id, observed_at=now, kind=store.DRIFT_SENDING_RESUMED,
        expected=None, actual=None, detail={"deployment": name, "reason": reason})
    log.warning("journal.sending_resumed", deployment=name, reason=reason)


def resume_sending(engine: sa.Engine, deployment_id: int, now: dt.datetime, *,
                   reason: str = "resumed by an operator") -> bool:
    """Resume sending to a deployment stopped after drift; False when it was not stopped.

    Its drift streak starts again from zero: ``drift_stop_after`` more actions answered
    "done" without a change stop it again.
    """
    now = require_utc(now, "now")
    with engine.begin() as conn:
        store.lock_deployment_actions(conn, deployment_id)
        if deployment_id not in store.sending_stops(conn, [deployment_id]):
            return False
        names = store.deployment_names(conn, [deployment_id])
        _resume(conn, deployment_id, names.get(deployment_id, str(deployment_id)), now, reason)
    return True


__all__ = [
    "BACKOFF_CODES",
    "DEFAULT_DRIFT_STOP_AFTER",
    "DEFAULT_MAX_RETRY_AFTER",
    "DRIFT_COMMITTED",
    "DRIFT_ELASTIC",
    "JOURNAL_RETRY_POLICY",
    "Action",
    "ActionOutcome",
    "ActionRequest",
    "Drift",
    "SendReport",
    "new_idempotency_key",
    "plan_action",
    "reconcile",
    "recover",
    "resume_sending",
    "send_due",
]

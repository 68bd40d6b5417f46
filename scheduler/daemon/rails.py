"""Safety rails between what the planner wants and what the daemon sends (pure).

The planner optimises cost; the rails keep a bad input from becoming an outage or a bill:

* **stale usage holds capacity**: when usage has not arrived for longer than the staleness
  limit, missing data must not read as low load and an old forecast must not buy more, so
  the elastic target stays where it is (neither down nor up) and no commitment is bought;
* **commitments need evidence**: a term commitment is bought only up to the level that the
  demand actually observed recently reached often enough to pay off
  (:func:`forecasting.evidence_level`); zero, missing and stale demand support none;
* **a maximum change per tick** bounds the damage of one wrong forecast;
* **hard bounds**: ``min_units`` <= committed + elastic and elastic never pushes the total
  past ``max_units``;
* **monthly budget cap**: a commitment is not bought when the month's committed spend plus
  the new commitment's spend inside the month would exceed the budget.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import forecasting
from scheduler.config import Deployment
from scheduler.planning.economics import Commitment, FloatArray

#: Windows over which observed demand must support a commitment: the last two hours (a
#: deployment that has just gone quiet, e.g. one now reporting zeros, or whose feed just
#: stopped, buys nothing now), the last day and the last week.
EVIDENCE_WINDOWS_MINUTES = (120, 1440, 10_080)


@dataclass(frozen=True)
class ElasticDecision:
    target: int
    reasons: tuple[str, ...]
    #: Usage is stale, so capacity is held whatever the plan says (true from the first
    #: stale tick, also when the plan happens to want the current target).
    held: bool = False


def elastic_target(
    *,
    planned: int,
    current: int,
    committed: int,
    deployment: Deployment,
    stale: bool,
    max_change_per_tick: int,
) -> ElasticDecision:
    """The elastic target to request now, after the rails.

    ``stale``: hold ``current`` (a plan made on old data may neither release capacity that
    unseen load may need nor raise it on a forecast that no observation supports).
    """
    target = planned
    reasons: list[str] = []
    if stale:
        target = current
        reasons.append("stale_usage_hold")
    if target - current > max_change_per_tick:
        target = current + max_change_per_tick
        reasons.append("max_change_per_tick")
    elif current - target > max_change_per_tick:
        target = current - max_change_per_tick
        reasons.append("max_change_per_tick")
    ceiling = max(deployment.max_units - committed, 0)
    if target > ceiling:
        target = ceiling
        reasons.append("max_units")
    floor = max(deployment.min_units - committed, 0)
    if target < floor:
        target = floor
        reasons.append("min_units")
    return ElasticDecision(max(target, 0), tuple(reasons), held=stale)


def month_bounds(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start, end


def committed_spend_in(commitments: Sequence[Commitment], deployment: Deployment,
                       start: dt.datetime, end: dt.datetime) -> float:
    """Dollars the commitments accrue inside [start, end), per the cost contract."""
    pricing = deployment.pricing
    total = 0.0
    for c in commitments:
        overlap = (min(c.end, end) - max(c.start, start)).total_seconds() / 60
        if overlap > 0:
            per_minute = c.units * pricing.elastic_unit_hour * (
                1 - pricing.commit_discount(c.term_days)) / 60
            total += per_minute * overlap
    return total


def commitment_within_budget(
    *,
    new: Commitment,
    existing_spend_this_month: float,
    deployment: Deployment,
    now: dt.datetime,
    monthly_budget: float,
) -> bool:
    """False when buying ``new`` would take the month's committed spend past the budget.

    ``existing_spend_this_month`` covers every deployment (the budget is global); 0 means
    no budget.
    """
    if monthly_budget <= 0:
        return True
    start, end = month_bounds(now)
    added = committed_spend_in([new], deployment, start, end)
    return existing_spend_this_month + added <= monthly_budget


def commitments_with_evidence(
    new: Sequence[Commitment],
    *,
    committed_now: int,
    recent_demand: FloatArray,
    deployment: Deployment,
    stale: bool,
    windows_minutes: Sequence[int] = EVIDENCE_WINDOWS_MINUTES,
) -> tuple[tuple[Commitment, ...], tuple[str, ...]]:
    """The part of ``new`` the recent observed demand supports, and why the rest was cut.

    A unit committed for ``term_days`` pays off when it is needed more than its break-even
    share of the time (``1 - discount``: 70 % for a 30-day unit at 30 % off; the cost
    contract in docs/economics.md). Its evidence is :func:`forecasting.evidence_level` of
    ``recent_demand`` (model units per minute, NaN = missing, oldest first) at that share,
    over each of ``windows_minutes`` (the last two hours, day and week by default): the
    lowest of them caps committed + new units. Missing minutes count as no evidence, and
    reported zeros as zero load, so a feed that went stale or a deployment that reports
    zeros buys nothing. With ``stale`` every commitment is deferred.
    """
    if not new:
        return (), ()
    if stale:
        return (), ("commitment deferred: usage is stale",)
    kept: list[Commitment] = []
    notes: list[str] = []
    total = committed_now
    for c in new:
        share = 1.0 - deployment.pricing.commit_discount(c.term_days)
        level = min(
            forecasting.evidence_level(recent_demand[-w:], share, window=w)
            for w in windows_minutes)
        units = min(c.units, max(0, level - total))
        if units < c.units:
            notes.append(
                f"commitment of {c.units} unit(s) for {c.term_days} days cut to {units}: "
                f"observed demand reached {total + c.units} units in less than "
                f"{share:.0%} of the last {max(windows_minutes) // 1440} day(s)")
        if units > 0:
            kept.append(Commitment(c.start, c.term_days, units))
            total += units
    return tuple(kept), tuple(notes)

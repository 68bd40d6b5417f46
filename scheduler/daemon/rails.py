"""Safety rails between what the planner wants and what the daemon sends (pure).

The planner optimises cost; the rails keep a bad input from becoming an outage or a bill:

* **stale usage holds capacity**: when usage has not arrived for longer than the staleness
  limit, missing data must not read as low load and an old forecast must not buy more, so
  the elastic target stays where it is (neither down nor up) and no commitment is bought;
* **commitments need evidence**: a term commitment is bought only up to the level that the
  demand actually observed recently reached often enough to pay off
  (:func:`scheduler.planning.evidence.commitments_with_evidence`, shared with the
  backtest); zero, missing and stale demand support none;
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

from scheduler.config import Deployment
from scheduler.planning.economics import Commitment
from scheduler.planning.evidence import EVIDENCE_WINDOWS_MINUTES, commitments_with_evidence

__all__ = [
    "EVIDENCE_WINDOWS_MINUTES",
    "ElasticDecision",
    "commitment_within_budget",
    "commitments_with_evidence",
    "committed_spend_in",
    "elastic_target",
    "month_bounds",
]


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


"""The cost contract of docs/economics.md, vectorised over per-minute arrays.

Everything here is pure: arrays and frozen value objects in, dollars out. A window is a run
of consecutive minutes ``[start, start + n)``; every array argument holds one value per
minute of that window, so billing "only inside [start, end)" is the caller slicing the
trace to the window before calling.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.config import Deployment, Pricing

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The contract's month: dedicated units are priced per 30 days.
MINUTES_PER_MONTH = 43_200
MINUTES_PER_WEEK = 10_080
TERMS_DAYS = (7, 30)


def as_minute(value: dt.datetime | np.datetime64) -> np.datetime64:
    """A UTC minute as numpy datetime64[m]; naive datetimes are taken as UTC."""
    if isinstance(value, np.datetime64):
        minute: np.datetime64 = value.astype("datetime64[m]")
        return minute
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return np.datetime64(value, "m")


def as_datetime(value: np.datetime64) -> dt.datetime:
    """The tz-aware UTC datetime of a datetime64 minute."""
    seconds = int(value.astype("datetime64[s]").astype(np.int64))
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


@dataclass(frozen=True)
class Commitment:
    """``units`` committed for ``term_days`` from ``start``: active on [start, end)."""

    start: dt.datetime
    term_days: int
    units: int

    def __post_init__(self) -> None:
        if self.term_days not in TERMS_DAYS:
            raise ValueError(f"unsupported commitment term: {self.term_days} days")
        if self.units < 1:
            raise ValueError("a commitment holds at least one unit")

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(days=self.term_days)

    @property
    def term_minutes(self) -> int:
        return self.term_days * 1440

    def active_at(self, when: dt.datetime) -> bool:
        return self.start <= when < self.end


def unit_minute_rate(pricing: Pricing) -> float:
    """Dollars per elastic unit-minute."""
    return pricing.elastic_unit_hour / 60.0


def committed_unit_minute_rate(pricing: Pricing, term_days: int) -> float:
    """Dollars per committed unit-minute on a ``term_days`` term."""
    return pricing.elastic_unit_hour * (1.0 - pricing.commit_discount(term_days)) / 60.0


def demand_units(
    input_tokens: npt.ArrayLike, output_tokens: npt.ArrayLike, deployment: Deployment
) -> FloatArray:
    """Weighted tokens per minute over ``unit_tpm``: a real number of units per minute."""
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    return (inp + deployment.output_token_weight * out) / deployment.unit_tpm


def payg_cost_per_minute(
    input_tokens: npt.ArrayLike, output_tokens: npt.ArrayLike, pricing: Pricing
) -> FloatArray:
    """What serving all of each minute's tokens at pay-as-you-go prices would cost."""
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    return (inp * pricing.payg_input_per_mtok + out * pricing.payg_output_per_mtok) / 1e6


def spill_unit_price(
    input_tokens: npt.ArrayLike, output_tokens: npt.ArrayLike, deployment: Deployment
) -> FloatArray:
    """Dollars per spilled unit-minute, minute by minute (0 when throttling or no demand).

    The contract bills spill as the spilled share of the minute's tokens, so one spilled
    unit costs ``payg(t) / demand_units(t)``; this is the price the optimisers weigh
    against an elastic unit.
    """
    demand = demand_units(input_tokens, output_tokens, deployment)
    if deployment.spill == "throttle":
        return np.zeros_like(demand)
    payg = payg_cost_per_minute(input_tokens, output_tokens, deployment.pricing)
    out = np.zeros_like(demand)
    np.divide(payg, demand, out=out, where=demand > 0)
    return out


def committed_profile(
    commitments: Iterable[Commitment], start: dt.datetime | np.datetime64, n_minutes: int,
    pricing: Pricing,
) -> tuple[IntArray, FloatArray]:
    """Committed units and committed dollars per minute over ``[start, start + n)``."""
    origin = as_minute(start)
    units = np.zeros(n_minutes + 1, dtype=np.int64)
    cost = np.zeros(n_minutes + 1, dtype=np.float64)
    for c in commitments:
        # Difference arrays: one +k at the first active minute, one -k after the last.
        a = int((as_minute(c.start) - origin).astype(np.int64))
        b = a + c.term_minutes
        a, b = max(a, 0), min(b, n_minutes)
        if a >= b:
            continue
        units[a] += c.units
        units[b] -= c.units
        rate = c.units * committed_unit_minute_rate(pricing, c.term_days)
        cost[a] += rate
        cost[b] -= rate
    return np.cumsum(units)[:n_minutes], np.cumsum(cost)[:n_minutes]


def commitment_tail(
    commitments: Iterable[Commitment], end: dt.datetime | np.datetime64, pricing: Pricing
) -> float:
    """What the commitments still owe for their minutes at or after ``end``."""
    stop = as_minute(end)
    owed = 0.0
    for c in commitments:
        c_start = as_minute(c.start)
        c_end = c_start + np.timedelta64(c.term_minutes, "m")
        after = int((c_end - max(stop, c_start)).astype(np.int64))
        if after > 0:
            owed += after * c.units * committed_unit_minute_rate(pricing, c.term_days)
    return owed


@dataclass(frozen=True)
class CostBreakdown:
    """Dollars of one window by tier, and its service level (docs/economics.md)."""

    minutes: int
    committed: float
    elastic: float
    spill: float
    demand_unit_minutes: float
    spill_unit_minutes: float
    #: Owed by active commitments after the window; not part of ``total``.
    commitment_tail: float = 0.0

    @property
    def total(self) -> float:
        return self.committed + self.elastic + self.spill

    @property
    def spill_fraction(self) -> float:
        if self.demand_unit_minutes <= 0:
            return 0.0
        return self.spill_unit_minutes / self.demand_unit_minutes

    def service_level_met(self, max_spill_fraction: float) -> bool:
        # A relative tolerance so that a plan exactly at the bound is not failed by rounding.
        return self.spill_fraction <= max_spill_fraction * (1 + 1e-9) + 1e-12


def spill_units(demand: FloatArray, capacity: npt.ArrayLike) -> FloatArray:
    return np.maximum(0.0, demand - np.asarray(capacity, dtype=np.float64))


def schedule_cost(
    *,
    start: dt.datetime | np.datetime64,
    input_tokens: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    elastic_units: npt.ArrayLike,
    commitments: Sequence[Commitment],
    deployment: Deployment,
) -> CostBreakdown:
    """Cost of a schedule over the window ``[start, start + len(input_tokens))``.

    Commitments may start before or end after the window; only their minutes inside it
    are billed and what they owe after it is reported as the tail.
    """
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    n = inp.shape[0]
    elastic = np.asarray(elastic_units, dtype=np.float64)
    if elastic.shape != (n,) or out.shape != (n,):
        raise ValueError("input, output and elastic arrays must have one value per minute")
    pricing = deployment.pricing
    committed_units, committed_cost = committed_profile(commitments, start, n, pricing)
    demand = demand_units(inp, out, deployment)
    spill = spill_units(demand, committed_units + elastic)
    spill_cost = float(np.sum(spill * spill_unit_price(inp, out, deployment)))
    end = as_minute(start) + np.timedelta64(n, "m")
    return CostBreakdown(
        minutes=n,
        committed=float(np.sum(committed_cost)),
        elastic=float(np.sum(elastic)) * unit_minute_rate(pricing),
        spill=spill_cost,
        demand_unit_minutes=float(np.sum(demand)),
        spill_unit_minutes=float(np.sum(spill)),
        commitment_tail=commitment_tail(commitments, end, pricing),
    )


def dedicated_at_peak_cost(demand: FloatArray, deployment: Deployment) -> float:
    """``ceil(max demand)`` units for the whole window at the dedicated monthly price."""
    if demand.size == 0:
        return 0.0
    units = math.ceil(float(np.max(demand)) - 1e-9)
    return units * deployment.pricing.dedicated_per_unit_month * demand.size / MINUTES_PER_MONTH


def payg_total_cost(
    input_tokens: npt.ArrayLike, output_tokens: npt.ArrayLike, pricing: Pricing
) -> float:
    """Every token of the window at pay-as-you-go prices."""
    return float(np.sum(payg_cost_per_minute(input_tokens, output_tokens, pricing)))

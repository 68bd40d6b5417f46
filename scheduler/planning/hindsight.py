"""The hindsight optimum of docs/economics.md: a lower bound for any online policy.

The problem: choose one 30-day commitment level ``C`` for the whole window, a 7-day top-up
level ``W_k`` per week ``k`` and integer elastic units ``e(t)`` per minute (no lead, no
hold), minimising committed + elastic + spill dollars with
``sum spill <= max_spill_fraction * sum demand``.

Only the spill budget couples the minutes, so we dualise it. For a multiplier ``lam`` each
minute's best elastic count is closed form (a newsvendor on a piecewise-linear cost), each
week's best top-up is a scan over integer levels, and ``C`` a scan too; bisection on
``lam`` finds the multiplier at which the budget binds. The dual value is a true lower
bound. Each configuration ``(C, W)`` met on the way is then solved exactly for the
elastic units by a greedy knapsack on the spill budget (exact up to the one item that does
not fit), a local search polishes the best one, and the result reports both the cost found
and the dual bound so the gap is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.config import Deployment
from scheduler.planning.economics import (
    MINUTES_PER_WEEK,
    CostBreakdown,
    FloatArray,
    IntArray,
    committed_unit_minute_rate,
    demand_units,
    spill_unit_price,
    unit_minute_rate,
)

Config = tuple[int, tuple[int, ...]]


@dataclass(frozen=True)
class HindsightResult:
    commit_30d_units: int
    #: Top-up level of each week of the window (the last week may be partial).
    topup_7d_units: tuple[int, ...]
    elastic_units: IntArray
    spill_units: FloatArray
    cost: CostBreakdown
    #: Lagrangian dual bound: no schedule of this form can cost less.
    lower_bound: float


class _Problem:
    def __init__(self, demand: FloatArray, price: FloatArray, deployment: Deployment,
                 week_minutes: int) -> None:
        p = deployment.pricing
        self.d = demand
        self.q = price
        self.n = demand.shape[0]
        self.re = unit_minute_rate(p)
        self.r30 = committed_unit_minute_rate(p, 30)
        self.r7 = committed_unit_minute_rate(p, 7)
        self.budget = deployment.max_spill_fraction * float(np.sum(demand))
        self.top = max(0, math.ceil(float(np.max(demand)) - 1e-12)) if self.n else 0
        self.floor = np.floor(demand)
        self.frac = demand - self.floor
        self.bounds = [(a, min(a + week_minutes, self.n)) for a in range(0, self.n, week_minutes)]
        levels = np.arange(self.top + 1, dtype=np.float64)
        self.levels = levels
        self.order: list[IntArray] = []
        self.cut: list[IntArray] = []
        for a, b in self.bounds:
            order = np.argsort(demand[a:b], kind="stable") + a
            self.order.append(order)
            # Index of the first minute (in sorted order) whose demand exceeds each level.
            self.cut.append(np.searchsorted(demand[order], levels, side="right"))

    def committed_cost(self, config: Config) -> float:
        c, tops = config
        total = float(c * self.r30 * self.n)
        for (a, b), w in zip(self.bounds, tops, strict=True):
            total += w * self.r7 * (b - a)
        return total

    def base_levels(self, config: Config) -> FloatArray:
        c, tops = config
        base = np.empty(self.n, dtype=np.float64)
        for (a, b), w in zip(self.bounds, tops, strict=True):
            base[a:b] = c + w
        return base

    def dual(self, lam: float) -> tuple[float, float, Config]:
        """Lagrangian value, spill of its minimiser, and the minimiser's levels."""
        mu = self.q + lam
        cover = mu > self.re
        partial = np.minimum(self.re, mu * self.frac)
        a_cost = np.where(cover, self.re * self.floor + partial, mu * self.d)
        s_cost = np.where(cover, self.re, mu)
        a_spill = np.where(cover, np.where(mu * self.frac < self.re, self.frac, 0.0), self.d)
        s_spill = np.where(cover, 0.0, 1.0)
        levels = self.levels
        n_levels = levels.shape[0]
        week_best: list[tuple[FloatArray, IntArray, FloatArray]] = []
        for (a, b), order, cut in zip(self.bounds, self.order, self.cut, strict=True):
            parts = []
            for arr in (a_cost, s_cost, a_spill, s_spill):
                suffix = np.concatenate([np.cumsum(arr[order][::-1])[::-1], [0.0]])
                parts.append(suffix[cut])
            f = parts[0] - levels * parts[1]
            spill = parts[2] - levels * parts[3]
            h = self.r7 * (b - a) * levels + f
            # Best level b' >= C for every C: a suffix minimum with its argument.
            best_idx = np.empty(n_levels, dtype=np.int64)
            cur = n_levels - 1
            for i in range(n_levels - 1, -1, -1):
                if h[i] <= h[cur]:
                    cur = i
                best_idx[i] = cur
            g = h[best_idx] - self.r7 * (b - a) * levels
            week_best.append((g, best_idx, spill))
        total = self.r30 * self.n * levels + sum(w[0] for w in week_best)
        c = int(np.argmin(total))
        tops = tuple(int(w[1][c]) - c for w in week_best)
        spill_total = float(sum(w[2][w[1][c]] for w in week_best))
        return float(total[c]) - lam * self.budget, spill_total, (c, tops)

    def solve(self, config: Config) -> tuple[float, IntArray, FloatArray]:
        """Exact elastic units for fixed levels: greedy knapsack on the spill budget."""
        base = self.base_levels(config)
        x = np.maximum(0.0, self.d - base)
        need = np.ceil(x).astype(np.int64)
        minutes = np.flatnonzero(need > 0)
        # Dropping elastic units one at a time from full cover: the first drop spills the
        # fractional part, each further drop a whole unit; ratios fall along the chain, so
        # taking items by savings per spilled unit is the fractional optimum.
        w1 = x[minutes] - (need[minutes] - 1)
        q = self.q[minutes]
        more = need[minutes] - 1
        has_more = more > 0
        weight = np.concatenate([w1, np.ones(int(has_more.sum()))])
        value = np.concatenate([self.re - q * w1, self.re - q[has_more]])
        count = np.concatenate([np.ones_like(w1, dtype=np.int64), more[has_more]])
        owner = np.concatenate([minutes, minutes[has_more]])
        keep = value > 0
        weight, value, count, owner = weight[keep], value[keep], count[keep], owner[keep]
        order = np.lexsort((weight, -(value / weight)))
        weight, count, owner = weight[order], count[order], owner[order]
        budget = self.budget * (1 + 1e-12)
        cum = np.cumsum(weight * count)
        k = int(np.searchsorted(cum, budget, side="right"))
        taken = np.zeros(weight.shape[0], dtype=np.int64)
        taken[:k] = count[:k]
        left = budget - (float(cum[k - 1]) if k > 0 else 0.0)
        for j in range(k, weight.shape[0]):
            if left < 1e-15:
                break
            if weight[j] <= left:
                m = min(int(count[j]), int(left // weight[j]))
                taken[j] = m
                left -= m * float(weight[j])
        drops = np.zeros(self.n, dtype=np.int64)
        np.add.at(drops, owner, taken)
        elastic = need - drops
        spill = np.maximum(0.0, x - elastic)
        cost = (self.committed_cost(config) + self.re * float(elastic.sum())
                + float(np.sum(self.q * spill)))
        return cost, elastic, spill


def hindsight_optimum(
    input_tokens: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    deployment: Deployment,
    *,
    week_minutes: int = MINUTES_PER_WEEK,
) -> HindsightResult:
    """The cheapest schedule of the contract's hindsight form over the given window."""
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    demand = demand_units(inp, out, deployment)
    price = spill_unit_price(inp, out, deployment)
    prob = _Problem(demand, price, deployment, week_minutes)
    if prob.n == 0:
        empty = CostBreakdown(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return HindsightResult(0, (), np.zeros(0, np.int64), np.zeros(0), empty, 0.0)

    configs: list[Config] = []
    best_bound = -math.inf

    def probe(lam: float) -> float:
        nonlocal best_bound
        value, spill, config = prob.dual(lam)
        best_bound = max(best_bound, value)
        if config not in configs:
            configs.append(config)
        return spill

    budget = prob.budget * (1 + 1e-12)
    if probe(0.0) > budget:
        lo, hi = 0.0, prob.re
        for _ in range(200):
            if probe(hi) <= budget:
                break
            lo, hi = hi, hi * 4
        for _ in range(60):
            mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
            if probe(mid) <= budget:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-9 * hi:
                break

    best_cost = math.inf
    best: tuple[Config, IntArray, FloatArray] | None = None
    seen: set[Config] = set()

    def consider(config: Config) -> bool:
        nonlocal best_cost, best
        if config in seen or config[0] < 0 or min(config[1], default=0) < 0:
            return False
        seen.add(config)
        cost, elastic, spill = prob.solve(config)
        if cost < best_cost - 1e-9:
            best_cost, best = cost, (config, elastic, spill)
            return True
        return False

    for config in configs[-12:]:
        consider(config)
    improved = True
    while improved and best is not None:
        improved = False
        (c, tops) = best[0]
        levels = [c + w for w in tops]
        moves: list[Config] = []
        for dc in (-1, 1):
            moves.append((c + dc, tuple(max(0, lv - c - dc) for lv in levels)))
        for i in range(len(tops)):
            for dw in (-1, 1):
                moves.append((c, tuple(w + dw if j == i else w for j, w in enumerate(tops))))
        for move in moves:
            improved = consider(move) or improved
    assert best is not None
    config, elastic, spill = best
    breakdown = CostBreakdown(
        minutes=prob.n,
        committed=prob.committed_cost(config),
        elastic=prob.re * float(elastic.sum()),
        spill=float(np.sum(prob.q * spill)),
        demand_unit_minutes=float(np.sum(demand)),
        spill_unit_minutes=float(np.sum(spill)),
    )
    return HindsightResult(
        commit_30d_units=config[0],
        topup_7d_units=config[1],
        elastic_units=elastic,
        spill_units=spill,
        cost=breakdown,
        lower_bound=min(best_bound, breakdown.total),
    )

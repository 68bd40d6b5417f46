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

The provider's pool and terms (``grantable``, ``terms``; issue #9). The simulated provider
(scheduler/planning/simulator.py) checks a scale-up against what it can grant *at the
request*, keeps units already held when the pool shrinks and always accepts releases. A
schedule with no lead and no hold can therefore reach ``e(t)`` iff
``e(t) <= max(e(t - 1), g(t))``: more than the pool at ``t`` only by holding units taken
earlier (``e(-1) = 0``). An online policy with lead ``L`` asks at ``t - L`` for what
serves at ``t``, so the pool that matters is ``g(t)`` or ``g(t - L)``, whichever is
larger (a relaxation of both, so the optimum stays a lower bound for any policy of the
backtest). Commitments are not drawn from the pool, but only the terms sold exist: no
30-day level when 30 is not sold, no 7-day top-up when 7 is not sold.

Minutes where the pool is at its running maximum ``G(t)`` are free (any ``e <= G(t)``
whatever came before); a stretch below it couples to the minute before it (units held
into it). Free minutes keep the greedy knapsack above (capped at ``G``); each coupled
stretch gets its exact cost/spill Pareto front by a label-setting pass over
``(minute, units held)`` (thinned to a few hundred points per state on long stretches,
the one place it may miss the optimum), and the fronts are combined with the greedy on
the rest; with few configurations ``(C, W)`` all are solved, else the local search. The
dual bound relaxes the coupling to ``e(t) <= G(t)``, which every reachable schedule
meets, so it stays a true lower bound. When no schedule of the form meets the spill
bound (no term sold and demand above what the pool can ever reach), the result is the
cheapest schedule with the least achievable spill, flagged ``bound_feasible=False``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
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
    #: No schedule of this form can cost less: the Lagrangian dual bound (under a pool,
    #: when every configuration was solved unthinned, the least of their relaxed costs
    #: if higher).
    lower_bound: float
    #: False when no schedule of this form meets ``max_spill_fraction`` under the pool
    #: and terms given: the result then has the least achievable spill.
    bound_feasible: bool = True
    #: The least spill fraction a schedule of this form can reach (0 with a term sold).
    min_spill_fraction: float = 0.0
    #: Whether a pool (``grantable``) or a restricted set of terms shaped the optimum.
    capped: bool = False


class _Problem:
    def __init__(self, demand: FloatArray, price: FloatArray, deployment: Deployment,
                 week_minutes: int, pool: FloatArray | None = None,
                 terms: Collection[int] | None = None) -> None:
        p = deployment.pricing
        self.d = demand
        self.q = price
        self.n = demand.shape[0]
        self.re = unit_minute_rate(p)
        self.r30 = committed_unit_minute_rate(p, 30)
        self.r7 = committed_unit_minute_rate(p, 7)
        self.allow30 = terms is None or 30 in terms
        self.allow7 = terms is None or 7 in terms
        self.budget = deployment.max_spill_fraction * float(np.sum(demand))
        #: Effective pool per minute (inf: unlimited) and its running maximum ``G``.
        self.pool = pool
        self.reach: FloatArray | None = None
        self.blocks: list[tuple[int, int]] = []
        self.min_spill = 0.0
        if pool is not None:
            reach = np.maximum.accumulate(pool)
            self.reach = reach
            # Coupled stretches: minutes below the running maximum, with the free minute
            # before each (units held into the stretch are taken there or earlier).
            low = np.concatenate([[False], pool < reach, [False]])
            edges = np.flatnonzero(np.diff(low.astype(np.int8)))
            self.blocks = [(int(a) - 1, int(b)) for a, b in zip(edges[::2], edges[1::2],
                                                                strict=True)]
            if not (self.allow30 or self.allow7):
                self.min_spill = float(np.sum(np.maximum(0.0, demand - reach)))
        #: Per configuration solved under the pool: a lower bound on its cost (None when a
        #: front was thinned, so no bound is known).
        self.config_bound: dict[Config, float | None] = {}
        #: The budget solved for: the bound, or the least achievable spill when above it.
        self.feasible = self.min_spill <= self.budget * (1 + 1e-12)
        if not self.feasible:
            self.budget = self.min_spill * (1 + 1e-9) + 1e-9
        self.top = max(0, math.ceil(float(np.max(demand)) - 1e-12)) if self.n else 0
        self.floor = np.floor(demand)
        self.frac = demand - self.floor
        self.bounds = [(a, min(a + week_minutes, self.n)) for a in range(0, self.n, week_minutes)]
        self.week_minutes = week_minutes
        #: A stretch's front depends only on the levels of the weeks it overlaps.
        self.fronts: dict[tuple[int, int, tuple[int, ...]], _Front] = {}
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
        capped = None
        if self.reach is not None:
            # Elastic units at most G(t) (a relaxation of the pool's reachability): at a
            # level L below thr(t) the minute's best count exceeds G and is cut to G.
            finite = np.isfinite(self.reach)
            g_cap = np.where(finite, self.reach, 0.0)
            ind = (mu * self.frac >= self.re).astype(np.float64)
            thr = np.where(cover & finite, self.floor + ind - g_cap, -np.inf)
            c_cost = self.re * g_cap + mu * (self.d - g_cap)
            capped = (thr, c_cost - a_cost, mu - s_cost, (self.d - g_cap) - a_spill,
                      1.0 - s_spill)
        week_best: list[tuple[FloatArray, IntArray, FloatArray]] = []
        for (a, b), order, cut in zip(self.bounds, self.order, self.cut, strict=True):
            parts = []
            for arr in (a_cost, s_cost, a_spill, s_spill):
                suffix = np.concatenate([np.cumsum(arr[order][::-1])[::-1], [0.0]])
                parts.append(suffix[cut])
            f = parts[0] - levels * parts[1]
            spill = parts[2] - levels * parts[3]
            if capped is not None:
                thr = capped[0]
                order2 = np.argsort(thr[a:b], kind="stable") + a
                cut2 = np.searchsorted(thr[order2], levels, side="right")
                more = []
                for arr in capped[1:]:
                    suffix = np.concatenate([np.cumsum(arr[order2][::-1])[::-1], [0.0]])
                    more.append(suffix[cut2])
                f = f + more[0] - levels * more[1]
                spill = spill + more[2] - levels * more[3]
            h = self.r7 * (b - a) * levels + f
            # Best level b' >= C for every C: a suffix minimum with its argument.
            best_idx = np.empty(n_levels, dtype=np.int64)
            if self.allow7:
                cur = n_levels - 1
                for i in range(n_levels - 1, -1, -1):
                    if h[i] <= h[cur]:
                        cur = i
                    best_idx[i] = cur
            else:
                best_idx[:] = np.arange(n_levels)
            g = h[best_idx] - self.r7 * (b - a) * levels
            week_best.append((g, best_idx, spill))
        total = self.r30 * self.n * levels + sum(w[0] for w in week_best)
        c = int(np.argmin(total)) if self.allow30 else 0
        tops = tuple(int(w[1][c]) - c for w in week_best)
        spill_total = float(sum(w[2][w[1][c]] for w in week_best))
        return float(total[c]) - lam * self.budget, spill_total, (c, tops)

    def all_configs(self, limit: int) -> list[Config]:
        """Every configuration of the terms sold, or none when there are more than
        ``limit``."""
        weeks = len(self.bounds)
        cs = range(self.top + 1) if self.allow30 else range(1)
        count = sum((self.top - c + 1) ** weeks if self.allow7 else 1 for c in cs)
        if count > limit:
            return []
        return [(c, tops) for c in cs
                for tops in itertools.product(
                    range(self.top - c + 1) if self.allow7 else range(1), repeat=weeks)]

    def allowed(self, config: Config) -> bool:
        c, tops = config
        return (c >= 0 and min(tops, default=0) >= 0 and (self.allow30 or c == 0)
                and (self.allow7 or not any(tops)))

    def solve(self, config: Config) -> tuple[float, IntArray, FloatArray]:
        """Exact elastic units for fixed levels: greedy knapsack on the spill budget."""
        if self.pool is not None:
            return self.solve_pool(config)
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
        taken = _greedy_take(weight, count, np.cumsum(weight * count),
                             self.budget * (1 + 1e-12))
        drops = np.zeros(self.n, dtype=np.int64)
        np.add.at(drops, owner, taken)
        elastic = need - drops
        spill = np.maximum(0.0, x - elastic)
        cost = (self.committed_cost(config) + self.re * float(elastic.sum())
                + float(np.sum(self.q * spill)))
        return cost, elastic, spill

    def solve_pool(self, config: Config) -> tuple[float, IntArray, FloatArray]:
        """Fixed levels under the pool: exact fronts for the coupled stretches, the greedy
        knapsack for the free minutes (exact up to its one item that does not fit)."""
        assert self.pool is not None and self.reach is not None
        base = self.base_levels(config)
        x = np.maximum(0.0, self.d - base)
        need = np.ceil(x)
        single = np.ones(self.n, dtype=bool)
        fronts: list[_Front] = []
        for s0, b in self.blocks:
            k = int(min(self.reach[s0], need[s0:b].max(initial=0.0)))
            if k <= float(self.pool[s0 + 1:b].min()):
                continue  # nothing to hold above the pool: these minutes stand alone
            single[s0:b] = False
            c, tops = config
            key = (s0, b, tuple(c + w for w in tops[s0 // self.week_minutes:
                                                     (b - 1) // self.week_minutes + 1]))
            front = self.fronts.get(key) or self.front(x, s0, b, k)
            if len(self.fronts) >= 24:
                self.fronts.clear()  # bounded memory: the local search revisits few
            self.fronts[key] = front
            if front.cost.size == 0:
                self.config_bound[config] = None if front.thinned else math.inf
                return math.inf, np.zeros(self.n, np.int64), np.zeros(self.n)
            fronts.append(front)
        # Free minutes: at most min(need, pool) units; dropping one below that spills.
        e0 = np.where(single, np.minimum(need, self.pool), 0.0).astype(np.int64)
        forced = np.where(single, np.maximum(0.0, x - e0), 0.0)
        greedy = _Greedy(x, need.astype(np.int64), e0, self.q, self.re)
        merged = _merge(fronts)
        left = self.budget * (1 + 1e-12) - float(forced.sum()) - merged.spill
        ok = np.flatnonzero(left >= 0)
        # A bound for these levels: the free minutes' knapsack relaxed to fractional
        # drops (the greedy with its last item split) on each point of the exact fronts.
        single_cost = self.re * float(e0.sum()) + float(np.sum(self.q * forced))
        relaxed = min((float(merged.cost[i]) - greedy.lp_saving(float(left[i])) for i in ok),
                      default=math.inf)
        self.config_bound[config] = (None if merged.thinned else
                                     self.committed_cost(config) + single_cost + relaxed)
        if ok.size == 0:
            return math.inf, np.zeros(self.n, np.int64), np.zeros(self.n)
        approx = merged.cost[ok] - np.array([greedy.saving(float(r)) for r in left[ok]])
        best_cost = math.inf
        best: tuple[int, IntArray] | None = None
        for i in (ok if ok.size <= 64 else ok[np.argsort(approx, kind="stable")[:16]]):
            drops, saved = greedy.take(float(left[i]))
            cost = float(merged.cost[i]) - saved
            if cost < best_cost:
                best_cost, best = cost, (int(i), drops)
        assert best is not None
        elastic = e0 - best[1]
        for front, j in zip(fronts, merged.choice[best[0]], strict=True):
            elastic[front.start:front.end] = front.schedule(int(j))
        spill = np.maximum(0.0, x - elastic)
        cost = (self.committed_cost(config) + self.re * float(elastic.sum())
                + float(np.sum(self.q * spill)))
        return cost, elastic, spill

    def front(self, x: FloatArray, s0: int, b: int, k: int) -> _Front:
        """Exact cost/spill Pareto front of the stretch ``[s0, b)`` whose minutes after
        ``s0`` are below the running maximum of the pool: labels over (minute, units
        held); ``e(t) <= max(e(t - 1), pool(t))``; at most ``k`` units are worth holding."""
        assert self.pool is not None
        es = np.arange(k + 1, dtype=np.float64)
        cap = max(32, min(256, 1_000_000 // ((b - s0) * (k + 1))))
        limit = self.budget * (1 + 1e-12)

        def minute(t: int) -> tuple[FloatArray, FloatArray]:
            sp = np.maximum(0.0, x[t] - es)
            return self.re * es + self.q[t] * sp, sp

        fc, fs = minute(s0)
        cur = [(fc[e:e + 1], fs[e:e + 1]) for e in range(k + 1)]
        back: list[list[tuple[IntArray, IntArray]]] = []
        empty_i = np.zeros(0, dtype=np.int64)
        thinned = False
        for t in range(s0 + 1, b):
            # Labels reachable from any state >= e, Pareto-filtered (suffix unions).
            # Only the states above the pool at t need their own union; the rest all
            # draw on the union of every state.
            g = float(self.pool[t])
            low = int(min(k, max(g, -1.0)))
            suffix: dict[int, tuple[FloatArray, FloatArray, IntArray, IntArray]] = {}
            pc, ps, pst, pix = np.zeros(0), np.zeros(0), empty_i, empty_i
            for e in range(k, -1, -1):
                c_e, s_e = cur[e]
                pc = np.concatenate([pc, c_e])
                ps = np.concatenate([ps, s_e])
                pst = np.concatenate([pst, np.full(c_e.size, e, dtype=np.int64)])
                pix = np.concatenate([pix, np.arange(c_e.size, dtype=np.int64)])
                if e > low or e == 0:
                    keep, cut = _pareto(pc, ps, cap)
                    thinned = thinned or cut
                    pc, ps, pst, pix = pc[keep], ps[keep], pst[keep], pix[keep]
                    suffix[e] = (pc, ps, pst, pix)
            fc, fs = minute(t)
            nxt: list[tuple[FloatArray, FloatArray]] = []
            bp: list[tuple[IntArray, IntArray]] = []
            for e in range(k + 1):
                src = suffix[0] if e <= g else suffix[e]
                c = src[0] + fc[e]
                s = src[1] + fs[e]
                ok = s <= limit
                nxt.append((c[ok], s[ok]))
                bp.append((src[2][ok], src[3][ok]))
            cur = nxt
            back.append(bp)
        c_all = np.concatenate([c for c, _ in cur])
        s_all = np.concatenate([s for _, s in cur])
        st = np.concatenate([np.full(c.size, e, dtype=np.int64) for e, (c, _) in enumerate(cur)])
        ix = np.concatenate([np.arange(c.size, dtype=np.int64) for c, _ in cur])
        keep, cut = _pareto(c_all, s_all, cap)
        return _Front(s0, b, c_all[keep], s_all[keep], st[keep], ix[keep], back,
                      thinned or cut)


def _pareto(cost: FloatArray, spill: FloatArray, cap: int) -> tuple[IntArray, bool]:
    """Indices of the cost/spill Pareto front (by spill ascending), thinned to ``cap``
    points (both ends kept) when longer; and whether it was thinned."""
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64), False
    order = np.lexsort((cost, spill))
    c = cost[order]
    prev = np.concatenate([[math.inf], np.minimum.accumulate(c)[:-1]])
    keep = order[c < prev]
    if keep.size > cap:
        # Keep the lower convex hull (every point a spill price could pick) and spread
        # the rest of the room evenly along the front.
        hull = _lower_hull(spill[keep], cost[keep])
        if hull.size > cap:
            hull = hull[np.round(np.linspace(0, hull.size - 1, cap)).astype(np.int64)]
        even = np.round(np.linspace(0, keep.size - 1, max(2, cap - hull.size)))
        keep = keep[np.union1d(hull, even.astype(np.int64))]
        return keep, True
    return keep, False


def _lower_hull(x: FloatArray, y: FloatArray, n_slopes: int = 64) -> IntArray:
    """Vertices of the lower convex hull of a front sorted by ``x`` (``y`` falling): the
    minimisers of ``y + lam * x`` for spill prices ``lam`` spread over the front's own
    slopes (all of them when there are at most ``n_slopes``)."""
    if x.shape[0] <= 2:
        return np.arange(x.shape[0], dtype=np.int64)
    slopes = np.unique(-np.diff(y) / np.maximum(np.diff(x), 1e-300))
    if slopes.size > n_slopes:
        slopes = np.quantile(slopes, np.linspace(0.0, 1.0, n_slopes))
    pick = np.argmin(y[None, :] + slopes[:, None] * x[None, :], axis=1)
    return np.unique(np.concatenate([[0, x.shape[0] - 1], pick])).astype(np.int64)


@dataclass
class _Front:
    """A coupled stretch's Pareto front with what rebuilds each point's schedule."""

    start: int
    end: int
    cost: FloatArray
    spill: FloatArray
    state: IntArray
    index: IntArray
    back: list[list[tuple[IntArray, IntArray]]]
    #: Whether a front on the way was thinned (then the front may miss the optimum).
    thinned: bool

    def schedule(self, i: int) -> IntArray:
        out = np.zeros(self.end - self.start, dtype=np.int64)
        e, j = int(self.state[i]), int(self.index[i])
        for t in range(self.end - self.start - 1, -1, -1):
            out[t] = e
            if t > 0:
                pst, pix = self.back[t - 1][e]
                e, j = int(pst[j]), int(pix[j])
        return out


@dataclass
class _Merged:
    cost: FloatArray
    spill: FloatArray
    choice: IntArray  # (points, fronts): the point of each front
    thinned: bool


def _merge(fronts: list[_Front], cap: int = 4096) -> _Merged:
    """Pareto front of the sum of the fronts (one point of each)."""
    cost, spill = np.zeros(1), np.zeros(1)
    choice = np.zeros((1, 0), dtype=np.int64)
    thinned = any(f.thinned for f in fronts)
    for f in fronts:
        c = (cost[:, None] + f.cost[None, :]).ravel()
        s = (spill[:, None] + f.spill[None, :]).ravel()
        left = np.repeat(np.arange(cost.size), f.cost.size)
        right = np.tile(np.arange(f.cost.size), cost.size)
        keep, cut = _pareto(c, s, cap)
        thinned = thinned or cut
        cost, spill = c[keep], s[keep]
        choice = np.concatenate([choice[left[keep]], right[keep, None]], axis=1)
    return _Merged(cost, spill, choice, thinned)


class _Greedy:
    """The free minutes' knapsack: from ``e0`` units (at most the need), drop units by
    saving per spilled unit; :meth:`take` as :meth:`_Problem.solve`, :meth:`saving` its
    prefix up to the first item that does not fit whole (a fast estimate to rank the
    stretches' points)."""

    def __init__(self, x: FloatArray, need: IntArray, e0: IntArray, q: FloatArray,
                 re: float) -> None:
        self.n = x.shape[0]
        minutes = np.flatnonzero(e0 > 0)
        full = e0[minutes] == need[minutes]
        # At full cover the first drop spills the fractional part; below it a whole unit.
        w1 = np.where(full, x[minutes] - (need[minutes] - 1), 1.0)
        qm = q[minutes]
        more = e0[minutes] - 1
        has_more = more > 0
        weight = np.concatenate([w1, np.ones(int(has_more.sum()))])
        value = np.concatenate([re - qm * w1, re - qm[has_more]])
        count = np.concatenate([np.ones_like(w1, dtype=np.int64), more[has_more]])
        owner = np.concatenate([minutes, minutes[has_more]])
        keep = value > 0
        weight, value, count, owner = weight[keep], value[keep], count[keep], owner[keep]
        order = np.lexsort((weight, -(value / weight)))
        self.weight, self.value = weight[order], value[order]
        self.count, self.owner = count[order], owner[order]
        self.cum = np.cumsum(self.weight * self.count)
        self.cum_value = np.cumsum(self.value * self.count)

    def saving(self, budget: float) -> float:
        k = int(np.searchsorted(self.cum, budget, side="right"))
        saved = float(self.cum_value[k - 1]) if k > 0 else 0.0
        if k < self.weight.shape[0]:
            left = budget - (float(self.cum[k - 1]) if k > 0 else 0.0)
            saved += min(int(self.count[k]), int(left // self.weight[k])) * float(self.value[k])
        return saved

    def lp_saving(self, budget: float) -> float:
        """The most any drops within ``budget`` can save, the last item taken in part."""
        k = int(np.searchsorted(self.cum, budget, side="right"))
        saved = float(self.cum_value[k - 1]) if k > 0 else 0.0
        if k < self.weight.shape[0]:
            left = budget - (float(self.cum[k - 1]) if k > 0 else 0.0)
            saved += left / float(self.weight[k]) * float(self.value[k])
        return saved

    def take(self, budget: float) -> tuple[IntArray, float]:
        taken = _greedy_take(self.weight, self.count, self.cum, budget)
        drops = np.zeros(self.n, dtype=np.int64)
        np.add.at(drops, self.owner, taken)
        return drops, float(np.sum(self.value * taken))


def _greedy_take(weight: FloatArray, count: IntArray, cum: FloatArray, budget: float
                 ) -> IntArray:
    """Items (sorted by value per unit of weight) taken whole while ``budget`` lasts, then
    any later item that still fits: how many of each (``cum`` = cumsum(weight x count))."""
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
    return taken


def hindsight_optimum(
    input_tokens: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    deployment: Deployment,
    *,
    week_minutes: int = MINUTES_PER_WEEK,
    grantable: npt.ArrayLike | None = None,
    terms: Collection[int] | None = None,
    lead_minutes: int = 0,
) -> HindsightResult:
    """The cheapest schedule of the contract's hindsight form over the given window.

    ``grantable``: elastic units the provider can grant each minute (as
    ``ProviderCapacity.series``; None: no limit), the pool checked ``lead_minutes`` before
    a unit serves (see the module doc). ``terms``: the commitment terms sold (None: all).
    """
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    demand = demand_units(inp, out, deployment)
    price = spill_unit_price(inp, out, deployment)
    pool = None if grantable is None else _effective_pool(grantable, demand.shape[0],
                                                          lead_minutes)
    prob = _Problem(demand, price, deployment, week_minutes, pool, terms)
    capped = pool is not None or not (prob.allow30 and prob.allow7)
    if prob.n == 0:
        empty = CostBreakdown(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return HindsightResult(0, (), np.zeros(0, np.int64), np.zeros(0), empty, 0.0,
                               capped=capped)

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
        if config in seen or not prob.allowed(config):
            return False
        seen.add(config)
        cost, elastic, spill = prob.solve(config)
        if cost < best_cost - 1e-9:
            best_cost, best = cost, (config, elastic, spill)
            return True
        return False

    for config in configs[-12:]:
        consider(config)
    if capped:
        # The pool's coupling and the missing terms make the configurations' costs far
        # from separable: search them all when few (a short window, a small peak).
        every = prob.all_configs(limit=64)
        for config in every:
            consider(config)
        found = [prob.config_bound.get(c) for c in every]
        if every and prob.pool is not None and all(b is not None for b in found):
            # Every configuration bounded: the least of them bounds the optimum.
            best_bound = max(best_bound, min(b for b in found if b is not None))
    improved = True
    while improved and best is not None:
        improved = False
        (c, tops) = best[0]
        levels = [c + w for w in tops]
        moves: list[Config] = []
        for dc in (-1, 1):
            moves.append((c + dc, tuple(max(0, lv - c - dc) for lv in levels)))
            if capped:
                # C moves and one week keeps its total level (one top-up traded for C).
                moves.append((c + dc, tops))
                for i in range(len(tops)):
                    moves.append((c + dc, tuple(w if j == i else max(0, lv - c - dc)
                                                for j, (w, lv) in enumerate(
                                                    zip(tops, levels, strict=True)))))
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
    total_demand = float(np.sum(demand))
    return HindsightResult(
        commit_30d_units=config[0],
        topup_7d_units=config[1],
        elastic_units=elastic,
        spill_units=spill,
        cost=breakdown,
        lower_bound=min(best_bound, breakdown.total),
        bound_feasible=prob.feasible,
        min_spill_fraction=prob.min_spill / total_demand if total_demand > 0 else 0.0,
        capped=capped,
    )


def _effective_pool(grantable: npt.ArrayLike, n: int, lead: int) -> FloatArray:
    """Units grantable for minute ``t``: the larger of the pool at ``t`` and at ``t - lead``
    (when an online request for ``t`` is checked); inf where unlimited."""
    g = np.asarray(grantable, dtype=np.int64)[:n]
    if g.shape[0] < n:
        raise ValueError("the grantable series is shorter than the window")
    pool = np.where(g >= np.iinfo(np.int64).max, np.inf, g.astype(np.float64))
    if lead > 0 and n > lead:
        pool[lead:] = np.maximum(pool[lead:], pool[:-lead].copy())
    return pool


def reachable_pool(grantable: npt.ArrayLike, n: int, lead_minutes: int = 0) -> FloatArray:
    """The most elastic units a schedule can hold at each minute under the pool: its
    running maximum (units taken when the pool allowed are kept through a shrink)."""
    return np.maximum.accumulate(_effective_pool(grantable, n, lead_minutes))


"""The hindsight optimum under the provider's pool and the terms it sells (issue #9).

Brute force: every elastic schedule of a tiny window (and every allowed commitment
configuration) is enumerated, a schedule kept when the simulated provider could have
granted it: a scale-up is checked against the pool at the request and units already held
are kept when the pool shrinks (scheduler/planning/simulator.py), so with no lead and no
hold ``e(t) <= max(e(t - 1), pool(t))``; with lead ``L`` the request for ``t`` is made at
``t - L`` and the optimum takes the larger of both pools (a lower bound either way).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from scheduler.config import Deployment, Pricing
from scheduler.planning.economics import demand_units, spill_unit_price
from scheduler.planning.hindsight import hindsight_optimum
from scheduler.planning.simulator import SimulatedProvider

UNLIMITED = int(np.iinfo(np.int64).max)
T0 = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
R30, R7 = 0.7, 0.85  # committed rate over the elastic rate (Pricing's default discounts)


def dep(price: float, bound: float, spill: str = "payg") -> Deployment:
    p = Pricing(elastic_unit_hour=60.0, payg_input_per_mtok=price, payg_output_per_mtok=4.0)
    return Deployment(name="d", provider="sim", unit_tpm=1000, pricing=p,
                      max_spill_fraction=bound, spill=spill)


def effective_pool(g: npt.NDArray[np.int64], lead: int) -> npt.NDArray[np.float64]:
    pool = np.where(g == UNLIMITED, np.inf, g.astype(np.float64))
    shifted = pool.copy()
    if lead:
        shifted[lead:] = pool[:-lead]
    return np.maximum(pool, shifted)


def brute_force(d: npt.NDArray[np.float64], q: npt.NDArray[np.float64], dp: Deployment,
                week: int, g: npt.NDArray[np.int64], lead: int,
                terms: tuple[int, ...] | None) -> tuple[float, float]:
    """(least cost, least achievable spill) over all reachable schedules: the cost is of
    the schedules within the bound, or within the least spill when none is."""
    re = dp.pricing.elastic_unit_hour / 60
    top = math.ceil(d.max() - 1e-12)
    n = d.size
    pool = effective_pool(g, lead)
    seqs = np.array(list(itertools.product(range(top + 1), repeat=n)), dtype=np.int64)
    prev = np.zeros(seqs.shape[0], dtype=np.int64)
    ok = np.ones(seqs.shape[0], dtype=bool)
    for t in range(n):
        ok &= seqs[:, t] <= np.maximum(prev, pool[t])
        prev = seqs[:, t]
    seqs = seqs[ok]
    weeks = [(a, min(a + week, n)) for a in range(0, n, week)]
    c_levels = range(top + 1) if terms is None or 30 in terms else range(1)
    results: list[tuple[float, float]] = []
    for c in c_levels:
        w_levels = range(top + 1 - c) if terms is None or 7 in terms else range(1)
        for tops in itertools.product(w_levels, repeat=len(weeks)):
            base = np.empty(n)
            fixed = c * re * R30 * n
            for (a, b), w in zip(weeks, tops, strict=True):
                base[a:b] = c + w
                fixed += w * re * R7 * (b - a)
            spill = np.maximum(0.0, d - base - seqs)
            cost = fixed + re * seqs.sum(axis=1) + (spill * q).sum(axis=1)
            results.extend(zip(cost.tolist(), spill.sum(axis=1).tolist(), strict=True))
    costs = np.array([r[0] for r in results])
    spills = np.array([r[1] for r in results])
    least = float(spills.min())
    budget = max(dp.max_spill_fraction * float(d.sum()), least) * (1 + 1e-9) + 1e-9
    return float(costs[spills <= budget].min()), least


def case(seed: int, *, integral: bool) -> tuple[Deployment, npt.NDArray[np.int64],
                                                 npt.NDArray[np.int64],
                                                 npt.NDArray[np.int64], int,
                                                 tuple[int, ...] | None]:
    rng = np.random.default_rng(seed)
    n = 7
    dp = dep(float(rng.uniform(0.2, 3)), float(rng.choice([0.0, 0.05, 0.2])),
             str(rng.choice(["payg", "payg", "throttle"])))
    if integral:
        inp = 1000 * rng.integers(0, 4, n)
        out = np.zeros(n, dtype=np.int64)
    else:
        inp = rng.integers(0, 2500, n)
        out = rng.integers(0, 250, n)
    # A pool that is unlimited, then shrinks (possibly to 0), sometimes grows back.
    g = np.full(n, UNLIMITED, dtype=np.int64)
    a = int(rng.integers(0, 4))
    b = int(rng.integers(a + 1, n + 1))
    g[a:b] = rng.integers(0, 3)
    if rng.random() < 0.5:
        g[:] = np.minimum(g, int(rng.integers(1, 4)))
    lead = int(rng.choice([0, 0, 2]))
    terms: tuple[int, ...] | None = [None, (), (7,), (30,)][int(rng.integers(0, 4))]
    return dp, inp, out, g, lead, terms


@pytest.mark.parametrize("seed", range(16))
def test_integral_demand_capped_optimum_equals_brute_force(seed: int) -> None:
    dp, inp, out, g, lead, terms = case(seed, integral=True)
    d = demand_units(inp, out, dp)
    exact, least = brute_force(d, spill_unit_price(inp, out, dp), dp, 4, g, lead, terms)
    r = hindsight_optimum(inp, out, dp, week_minutes=4, grantable=g, terms=terms,
                          lead_minutes=lead)
    # Whole units: every knapsack item weighs one unit-minute, so the result is exact.
    assert r.cost.total == pytest.approx(exact, abs=1e-6)
    # A true bound, and a tight one: within the one knapsack item it relaxes.
    assert exact - dp.pricing.elastic_unit_hour / 60 - 1e-6 <= r.lower_bound <= exact + 1e-6
    assert r.capped
    assert r.bound_feasible == (least <= dp.max_spill_fraction * d.sum() + 1e-9)
    assert r.min_spill_fraction * d.sum() == pytest.approx(least, abs=1e-9)


@pytest.mark.parametrize("seed", range(16))
def test_fractional_demand_capped_optimum_matches_brute_force(seed: int) -> None:
    dp, inp, out, g, lead, terms = case(100 + seed, integral=False)
    d = demand_units(inp, out, dp)
    exact, least = brute_force(d, spill_unit_price(inp, out, dp), dp, 4, g, lead, terms)
    r = hindsight_optimum(inp, out, dp, week_minutes=4, grantable=g, terms=terms,
                          lead_minutes=lead)
    # Exact up to the one knapsack item that does not fit (as without a pool).
    assert exact - 1e-9 <= r.cost.total <= exact + dp.pricing.elastic_unit_hour / 60 + 1e-9
    assert exact - dp.pricing.elastic_unit_hour / 60 - 1e-6 <= r.lower_bound <= exact + 1e-6
    budget = max(dp.max_spill_fraction * d.sum(), least)
    assert r.cost.spill_unit_minutes <= budget * (1 + 1e-9) + 1e-9


def pareto_exact(d: npt.NDArray[np.float64], q: npt.NDArray[np.float64], re: float,
                 pool: npt.NDArray[np.float64], budget: float) -> float:
    """Least elastic + spill cost at fixed zero levels, by a full (unthinned) Pareto pass
    over (minute, units held): exact, and fast enough for a few dozen minutes."""
    top = math.ceil(d.max() - 1e-12)
    labels: dict[int, set[tuple[float, float]]] = {0: {(0.0, 0.0)}}
    for t in range(d.size):
        nxt: dict[int, set[tuple[float, float]]] = {}
        for p, front in labels.items():
            for e in range(int(min(top, max(p, pool[t]))) + 1):
                s = max(0.0, d[t] - e)
                for c0, s0 in front:
                    if s0 + s <= budget:
                        nxt.setdefault(e, set()).add((round(c0 + re * e + q[t] * s, 9),
                                                      round(s0 + s, 9)))
        labels = {}
        for e, front in nxt.items():
            kept: list[tuple[float, float]] = []
            for c, s in sorted(front, key=lambda cs: (cs[1], cs[0])):
                if not kept or c < kept[-1][0]:
                    kept.append((c, s))
            labels[e] = set(kept)
    return min(c for front in labels.values() for c, _ in front)


@pytest.mark.parametrize("seed", range(4))
def test_a_few_dozen_minutes_equal_an_exact_pareto_pass(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    n = 36
    dp = dep(float(rng.uniform(0.5, 3)), 0.1)
    inp = 1000 * rng.integers(0, 4, n)
    out = np.zeros(n, dtype=np.int64)
    g = np.full(n, UNLIMITED, dtype=np.int64)
    for _ in range(3):
        a = int(rng.integers(1, n - 4))
        g[a:a + int(rng.integers(3, 12))] = int(rng.integers(0, 3))
    r = hindsight_optimum(inp, out, dp, week_minutes=n, grantable=g, terms=())
    d = demand_units(inp, out, dp)
    exact = pareto_exact(d, spill_unit_price(inp, out, dp), 1.0,
                         effective_pool(g, 0), 0.1 * d.sum() * (1 + 1e-9))
    assert r.cost.total == pytest.approx(exact, abs=1e-6)
    assert r.lower_bound <= exact + 1e-6


def replay(elastic: npt.NDArray[np.int64], g: npt.NDArray[np.int64]) -> SimulatedProvider:
    sim = SimulatedProvider(T0, elastic.size, 0, 0, g)
    for t, e in enumerate(elastic):
        sim.set_target(t, int(e))
    return sim


@pytest.mark.parametrize("seed", range(6))
def test_the_schedule_is_one_the_simulated_provider_grants(seed: int) -> None:
    dp, inp, out, g, _, terms = case(300 + seed, integral=False)
    r = hindsight_optimum(inp, out, dp, week_minutes=4, grantable=g, terms=terms)
    sim = replay(r.elastic_units, g)
    assert not sim.refusals
    assert np.array_equal(sim.elastic_series(), r.elastic_units)


def test_units_are_held_through_a_shrink_rather_than_spilled() -> None:
    # Pool unlimited at minute 0, then 1 unit; 2 units needed at minutes 3-4, no spill
    # allowed and no commitment sold: both units must be taken at 0 and held.
    dp = dep(1.0, 0.0)
    inp = np.array([0, 0, 0, 2000, 2000, 0])
    g = np.array([UNLIMITED, 1, 1, 1, 1, 1])
    r = hindsight_optimum(inp, np.zeros(6), dp, grantable=g, terms=())
    assert r.elastic_units.tolist() == [2, 2, 2, 2, 2, 0]
    assert r.bound_feasible and r.cost.total == pytest.approx(10 * 1.0)
    assert r.lower_bound == pytest.approx(10.0)  # every configuration bounded exactly
    assert not replay(r.elastic_units, g).refusals
    # The pool at the request is what counts: with a lead of 2 the units serving minute
    # 2 onwards could be asked for at minute 0.
    led = hindsight_optimum(inp, np.zeros(6), dp, grantable=g, terms=(), lead_minutes=2)
    assert led.elastic_units.tolist() == [0, 0, 2, 2, 2, 0]
    assert led.cost.total == pytest.approx(6.0)


def test_a_pool_below_demand_with_no_term_sold_reports_the_least_spill() -> None:
    dp = dep(1.0, 0.01)
    inp = np.array([1000, 3000, 3000, 3000, 1000, 0])
    g = np.full(6, 2, dtype=np.int64)
    r = hindsight_optimum(inp, np.zeros(6), dp, grantable=g, terms=())
    assert not r.bound_feasible
    assert r.min_spill_fraction == pytest.approx(3 / 11)
    assert r.cost.spill_fraction == pytest.approx(3 / 11)
    assert r.elastic_units.tolist() == [1, 2, 2, 2, 1, 0]
    assert r.lower_bound <= r.cost.total + 1e-9
    # A 30-day commitment is not drawn from the pool: with it on sale the bound is met.
    sold = hindsight_optimum(inp, np.zeros(6), dp, grantable=g, terms=(30,))
    assert sold.bound_feasible and sold.cost.spill_fraction <= 0.01
    assert sold.commit_30d_units >= 1 and sold.topup_7d_units == (0,)


def test_unsold_terms_are_not_used() -> None:
    dp = dep(1.0, 0.0)
    minute = np.arange(3 * 1440) % 1440
    inp = np.where((minute >= 480) & (minute < 1080), 3000, 1000)
    free = hindsight_optimum(inp, np.zeros(inp.size), dp)
    assert free.commit_30d_units == 1  # the baseline unit is committed when 30 is sold
    only7 = hindsight_optimum(inp, np.zeros(inp.size), dp, terms=(7,))
    assert only7.commit_30d_units == 0 and only7.topup_7d_units == (1,)
    none = hindsight_optimum(inp, np.zeros(inp.size), dp, terms=())
    assert none.commit_30d_units == 0 and none.topup_7d_units == (0,)
    assert free.cost.total < only7.cost.total < none.cost.total
    assert none.capped and not free.capped


def field_trace(days: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    minute = np.arange(days * 1440) % 1440
    peak = (minute >= 480) & (minute < 1080)
    return np.where(peak, 3750, 1249), np.where(peak, 1250, 417)


def test_no_pool_is_the_uncapped_optimum_and_a_slack_pool_changes_nothing() -> None:
    p = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379)
    dp = Deployment(name="d", provider="sim", unit_tpm=2500, pricing=p,
                    max_spill_fraction=0.01)
    inp, out = field_trace(10)
    plain = hindsight_optimum(inp, out, dp)
    assert not plain.capped and plain.bound_feasible
    same = hindsight_optimum(inp, out, dp, grantable=None, terms=None, lead_minutes=5)
    assert same.cost == plain.cost and same.lower_bound == plain.lower_bound
    assert np.array_equal(same.elastic_units, plain.elastic_units)
    # A pool that never binds (unlimited, or above the peak): the same optimum.
    for g in (np.full(inp.size, UNLIMITED), np.full(inp.size, 5)):
        slack = hindsight_optimum(inp, out, dp, grantable=g, lead_minutes=5)
        assert slack.capped
        assert slack.cost.total == pytest.approx(plain.cost.total, abs=0.005)
        assert slack.commit_30d_units == plain.commit_30d_units
        assert slack.lower_bound <= slack.cost.total + 1e-9


def test_backtest_summary_says_the_hindsight_is_capped(tmp_path: Path) -> None:
    from bench.scenarios.suite import SCENARIOS, build, provider_capacity
    from scheduler.config import load_config
    from scheduler.ingest.files import read_usage_file
    from scheduler.planning.backtest import run_backtest

    built = build(SCENARIOS["capacity-cut-to-1"], tmp_path, quick=True)
    cap = provider_capacity(built)
    assert cap is not None
    dp = load_config(built.config).deployment(built.deployment)
    summary = run_backtest(read_usage_file(built.usage), dp, tmp_path / "out",
                           start=built.start, end=built.end, capacity=cap)
    hs = summary["baselines"]["hindsight_optimum"]
    assert hs["capped"] is True and hs["bound_feasible"] is True
    assert hs["lower_bound"] <= hs["total"]
    assert hs["spill_fraction"] <= dp.max_spill_fraction + 1e-9


def test_the_constant_level_yardstick_holds_its_level_on_the_terms_sold() -> None:
    from scheduler.planning.backtest import _hindsight_level

    dp = dep(1.0, 0.0)
    minute = np.arange(2 * 1440) % 1440
    inp = np.where((minute >= 480) & (minute < 1080), 3000, 1000).astype(np.float64)
    out = np.zeros(inp.size)
    dem = demand_units(inp, out, dp)
    w0 = np.datetime64("2026-03-09T00:00", "m")
    assert _hindsight_level(w0, inp, out, dem, dp)["units"] == 3
    week = _hindsight_level(w0, inp, out, dem, dp, (7,))
    assert week["held_as"] == "7-day" and week["units"] == 3
    assert week["cost"] == pytest.approx(3 * R7 * inp.size)
    # No term sold, a pool of 2 units: 2 elastic units held all along, the peak's third
    # unit spills (no level meets the bound).
    g = np.full(inp.size, 2, dtype=np.int64)
    held = _hindsight_level(w0, inp, out, dem, dp, (), g)
    assert held["held_as"] == "elastic" and held["units"] == 2
    assert held["spill_fraction"] == pytest.approx(1200 / float(dem.sum()))


def test_a_long_stretch_whose_front_is_thinned_keeps_a_true_bound() -> None:
    # Units must be held from minute 9 through 390 minutes of an outage; the spill budget
    # leaves hundreds of Pareto points to the stretch, more than are kept.
    rng = np.random.default_rng(7)
    n = 400
    dp = dep(1.0, 0.45)
    inp = np.where(np.arange(n) >= 10, 1000 * rng.integers(1, 3, n), 0)
    g = np.where(np.arange(n) >= 10, 0, UNLIMITED)
    r = hindsight_optimum(inp, np.zeros(n), dp, grantable=g, terms=())
    d = demand_units(inp, np.zeros(n), dp)
    budget = 0.45 * d.sum()
    exact = pareto_exact(d, spill_unit_price(inp, np.zeros(n), dp), 1.0,
                         effective_pool(g, 0), budget * (1 + 1e-9))
    assert r.lower_bound <= exact + 1e-6 <= r.cost.total + 2e-6
    assert r.cost.spill_unit_minutes <= budget + 1e-9
    assert not replay(r.elastic_units, g).refusals

"""Economics: hand-computed dollars, the worked case, and the hindsight optimum vs brute force."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest

from scheduler.config import Deployment, Pricing
from scheduler.planning.economics import (
    Commitment,
    commitment_tail,
    dedicated_at_peak_cost,
    demand_units,
    payg_total_cost,
    schedule_cost,
)
from scheduler.planning.hindsight import hindsight_optimum

T0 = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
FIELD = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379)


def dep(**kw: object) -> Deployment:
    base: dict[str, object] = {"name": "d", "provider": "sim", "unit_tpm": 2500,
                               "pricing": FIELD, "max_spill_fraction": 0.0}
    base.update(kw)
    return Deployment(**base)  # type: ignore[arg-type]


def field_trace(days: int) -> tuple[np.ndarray, np.ndarray]:
    minute = np.arange(days * 1440) % 1440
    peak = (minute >= 480) & (minute < 1080)
    return np.where(peak, 3750, 1249), np.where(peak, 1250, 417)


def test_worked_case_from_a_schedule() -> None:
    inp, out = field_trace(30)
    d = demand_units(inp, out, dep())
    assert d.max() == 3.0 and d.min() == 1.0
    elastic = np.where(d > 1.0, 2, 0)
    cost = schedule_cost(start=T0, input_tokens=inp, output_tokens=out, elastic_units=elastic,
                         commitments=[Commitment(T0, 30, 1)], deployment=dep())
    assert cost.committed == pytest.approx(19165.30, abs=0.005)
    assert cost.elastic == pytest.approx(22815.83, abs=0.005)
    assert cost.spill == 0.0 and cost.spill_fraction == 0.0
    assert cost.total == pytest.approx(41981.13, abs=0.01)
    assert cost.commitment_tail == 0.0
    assert dedicated_at_peak_cost(d, dep()) == pytest.approx(82137.00, abs=0.005)


def test_spill_payg_and_tail_by_hand() -> None:
    p = Pricing(elastic_unit_hour=60.0, commit_7d_discount=0.15, commit_30d_discount=0.3,
                payg_input_per_mtok=2.0, payg_output_per_mtok=8.0)
    d = dep(unit_tpm=1000, pricing=p, output_token_weight=3.0)
    # Minute 0: 2000 in + 1000 out = 5 units; capacity 1 committed + 2 elastic = 3.
    # Minute 1: no demand, same capacity.
    inp, out = np.array([2000, 0]), np.array([1000, 0])
    c = Commitment(T0 - dt.timedelta(days=7) + dt.timedelta(minutes=1), 7, 1)
    cost = schedule_cost(start=T0, input_tokens=inp, output_tokens=out,
                         elastic_units=np.array([2, 2]), commitments=[c], deployment=d)
    # Committed: active at minute 0 only (ends at T0 + 1 min): 1 x 60 x 0.85 / 60.
    assert cost.committed == pytest.approx(0.85)
    assert cost.elastic == pytest.approx(4 * 1.0)
    # Spill 2 of 5 units: 2/5 x (2000 x 2 + 1000 x 8) / 1e6 = 0.0048.
    assert cost.spill == pytest.approx(0.0048)
    assert cost.spill_fraction == pytest.approx(2 / 5)
    assert cost.commitment_tail == 0.0
    later = Commitment(T0, 30, 2)
    # Bought at T0, a 2-minute window leaves 43,198 minutes at 2 x 60 x 0.7 / 60 = 1.4 $/min.
    assert commitment_tail([later], T0 + dt.timedelta(minutes=2), p) == pytest.approx(
        43198 * 1.4)
    assert payg_total_cost(inp, out, p) == pytest.approx(0.012)
    throttled = schedule_cost(start=T0, input_tokens=inp, output_tokens=out,
                              elastic_units=np.array([2, 2]), commitments=[c],
                              deployment=Deployment(**{**d.__dict__, "spill": "throttle"}))
    assert throttled.spill == 0.0 and throttled.spill_fraction == pytest.approx(0.4)


def test_hindsight_worked_case() -> None:
    inp, out = field_trace(30)
    r = hindsight_optimum(inp, out, dep())
    assert r.commit_30d_units == 1 and set(r.topup_7d_units) == {0}
    assert r.cost.total == pytest.approx(41981.13, abs=0.01)
    assert r.lower_bound <= r.cost.total + 1e-6
    assert r.cost.spill_fraction == 0.0


def brute_force(d: np.ndarray, q: np.ndarray, dp: Deployment, week: int) -> float:
    p = dp.pricing
    re, r30, r7 = p.elastic_unit_hour / 60, p.elastic_unit_hour * 0.7 / 60, (
        p.elastic_unit_hour * 0.85 / 60)
    top = math.ceil(d.max())
    weeks = [(a, min(a + week, d.size)) for a in range(0, d.size, week)]
    budget = dp.max_spill_fraction * d.sum() * (1 + 1e-12)
    best = math.inf
    for c in range(top + 1):
        for tops in itertools.product(range(top + 1 - c), repeat=len(weeks)):
            base = np.empty(d.size)
            fixed = c * r30 * d.size
            for (a, b), w in zip(weeks, tops, strict=True):
                base[a:b] = c + w
                fixed += w * r7 * (b - a)
            for e in itertools.product(range(top + 1), repeat=d.size):
                spill = np.maximum(0, d - base - np.array(e))
                if spill.sum() <= budget:
                    best = min(best, fixed + re * sum(e) + float((q * spill).sum()))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_hindsight_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, week = 5, 3
    p = Pricing(elastic_unit_hour=60.0, payg_input_per_mtok=float(rng.uniform(0.2, 3)),
                payg_output_per_mtok=4.0)
    d = dep(unit_tpm=1000, pricing=p, max_spill_fraction=float(rng.choice([0, 0.05, 0.2])),
            spill=str(rng.choice(["payg", "throttle"])))
    inp = rng.integers(0, 2500, n)
    out = rng.integers(0, 300, n)
    r = hindsight_optimum(inp, out, d, week_minutes=week)
    demand = demand_units(inp, out, d)
    from scheduler.planning.economics import spill_unit_price

    exact = brute_force(demand, spill_unit_price(inp, out, d), d, week)
    # Exact up to the one knapsack item that does not fit: within one unit-minute.
    assert exact - 1e-9 <= r.cost.total <= exact + p.elastic_unit_hour / 60 + 1e-9
    assert r.lower_bound <= exact + 1e-6
    assert r.cost.spill_fraction <= d.max_spill_fraction + 1e-9

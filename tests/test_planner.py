"""Planner properties on generated inputs (hypothesis), and rules on hand-made forecasts."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import Deployment, Pricing
from scheduler.planning.economics import Commitment
from scheduler.planning.planner import (
    DemandForecast,
    Holdings,
    PlannerSettings,
    plan,
)
from scheduler.planning.simulator import SimulatedProvider

T0 = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)
PRICING = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379)
LEVELS = (0.5, 0.9, 0.975)
SETTINGS = PlannerSettings(horizon_minutes=90)


def deployment(lead: int = 5, hold: int = 60, lo: int = 0, hi: int = 40,
               spill: float = 0.01) -> Deployment:
    return Deployment(name="d", provider="sim", unit_tpm=1000, pricing=PRICING,
                      scale_up_lead_minutes=lead, min_hold_minutes=hold, min_units=lo,
                      max_units=hi, max_spill_fraction=spill)


def forecast(now: dt.datetime, median: np.ndarray, spread: float) -> DemandForecast:
    values = np.vstack([median, median * (1 + spread), median * (1 + 2 * spread)])
    return DemandForecast(now, LEVELS, values)


def step_forecast(now: dt.datetime, n: int, at: int, low: float, high: float) -> DemandForecast:
    median = np.where(np.arange(n) >= at, high, low)
    return forecast(now, median, 0.0)


def test_scales_up_lead_minutes_ahead_of_a_step() -> None:
    d = deployment(spill=0.0)
    p = plan(step_forecast(T0, 200, 30, 1.0, 3.0), Holdings(), d, T0, settings=SETTINGS)
    assert p.elastic_target[29] == 1 and p.elastic_target[30] == 3
    ups = [a for a in p.actions if a.kind == "elastic_set_target"]
    # Serve 1 unit now (no lead possible: requested now, serves in 5), 3 from minute 30.
    first_three = next(a for a in ups if a.units == 3)
    assert first_three.issue_at == T0 + 25 * MIN and first_three.effective_at == T0 + 30 * MIN
    assert p.expected_spill[30:].sum() < 1e-9


def test_commitment_only_above_break_even() -> None:
    d = deployment(spill=0.0)
    # A week: 1 unit always, 3 units 10 h a day.
    minute = np.arange(10080) % 1440
    median = np.where((minute >= 480) & (minute < 1080), 3.0, 1.0)
    fc = forecast(T0, median, 0.0)
    p = plan(fc, Holdings(), d, T0, settings=SETTINGS, commit_forecast=fc)
    assert [(c.term_days, c.units) for c in p.new_commitments] == [(30, 1)]
    # Already holding it: nothing more to buy.
    again = plan(fc, Holdings(commitments=p.new_commitments), d, T0 + 60 * MIN,
                 settings=SETTINGS, commit_forecast=forecast(T0 + 60 * MIN, median, 0.0))
    assert again.new_commitments == ()


def test_whole_30_day_level_at_the_first_decision() -> None:
    d = deployment(spill=0.0)
    fc = forecast(T0, np.full(10080, 20.0), 0.0)
    p = plan(fc, Holdings(), d, T0, settings=SETTINGS, commit_forecast=fc)
    assert [(c.term_days, c.units) for c in p.new_commitments] == [(30, 20)]


def test_ladder_caps_each_decision() -> None:
    d = deployment(spill=0.0)
    fc = forecast(T0, np.full(10080, 20.0), 0.0)
    ladder = PlannerSettings(horizon_minutes=90, ladder_tranches_30d=4)
    p = plan(fc, Holdings(), d, T0, settings=ladder, commit_forecast=fc)
    by_term = {c.term_days: c.units for c in p.new_commitments}
    assert by_term[30] == 5  # ceil(20 / 4 tranches)
    assert by_term[7] == 10  # 15 wanted, capped at ceil((5 + 15) / 2 tranches)


def test_only_the_terms_the_provider_sells_are_bought() -> None:
    # The ladder buys both terms when both are sold (test above); Bedrock sells 30-day
    # terms only and Azure none through its API (ProviderLimits.supported_terms).
    d = deployment(spill=0.0)
    fc = forecast(T0, np.full(10080, 20.0), 0.0)
    both = PlannerSettings(horizon_minutes=90, ladder_tranches_30d=4)
    only_30 = PlannerSettings(horizon_minutes=90, ladder_tranches_30d=4, commit_terms=(30,))
    none = PlannerSettings(horizon_minutes=90, ladder_tranches_30d=4, commit_terms=())
    terms = {c.term_days for c in plan(fc, Holdings(), d, T0, settings=both,
                                       commit_forecast=fc).new_commitments}
    assert terms == {30, 7}
    p30 = plan(fc, Holdings(), d, T0, settings=only_30, commit_forecast=fc)
    assert [(c.term_days, c.units) for c in p30.new_commitments] == [(30, 5)]
    assert plan(fc, Holdings(), d, T0, settings=none, commit_forecast=fc).new_commitments == ()


def test_payg_cheaper_is_reported() -> None:
    d = deployment(spill=0.05)
    p = plan(forecast(T0, np.full(90, 5.0), 0.2), Holdings(), d, T0, settings=SETTINGS,
             spill_price=0.01)
    assert p.payg_cheaper_than_unit
    assert any(r.rule == "payg_vs_unit" for r in p.reasons)
    # From the first minute a new unit can serve (before it, nothing can be added).
    fraction = p.expected_spill[5:].sum() / p.expected_demand[5:].sum()
    assert fraction <= d.max_spill_fraction


profiles = st.lists(st.floats(0, 12, allow_nan=False), min_size=3, max_size=12)


def expand(points: list[float], n: int) -> np.ndarray:
    return np.interp(np.arange(n), np.linspace(0, n - 1, len(points)), points)


@settings(max_examples=60, deadline=None)
@given(points=profiles, spread=st.floats(0, 0.5), shift=st.floats(0, 5),
       scale=st.floats(1, 2), lead=st.integers(0, 10), hold=st.integers(1, 90),
       lo=st.integers(0, 3), committed=st.integers(0, 4),
       spill=st.sampled_from([0.0, 0.01, 0.1]))
def test_monotone_and_bounded(points: list[float], spread: float, shift: float, scale: float,
                              lead: int, hold: int, lo: int, committed: int,
                              spill: float) -> None:
    d = deployment(lead=lead, hold=hold, lo=lo, hi=lo + 15, spill=spill)
    n = SETTINGS.horizon_minutes
    median = expand(points, n)
    holdings = Holdings(commitments=(Commitment(T0 - 60 * MIN, 7, committed),)
                        if committed else ())
    base = plan(forecast(T0, median, spread), holdings, d, T0, settings=SETTINGS)
    more = plan(forecast(T0, median * scale + shift, spread), holdings, d, T0,
                settings=SETTINGS)
    # More forecast demand never gives less capacity, minute by minute.
    assert (more.capacity_target >= base.capacity_target).all()
    for p in (base, more):
        assert (p.capacity_target <= d.max_units).all()
        assert (p.elastic_target >= 0).all()
        assert (p.committed_units == committed).all()
        # Forecasts within round_tolerance above an integer round down (by design).
        slack = SETTINGS.round_tolerance * n
        assert (p.expected_spill[lead:].sum() <= spill * p.expected_demand[lead:].sum() + slack
                or (p.capacity_target == d.max_units).any())


@settings(max_examples=25, deadline=None)
@given(points=st.lists(st.floats(0, 10, allow_nan=False), min_size=4, max_size=20),
       lead=st.integers(0, 8), hold=st.integers(1, 45), spread=st.floats(0, 0.3))
def test_closed_loop_respects_lead_hold_and_commitments(points: list[float], lead: int,
                                                        hold: int, spread: float) -> None:
    """Re-plan every minute against the simulated provider: nothing breaks the rules."""
    d = deployment(lead=lead, hold=hold, hi=12)
    steps = 180
    demand = expand(points, steps + SETTINGS.horizon_minutes)
    provider = SimulatedProvider(T0, steps, lead, hold)
    bought: list[Commitment] = []
    for k in range(steps):
        now = T0 + k * MIN
        window = demand[k:k + SETTINGS.horizon_minutes]
        fc = forecast(now, window, spread)
        commit_fc = forecast(now, np.tile(window, 10), spread) if k % 60 == 0 else None
        held = provider.holdings(k)
        # Commitments are never cancelled: everything bought and unexpired is still held.
        assert set(held.commitments) == {c for c in bought if c.end > now}
        p = plan(fc, held, d, now, settings=SETTINGS, commit_forecast=commit_fc)
        assert (p.capacity_target <= d.max_units).all()
        for c in p.new_commitments:
            bought.append(provider.buy(k, c.term_days, c.units))
        action = p.action_now()
        if action is not None:
            assert action.units <= d.max_units
            provider.set_target(k, action.units)
    for e in provider.events:
        if e.kind == "elastic_request":
            assert e.effective == e.decided + lead
    # Every release happens after the released units' minimum hold.
    active_from: list[int] = []
    for e in provider.events:
        if e.kind == "elastic_request":
            active_from += [e.effective] * e.units
        elif e.kind == "elastic_release":
            active_from.sort()
            for _ in range(e.units):
                assert active_from.pop(0) + hold <= e.decided


@settings(max_examples=60, deadline=None)
@given(points=profiles, spread=st.floats(0, 0.5), lead=st.integers(0, 10),
       hold=st.integers(1, 90))
def test_new_units_respect_lead_and_hold(points: list[float], spread: float, lead: int,
                                         hold: int) -> None:
    """From no holdings: nothing serves before ``lead``; each unit-layer is held ``hold``."""
    d = deployment(lead=lead, hold=hold, hi=15)
    n = SETTINGS.horizon_minutes
    p = plan(forecast(T0, expand(points, n), spread), Holdings(), d, T0, settings=SETTINGS)
    e = p.elastic_target
    assert (e[:lead] == 0).all()
    for j in range(int(e.max(initial=0))):
        layer = np.concatenate([[0], (e > j).astype(int), [0]])
        edges = np.flatnonzero(np.diff(layer))
        for a, b in zip(edges[0::2], edges[1::2], strict=True):
            assert a >= lead
            assert b - a >= hold or b == n  # a run cut by the horizon goes on after it


def test_seasonal_envelope_trusted_only_when_history_agrees() -> None:
    from scheduler.planning.seasonal import combine, seasonal_envelope

    day = np.where((np.arange(1440) >= 480) & (np.arange(1440) < 1080), 3.0, 1.0)
    history = np.tile(day, 21)[: 21 * 1440 - 1440 + 470]  # now = 07:50 on day 21
    trusted, value = seasonal_envelope(history, 30)
    assert trusted.all() and (value[:10] == 1.0).all() and (value[10:] == 3.0).all()
    model = np.vstack([np.full(30, 2.0), np.full(30, 2.6), np.full(30, 3.4)])
    combined = combine(model, history)
    assert (combined[:, :10] == 1.0).all() and (combined[:, 10:] == 3.0).all()
    # Today breaks the pattern: the model's quantiles stand.
    broken = history.copy()
    broken[-30:] *= 1.5
    assert not seasonal_envelope(broken, 30)[0].any()
    # Noisy history (no agreement): untouched.
    noisy = history * np.random.default_rng(1).lognormal(0, 0.05, history.size)
    assert (combine(model, noisy) == model).all()

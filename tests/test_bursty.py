"""Issue #9, bursty traffic (idle-heavy, heavy-tailed) on seeds the scenario suite does not run.

* No commitment on a level a heavy tail drives: a constant-level cover holds the level
  the pooled replay needs, which one heavy day sets; a commitment stands only on the
  level every recent day needed to meet the bound on its own (and never on under three
  whole days).
* What meeting the bound costs is said at the first plan, with the range the resampled
  replays give, when the replay cannot pin it to within 25 %.
* The level held comes down as days that needed less accumulate: it is chosen on the
  replay's days weighted to the latest, without the heaviest day when a few bursts set
  the bound's level (the bound's cost is still estimated on the pooled replay).

Short windows (2 days of history, 3 billed), seeds 4 and 5 of the 7-day bursty trace
(bench.scenarios.suite.bursty, = ../shared/cases/bursty/gen_bursty.py's draws).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.scenarios.suite import Scenario, bursty, config_text, write_usage
from scheduler.config import Deployment, Pricing, load_config
from scheduler.ingest.files import read_usage_file
from scheduler.planning.backtest import run_backtest
from scheduler.planning.headroom import (
    LEVEL_HALF_LIFE_DAYS,
    choose_cover,
    constant_level_spill,
    headroom_curves,
    held_level_spill,
    resampled_level_spill,
)
from scheduler.planning.planner import (
    CommitEvidence,
    DemandForecast,
    Holdings,
    PlannerSettings,
    every_day_bound_level,
    plan,
    typical_day_level,
)

UTC = dt.UTC
DAY = 1440
START = dt.datetime(2024, 6, 5, tzinfo=UTC)  # the trace starts 2024-06-03: 2 days before
PRICING = Pricing(elastic_unit_hour=27379 / 720, dedicated_unit_month=27379,
                  payg_input_per_mtok=2.5, payg_output_per_mtok=10.0)
#: What the planner aims at: the 1 % bound x the default safety 0.9.
AIM = 0.01 * PlannerSettings().payg_safety


def deployment(**kw: object) -> Deployment:
    base: dict[str, object] = dict(name="bot", provider="simulated", unit_tpm=2000,
                                   pricing=PRICING, max_units=400, max_spill_fraction=0.01,
                                   scale_up_lead_minutes=5, min_hold_minutes=60)
    base.update(kw)
    return Deployment(**base)  # type: ignore[arg-type]


def day_level(day: npt.NDArray[np.float64], fraction: float) -> int:
    """Brute force: the smallest constant c whose spill over the day is within fraction."""
    seen = day[np.isfinite(day)]
    total = float(seen.sum())
    for c in range(math.ceil(float(seen.max(initial=0.0))) + 1):
        if float(np.maximum(seen - c, 0.0).sum()) <= fraction * total + 1e-9:
            return c
    raise AssertionError("unreachable")


# ------------------------------------------------------------------- the evidence


def test_every_day_bound_level_is_the_level_every_day_needed() -> None:
    # Constant days of 10, 5 and 20 units need 10, 5 and 20 units (1 % of a constant v is
    # spilled only below 0.99 v); a heavy day (one minute of 1,000 units) needs ~ that
    # minute's share and does not move the level every day needed.
    days = [np.full(DAY, 10.0), np.full(DAY, 5.0), np.full(DAY, 20.0)]
    heavy = np.full(DAY, 5.0)
    heavy[700] = 1000.0
    recent = np.concatenate(days)
    assert every_day_bound_level(recent, 7, 0.01, 3) == 5.0
    assert every_day_bound_level(np.concatenate([recent, heavy]), 7, 0.01, 3) == 5.0
    assert day_level(heavy, 0.01) > 500
    # Under three whole days: no level (a tail needs more evidence than that).
    assert every_day_bound_level(recent[DAY:], 7, 0.01, 3) is None
    # A day mostly unreported is no evidence: the two observed days are not enough.
    holes = recent.copy()
    holes[:1000] = np.nan
    assert every_day_bound_level(holes, 7, 0.01, 3) is None
    # Only the last ``days`` whole days count.
    assert every_day_bound_level(np.concatenate([days[1], days[0], days[2], days[0]]),
                                 3, 0.01, 3) == 10.0


def test_resampled_range_brackets_the_replay_and_is_deterministic() -> None:
    d = bursty(2, 4).units
    levels = math.ceil(float(d.max())) + 1
    lo, hi = resampled_level_spill(d, levels)
    lo2, hi2 = resampled_level_spill(d, levels)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    assert np.all(lo <= hi + 1e-15)
    # A constant trace has nothing to resample: the range is the replay itself.
    flat_lo, flat_hi = resampled_level_spill(np.full(2 * DAY, 3.0), 5)
    assert np.allclose(flat_lo, flat_hi) and flat_lo[3] == 0.0 and flat_lo[2] > 0


def test_the_cover_states_an_uncertain_bound_on_heavy_tails_only() -> None:
    dep = deployment()
    curve = headroom_curves(bursty(2, 5).units, lead=5, hold=60)[0]
    assert curve is not None
    cover = choose_cover(curve, dep, AIM, 0.0025)
    assert cover is not None and cover.kind == "level"
    assert cover.bound_cost_low_per_minute < cover.bound_cost_per_minute
    assert cover.bound_cost_high_per_minute > cover.bound_cost_per_minute
    assert cover.bound_uncertain
    assert "on resampled replays" in cover.describe(0.01)
    assert "the bound may be missed" in cover.describe(0.01)
    # A steady daily shape (1 unit, 3 from 08:00 to 18:00) has one level on every resample.
    m = np.arange(3 * DAY) % DAY
    tidal = np.where((m >= 480) & (m < 1080), 3.0, 1.0)
    steady = headroom_curves(tidal, lead=5, hold=60)[0]
    assert steady is not None
    c = choose_cover(steady, dep, AIM, 0.0025)
    assert c is not None and not c.bound_uncertain
    assert "the bound may be missed" not in c.describe(0.01)


def weighted_level(days: list[npt.NDArray[np.float64]], weights: list[float],
                   fraction: float) -> int:
    """Brute force: the smallest c with sum_i w_i spill_i(c) <= fraction sum_i w_i D_i."""
    top = math.ceil(max(float(np.nanmax(d)) for d in days)) + 1
    total = sum(w * float(np.nansum(d)) for d, w in zip(days, weights, strict=True))
    for c in range(top + 1):
        spill = sum(w * float(np.nansum(np.maximum(d - c, 0.0)))
                    for d, w in zip(days, weights, strict=True))
        if spill <= fraction * total + 1e-9:
            return c
    raise AssertionError("unreachable")


def test_held_level_weighs_recent_days_and_can_leave_the_heaviest_out() -> None:
    # Two and a half days (the older half day is a day of its own) with a few minutes
    # missing; the middle whole day made heavy.
    d = bursty(3, 7).units[: 5 * DAY // 2].copy()
    d[DAY // 2 + 100: DAY // 2 + 400] *= 5.0
    d[50:60] = np.nan
    curve = headroom_curves(d, lead=5, hold=60)[0]
    assert curve is not None and len(curve.day_demand) == 3
    days = [d[: DAY // 2], d[DAY // 2: 3 * DAY // 2], d[3 * DAY // 2:]]
    w = [2.0 ** (-age / LEVEL_HALF_LIFE_DAYS) for age in (2, 1, 0)]
    own = [day_level(x, AIM) for x in days]
    heaviest = int(np.argmax(own))
    assert heaviest == 1
    for leave_out in (False, True):
        spill = held_level_spill(curve, AIM, leave_out_heaviest=leave_out)
        got = int(np.flatnonzero(spill <= AIM + 1e-12)[0])
        ww = [0.0 if leave_out and i == heaviest else x for i, x in enumerate(w)]
        assert got == weighted_level(days, ww, AIM)
    # Without the per-day data (an older curve): the pooled replay.
    pooled = constant_level_spill(d, len(curve.level_spill))
    assert np.allclose(held_level_spill(curve.__class__(curve.headrooms,
                                                        curve.spill_fractions,
                                                        level_spill=curve.level_spill),
                                        AIM), pooled)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_after_a_heavy_day_the_level_held_is_what_the_other_days_needed(seed: int) -> None:
    # A first day four times heavier, then three ordinary days: the bound's cost (pooled)
    # is set by the heavy day; the level held lies within what the other days needed.
    d = bursty(4, seed).units.copy()
    d[:DAY] *= 4.0
    curve = headroom_curves(d, lead=5, hold=60)[0]
    assert curve is not None
    cover = choose_cover(curve, deployment(), AIM, 0.0025)
    assert cover is not None and cover.kind == "level" and cover.bound_uncertain
    assert cover.left_out_heaviest
    others = [day_level(d[i * DAY:(i + 1) * DAY], AIM) for i in (1, 2, 3)]
    assert min(others) <= cover.level <= max(others)
    assert cover.bound_level > 2 * cover.level
    # Held under what the bound needs on the whole replay: the plan says so.
    assert cover.held_below_bound
    assert (f"the {cover.level} units held, chosen on the recent days, are under the "
            f"{cover.bound_level} the bound needs") in cover.describe(0.01)
    # A lasting rise (the last two days three times heavier) raises it within the days.
    r = bursty(4, seed).units.copy()
    r[2 * DAY:] *= 3.0
    rise = headroom_curves(r, lead=5, hold=60)[0]
    assert rise is not None
    up = choose_cover(rise, deployment(), AIM, 0.0025)
    assert up is not None and up.kind == "level"
    before = weighted_level([r[:DAY], r[DAY:2 * DAY]], [1.0, 1.0], AIM)
    assert up.level >= 1.5 * before


def _commit_plan(recent: npt.NDArray[np.float64], dep: Deployment) -> Any:
    curve = headroom_curves(recent, lead=5, hold=60)[0]
    assert curve is not None
    now = dt.datetime(2024, 6, 8, tzinfo=UTC)
    fc = DemandForecast(now, (0.5, 0.9, 0.975), np.vstack([np.full(120, 0.1),
                                                           np.full(120, 3.0),
                                                           np.full(120, 20.0)]))
    week = np.ones(7 * DAY)
    cfc = DemandForecast(now, (0.5, 0.9, 0.975), np.vstack([week * 0.1, week * 3.0,
                                                            week * 20.0]))
    return plan(fc, Holdings(), dep, now, settings=PlannerSettings(horizon_minutes=120),
                commit_forecast=cfc, spill_price=0.0025, headroom=curve,
                commit_evidence=CommitEvidence(recent.copy()), recent=recent[-360:])


def test_a_heavy_day_does_not_commit_the_pooled_level() -> None:
    # Seed 5's first three days need 65, 54 and 16 units each (at 0.9 %): the pooled
    # replay's level (held as elastic) is set by the heavy days; a commitment may stand
    # only on the 16 units every day needed.
    dep = deployment()
    recent = bursty(3, 5).units
    p = _commit_plan(recent, dep)
    per_day = [day_level(recent[i * DAY:(i + 1) * DAY], AIM) for i in range(3)]
    assert p.cover is not None and p.cover.kind == "level"
    # The pooled replay (what the bound costs) is set by the heavy day; the level held is
    # chosen without it.
    assert p.cover.bound_level > 2 * min(per_day)
    assert p.cover.left_out_heaviest and p.cover.level < p.cover.bound_level
    bought = sum(c.units for c in p.new_commitments)
    assert 0 < bought <= min(per_day)
    assert all(c.units <= min(per_day) for c in p.new_commitments)


def allowed_commitment(recent: npt.NDArray[np.float64], dep: Deployment) -> int:
    """What the typical observed days support: the level every one of the last (up to
    7) whole days needed to meet the aim on its own, or the level they needed for a
    term's break-even share of their minutes; 0 under three whole days."""
    days = [recent[len(recent) - (i + 1) * DAY: len(recent) - i * DAY]
            for i in range(min(7, len(recent) // DAY))]
    days = [d for d in days if np.isfinite(d).sum() >= DAY // 2]
    if len(days) < 3:
        return 0
    every = min(day_level(d, AIM) for d in days)
    share = max(typical_day_level(recent, n, min(1.0, 1 - dep.pricing.commit_discount(t)
                                                 + PlannerSettings().commit_margin), k) or 0.0
                for t, n, k in ((30, 7, 3), (7, 3, 2)))
    return max(every, math.ceil(share - 1e-6))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), days=st.integers(2, 4),
       heavy_day=st.integers(0, 3), heavy=st.floats(1.0, 6.0))
def test_no_commitment_above_what_the_typical_days_needed(
    seed: int, days: int, heavy_day: int, heavy: float
) -> None:
    dep = deployment()
    recent = bursty(days, seed).units
    # One day heavier than the others by a random factor (or none when it is past the end).
    recent[heavy_day * DAY:(heavy_day + 1) * DAY] *= heavy
    p = _commit_plan(recent, dep)
    bought = sum(c.units for c in p.new_commitments)
    assert bought <= allowed_commitment(recent, dep)
    if days < 3:
        assert all(c.term_days != 30 for c in p.new_commitments)


# ----------------------------------------------------------------- short backtests


def backtest(seed: int, tmp: Path) -> tuple[dict[str, Any], list[tuple[int, int, int]],
                                            npt.NDArray[np.float64]]:
    """gen_bursty.py 7 ``seed``: 2 days of history, billed 2024-06-05 .. 06-08 with bursty.toml's
    deployment. Returns the summary, the purchases (minute index in the trace, term,
    units) and the trace's demand units."""
    sc = Scenario(f"bursty-{seed}", "bursty", "", (START, None), (START, None),
                  deployment={"unit_tpm": 2000, "max_units": 400})
    trace = bursty(7, seed)
    write_usage(tmp / "u.csv", trace, 2000.0)
    (tmp / "c.toml").write_text(config_text(sc), encoding="utf-8")
    dep = load_config(tmp / "c.toml").deployment("bot")
    summary = run_backtest(read_usage_file(tmp / "u.csv"), dep, tmp / "out", start=START,
                           end=START + dt.timedelta(days=3))
    with (tmp / "out" / "commitments.csv").open(encoding="utf-8") as fh:
        bought = []
        for r in csv.DictReader(fh):
            at = dt.datetime.strptime(r["start_utc"], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
            bought.append((int((at - trace.start).total_seconds() // 60), int(r["term_days"]),
                           int(r["units"])))
    return summary, bought, trace.units


_RUNS: dict[int, Any] = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def get(seed: int) -> Any:
        if seed not in _RUNS:
            _RUNS[seed] = backtest(seed, tmp_path_factory.mktemp(f"bursty{seed}"))
        return _RUNS[seed]
    return get


@pytest.mark.parametrize("seed", [4, 5])
def test_commitments_stand_on_what_every_recent_day_needed(runs: Any, seed: int) -> None:
    summary, bought, units = runs(seed)
    dep = deployment()
    for at, term, _ in bought:
        # Nothing for 30 days on under three whole days of history.
        assert term != 30 or at >= 3 * DAY
    for at in sorted({a for a, _, _ in bought}):
        held = sum(u for a, _, u in bought if a <= at)
        assert held <= allowed_commitment(units[max(0, at - 7 * DAY):at], dep), (
            f"seed {seed}: {held} units committed at minute {at}")
    # Seed 5's first two days need ~60 units (the first cover's level, held as elastic):
    # before the fix it bought 30-day units up to that pooled level. A level a few bursts
    # set (the bound's cost uncertain) now gets no 30-day term at all, 7-day at most.
    if seed == 5:
        first = summary["bound"]["first_cover"]
        assert first["kind"] == "level" and first["level"] >= 50 and first["bound_uncertain"]
        assert not [u for _, t, u in bought if t == 30]
        assert 0 < sum(u for _, t, u in bought if t == 7) <= first["level"] // 2


@pytest.mark.parametrize("seed", [4, 5])
def test_the_cost_of_the_bound_is_said_at_the_first_plan(runs: Any, seed: int) -> None:
    summary, _, _ = runs(seed)
    bound = summary["bound"]
    assert bound["first_alert_utc"] == "2024-06-05T00:00Z"
    text = bound["first_alert"]
    assert text.startswith("meeting the 1.00% spill bound on the recent replay costs")
    assert "on resampled replays" in text and "the bound may be missed" in text
    cover = bound["first_cover"]
    assert f"${cover['bound_cost_per_day']:,.2f}/day" in text
    low, high = cover["bound_cost_range_per_day"]
    assert low <= cover["bound_cost_per_day"] <= high and cover["bound_uncertain"]
    assert f"${low:,.2f}-${high:,.2f}/day on resampled replays" in text
    # The estimate is what the replay of the two days before says: the constant level
    # meeting the bound on it (at the 30-day rate), priced as the truth is.
    hist = runs(seed)[2][:2 * DAY]
    assert cover["kind"] == "level"
    level = day_level(hist, 0.01)
    r30 = PRICING.elastic_unit_hour * 0.7 / 60
    assert cover["bound_cost_per_day"] == pytest.approx(level * r30 * DAY, rel=1e-3)


@pytest.mark.parametrize("seed", [4, 12, 38])
def test_costs_at_most_dedicated_and_1_5x_the_constant_level(runs: Any, seed: int) -> None:
    # Seeds 12 and 38: one history day needs 62 and 116 units, the other 18 and 29; the
    # three billed days 20 and 21 in hindsight. Holding the pooled two days' level cost
    # 2.95x and 5.10x that level; the heavy day left out, within 1.5x.
    summary, _, _ = runs(seed)
    cost = summary["cost"]["total"]
    assert cost <= summary["baselines"]["dedicated_at_peak"]["cost"]
    assert cost <= 1.5 * summary["bound"]["hindsight_constant_level"]["cost"]


@pytest.mark.xfail(strict=True, reason=(
    "#9, evidence-bound: seed 5's two days of history need 66 and 55 units (0.9 %), the "
    "three billed days 25 together in hindsight (1 %). Holding on the first day what the "
    "lighter history day needed (elastic: no 30-day term on two days) already costs 1.05x "
    "the hindsight level; then exactly what each later day needed at the 30-day rate, "
    "1.75x (2.06x as elastic). Measured 2.29x (2.99x holding the pooled level)"))
def test_seed_5_costs_at_most_dedicated_and_1_5x_the_constant_level(runs: Any) -> None:
    summary, _, _ = runs(5)
    cost = summary["cost"]["total"]
    assert cost <= summary["baselines"]["dedicated_at_peak"]["cost"]
    assert cost <= 1.5 * summary["bound"]["hindsight_constant_level"]["cost"]

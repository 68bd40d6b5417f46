"""The scenario suite's properties (issue #9), each on the short variant of its scenario.

The scenarios are bench/scenarios/suite.py's (``make scenarios`` prints the full table).
Each backtest runs once per session (in process, on this checkout's code) and every test
reads what it needs from the outputs: the per-minute schedule, the commitments bought and
the provider actions. Bounds are the issue's "Done when" values; properties that today's
code does not meet are ``xfail(strict=True)`` so that the fix turns them into XPASS
failures and the marker must go.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.scenarios.suite import (
    SCENARIOS,
    Built,
    Scenario,
    Trace,
    build,
    daily,
    index_of,
)
from scheduler.config import load_config
from scheduler.ingest.files import read_usage_file
from scheduler.planning.backtest import run_backtest
from scheduler.planning.economics import Commitment, as_minute, demand_units, schedule_cost

ROOT = Path(__file__).resolve().parents[1]
UTC = dt.UTC
WEEK = 10_080
#: Held capacity (committed + elastic) may reach this multiple of the highest demand
#: observed over the previous 7 days, plus one unit of rounding (the evidence bound).
EVIDENCE_FACTOR = 2.0


@dataclass(frozen=True)
class Run:
    """One backtest: the summary, the window's per-minute series and what was bought."""

    built: Built
    summary: dict[str, Any]
    minutes: npt.NDArray[np.datetime64]
    demand: npt.NDArray[np.float64]
    committed: npt.NDArray[np.int64]
    elastic: npt.NDArray[np.int64]
    commitments: list[tuple[np.datetime64, int, int]]  # start, term days, units
    actions: list[dict[str, str]]

    @property
    def held(self) -> npt.NDArray[np.int64]:
        return self.committed + self.elastic

    @property
    def cost(self) -> float:
        return float(self.summary["cost"]["total"])

    def baseline(self, name: str) -> float:
        b = self.summary["baselines"][name]
        return float(b["cost"] if name == "dedicated_at_peak" else b["total"])

    def at(self, t: dt.datetime) -> int:
        return int((as_minute(t) - self.minutes[0]).astype(np.int64))


_RUNS: dict[tuple[str, str], Run] = {}


def backtest_built(built: Built, out: Path) -> Run:
    dep = load_config(built.config).deployment(built.deployment)
    summary = run_backtest(read_usage_file(built.usage), dep, out, start=built.start,
                           end=built.end)
    with (out / "schedule.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with (out / "commitments.csv").open(encoding="utf-8") as fh:
        bought = [(np.datetime64(r["start_utc"].rstrip("Z"), "m"), int(r["term_days"]),
                   int(r["units"])) for r in csv.DictReader(fh)]
    with (out / "actions.csv").open(encoding="utf-8") as fh:
        actions = list(csv.DictReader(fh))
    return Run(
        built, summary,
        np.array([r["minute_utc"].rstrip("Z") for r in rows], dtype="datetime64[m]"),
        np.array([float(r["demand_units"]) for r in rows]),
        np.array([int(r["committed_units"]) for r in rows], dtype=np.int64),
        np.array([int(r["elastic_units"]) for r in rows], dtype=np.int64),
        bought, actions)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``runs(name)``: the quick variant of a suite scenario, backtested once a session."""

    def get(name: str, scenario: Scenario | None = None) -> Run:
        sc = scenario or SCENARIOS[name]
        key = (name, sc.about)
        if key not in _RUNS:
            work = tmp_path_factory.mktemp(name)
            _RUNS[key] = backtest_built(build(sc, work, quick=True), work / "out")
        return _RUNS[key]

    return get


def observed_trace(sc: Scenario) -> Trace:
    assert sc.trace is not None
    return sc.trace()


def evidence_excess(run: Run, trace: Trace) -> tuple[int, float, str]:
    """The worst minute of held capacity against the evidence bound: (held, allowed, when).

    Allowed at minute t: ``EVIDENCE_FACTOR`` x the highest demand *reported* (rows present)
    in [t - 7 days, t), plus one unit; never below the deployment's min_units.
    """
    units = trace.units
    i0 = index_of(trace.start, run.minutes[0].astype(dt.datetime).replace(tzinfo=UTC))
    seen = np.where(np.isfinite(units), units, -np.inf)
    worst = (0, math.inf, "")
    for k in range(run.minutes.size):
        t = i0 + k
        lo = max(0, t - WEEK)
        peak = float(seen[lo:t].max()) if t > lo else -math.inf
        allowed = EVIDENCE_FACTOR * max(peak, 0.0) + 1.0
        margin = allowed - float(run.held[k])
        if margin < worst[1] - float(worst[0]) or not worst[2]:
            worst = (int(run.held[k]), allowed, str(run.minutes[k]))
    return worst


def assert_within_evidence(run: Run, sc: Scenario) -> None:
    held, allowed, when = evidence_excess(run, observed_trace(sc))
    assert held <= allowed, (f"{sc.name}: {held} units held at {when}, evidence allows "
                             f"{allowed:.1f} ({EVIDENCE_FACTOR} x recent peak + 1)")


def assert_sane_cost(run: Run) -> None:
    """No dearer than dedicated at peak; no dearer than the reactive baseline when it
    meets the service level (issue #9, first "Done when" line)."""
    name = run.built.scenario.name
    assert run.cost <= run.baseline("dedicated_at_peak") + 1e-6, (
        f"{name}: ${run.cost:,.0f} > dedicated at peak ${run.baseline('dedicated_at_peak'):,.0f}")
    reactive = run.summary["baselines"]["reactive"]
    if reactive.get("service_level_met", False):
        assert run.cost <= float(reactive["total"]) + 1e-6, (
            f"{name}: ${run.cost:,.0f} > reactive baseline ${reactive['total']:,.0f}, "
            "which meets the service level")


def assert_met_within(run: Run, factor: float) -> None:
    name = run.built.scenario.name
    assert run.summary["service_level_met"], (
        f"{name}: spill {run.summary['spill_fraction']:.2%} misses the bound")
    hs = run.baseline("hindsight_optimum")
    assert run.cost <= factor * hs, f"{name}: {run.cost / hs:.2f}x the hindsight optimum"


# --------------------------------------------------------------------------- tidal


def test_tidal_baseline_is_cheap_and_meets_the_bound(runs: Any) -> None:
    # The complete control of the missing-minute scenarios is the tidal shape (1/3 units).
    run = runs("missing-0pct")
    assert_met_within(run, 1.1)
    assert_sane_cost(run)
    assert_within_evidence(run, SCENARIOS["missing-0pct"])
    # 1 unit is needed around the clock: the commitment decision at the first minute buys it.
    assert sum(u for _, term, u in run.commitments if term == 30) == 1


# --------------------------------------------------------------------- level shifts

#: Two of the suite's four shifts (the table has all four; the CI budget has two).
LEVEL = ["level-up-2x", "level-down-0.5x"]


@pytest.mark.parametrize("name", LEVEL)
def test_level_shift_held_capacity_stays_within_the_evidence(runs: Any, name: str) -> None:
    assert_within_evidence(runs(name), SCENARIOS[name])


@pytest.mark.parametrize("name", LEVEL)
def test_level_shift_meets_the_bound_at_a_sane_cost(runs: Any, name: str) -> None:
    """Over the 24 h around the shift: the bound met, no dearer than dedicated or the
    reactive baseline. (The issue's 1.6x hindsight bound is for the full window: in 24 h
    a 30-day unit bought rationally the evening before a drop weighs 2.3x; see the table.)
    """
    run = runs(name)
    assert run.summary["service_level_met"], (
        f"{name}: spill {run.summary['spill_fraction']:.2%} misses the bound")
    assert_sane_cost(run)


# ------------------------------------------------------------------ reported zeros


def test_reported_zeros_bring_elastic_capacity_to_min_units_within_hours(runs: Any) -> None:
    run = runs("zeros")
    stop = dt.datetime(2026, 3, 16, tzinfo=UTC)
    after = run.at(stop + dt.timedelta(hours=6))
    min_units = load_config(run.built.config).deployment("bot").min_units
    assert run.elastic[after:].max() == 0, (
        f"elastic units still held {int(run.elastic[after:].max())} units after "
        "6 h of reported zeros")
    assert run.held[after:].max() <= max(min_units, run.committed[after:].max())


def test_reported_zeros_buy_no_commitment(runs: Any) -> None:
    run = runs("zeros")
    stop = as_minute(dt.datetime(2026, 3, 16, tzinfo=UTC))
    late = [(str(t), term, u) for t, term, u in run.commitments if t >= stop]
    assert not late, f"commitments bought on a run of reported zeros: {late}"


# ----------------------------------------------------------------------- stale feed


def test_stale_feed_buys_nothing_and_never_raises_capacity(runs: Any) -> None:
    run = runs("stale")
    stop = dt.datetime(2026, 3, 16, 9, tzinfo=UTC)
    s = run.at(stop)
    lead = load_config(run.built.config).deployment("bot").scale_up_lead_minutes
    late = [(str(t), term, u) for t, term, u in run.commitments if t >= as_minute(stop)]
    assert not late, f"commitments bought on stale usage: {late}"
    # What was asked before the feed stopped may still arrive within the lead time;
    # after that nothing is added on old data.
    before = int(run.held[s - 60:s + lead + 1].max())
    assert int(run.held[s + lead + 1:].max()) <= before


# ------------------------------------------------------------------------------ DST

#: One change each way, one per zone (the table has all four).
DST = ["dst-berlin-spring", "dst-newyork-autumn"]


@pytest.mark.parametrize("name", DST)
def test_dst_change_meets_the_bound_within_1_6x_hindsight(runs: Any, name: str) -> None:
    run = runs(name)
    assert_met_within(run, 1.6)
    assert_sane_cost(run)


# -------------------------------------------------------------------- missing minutes


@pytest.mark.parametrize("name", ["missing-5pct", "missing-20pct"])
def test_missing_minutes_cost_and_churn_close_to_the_complete_trace(runs: Any, name: str
                                                                   ) -> None:
    full, run = runs("missing-0pct"), runs(name)
    assert abs(run.cost - full.cost) <= 0.10 * full.cost, (
        f"{name}: ${run.cost:,.0f} against ${full.cost:,.0f} complete")
    assert run.summary["provider_events"] <= 2 * max(full.summary["provider_events"], 1), (
        f"{name}: {run.summary['provider_events']} actions against "
        f"{full.summary['provider_events']}")
    assert run.summary["service_level_met"]


# ----------------------------------------------------------------------- launch day


@pytest.mark.parametrize("name", ["launch-past-undeclared", "launch-past-declared"])
def test_a_past_launch_day_does_not_move_the_30_day_commitment(runs: Any, name: str) -> None:
    """Normal traffic needs a 2nd unit 10 h of 24 (42 %), under the 30-day break-even
    utilisation (70 % + margin): the control trace's commitment is 1 unit."""
    run = runs(name)
    units = sum(u for _, term, u in run.commitments if term == 30)
    assert units == 1, f"{name}: {units} 30-day units bought after a one-day 3x outlier"


def test_a_week_after_an_unannounced_3x_day_capacity_follows_the_usual_shape(runs: Any
                                                                            ) -> None:
    """cases/one-off-spike a week on (Tue 03-17, same weekday as the 3x day): 1 unit at
    night and 3 by day, as without the spike (before: 2 at 08:00, then 4 all day)."""
    run = runs("launch-past-week-on")
    day = dt.datetime(2026, 3, 17, tzinfo=UTC)
    night = slice(run.at(day), run.at(day + dt.timedelta(hours=7, minutes=50)))
    peak = slice(run.at(day + dt.timedelta(hours=8)), run.at(day + dt.timedelta(hours=18)))
    assert run.held[night].max() == 1, np.unique(run.held[night])
    assert (run.held[peak] == 3).all(), np.unique(run.held[peak])
    assert run.summary["spill_fraction"] == 0.0


def test_a_declared_launch_day_meets_the_bound_within_1_6x_hindsight(runs: Any) -> None:
    run = runs("launch-ahead-declared")
    assert_met_within(run, 1.6)
    assert_sane_cost(run)
    assert_within_evidence_or_calendar(run)


def assert_within_evidence_or_calendar(run: Run) -> None:
    """On a declared day the calendar's multiplier is evidence too (x3 the usual peak)."""
    sc = run.built.scenario
    held, allowed, when = evidence_excess(run, observed_trace(sc))
    mult = max((m for _, m in sc.calendar), default=1.0)
    assert held <= mult * allowed, f"{held} units held at {when}"


# -------------------------------------------------------------------- short history


@pytest.mark.parametrize("name", ["short-1row", "short-90min", "short-6h"])
def test_short_history_backtests_without_error_and_within_evidence(runs: Any, name: str
                                                                   ) -> None:
    run = runs(name)
    assert run.minutes.size == SCENARIOS[name].trace().units.size  # type: ignore[misc]
    assert_within_evidence(run, SCENARIOS[name])
    assert not run.commitments, "a commitment bought on less than a day of history"


def test_cold_start_of_two_days_meets_the_bound_within_1_6x_hindsight(runs: Any) -> None:
    run = runs("short-2d")
    assert_met_within(run, 1.6)
    assert_sane_cost(run)


def test_forecast_eval_on_90_minutes_says_why_without_a_traceback(tmp_path: Path) -> None:
    built = build(SCENARIOS["short-90min"], tmp_path)
    r = subprocess.run([sys.executable, "-m", "scheduler", "--config", str(built.config),
                        "forecast", "eval", "--usage", str(built.usage)],
                       capture_output=True, text=True, cwd=tmp_path, check=False,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode in (0, 1, 2), r.stderr[-2000:]


# --------------------------------------------------------------------------- bursty


def constant_level_cost(run: Run) -> tuple[int, float]:
    """The cheapest constant capacity that meets the bound in hindsight, all 30-day units:
    (units, cost over the window), priced by economics.schedule_cost."""
    dep = load_config(run.built.config).deployment(run.built.deployment)
    usage = read_usage_file(run.built.usage)
    m = usage.minutes.astype("datetime64[m]")
    sel = (m >= run.minutes[0]) & (m <= run.minutes[-1])
    inp = np.zeros(run.minutes.size)
    out = np.zeros(run.minutes.size)
    k = (m[sel] - run.minutes[0]).astype(np.int64)
    inp[k], out[k] = usage.input_tokens[sel], usage.output_tokens[sel]
    d = demand_units(inp, out, dep)
    start = run.minutes[0].astype(dt.datetime).replace(tzinfo=UTC)
    for c in range(math.ceil(d.max()) + 1):
        if np.maximum(0.0, d - c).sum() <= dep.max_spill_fraction * d.sum():
            cost = schedule_cost(start=start, input_tokens=inp, output_tokens=out,
                                 elastic_units=np.zeros(d.size, dtype=np.int64),
                                 commitments=[Commitment(start, 30, c)] if c else [],
                                 deployment=dep)
            return c, cost.total
    raise AssertionError("unreachable: ceil(max demand) meets any bound")


BURSTY = ["bursty-seed1", "bursty-seed2", pytest.param("bursty-seed3", marks=pytest.mark.xfail(
    strict=True, reason="#9, evidence-bound: one billed day (the quick window); the lighter "
    "history day needs 20 units, the day 18 in hindsight: 20 elastic units cost 1.58x 18 at "
    "the 30-day rate, under dedicated (0.71x)"))]


@pytest.mark.parametrize("name", BURSTY)
def test_bursty_costs_at_most_dedicated_and_1_5x_the_constant_level(runs: Any, name: str
                                                                   ) -> None:
    run = runs(name)
    assert_sane_cost(run)
    level, level_cost = constant_level_cost(run)
    assert run.cost <= 1.5 * level_cost, (
        f"{name}: ${run.cost:,.0f} = {run.cost / level_cost:.2f}x a constant {level} units")


@pytest.mark.parametrize("name", ["bursty-seed1", "bursty-seed2", "bursty-seed3"])
def test_bursty_meets_the_bound_or_alerts_on_the_first_day(runs: Any, name: str) -> None:
    run = runs(name)
    if run.summary["service_level_met"]:
        return
    bound = run.summary.get("bound") or {}
    when = bound.get("first_alert_utc")
    assert when is not None, f"{name}: bound missed, no alert raised"
    first = np.datetime64(str(when).rstrip("Z"), "m")
    assert first < run.minutes[0] + np.timedelta64(1, "D"), f"alert only at {when}"
    # The alert says what meeting the bound costs (not only that spill ran over).
    assert str(bound.get("first_alert", "")).startswith("meeting the"), bound.get("first_alert")


# ---------------------------------------------------- the field case and ServeGen


def test_field_case_meets_its_zero_spill_bound_near_the_hindsight_optimum(runs: Any) -> None:
    run = runs("field-case")
    assert_met_within(run, 1.1)
    assert_sane_cost(run)


def test_servegen_m_small_meets_the_bound_below_dedicated(runs: Any) -> None:
    run = runs("servegen-m-small")
    assert run.summary["service_level_met"]
    assert_sane_cost(run)


# ------------------------------------------------------- partial provider capacity


def test_partial_capacity_takes_what_the_provider_can_grant(
    engine: Any, tmp_path: Path
) -> None:
    """cases/out-of-capacity: the region can grant 2 units, the 08:00 peak needs 3 and no
    commitment is offered. capsched holds the 2 it can get and keeps asking for the 3rd."""
    from scheduler.config import parse_config
    from scheduler.daemon.providers import ProviderSet
    from scheduler.daemon.tick import Daemon, set_provider_clocks
    from scheduler.ingest.write import ingest_files
    from tests.daemon_support import CONFIG, START, write_trace

    text = CONFIG.replace("[providers.simulated]\n",
                          "[providers.simulated]\navailable_units = 2\nsupported_terms = []\n")
    path = tmp_path / "capsched.toml"
    path.write_text(text)
    import tomllib

    cfg = parse_config(tomllib.loads(text), path=path)
    day = START + dt.timedelta(days=14)
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id="scenario")
    from scheduler.store import deployments as deployment_store

    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, cfg.deployments)
    ingest_files(engine, [str(write_trace(tmp_path / "u.csv", 0, until=day + dt.timedelta(
        days=1)))], deployment="bot", source="gw")
    now = [day.replace(hour=7, minute=45)]
    set_provider_clocks(providers, cfg, lambda: now[0])
    try:
        for i in range(0, 50, 5):  # a tick every 5 minutes, 07:45 .. 08:30
            now[0] = day.replace(hour=7, minute=45) + dt.timedelta(minutes=i)
            daemon.tick(now[0])
        held = providers.get("simulated").holdings("bot")
        at = day.replace(hour=8, minute=30)
        assert held.capacity_at(at) == 2, f"{held.capacity_at(at)} units held at 08:20"
    finally:
        daemon.close()


# ------------------------------------------------------------------ property tests


def _shift_scenario(factor: float, hour: int, minute: int) -> Scenario:
    at = dt.datetime(2026, 3, 16, hour, minute, tzinfo=UTC)

    def trace() -> Trace:
        start = dt.datetime(2026, 3, 2, tzinfo=UTC)
        u = daily(start, 16 * 1440, 1.0, 3.0)
        u[index_of(start, at):] *= factor
        return Trace(start, u)

    d = dt.datetime(2026, 3, 16, hour - 4, tzinfo=UTC)
    window = (d + dt.timedelta(hours=4), d + dt.timedelta(hours=16))
    return Scenario(f"prop-shift-{factor:g}-{hour:02d}{minute:02d}", "property",
                    f"1/3 units x{factor:g} from {at:%H:%M}", window, window, trace=trace)


@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(factor=st.sampled_from([0.3, 0.5, 1.5, 2.0, 3.0, 4.0]),
       hour=st.integers(4, 20), minute=st.integers(0, 59))
def test_property_held_capacity_stays_within_the_evidence(
    runs: Any, factor: float, hour: int, minute: int
) -> None:
    sc = _shift_scenario(factor, hour, minute)
    assert_within_evidence(runs(sc.name, sc), sc)


def _stop_scenario(hour: int, zeros: bool) -> Scenario:
    stop = dt.datetime(2026, 3, 16, hour, tzinfo=UTC)

    def trace() -> Trace:
        start = dt.datetime(2026, 3, 2, tzinfo=UTC)
        u = daily(start, 17 * 1440)
        u[index_of(start, stop):] = 0.0 if zeros else np.nan
        return Trace(start, u)

    window = (stop - dt.timedelta(hours=1), stop + dt.timedelta(hours=20))
    return Scenario(f"prop-{'zeros' if zeros else 'stale'}-{hour:02d}", "property",
                    f"1/3 units, {'zeros' if zeros else 'no rows'} from {hour:02d}:00",
                    window, window, trace=trace)


@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hour=st.integers(0, 23), zeros=st.booleans())
def test_property_no_commitment_on_zero_or_stale_demand(runs: Any, hour: int, zeros: bool
                                                        ) -> None:
    sc = _stop_scenario(hour, zeros)
    run = runs(sc.name, sc)
    stop = as_minute(dt.datetime(2026, 3, 16, hour, tzinfo=UTC))
    late = [(str(t), term, u) for t, term, u in run.commitments if t >= stop]
    assert not late, f"{sc.about}: commitments bought after the stop: {late}"

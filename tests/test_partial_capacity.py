"""Partial provider capacity in the backtest (issue #9, cases/out-of-capacity).

The simulated provider of the backtest refuses a scale-up beyond its pool whole (as
scheduler/providers/simulated.py does with ``available_units``); the backtest then takes
what the provider can grant and asks for the full target again every ``retry_minutes``,
as the daemon does. The suite's three partial-capacity scenarios (bench/scenarios/suite.py)
are backtested on their short windows and checked minute by minute: capacity held is
min(what the plan wants, what the pool grants), the spill is the demand above it, no
commitment is bought on a term that is not sold.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bench.scenarios.suite import SCENARIOS, Built, build, provider_capacity
from scheduler.config import load_config
from scheduler.ingest.files import read_usage_file
from scheduler.planning.backtest import capacity_from_settings, run_backtest
from scheduler.planning.simulator import CapacityWindow, ProviderCapacity, SimulatedProvider

UTC = dt.UTC
DAY = dt.datetime(2026, 3, 17, tzinfo=UTC)
H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)


# ----------------------------------------------------------------- the simulated pool


def test_a_scale_up_beyond_the_pool_is_refused_whole_and_held_units_stay() -> None:
    origin = dt.datetime(2026, 3, 17, tzinfo=UTC)
    pool = np.array([3] * 100 + [1] * 100, dtype=np.int64)
    p = SimulatedProvider(origin, 200, lead=5, hold=10, available=pool)
    assert p.set_target(0, 2) == 2
    assert p.set_target(1, 4) == 2  # 4 > 3 grantable: nothing granted, not even 1
    assert [(e.kind, e.units, e.target) for e in p.refusals] == [("elastic_refused", 2, 4)]
    assert p.set_target(2, 3) == 3  # within the pool
    assert p.set_target(120, 3) == 3  # the pool shrank to 1: held units are kept
    assert p.set_target(121, 1) == 1  # releases are always accepted
    assert p.set_target(122, 2) == 1  # but 2 > 1 grantable now
    assert len(p.refusals) == 2
    assert p.elastic_series()[130] == 1
    # Refusals are not provider changes: only the two requests and one release.
    assert [e.kind for e in p.events] == ["elastic_request", "elastic_request",
                                          "elastic_release"]


def test_capacity_series_applies_its_windows_over_the_base_pool() -> None:
    origin = dt.datetime(2026, 3, 17, tzinfo=UTC)
    assert ProviderCapacity().series(origin, 10) is None
    cap = ProviderCapacity(available_units=4, windows=(
        CapacityWindow(origin + 2 * M, origin + 5 * M, 0),
        CapacityWindow(origin + 4 * M, origin + 20 * M, 1)))
    s = cap.series(origin, 8)
    assert s is not None
    assert s.tolist() == [4, 4, 0, 0, 1, 1, 1, 1]
    unlimited = ProviderCapacity(windows=(CapacityWindow(origin - H, origin + M, 2),))
    s = unlimited.series(origin, 3)
    assert s is not None
    assert s[0] == 2 and s[1] == s[2] == np.iinfo(np.int64).max


def _write_config(tmp: Path, **provider: Any) -> Path:
    """The suite's tidal config with these ``[providers.simulated]`` keys."""
    from bench.scenarios.suite import config_text

    lines = ["[providers.simulated]"] + [f"{k} = {v}" for k, v in provider.items()]
    path = tmp / "capsched.toml"
    path.write_text("\n".join(lines) + "\n\n" + config_text(SCENARIOS["tidal"]),
                    encoding="utf-8")
    return path


def test_capacity_from_settings_reads_the_simulated_providers_keys(tmp_path: Path) -> None:
    cfg = load_config(_write_config(tmp_path, available_units=2, supported_terms="[]"))
    dep = cfg.deployment("bot")
    cap = capacity_from_settings(cfg.providers, dep)
    assert cap == ProviderCapacity(available_units=2, supported_terms=())
    # A per-deployment override wins; nothing set at all: no pool.
    over = {"simulated": {"available_units": 5, "deployments": {"bot": {"available_units": 1}}}}
    assert capacity_from_settings(over, dep) == ProviderCapacity(available_units=1)
    assert capacity_from_settings({"simulated": {"max_units": 9}}, dep) is None
    with pytest.raises(ValueError, match="available_units"):
        capacity_from_settings({"simulated": {"available_units": -1}}, dep)


# ------------------------------------------------------------------ the suite's scenarios


@dataclass(frozen=True)
class CapRun:
    built: Built
    summary: dict[str, Any]
    minutes: npt.NDArray[np.datetime64]
    demand: npt.NDArray[np.float64]
    committed: npt.NDArray[np.int64]
    elastic: npt.NDArray[np.int64]
    spill: npt.NDArray[np.float64]
    pool: npt.NDArray[np.int64]
    actions: list[dict[str, str]]
    commitments: list[dict[str, str]]

    def at(self, t: dt.datetime) -> int:
        return int((np.datetime64(t.replace(tzinfo=None), "m") - self.minutes[0])
                   .astype(np.int64))

    @property
    def held(self) -> npt.NDArray[np.int64]:
        return self.committed + self.elastic

    def refusals(self) -> list[int]:
        return [self.at(dt.datetime.fromisoformat(a["decided_utc"].replace("Z", "+00:00")))
                for a in self.actions if a["kind"] == "elastic_refused"]


_RUNS: dict[str, CapRun] = {}


@pytest.fixture(scope="module")
def cap_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def get(name: str) -> CapRun:
        if name not in _RUNS:
            work = tmp_path_factory.mktemp(name)
            built = build(SCENARIOS[name], work, quick=True)
            cap = provider_capacity(built)
            assert cap is not None, f"{name} has no capacity pool"
            dep = load_config(built.config).deployment(built.deployment)
            out = work / "out"
            summary = run_backtest(read_usage_file(built.usage), dep, out, start=built.start,
                                   end=built.end, capacity=cap)
            rows = _csv(out / "schedule.csv")
            assert built.start is not None
            pool = cap.series(built.start, len(rows))
            assert pool is not None
            _RUNS[name] = CapRun(
                built, summary,
                np.array([r["minute_utc"].rstrip("Z") for r in rows], dtype="datetime64[m]"),
                np.array([float(r["demand_units"]) for r in rows]),
                np.array([int(r["committed_units"]) for r in rows], dtype=np.int64),
                np.array([int(r["elastic_units"]) for r in rows], dtype=np.int64),
                np.array([float(r["spill_units"]) for r in rows]),
                pool, _csv(out / "actions.csv"), _csv(out / "commitments.csv"))
        return _RUNS[name]

    return get


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


CAPACITY = [n for n, s in SCENARIOS.items() if s.kind == "partial-capacity"]


def test_the_suite_has_partial_capacity_scenarios_of_each_shape() -> None:
    kinds = {("pool" if SCENARIOS[n].provider else "window") for n in CAPACITY}
    assert kinds == {"pool", "window"} and len(CAPACITY) >= 3


@pytest.mark.parametrize("name", CAPACITY)
def test_no_request_beyond_the_pool_and_spill_is_the_demand_above_capacity(
    cap_run: Any, name: str
) -> None:
    run = cap_run(name)
    lead = load_config(run.built.config).deployment("bot").scale_up_lead_minutes
    for a in run.actions:
        if a["kind"] == "elastic_request":
            k = run.at(dt.datetime.fromisoformat(a["decided_utc"].replace("Z", "+00:00")))
            assert int(a["target_units"]) <= run.pool[k], f"{name}: {a} beyond the pool"
    # Elastic units only rise where the pool allowed them when asked (lead minutes before).
    rise = np.flatnonzero(np.diff(run.elastic) > 0) + 1
    for k in rise:
        asked = max(0, int(k) - lead)
        assert run.elastic[k] <= max(run.pool[asked], run.elastic[k - 1]), (
            f"{name}: {run.elastic[k]} elastic at {run.minutes[k]}, pool {run.pool[asked]}")
    np.testing.assert_allclose(run.spill, np.maximum(0.0, run.demand - run.held))
    # The pool binds: demand above commitments + pool (what new requests could serve).
    assert run.summary["provider_capacity"]["unit_minutes_above_pool"] > 0


def test_two_of_three_holds_two_units_through_the_peak_and_keeps_asking(cap_run: Any) -> None:
    """cases/out-of-capacity: the pool grants 2 units, the peak needs 3, nothing is sold
    but elastic. Held = min(target 3, grantable 2) = 2 all peak; 1 unit spills a minute."""
    run = cap_run("capacity-2-of-3")
    assert not run.commitments and run.committed.max() == 0
    assert run.elastic.max() == 2
    peak = slice(run.at(DAY + 8 * H + 15 * M), run.at(DAY + 18 * H))
    assert (run.held[peak] == 2).all(), np.unique(run.held[peak])
    np.testing.assert_allclose(run.spill[peak], run.demand[peak] - 2.0)
    assert run.demand[peak].min() == pytest.approx(3.0)
    # The rest of the spill is the lead time of the morning ramp, not a held-back unit.
    assert run.spill.sum() - run.spill[peak].sum() <= 2 * 15
    # Keeps asking for the 3rd unit: a refused request at least every retry_minutes + 1
    # minutes through the peak, never more often than every retry_minutes.
    retry = run.summary["provider_capacity"]["retry_minutes"]
    refused = [k for k in run.refusals() if peak.start <= k < peak.stop]
    gaps = np.diff(refused)
    assert len(refused) >= (peak.stop - peak.start) // (retry + 1)
    assert gaps.min() >= retry and gaps.max() <= retry + 1, gaps
    # The reactive yardstick meets the same pool: it cannot meet the bound either.
    assert not run.summary["baselines"]["reactive"]["service_level_met"]


def test_an_outage_spills_what_the_commitment_cannot_serve_and_recovers_after_it(
    cap_run: Any
) -> None:
    """No unit to be had 07:00-13:00: the 08:00 scale-up is refused, the committed unit
    serves alone (2 units a minute spill), the full target is granted within retry +
    lead minutes of the end of the outage."""
    run = cap_run("capacity-outage-6h")
    lead = load_config(run.built.config).deployment("bot").scale_up_lead_minutes
    retry = run.summary["provider_capacity"]["retry_minutes"]
    committed = int(run.committed[run.at(DAY + 8 * H)])
    assert committed == 1
    held_before = int(run.elastic[run.at(DAY + 7 * H)])
    out = slice(run.at(DAY + 7 * H), run.at(DAY + 13 * H) + lead)
    assert run.elastic[out].max() <= held_before
    peak_out = slice(run.at(DAY + 8 * H + lead * M), run.at(DAY + 13 * H))
    np.testing.assert_allclose(run.spill[peak_out],
                               run.demand[peak_out] - committed - held_before)
    back = run.at(DAY + 13 * H) + retry + lead + 1
    assert (run.held[back:run.at(DAY + 18 * H)] >= 3).all()
    assert run.spill[back:].sum() == 0.0
    assert all(int(c["term_days"]) in (7, 30) for c in run.commitments)


def test_a_pool_cut_to_one_unit_grants_one_and_the_rest_after_the_cut(cap_run: Any) -> None:
    run = cap_run("capacity-cut-to-1")
    lead = load_config(run.built.config).deployment("bot").scale_up_lead_minutes
    retry = run.summary["provider_capacity"]["retry_minutes"]
    committed = int(run.committed[run.at(DAY + 8 * H)])
    assert committed == 1
    cut = slice(run.at(DAY + 8 * H + 15 * M), run.at(DAY + 14 * H))
    # capacity held = committed + min(the elastic the plan wants (2), the pool (1))
    assert (run.elastic[cut] == 1).all(), np.unique(run.elastic[cut])
    np.testing.assert_allclose(run.spill[cut], run.demand[cut] - 2.0)
    back = run.at(DAY + 14 * H) + retry + lead + 1
    assert (run.held[back:run.at(DAY + 18 * H)] >= 3).all()
    assert run.spill[back:].sum() == 0.0


# ------------------------------------------- the shared minute grid (planning/grid.py)


def test_minute_grid_fills_absent_minutes_and_checks_the_window(tmp_path: Path) -> None:
    """The grid the backtest and bench/scenarios/run.py share: absent minutes are
    missing with zero tokens, rows of other deployments are left out, the window's first
    minute is ``i0``."""
    from scheduler.planning.grid import minute_grid

    path = tmp_path / "u.csv"
    path.write_text("minute_utc,deployment,input_tokens,output_tokens,requests\n"
                    "2026-03-17T00:00Z,a,10,1,1\n"
                    "2026-03-17T00:01Z,b,99,9,1\n"
                    "2026-03-17T00:03Z,a,30,3,1\n"
                    "2026-03-17T00:04Z,a,40,4,1\n", encoding="utf-8")
    usage = read_usage_file(path)
    g = minute_grid(usage, "a", DAY + M, DAY + 4 * M)
    assert (g.size, g.i0, g.origin) == (4, 1, DAY + M)
    assert g.input_tokens.tolist() == [10, 0, 0, 30]
    assert g.output_tokens.tolist() == [1, 0, 0, 3]
    assert g.missing.tolist() == [False, True, True, False]
    whole = minute_grid(usage, "a")
    assert (whole.size, whole.i0) == (5, 0)
    with pytest.raises(ValueError, match="no rows for deployment"):
        minute_grid(usage, "c")
    with pytest.raises(ValueError, match="before the trace"):
        minute_grid(usage, "a", DAY - M)
    with pytest.raises(ValueError, match="empty"):
        minute_grid(usage, "a", DAY + 2 * M, DAY + 2 * M)


def test_capsched_backtest_honours_the_providers_pool(cap_run: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """`capsched backtest` reads [providers.simulated] available_units / supported_terms
    from its config, as the daemon's simulated provider does: the same run as in process."""
    import json

    from scheduler.cli.main import EXIT_OK, EXIT_USAGE, main

    run = cap_run("capacity-2-of-3")
    built = run.built
    argv = ["--config", str(built.config), "backtest", "--usage", str(built.usage),
            "--deployment", built.deployment, "--out", str(tmp_path / "cli"),
            "--start", f"{built.start:%Y-%m-%dT%H:%MZ}", "--end", f"{built.end:%Y-%m-%dT%H:%MZ}"]
    assert main(argv) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["provider_capacity"] == run.summary["provider_capacity"]
    assert summary["cost"]["total"] == pytest.approx(run.summary["cost"]["total"])
    assert summary["provider_events"] == run.summary["provider_events"]

    bad = tmp_path / "bad.toml"
    bad.write_text(built.config.read_text(encoding="utf-8").replace(
        "available_units = 2", "available_units = -2"), encoding="utf-8")
    assert main([*argv[:1], str(bad), *argv[2:]]) == EXIT_USAGE
    assert "available_units must be an integer >= 0" in capsys.readouterr().err

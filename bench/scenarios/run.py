"""Backtest every scenario of the suite and print one table row each (issue #9).

    python bench/scenarios/run.py [--only NAME[,NAME...]] [--quick] [--tree DIR]
                                  [--md bench/out/scenarios.md]

Each scenario (bench/scenarios/suite.py) is written to a scratch directory and backtested
by ``python -m scheduler --config ... backtest`` in a subprocess, so the same runner can
measure another checkout of capsched: ``--tree /tmp/capsched-before`` puts that tree first
on PYTHONPATH (the "before" table). The row gives:

* cost: the backtest's ``cost.total`` over the billed window (docs/economics.md; the
  tail of commitments running past the window is not in it, as in the summary);
* spill %: spilled / demanded unit-minutes; SL: ``service_level_met`` (spill within
  ``max_spill_fraction``);
* x hindsight, x dedicated, x reactive: cost over the summary's hindsight optimum,
  dedicated at peak and reactive baseline (the baseline's own spill is shown when it
  misses the bound: ``x reactive`` then says ``(miss)``);
* x best reactive: cost over the cheapest reactive policy *chosen in hindsight* that
  meets the bound (bench/feasibility.py's grid: capacity = ceil((1 + headroom) * max of
  the last w observed minutes), release below ceil((1 + headroom + keep) * ...), lead and
  hold enforced, plus a 30-day level); computed here with the current economics, so it is
  the same yardstick for every tree. ``-`` when no policy on the grid meets the bound;
* actions: provider events (elastic requests, releases, commitment purchases; with a
  capacity pool, ``+N refused`` counts the scale-ups refused for want of capacity);
  30d/7d: commitment units bought.

Partial-capacity scenarios (a ``[providers.simulated]`` pool or outage windows) are
backtested through ``run_backtest(..., capacity=...)`` in the subprocess (``capsched
backtest`` reads the pool from the config, but not the scenarios' outage windows); their
best reactive policy is capped at the pool and commits only on the terms sold. The
hindsight optimum is solved under the same pool and terms (units held through a shrink, as
the simulator keeps them); when no schedule meets the bound it has the least achievable
spill (``bound_feasible: false``). A run that misses the bound can cost less than a
hindsight that meets it (spill is cheap pay-as-you-go), so ``x hindsight`` below 1 on such
a row is no error. Dedicated at peak ignores the pool.

Writes the table as Markdown (default bench/out/scenarios.md, or scenarios-quick.md) and
one JSON per scenario beside it. Exit status 1 when a backtest fails (the row says so).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench.scenarios.suite import SCENARIOS, Built, build, provider_capacity  # noqa: E402

COLUMNS = ("scenario", "kind", "cost $", "spill %", "SL", "x hindsight", "x dedicated",
           "x reactive", "x best reactive", "actions", "bought 30d/7d")


#: The backtest of a scenario with a capacity pool, run by the tree under test
#: (``capsched backtest`` has no option for the pool): argv[1] is the JSON job.
WITH_CAPACITY = """
import datetime as dt, json, sys
from pathlib import Path
from scheduler.config import load_config
from scheduler.ingest.files import read_usage_file
from scheduler.planning.backtest import run_backtest
from scheduler.planning.simulator import CapacityWindow, ProviderCapacity
job = json.loads(sys.argv[1])
when = lambda s: None if s is None else dt.datetime.fromisoformat(s)
c = job["capacity"]
cap = ProviderCapacity(
    available_units=c["available_units"],
    windows=tuple(CapacityWindow(when(a), when(b), u) for a, b, u in c["windows"]),
    supported_terms=None if c["supported_terms"] is None else tuple(c["supported_terms"]),
    retry_minutes=c["retry_minutes"])
dep = load_config(Path(job["config"])).deployment(job["deployment"])
run_backtest(read_usage_file(Path(job["usage"])), dep, Path(job["out"]),
             start=when(job["start"]), end=when(job["end"]), capacity=cap)
"""


def backtest(built: Built, out: Path, tree: Path | None) -> dict[str, Any]:
    """Run ``capsched backtest`` of ``tree`` (default: this checkout) on one scenario."""
    argv = [sys.executable, "-m", "scheduler", "--config", str(built.config), "backtest",
            "--usage", str(built.usage), "--deployment", built.deployment, "--out", str(out)]
    if built.start is not None:
        argv += ["--start", f"{built.start:%Y-%m-%dT%H:%MZ}"]
    if built.end is not None:
        argv += ["--end", f"{built.end:%Y-%m-%dT%H:%MZ}"]
    cap = provider_capacity(built)
    if cap is not None:
        job = {"config": str(built.config), "usage": str(built.usage),
               "deployment": built.deployment, "out": str(out),
               "start": None if built.start is None else built.start.isoformat(),
               "end": None if built.end is None else built.end.isoformat(),
               "capacity": {"available_units": cap.available_units,
                            "windows": [[w.start.isoformat(), w.end.isoformat(), w.units]
                                        for w in cap.windows],
                            "supported_terms": (None if cap.supported_terms is None
                                                else list(cap.supported_terms)),
                            "retry_minutes": cap.retry_minutes}}
        argv = [sys.executable, "-c", WITH_CAPACITY, json.dumps(job)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree or ROOT)
    env.pop("CAPSCHED_CONFIG", None)
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(out.parent),
                       check=False)
    if r.returncode != 0 or not (out / "summary.json").exists():
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"backtest exit {r.returncode}: {tail[:160]}")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return summary


def best_reactive(built: Built, *, quick: bool) -> tuple[float, float, str]:
    """Cheapest reactive policy meeting the bound in hindsight: (cost, spill, label).

    bench/feasibility.py's policy grid on this scenario's window. Minutes absent from the
    file carry the last observed value forward for the decisions and bill nothing; rows
    reporting zero tokens are zero demand (a reactive policy believes the meter).
    """
    from feasibility import elastic_schedule, price, trailing_max

    from scheduler.config import load_config
    from scheduler.ingest.files import read_usage_file
    from scheduler.planning.economics import demand_units
    from scheduler.planning.grid import minute_grid

    dep = load_config(built.config).deployment(built.deployment)
    # The backtest's own minute grid (scheduler/planning/grid.py).
    grid = minute_grid(read_usage_file(built.usage), dep.name, built.start, built.end)
    inp, out, present, i0 = grid.input_tokens, grid.output_tokens, ~grid.missing, grid.i0
    n_all = grid.size
    demand = demand_units(inp, out, dep)
    # Carry the last reported minute forward over absent ones (0 before the first).
    last = np.maximum.accumulate(np.where(present, np.arange(n_all), -1))
    seen = np.where(last >= 0, demand[np.maximum(last, 0)], 0.0)
    w_inp, w_out = inp[i0:], out[i0:]
    start = grid.origin
    week = seen[max(0, i0 - 10_080):i0][present[max(0, i0 - 10_080):i0]]
    levels = sorted({0, *(int(v) for v in np.quantile(week, np.arange(0.1, 0.7, 0.1)))}
                    if week.size else {0})
    # A capacity pool: no commitment on a term not sold, no elastic unit beyond the pool.
    cap = provider_capacity(built)
    if cap is not None and cap.supported_terms is not None and 30 not in cap.supported_terms:
        levels = [0]
    pool = None if cap is None else cap.series(start, n_all - i0)
    room = (np.full(n_all, np.inf) if pool is None else
            np.concatenate([np.full(i0, np.inf), pool.astype(np.float64)]))
    windows, headrooms, keeps = ((1, 5), (0.1, 0.2, 0.3, 0.4), (0.0, 0.2)) if quick else \
        ((1, 5, 10), tuple(np.arange(0.10, 0.41, 0.05)), (0.0, 0.1, 0.2))
    found = (math.inf, math.nan, "none on the grid meets the bound")
    for w in windows:
        base = trailing_max(seen, w)
        for h, k, c in itertools.product(headrooms, keeps, levels):
            el = elastic_schedule(seen, i0, np.minimum(np.ceil(base * (1 + h)), c + room),
                                  np.minimum(np.ceil(base * (1 + h + k)), c + room), c,
                                  dep.scale_up_lead_minutes, dep.min_hold_minutes)
            total, frac = price(w_inp, w_out, el, c, start, dep)
            if frac <= dep.max_spill_fraction + 1e-12 and total < found[0]:
                found = (total, frac, f"window {w}, headroom {h:.0%}, keep +{k:.0%}, "
                         f"30-day level {c}")
    return found


CACHE = ROOT / "bench" / "out" / "best-reactive.json"


def cached_best_reactive(built: Built, *, quick: bool) -> tuple[float, float, str]:
    """:func:`best_reactive`, kept in bench/out/best-reactive.json between runs.

    It depends on the trace, the deployment and the window only (not on the tree under
    test), so the "before" and "now" tables share it. The key holds the trace's checksum.
    """
    import hashlib

    # Outage windows are not in the config: they key the cache too (when there are some).
    windows = built.scenario.capacity_windows
    digest = hashlib.sha256(built.usage.read_bytes() + built.config.read_bytes()
                            + (repr(windows).encode() if windows else b"")).hexdigest()
    key = f"{built.scenario.name}|{built.start}|{built.end}|{quick}|{digest[:16]}"
    def load() -> dict[str, Any]:
        try:
            found: dict[str, Any] = json.loads(CACHE.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return found

    cache = load()
    if key not in cache:
        total, frac, label = best_reactive(built, quick=quick)
        cache = load()  # another run (before/now side by side) may have added rows
        cache[key] = [total if math.isfinite(total) else None, frac, label]
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        scratch = CACHE.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(cache, indent=1) + "\n", encoding="utf-8")
        os.replace(scratch, CACHE)  # atomic: a reader never sees half a file
    total, frac, label = cache[key]
    return (math.inf if total is None else float(total)), float(frac), str(label)


def _ratio(cost: float, base: float | None) -> str:
    if base is None or not math.isfinite(base) or base <= 0:
        return "-"
    return f"{cost / base:.2f}"


def row(name: str, kind: str, s: dict[str, Any], best: tuple[float, float, str]) -> list[str]:
    b = s["baselines"]
    cost = float(s["cost"]["total"])
    react = b["reactive"]
    rx = _ratio(cost, react["total"])
    if not react.get("service_level_met", True):
        rx += " (miss)"
    bought = {30: 0, 7: 0}
    for c in s.get("_commitments", []):
        bought[int(c["term_days"])] = bought.get(int(c["term_days"]), 0) + int(c["units"])
    return [name, kind, f"{cost:,.0f}", f"{100 * s['spill_fraction']:.2f}",
            "y" if s["service_level_met"] else "n",
            _ratio(cost, b["hindsight_optimum"]["total"]),
            _ratio(cost, b["dedicated_at_peak"]["cost"]), rx,
            _ratio(cost, best[0] if math.isfinite(best[0]) else None),
            actions(s), f"{bought[30]}/{bought[7]}"]


def actions(s: dict[str, Any]) -> str:
    """Provider events, and the scale-ups refused for want of capacity when there were."""
    refused = int((s.get("provider_capacity") or {}).get("refused_requests", 0))
    return f"{s['provider_events']}" + (f" (+{refused} refused)" if refused else "")


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _commitments(out: Path) -> list[dict[str, str]]:
    import csv

    path = out / "commitments.csv"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names (or kinds)")
    ap.add_argument("--quick", action="store_true", help="the short windows of the tests")
    ap.add_argument("--tree", type=Path, help="backtest this capsched checkout instead")
    ap.add_argument("--md", type=Path, help="Markdown output (default bench/out/scenarios.md)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    chosen = list(SCENARIOS.values())
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [s for s in chosen if s.name in wanted or s.kind in wanted]
        if not chosen:
            ap.error(f"--only {args.only}: no such scenario; see --list")
    if args.list:
        for s in chosen:
            print(f"{s.name:26} {s.kind:15} {s.about}")
        return 0
    md = args.md or ROOT / "bench" / "out" / ("scenarios-quick.md" if args.quick
                                              else "scenarios.md")
    md.parent.mkdir(parents=True, exist_ok=True)
    print(" | ".join(COLUMNS), flush=True)
    rows: list[list[str]] = []
    failed = 0
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="capsched-scenarios-") as tmp:
        for sc in chosen:
            started = time.perf_counter()
            work = Path(tmp) / sc.name
            built = build(sc, work, quick=args.quick)
            out = work / "out"
            try:
                summ = backtest(built, out, args.tree)
            except RuntimeError as e:
                failed += 1
                r = [sc.name, sc.kind, f"error: {e}", *["-"] * (len(COLUMNS) - 3)]
                details[sc.name] = {"error": str(e)}
            else:
                summ["_commitments"] = _commitments(out)
                best = cached_best_reactive(built, quick=args.quick)
                r = row(sc.name, sc.kind, summ, best)
                details[sc.name] = {
                    "about": sc.about, "cost": summ["cost"],
                    "spill_fraction": summ["spill_fraction"],
                    "service_level_met": summ["service_level_met"],
                    "provider_events": summ["provider_events"],
                    "baselines": summ["baselines"], "commitments": summ["_commitments"],
                    "best_reactive": {"cost": best[0] if math.isfinite(best[0]) else None,
                                      "spill_fraction": best[1], "policy": best[2]},
                    "bound": summ.get("bound"),
                    "provider_capacity": summ.get("provider_capacity"),
                }
            rows.append(r)
            print(" | ".join(r) + f"   ({time.perf_counter() - started:.0f} s)", flush=True)
            # Written after every row: a long run stopped half-way keeps what it measured.
            header = (f"Scenario suite ({'quick' if args.quick else 'full'} windows), "
                      f"capsched tree: {args.tree or 'this checkout'}; "
                      f"`python bench/scenarios/run.py{' --quick' if args.quick else ''}`\n\n")
            md.write_text(header + markdown(rows), encoding="utf-8")
            md.with_suffix(".json").write_text(
                json.dumps(details, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {md}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Backtest the bursty traffic of issue #9 over many seeds and print one row per seed.

    python bench/scenarios/bursty_seeds.py [--seeds 1-10] [--gen-days 7] [--end-days N]
                                           [--estimates] [--jobs 2] [--weekend 0.15]

The trace is ``bench.scenarios.suite.bursty(gen_days, seed)`` (cases/bursty/gen_bursty.py's
draws, from Monday 2024-06-03) with cases/bursty/bursty.toml's deployment; the backtest
bills from 2024-06-05 to the end of the trace (``--end-days`` shortens it), in process, on
this checkout's code (scheduler.planning.backtest.run_backtest); ``--history-days``
moves the start (the history before it grows); ``--weekend F`` scales Saturday's and
Sunday's tokens (UTC) by F, a weekly shape (issue #9: a quiet weekend before a Monday; with
``--history-days 7`` every billed day's replay holds the same weekday a week before it).
Per seed:

* cost, spill %, SL (service level met), x dedicated (at peak, the summary's baseline);
* x level: cost over the cheapest constant capacity meeting the bound in hindsight, held
  all along at the 30-day rate (the summary's ``bound.hindsight_constant_level``, the same
  yardstick as tests/test_scenarios.py::constant_level_cost);
* 30d/7d: commitment units bought; tail $: what they still owe after the window;
* alert: when the first bound alert was raised (minutes after the start) and what kind;
* day-1 est: the first plan's estimate of what meeting the bound costs per day
  (``bound.first_cover``) and its low/high range, against the true hindsight cost per day
  (``err``: estimate / truth - 1).

With several seeds a summary line counts the issue's targets: seeds within 1.0x dedicated
and within 1.5x the level, the bound met, the alert raised on the first day (either one).

``--estimates`` skips the week's backtest: only the first plan is made (a one-minute
backtest), so the day-one estimate can be measured across many seeds (step 3 of the
brief); the truth is still the whole window's hindsight constant level.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT)]

UTC = dt.UTC
START = dt.datetime(2024, 6, 5, tzinfo=UTC)
#: cases/bursty/bursty.toml: what differs from the suite's base deployment.
DEPLOYMENT: dict[str, object] = {"unit_tpm": 2000, "max_units": 400}


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def with_weekend(trace: Any, factor: float) -> Any:
    """``trace`` with Saturday's and Sunday's (UTC) tokens and units scaled by ``factor``."""
    import dataclasses

    n = trace.units.size
    minutes = np.datetime64(trace.start.replace(tzinfo=None), "m") + np.arange(n)
    # 1970-01-01 was a Thursday: day 2 and 3 of the week counted from it are Sat and Sun.
    weekday = (minutes.astype("datetime64[D]").astype(np.int64) + 3) % 7  # Monday = 0
    scale = np.where(weekday >= 5, factor, 1.0)
    assert trace.tokens is not None
    inp, out, req = trace.tokens
    inp = np.round(inp * scale).astype(np.int64)
    out = np.round(out * scale).astype(np.int64)
    return dataclasses.replace(trace, units=(inp + 3 * out) / 2000.0,
                               tokens=(inp, out, req))


def one(seed: int, gen_days: int, end_days: float | None, estimates: bool,
        start: dt.datetime = START, weekend: float | None = None) -> dict[str, Any]:
    # Imported here, after --tree has put the measured checkout first on sys.path.
    from bench.scenarios.suite import Scenario, bursty, config_text, write_usage
    from scheduler.config import load_config
    from scheduler.ingest.files import read_usage_file
    from scheduler.planning.backtest import _hindsight_level, run_backtest
    from scheduler.planning.economics import as_minute, demand_units

    sc = Scenario(f"bursty-{seed}", "bursty", "", (start, None), (start, None),
                  deployment=DEPLOYMENT)
    trace = bursty(gen_days, seed)
    if weekend is not None:
        trace = with_weekend(trace, weekend)
    end = (start + dt.timedelta(days=end_days)) if end_days else None
    with tempfile.TemporaryDirectory(prefix="bursty-seeds-") as tmp:
        work = Path(tmp)
        usage_path = work / "usage.csv"
        write_usage(usage_path, trace, 2000.0)
        (work / "c.toml").write_text(config_text(sc), encoding="utf-8")
        dep = load_config(work / "c.toml").deployment("bot")
        usage = read_usage_file(usage_path)
        stop = start + dt.timedelta(minutes=1) if estimates else end
        s = run_backtest(usage, dep, work / "out", start=start, end=stop)
        import csv

        with (work / "out" / "commitments.csv").open(encoding="utf-8") as fh:
            s["_commitment_terms"] = [(int(c["term_days"]), int(c["units"]))
                                      for c in csv.DictReader(fh)]
    # The truth: the whole billed window's hindsight constant level (also with --estimates).
    assert trace.tokens is not None
    inp, out = (np.asarray(x, dtype=np.float64) for x in trace.tokens[:2])
    first = as_minute(trace.start)
    i0 = int((as_minute(start) - first).astype(np.int64))
    i1 = inp.size if end is None else int((as_minute(end) - first).astype(np.int64))
    truth = _hindsight_level(as_minute(start), inp[i0:i1], out[i0:i1],
                             demand_units(inp[i0:i1], out[i0:i1], dep), dep)
    return {"seed": seed, "summary": s, "truth": truth}


def alert_kind(text: str | None) -> str:
    if text is None:
        return "-"
    if text.startswith("meeting the"):
        return "bound-cost"
    if text.startswith("repaying"):
        return "overrun"
    return "other"


def estimate(text: str | None) -> float | None:
    """The $/day an alert says meeting the bound costs."""
    if text is None:
        return None
    m = re.search(r"spill bound on the recent replay costs \$([\d,]+\.\d+)/day", text)
    return float(m.group(1).replace(",", "")) if m else None


def row(r: dict[str, Any], estimates: bool) -> dict[str, Any]:
    s, truth = r["summary"], r["truth"]
    b = s["bound"]
    cover = b.get("first_cover") or {}
    est = cover.get("bound_cost_per_day")
    rng = re.search(r"\$([\d,]+\.\d+)-\$([\d,]+\.\d+)/day on resampled replays",
                    cover.get("detail") or "")
    est_range = None if rng is None else [float(g.replace(",", "")) for g in rng.groups()]
    true_day = truth["cost_per_day"]
    out: dict[str, Any] = {
        "seed": r["seed"],
        "level": truth["units"], "level $/day": true_day,
        "est $/day": est,
        "est range": est_range,
        "err": None if est is None or not true_day else est / true_day - 1,
    }
    if estimates:
        return out
    cost = s["cost"]["total"]
    bought = {30: 0, 7: 0}
    origin = dt.datetime.strptime(s["start_utc"], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
    when = b.get("first_alert_utc")
    out.update({
        "cost": cost, "spill %": 100 * s["spill_fraction"], "SL": s["service_level_met"],
        "x ded": cost / s["baselines"]["dedicated_at_peak"]["cost"],
        "x level": cost / truth["cost"] if truth["cost"] else math.inf,
        "tail": s["cost"]["commitment_tail"],
        "alert min": None if when is None else int(
            (dt.datetime.strptime(when, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC) - origin)
            .total_seconds() // 60),
        "alert": alert_kind(b.get("first_alert")),
        "alert est $/day": estimate(b.get("first_alert")),
        "commitments": s["commitments_bought"],
    })
    for c in s.get("_bought", []):
        bought[c[0]] += c[1]
    out["30d/7d"] = f"{bought[30]}/{bought[7]}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1-10")
    ap.add_argument("--gen-days", type=int, default=7)
    ap.add_argument("--end-days", type=float, default=None,
                    help="bill this many days from 2024-06-05 (default: to the trace's end)")
    ap.add_argument("--estimates", action="store_true",
                    help="only the first plan's estimate against the hindsight truth")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--history-days", type=int, default=2,
                    help="days of the trace before billing starts (2: from 2024-06-05)")
    ap.add_argument("--weekend", type=float, default=None,
                    help="scale Saturday's and Sunday's (UTC) tokens by this (a weekly shape)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--tree", type=Path,
                    help="measure this capsched checkout's scheduler/ and forecasting/")
    args = ap.parse_args(argv)
    if args.tree is not None:
        # Workers import scheduler and forecasting after this (fork keeps sys.path).
        sys.path.insert(0, str(args.tree.resolve()))
    seeds = parse_seeds(args.seeds)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        start = dt.datetime(2024, 6, 3, tzinfo=UTC) + dt.timedelta(days=args.history_days)
        futures = [ex.submit(one, sd, args.gen_days, args.end_days, args.estimates, start,
                             args.weekend)
                   for sd in seeds]
        rows = []
        for f in futures:
            r = f.result()
            r["summary"]["_bought"] = _bought(r["summary"])
            rows.append(row(r, args.estimates))
            print(_fmt(rows[-1]), flush=True)
    if not args.estimates and len(rows) > 1:
        # The targets per seed: cost within dedicated at peak and within 1.5x the
        # hindsight constant level; the bound met, or its alert raised on the first day.
        ded = sum(r["x ded"] <= 1.0 for r in rows)
        lvl = sum(r["x level"] <= 1.5 for r in rows)
        both = [r["seed"] for r in rows if r["x ded"] > 1.0 or r["x level"] > 1.5]
        met = sum(bool(r["SL"]) for r in rows)
        alerted = sum(r["alert min"] is not None and r["alert min"] < 1440 for r in rows)
        covered = sum(bool(r["SL"]) or (r["alert min"] is not None and r["alert min"] < 1440)
                      for r in rows)
        x = np.array([r["x level"] for r in rows])
        print(f"{len(rows)} seeds: within 1.0x dedicated {ded}, within 1.5x level {lvl} "
              f"(x level median {np.median(x):.2f}, max {x.max():.2f}; outside: "
              f"{both or 'none'}); bound met {met}, alert on the first day {alerted}, "
              f"met or alerted {covered}")
    if args.estimates or len(rows) > 1:
        errs = np.array([abs(r["err"]) for r in rows if r["err"] is not None])
        within = [r for r in rows if r["est range"] is not None
                  and r["est range"][0] <= r["level $/day"] <= r["est range"][1]]
        if errs.size:
            print(f"day-one estimate |error|: median {np.median(errs):.1%}, "
                  f"p90 {np.quantile(errs, 0.9):.1%}, max {errs.max():.1%}, "
                  f"within 25 %: {(errs <= 0.25).sum()}/{errs.size}"
                  + (f"; truth inside the stated range: {len(within)}/{len(rows)}"
                     if any(r["est range"] is not None for r in rows) else ""))
        truths = np.array([r["level $/day"] for r in rows if r["level $/day"]])
        if truths.size > 1:
            # The window's own luck: a fixed estimate at the median of the truths across
            # these seeds (what knowing the traffic's process exactly, but not the
            # window's bursts, would give) is still this far from each seed's truth.
            oracle = np.abs(np.median(truths) / truths - 1)
            print(f"a fixed estimate at the seeds' median truth: |error| median "
                  f"{np.median(oracle):.1%}, p90 {np.quantile(oracle, 0.9):.1%}, within "
                  f"25 %: {(oracle <= 0.25).sum()}/{oracle.size}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


def _bought(s: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(t), int(u)) for t, u in s.get("_commitment_terms", [])]


def _fmt(r: dict[str, Any]) -> str:
    parts = []
    for k, v in r.items():
        if isinstance(v, float):
            v = f"{v:,.2f}" if abs(v) >= 10 or k in ("x ded", "x level", "spill %") else \
                f"{v:+.1%}" if k == "err" else f"{v:.3g}"
        elif isinstance(v, list | tuple):
            v = "[" + ", ".join(f"{x:,.0f}" for x in v) + "]"
        parts.append(f"{k}={v}")
    return "  ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())

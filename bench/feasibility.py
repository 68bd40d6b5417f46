"""How cheap can an online plan be on a trace? Evidence for the planner's cost target.

    python bench/feasibility.py [--traces m-small,m-mid,m-large] [--start 2025-01-13T00:00Z]

For each ServeGen trace of examples/backtests/servegen.toml, over the backtest window, it
prints, every cost as a ratio to the contract's hindsight optimum (computed by
scheduler.planning.hindsight, as in the backtest summary):

1. **Next-block predictability.** ServeGen publishes one rate per 10-minute window, so
   with a 5-minute lead the capacity of each window is decided before any of it is seen.
   The standard deviation of the log change from one window to the next, and its
   correlation with the mean change at the same time of day on the previous 1, 3 and 7
   days (the most a seasonal model can know about the next window).
2. **Reactive policies** (capacity for minute t = ceil((1 + headroom) * max of the last
   w observed minutes), release once the hold is over and the need has fallen below
   ceil((1 + headroom + keep) * ...)), over a grid of windows, headrooms, keep margins
   and 30-day commitment levels: the cheapest that meets ``max_spill_fraction``.
3. **Oracle-mean policies**: the same, but the policy is *told* the true mean of demand
   over the 30, 60 or 120 minutes centred on the minute it serves (no forecaster can
   know it): how good the forecast of the level would have to be to reach a given cost.
4. **Clairvoyant with hold**: bench/clairvoyant.py's plan (every minute known, the hold
   paid), for scale.

Lead time and minimum hold are enforced as in the backtest's simulated provider, and
every schedule is priced by scheduler.planning.economics.schedule_cost (the contract).
Gap minutes are masked for the decisions (carried forward) and bill no spill, as in the
backtest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import sys
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forecasting._gaps import mask_suspected_gaps  # noqa: E402
from scheduler.config import load_config  # noqa: E402
from scheduler.ingest.files import read_usage_file  # noqa: E402
from scheduler.planning.economics import Commitment, demand_units, schedule_cost  # noqa: E402
from scheduler.planning.headroom import carry_forward  # noqa: E402
from scheduler.planning.hindsight import hindsight_optimum  # noqa: E402

FloatArray = npt.NDArray[np.float64]
CONFIG = ROOT / "examples" / "backtests" / "servegen.toml"
BLOCK = 10


def elastic_schedule(demand_seen: FloatArray, first: int, add: FloatArray, keep: FloatArray,
                     committed: int, lead: int, hold: int) -> FloatArray:
    """Elastic units serving each minute of ``[first, n)`` under add/keep capacity targets.

    ``add[d]`` is the capacity wanted at ``d + lead`` (decided at d from minutes < d): the
    shortfall is requested at d and serves from d + lead. A unit active for at least
    ``hold`` minutes is released while capacity exceeds ``max(keep[d], add[d])``.
    """
    n = demand_seen.size
    active: deque[int] = deque()  # activation minutes, oldest first
    pending: deque[int] = deque()
    out = np.zeros(n - first)
    for d in range(first, n):
        while pending and pending[0] <= d:
            active.append(pending.popleft())
        need = max(0, int(add[d]) - committed)
        have = len(active) + len(pending)
        if need > have:
            pending.extend([d + lead] * (need - have))
        excess = len(active) + len(pending) - max(need, int(keep[d]) - committed)
        while excess > 0 and active and d - active[0] >= hold:
            active.popleft()
            excess -= 1
        out[d - first] = len(active)
    return out


def price(inp: FloatArray, out: FloatArray, elastic: FloatArray, committed: int,
          start: dt.datetime, dep: Any) -> tuple[float, float]:
    commitments = [Commitment(start, 30, committed)] if committed else []
    c = schedule_cost(start=start, input_tokens=inp, output_tokens=out, elastic_units=elastic,
                      commitments=commitments, deployment=dep)
    return c.total, c.spill_unit_minutes / max(c.demand_unit_minutes, 1e-12)


def trailing_max(x: FloatArray, w: int) -> FloatArray:
    """``out[d]`` = max of x[d - w .. d - 1] (what is known at decision d)."""
    from numpy.lib.stride_tricks import sliding_window_view
    padded = np.concatenate([np.full(w, x[0]), x])
    return np.asarray(sliding_window_view(padded, w).max(axis=1)[:-1], np.float64)


def centred_mean(x: FloatArray, w: int) -> FloatArray:
    c = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.clip(np.arange(x.size) - w // 2, 0, x.size)
    hi = np.clip(lo + w, 0, x.size)
    return np.asarray((c[hi] - c[lo]) / np.maximum(hi - lo, 1), np.float64)


def block_predictability(masked: FloatArray, first: int) -> dict[str, float]:
    blocks = masked[: masked.size - masked.size % BLOCK].reshape(-1, BLOCK)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_b = np.log(np.where(blocks > 0, blocks, np.nan))
    change = np.concatenate([[np.nan], np.diff(log_b)])
    per_day = 1440 // BLOCK
    idx = np.arange(first // BLOCK, blocks.size)
    out = {"log_change_sd": float(np.nanstd(change[idx]))}
    for k in (1, 3, 7):
        lagged = np.stack([change[idx - per_day * j] for j in range(1, k + 1)
                           if (idx - per_day * j).min() >= 0] or [np.full(idx.size, np.nan)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pred = np.nanmean(lagged, axis=0)
        ok = np.isfinite(pred) & np.isfinite(change[idx])
        out[f"corr_{k}d"] = (float(np.corrcoef(pred[ok], change[idx][ok])[0, 1])
                             if ok.sum() > 10 else math.nan)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", default="m-small,m-mid,m-large")
    ap.add_argument("--start", default="2025-01-13T00:00Z")
    args = ap.parse_args()
    config = load_config(CONFIG)
    start = dt.datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    for name in args.traces.split(","):
        report(name, config, start, args.start)
    return 0


def report(name: str, config: Any, start: dt.datetime, start_text: str) -> None:
    dep = next(d for d in config.deployments if d.name == name)
    usage = read_usage_file(ROOT / "examples" / "traces" / f"servegen_{name}.csv")
    minutes = usage.minutes.astype("datetime64[m]")
    first = int((np.datetime64(start.replace(tzinfo=None), "m") - minutes[0])
                .astype(np.int64))
    inp = usage.input_tokens.astype(np.float64)
    out = usage.output_tokens.astype(np.float64)
    demand = demand_units(inp, out, dep)
    masked = mask_suspected_gaps(demand, min_run=10)
    seen = carry_forward(masked[None, :])[0]
    w_inp, w_out = inp[first:], out[first:]
    lead, hold = dep.scale_up_lead_minutes, dep.min_hold_minutes
    bound = dep.max_spill_fraction
    hs = hindsight_optimum(w_inp, w_out, dep).cost.total

    pred = block_predictability(masked, first)
    print(f"{name}: window {start_text} + {demand.size - first} min, hindsight optimum "
          f"${hs:,.2f}, bound {bound:.1%}")
    print(f"  next 10-min window: log-change sd {pred['log_change_sd']:.3f}; correlation "
          f"with the same change on the last 1/3/7 days "
          f"{pred['corr_1d']:.2f}/{pred['corr_3d']:.2f}/{pred['corr_7d']:.2f}")

    week = masked[max(0, first - 10080):first]
    levels = sorted({0, *(int(v) for v in np.nanquantile(week, np.arange(0.1, 0.7, 0.1)))})

    def best(policies: list[tuple[str, FloatArray, FloatArray]]) -> tuple[float, float, str]:
        found = (math.inf, math.nan, "none meets the bound")
        for (label, add, keep), c in itertools.product(policies, levels):
            el = elastic_schedule(seen, first, add, keep, c, lead, hold)
            total, frac = price(w_inp, w_out, el, c, start, dep)
            if frac <= bound and total < found[0]:
                found = (total, frac, f"{label}, 30-day level {c}")
        return found

    reactive = []
    for w in (1, 5, 10):
        base = trailing_max(seen, w)
        for h, k in itertools.product(np.arange(0.10, 0.41, 0.05), (0.0, 0.1, 0.2)):
            reactive.append((f"window {w} min, headroom {h:.0%}, keep +{k:.0%}",
                             np.ceil(base * (1 + h)), np.ceil(base * (1 + h + k))))
    total, frac, label = best(reactive)
    print(f"  best reactive policy meeting the bound: {total / hs:.3f}x (spill {frac:.2%}; "
          f"{label}; {len(reactive) * len(levels)} tried)")
    now_seen = np.concatenate([[seen[0]], seen[:-1]])
    for w in (30, 60, 120):
        # Told the true mean around the minute served (d + lead): not knowable online.
        oracle = np.concatenate([centred_mean(seen, w)[lead:], np.full(lead, seen[-1])])
        policies = []
        for h in np.arange(0.0, 0.41, 0.05):
            for mode, base in (("oracle mean", oracle),
                               ("max(oracle mean, last minute)", np.fmax(oracle, now_seen))):
                target = np.ceil(base * (1 + h))
                policies.append((f"{mode}, headroom {h:.0%}", target, target))
        total, frac, label = best(policies)
        print(f"  told the true {w}-min mean in advance: {total / hs:.3f}x "
              f"(spill {frac:.2%}; {label})")


if __name__ == "__main__":
    raise SystemExit(main())

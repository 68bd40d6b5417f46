"""Diagnostic: a clairvoyant plan that respects the lead and the minimum hold.

    python bench/clairvoyant.py TRACE CONFIG DEPLOYMENT START

Same commitment form as the hindsight optimum (one 30-day level for the window, a 7-day
top-up per week, bought at the window start / each week start), elastic units known in
advance (so the lead costs nothing) but every activation billed at least ``hold`` minutes.
Elastic per layer: the runs of "needed" minutes, each activation held max(run, hold) and
merged with the next run when that starts before the release; then whole segments are
dropped to spill greedily by dollars saved per spilled unit-minute within the budget.
An upper bound on the best such plan (dropping is per segment, not per minute).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.config import load_config  # noqa: E402
from scheduler.ingest.files import read_usage_file  # noqa: E402
from scheduler.planning.economics import (  # noqa: E402
    as_minute,
    committed_unit_minute_rate,
    demand_units,
    spill_unit_price,
    unit_minute_rate,
)
from scheduler.planning.hindsight import hindsight_optimum  # noqa: E402


def clairvoyant(inp: Any, out: Any, dep: Any, config: Any, hold: int
                ) -> tuple[float, float, float, float]:
    d = demand_units(inp, out, dep)
    q = spill_unit_price(inp, out, dep)
    n = d.size
    re = unit_minute_rate(dep.pricing)
    r30 = committed_unit_minute_rate(dep.pricing, 30)
    r7 = committed_unit_minute_rate(dep.pricing, 7)
    c, tops = config
    base = np.empty(n)
    com = c * r30 * n
    for i, w in enumerate(tops):
        a, b = i * 10080, min(n, (i + 1) * 10080)
        base[a:b] = c + w
        com += w * r7 * (b - a)
    x = np.maximum(0.0, d - base)
    layers = int(np.ceil(x.max())) if n else 0
    segs = []  # (cost, spill_weight, spill_dollars, layer, a, end)
    for j in range(layers):
        w = np.clip(x - j, 0.0, 1.0)
        m = w > 1e-12
        idx = np.flatnonzero(np.diff(np.concatenate([[0], m.astype(int), [0]])))
        runs = list(zip(idx[0::2], idx[1::2], strict=True))
        k = 0
        while k < len(runs):
            a, b = runs[k]
            rel = max(b, a + hold)
            while k + 1 < len(runs) and runs[k + 1][0] < rel:
                k += 1
                rel = max(rel, runs[k][1])
            end = min(rel, n)  # billed inside the window only
            sw = float(w[a:rel].sum())
            sd = float((w[a:rel] * q[a:rel]).sum())
            segs.append(((end - a) * re, sw, sd, a, end))
            k += 1
    budget = dep.max_spill_fraction * d.sum()
    # Drop segments with the best saving per spilled unit first.
    order = sorted(range(len(segs)), key=lambda i: -(segs[i][0] - segs[i][2]) / segs[i][1])
    used, el, sp, spw = 0.0, 0.0, 0.0, 0.0
    for i in order:
        cost, sw, sd, a, end = segs[i]
        if cost - sd > 0 and used + sw <= budget:
            used += sw
            sp += sd
            spw += sw
        else:
            el += cost
    return com, el, sp, spw / d.sum()


def main() -> None:
    trace, cfg_path, name, start = sys.argv[1:5]
    dep = load_config(cfg_path).deployment(name)
    u = read_usage_file(Path(trace))
    w0 = as_minute(dt.datetime.fromisoformat(start.replace("Z", "+00:00")))
    sel = u.minutes.astype("datetime64[m]") >= w0
    inp, out = u.input_tokens[sel].astype(float), u.output_tokens[sel].astype(float)
    best = hindsight_optimum(inp, out, dep)
    h = best.cost
    print(f"hindsight ${h.total:,.0f}: committed {h.committed:,.0f} elastic {h.elastic:,.0f}"
          f" spill {h.spill:,.0f} C={best.commit_30d_units} W={best.topup_7d_units}")
    results = []
    for dc in range(-8, 9):
        c = best.commit_30d_units + dc
        if c < 0:
            continue
        for dw in range(-4, 5):
            tops = tuple(max(0, t + dw) for t in best.topup_7d_units)
            com, el, sp, frac = clairvoyant(inp, out, dep, (c, tops), dep.min_hold_minutes)
            results.append((com + el + sp, c, tops, com, el, sp, frac))
    results.sort()
    tot, c, tops, com, el, sp, frac = results[0]
    print(f"clairvoyant (hold {dep.min_hold_minutes}) ${tot:,.0f} = {tot / h.total:.3f}x: "
          f"committed {com:,.0f} elastic {el:,.0f} spill {sp:,.0f} ({frac:.3%}) C={c} W={tops}")


if __name__ == "__main__":
    main()

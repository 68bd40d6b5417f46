"""Put two runs of the scenario suite side by side (the README's before/now table).

    python bench/scenarios/compare.py bench/out/scenarios-before.json bench/out/scenarios.json

Reads the JSON that bench/scenarios/run.py writes beside its Markdown and prints, per
scenario, cost / spill / service level / x hindsight optimum / provider actions of each.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def cells(d: dict[str, Any] | None) -> list[str]:
    if d is None:
        return ["", "", "", "", ""]
    if "error" in d:
        return ["error", "", "", "", ""]
    cost = float(d["cost"]["total"])
    hs = float(d["baselines"]["hindsight_optimum"]["total"])
    ratio = f"{cost / hs:.2f}" if hs > 0 and math.isfinite(hs) else "-"
    return [f"{cost:,.0f}", f"{100 * d['spill_fraction']:.2f}",
            "y" if d["service_level_met"] else "n", ratio, actions(d)]


def actions(d: dict[str, Any]) -> str:
    """Provider events, plus the scale-ups refused for want of capacity when there were."""
    refused = int((d.get("provider_capacity") or {}).get("refused_requests", 0))
    return f"{d['provider_events']}" + (f" (+{refused} refused)" if refused else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("now", type=Path)
    args = ap.parse_args()
    before = json.loads(args.before.read_text(encoding="utf-8"))
    now = json.loads(args.now.read_text(encoding="utf-8"))
    head = ["cost $", "spill %", "SL", "x hindsight", "actions"]
    print("| scenario | " + " | ".join(f"before {h}" for h in head) + " | "
          + " | ".join(f"now {h}" for h in head) + " |")
    print("|---|" + "---|" * (2 * len(head)))
    for name in list(dict.fromkeys([*now, *before])):
        print(f"| {name} | " + " | ".join(cells(before.get(name))) + " | "
              + " | ".join(cells(now.get(name))) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

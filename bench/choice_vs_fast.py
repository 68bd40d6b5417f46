"""The per-series choice against the fast path on LLM usage aggregated to 15 and 60 minutes.

    .venv/bin/python bench/choice_vs_fast.py [--steps 15,60] [--days 9,10,11,12,13]

The ServeGen minute traces in examples/traces (input + 3 x output tokens, UTC) are averaged
to ``--steps`` minutes and forecast one day ahead from the start of each of ``--days``
(days since the trace start), on the history before it, by:

- ``fast``: the fast harmonic path (``forecasting.fast_forecast``);
- ``choice``: ``forecasting.forecast``'s default at these steps, the unguarded per-series
  choice (``select_forecast``, 3 validation origins a day apart), as on M4 Hourly;
- ``guarded``: the daemon's rule (``select_batch``): 7 origins, and a candidate replaces the
  fast path only if it beats the harmonic member at every origin and by 5 % on average.

Prints the relative MAE against the weekly seasonal naive (a week before the forecast
day) per trace and step, the mean of the days' ratios, and the models chosen. Takes about a
minute per trace. The README's "model family" section quotes it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from coverage_blocks import load  # noqa: E402

import forecasting  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="m-small,m-mid,m-large")
    ap.add_argument("--steps", default="15,60", help="minutes, comma-separated")
    ap.add_argument("--days", default="9,10,11,12,13",
                    help="forecast days, days after the trace start")
    args = ap.parse_args()
    days = [int(d) for d in args.days.split(",")]
    print(f"{'trace':<9} {'step':>4} {'fast':>6} {'choice':>6} {'guarded':>7}  chosen (choice)")
    warnings.simplefilter("ignore")
    for name in args.traces.split(","):
        minutes, start = load(ROOT / "examples" / "traces" / f"servegen_{name}.csv")
        for step in (int(s) for s in args.steps.split(",")):
            y = np.nanmean(minutes[: minutes.size // step * step].reshape(-1, step), axis=1)
            spd = 1440 // step
            rel: list[tuple[float, float, float]] = []
            chosen = []
            for d in days:
                hist, truth = y[: d * spd], y[d * spd : (d + 1) * spd]
                naive = y[(d - 7) * spd : (d - 6) * spd]
                fast = forecasting.fast_forecast(hist, step_minutes=step, horizon=spd,
                                                 start=start)
                choice = forecasting.forecast(hist, step_minutes=step, horizon=spd,
                                              start=start)
                guarded = forecasting.select_forecast(hist, step_minutes=step, horizon=spd,
                                                      start=start, n_origins=7, fast=fast)
                den = float(np.nanmean(np.abs(naive - truth)))

                def r(f: forecasting.Forecast) -> float:
                    return float(np.nanmean(np.abs(f.mean - truth))) / den  # noqa: B023

                rel.append((r(fast), r(choice), r(guarded)))
                chosen.append(choice.model)
            f, c, g = np.mean(rel, axis=0)
            print(f"{name:<9} {step:>4} {f:>6.3f} {c:>6.3f} {g:>7.3f}  {', '.join(chosen)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

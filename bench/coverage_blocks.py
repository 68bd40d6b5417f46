"""Interval coverage and relative MAE of the fast path at publication-window boundaries.

    python bench/coverage_blocks.py [--traces m-small,m-mid,m-large] [--every 10]
                                    [--first-day 7] [--days N] [--horizons 1,5,15,60]

ServeGen traces publish one rate per 10-minute window. Origins every ``--every`` minutes
from ``--first-day`` days after the trace start (by default every 10 minutes after the
first week: 1,008 origins on 14-day traces, all on window boundaries, the hardest
position: nothing of the target's window is seen) are scored with
``forecasting.rolling_origin_eval``, built from the usage file as ``capsched forecast
eval`` builds it (input + 3 x output tokens, UTC, the model refitted every 6 hours on
everything before the refit point, suspected 10-minute zero gaps masked). ``--days``
limits the scored stretch (a quicker check while iterating).

Prints, per trace and horizon: relMAE (MAE over the weekly seasonal naive's on the same
points) and 80 % and 95 % interval coverage, each beside its 90 % day-block bootstrap
range (``relMAE 90%``, ``cov80 90%``, ``cov95 90%``: 5th-95th percentile over 1,000
resamples of whole origin days, seed 0, from ``rolling_origin_eval``; errors of origins
in one day share the day's level, so whole days are resampled), the number of origin
days, the coverage a calibrated interval would show within two sampling standard errors
(points taken as independent, so a lower bound on the real spread) and the points; a
last line averages the traces. Issue #11 asks coverage within 3 points of nominal:
0.77-0.83 and 0.92-0.98.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import forecasting  # noqa: E402
from scheduler.ingest.files import read_usage_file  # noqa: E402

OUTPUT_WEIGHT = 3.0  # capsched forecast eval's default without a deployment


def load(path: Path) -> tuple[np.ndarray, dt.datetime]:
    return read_usage_file(path).load_series(OUTPUT_WEIGHT)


def span(r: tuple[float, float] | None, width: int, *, short: bool = False) -> str:
    """A bootstrap range as ``lo-hi``, right-aligned in ``width``; ``short`` drops the
    leading zero (coverages: ``.771-.893``); ``n/a`` when there is none (fewer than 5
    origin days)."""
    if r is None:
        return f"{'n/a':>{width}}"
    lo, hi = (f"{x:.3f}" for x in r)
    if short:
        lo, hi = (v[1:] if v.startswith("0.") else v for v in (lo, hi))
    return f"{lo + '-' + hi:>{width}}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="m-small,m-mid,m-large")
    ap.add_argument("--every", type=float, default=10.0, help="minutes between origins")
    ap.add_argument("--first-day", type=float, default=7.0,
                    help="first origin, days after the trace start")
    ap.add_argument("--days", type=float, default=None,
                    help="score only this many days of origins (default: to the end)")
    ap.add_argument("--horizons", default="1,5,15,60", help="minutes, comma-separated")
    args = ap.parse_args()
    horizons = [float(h) for h in args.horizons.split(",")]
    rows: list[tuple[str, float, float, float, float]] = []
    print(f"origins every {args.every:g} min from day {args.first_day:g}"
          + ("" if args.days is None else f" for {args.days:g} days")
          + "; coverage target 0.77-0.83 (80 %) and 0.92-0.98 (95 %)")
    print(f"{'trace':<10} {'h(min)':>6} {'relMAE':>6} {'90%':>11} {'cov80':>5} {'90%':>10} "
          f"{'cov95':>5} {'90%':>10} {'days':>4} {'+-2se80':>7} {'+-2se95':>7} {'points':>6}")
    for name in args.traces.split(","):
        series, start = load(ROOT / "examples" / "traces" / f"servegen_{name}.csv")
        first = round(args.first_day * 1440)
        if args.days is not None:
            # Keep the targets of the last origin (the longest horizon after it).
            end = first + round(args.days * 1440) + int(max(horizons))
            series = series[: min(series.size, end)]
        t0 = time.perf_counter()
        report = forecasting.rolling_origin_eval(
            series, step_minutes=1, start=start, timezone="UTC", horizons=horizons,
            zero_gap_minutes=10, origin_every_minutes=args.every,
            first_origin_minutes=first, window_minutes=10)
        took = time.perf_counter() - t0
        for s in report.scores:
            c80 = float("nan") if s.coverage_80 is None else s.coverage_80
            c95 = float("nan") if s.coverage_95 is None else s.coverage_95
            se80 = 2 * (s.coverage_80_se or float("nan"))
            se95 = 2 * (s.coverage_95_se or float("nan"))
            print(f"{name:<10} {s.horizon_minutes:>6g} {s.mase:>6.3f} "
                  f"{span(s.mase_range, 11)} {c80:>5.3f} "
                  f"{span(s.coverage_80_range, 10, short=True)} {c95:>5.3f} "
                  f"{span(s.coverage_95_range, 10, short=True)} {s.n_days:>4} "
                  f"{se80:>7.3f} {se95:>7.3f} {s.n_points:>6}")
            rows.append((name, s.horizon_minutes, s.mase, c80, c95))
        print(f"{name:<10} origins {report.n_origins}, fits {report.n_fits}, "
              f"window phases {report.window_phases}, {took:.0f} s")
    print(f"{'mean':<10} {'h(min)':>6} {'relMAE':>7} {'cov80':>6} {'cov95':>6}")
    for h in horizons:
        sel = [r for r in rows if r[1] == h]
        print(f"{'mean':<10} {h:>6g} {np.mean([r[2] for r in sel]):>7.3f} "
              f"{np.mean([r[3] for r in sel]):>6.3f} {np.mean([r[4] for r in sel]):>6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

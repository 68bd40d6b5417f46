"""Interval coverage of the fast path's calibration (forecasting/_calibration.py, issue #11).

Synthetic daily-seasonal series with known multiplicative noise at several step sizes: the
80 % and 95 % intervals forecast from fresh origins after the history must cover the fresh
observations at their nominal rates. Data published in blocks (one value per W steps, as
ServeGen publishes one rate per 10 minutes) must be covered at every position of the
origin in the block, in particular on the boundaries, where a table pooled over the
positions covered 28 % instead of 80 % one step ahead.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest

import forecasting
from forecasting import _calibration
from forecasting._calibration import Calibration, block_structure

START = dt.datetime(2025, 3, 3, tzinfo=dt.UTC)
DAY = 1440
# Coverage tolerances, in points of probability. Each check pools several series and
# hundreds of origins (binomial standard error about 1 point at 80 %, 0.6 at 95 %), and each
# series' calibration is itself a sample of held-out errors. Below nominal (the planner's
# spill) the tolerance is TOL; above it (split-conformal errors come from a fit on
# calibration_days (5) less data, farther from its end, so intervals err wide: up to +5
# points at 1-minute steps here) it is OVER.
TOL80, TOL95 = 0.04, 0.025
OVER80, OVER95 = 0.06, 0.03
QS = (0.025, 0.1, 0.5, 0.9, 0.975)


def n_series(step: float) -> int:
    """Series per check: each series' calibration is itself a sample of held-out errors
    (fewer at coarse steps: calibration_days of them), so coverage is averaged over several."""
    return 12 if step < 5 else 24



def seasonal(n: int, step: float, *, block: int = 1, sigma: float = 0.12, seed: int = 0,
             shift: int = 0) -> np.ndarray:
    """Level 100 (1 + 0.45 sin(daily phase)) times lognormal noise of log-sd ``sigma``,
    one independent draw per step, or per block of ``block`` steps (value constant within
    the block, the profile taken at its start; blocks start at indices = shift mod block)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    start = t - ((t - shift) % block)
    prof = 100.0 * (1.0 + 0.45 * np.sin(2 * np.pi * start * step / DAY))
    eps = rng.normal(size=n + block)[start - start.min()]
    return np.asarray(prof * np.exp(sigma * eps), dtype=np.float64)


def _levels(model: Any) -> dict[float, int]:
    return {q: model.table_levels.index(q) for q in (0.025, 0.1, 0.9, 0.975)}


def _fit_capturing(monkeypatch: pytest.MonkeyPatch, hists: list[np.ndarray],
                   step: float) -> tuple[list[Any], Calibration]:
    """Fit a batch and keep the Calibration the fit computed."""
    seen: list[Calibration] = []
    real = _calibration.calibrate

    def spy(*args: Any, **kwargs: Any) -> Calibration:
        cal = real(*args, **kwargs)
        seen.append(cal)
        return cal

    monkeypatch.setattr(_calibration, "calibrate", spy)
    models = forecasting.fit_batch(hists, step_minutes=step, starts=[START] * len(hists),
                                   quantiles=QS)
    assert len(seen) == 1
    return models, seen[0]


def _coverage(models: list[Any], cal: Calibration | None, ys: list[np.ndarray], n_hist: int,
              origins: np.ndarray, hsteps: tuple[int, ...],
              pooled: bool = False) -> dict[int, tuple[float, float]]:
    """Coverage of the 80 % and 95 % intervals by horizon (steps) over all series and
    origins. With ``cal`` the intervals are rebuilt from the forecast's mean and the
    calibration's table for the origin (``pooled``: the one table for every position);
    without, they are the forecast's own quantiles."""
    hits = {h: np.zeros(2) for h in hsteps}
    total = dict.fromkeys(hsteps, 0)
    for i, (model, y) in enumerate(zip(models, ys, strict=True)):
        cols = _levels(model)
        grid = np.log(model.horizon_steps)
        for o in origins.tolist():
            k = n_hist + o
            fc = model.predict(y[k - DAY : k], origin=k, horizon=max(hsteps))
            table = None
            if cal is not None:
                table = cal.table[i] if pooled else cal.table_at(i, k)
            for h in hsteps:
                if k + h - 1 >= y.size:
                    continue
                obs = y[k + h - 1]
                if table is None:
                    q = {lv: fc.quantile(lv)[h - 1] for lv in cols}
                else:
                    mean = fc.mean[h - 1]
                    q = {lv: mean * (1 + np.interp(math.log(h), grid, table[:, c]))
                         for lv, c in cols.items()}
                hits[h] += [q[0.1] <= obs <= q[0.9], q[0.025] <= obs <= q[0.975]]
                total[h] += 1
    return {h: (hits[h][0] / total[h], hits[h][1] / total[h]) for h in hsteps}


def _assert_nominal(cov: dict[int, tuple[float, float]], what: str,
                    over80: float = OVER80, over95: float = OVER95) -> None:
    """Coverage within the tolerances below nominal and ``over80`` / ``over95`` above it."""
    bad = {h: (round(c80, 3), round(c95, 3)) for h, (c80, c95) in cov.items()
           if not (-TOL80 <= c80 - 0.8 <= over80 and -TOL95 <= c95 - 0.95 <= over95)}
    assert not bad, f"{what}: coverage (80 %, 95 %) off nominal at horizons (steps) {bad}"


def test_block_structure_finds_the_publication_window() -> None:
    rng = np.random.default_rng(1)
    step_noise = rng.normal(size=(1, 6000)) + 10
    counts = rng.poisson(1.0, size=(1, 6000)).astype(float)  # many repeats, no blocks
    blocks10 = seasonal(6000, 1, block=10, seed=2)[None]
    blocks4_shifted = seasonal(3000, 15, block=4, seed=3, shift=3)[None]
    with_gap = blocks10.copy()
    with_gap[0, 1003:1500] = np.nan  # a masked logging gap does not hide the blocks
    flat = np.zeros((1, 6000))
    flat[0, ::97] = 5.0  # mostly flat: few, irregular changes
    y = np.concatenate([step_noise, counts, blocks10, with_gap, flat])
    block, offset = block_structure(y, max_block=360)
    assert block.tolist() == [1, 1, 10, 10, 1]
    assert offset[2] == 0 and offset[3] == 0
    block, offset = block_structure(blocks4_shifted, max_block=360)
    assert (int(block[0]), int(offset[0])) == (4, 3)


@pytest.mark.parametrize(("step", "days"), [(1, 14), (5, 14), (15, 21), (60, 28)])
def test_intervals_cover_at_nominal_on_seasonal_noise(step: float, days: int) -> None:
    per_day = int(DAY // step)
    n_hist = days * per_day
    fresh = max(1, 120 // per_day + 1) * per_day  # at least 120 origins per series
    ys = [seasonal(n_hist + fresh + 8, step, seed=10 + s) for s in range(n_series(step))]
    models = forecasting.fit_batch([y[:n_hist] for y in ys], step_minutes=step,
                                   starts=[START] * len(ys), quantiles=QS)
    origins = np.arange(0, fresh, max(1, fresh // 120))
    cov = _coverage(models, None, ys, n_hist, origins, (1, 2, 5))
    # Hourly steps hold out 120 errors (5 days) of a fit on 5 days less data: the intervals
    # come out wider than nominal there (80 %: 0.82-0.87 at 1-5 h on this data), allowed
    # above nominal, never below.
    hourly = step >= 60
    _assert_nominal(cov, f"{step}-minute steps", over80=0.08 if hourly else OVER80,
                    over95=0.04 if hourly else OVER95)


# Each position's table rests on calibration_days (5, at most a third of the history) /
# block of held-out errors: 720 at 1 x 10 min, 480 at 5 x 3, 240 at 15 x 2 when not capped.
@pytest.mark.parametrize(("step", "block"), [(1, 10), (5, 3), (15, 2)])
def test_block_published_data_is_covered_at_every_position(
    monkeypatch: pytest.MonkeyPatch, step: float, block: int
) -> None:
    per_day = int(DAY // step)
    n_hist = 14 * per_day
    fresh = max(1, 120 * block // per_day + 1) * per_day  # 120 boundaries per series
    shift = block // 2  # blocks not aligned with the series start
    ys = [seasonal(n_hist + fresh + 4 * block, step, block=block, seed=30 + s, shift=shift)
          for s in range(n_series(step))]
    models, cal = _fit_capturing(monkeypatch, [y[:n_hist] for y in ys], step)
    assert cal.block is not None and cal.block.tolist() == [block] * len(ys)
    assert cal.block_offset is not None and cal.block_offset.tolist() == [shift] * len(ys)
    # Beyond six blocks the position no longer matters: the pooled table (tidied: never
    # narrowing with the horizon) serves every position, or something wider.
    assert cal.phase_table is not None
    far = np.flatnonzero(models[0].horizon_steps > 6 * block)
    up, lo = np.asarray(cal.levels) > 0.5, np.asarray(cal.levels) < 0.5
    pooled_far = cal.table[:, None][:, :, far]
    phase_far = cal.phase_table[:, :block][:, :, far]
    assert far.size and (phase_far[..., up] >= pooled_far[..., up] - 1e-12).all()
    assert (phase_far[..., lo] <= pooled_far[..., lo] + 1e-12).all()
    hsteps = (1, 2, block, block + 1, 2 * block)
    # Origins on block boundaries (n_hist is a whole number of days, a multiple of the
    # block): nothing of the next block is known yet.
    n_org = fresh // block
    boundary = shift + block * np.arange(0, n_org, max(1, n_org // 120))
    cov = _coverage(models, cal, ys, n_hist, boundary, hsteps)
    _assert_nominal(cov, f"block boundaries ({block} x {step} min)")
    # The table pooled over positions is what failed there (issue #11); this check sees it.
    pooled = _coverage(models, cal, ys, n_hist, boundary, (1,), pooled=True)
    assert pooled[1][0] < 0.8 - 2 * TOL80
    # Origins at every position (a stride co-prime to the block), targets not yet published.
    anywhere = np.arange(0, fresh, max(1, fresh // (120 * block)) * block + 1)
    cov = _coverage(models, cal, ys, n_hist, anywhere, (block, block + 1, 2 * block))
    _assert_nominal(cov, f"every position ({block} x {step} min)")


def test_block_tables_follow_a_change_in_the_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    # ServeGen's relative noise swings two- to fivefold between days: quantiles pooled over
    # the 3-day holdout describe an average day, and the 80 % interval covered 0.74-0.77 in
    # the hours after the fit (issue #11). Here the noise doubles a day before the history
    # ends and stays doubled: the per-position tables must follow the last day's spread.
    step, block = 1, 10
    n_hist = 14 * DAY
    change = n_hist - DAY
    n = n_hist + DAY + 4 * block

    def spliced(seed: int) -> np.ndarray:
        calm = seasonal(n, step, block=block, sigma=0.08, seed=seed)
        wild = seasonal(n, step, block=block, sigma=0.16, seed=seed)  # the same draws
        return np.where(np.arange(n) < change, calm, wild)

    ys = [spliced(90 + s) for s in range(n_series(step))]
    boundary = block * np.arange(0, DAY // block, 2)
    models, cal = _fit_capturing(monkeypatch, [y[:n_hist] for y in ys], step)
    assert cal.block is not None and cal.block.tolist() == [block] * len(ys)
    cov = _coverage(models, cal, ys, n_hist, boundary, (1, 2, block))
    # The holdout's errors are a mixture of both spreads, with heavier tails than either:
    # scaled by the ratio of their medians, the 95 % interval errs wide (0.973-0.991 over
    # seven seed sets, 80 %: 0.812-0.851), on the planner's safe side; allowed 4.5 points
    # above nominal. (Ratios of the 80 % and 95 % quantiles of |error| instead, one per
    # interval, fix this case but covered 0.90-0.91 at 95 % on ServeGen m-mid.)
    _assert_nominal(cov, "block boundaries after the spread doubled", over95=0.045)
    # Quantiles pooled over the holdout, not rescaled, fall far short: this check sees it.
    monkeypatch.setattr(_calibration, "recent_spread_ratio",
                        lambda e, *_: np.ones((e.shape[0], e.shape[2])))
    models, cal = _fit_capturing(monkeypatch, [y[:n_hist] for y in ys], step)
    stale = _coverage(models, cal, ys, n_hist, boundary, (1,))
    assert stale[1][0] < 0.8 - 2 * TOL80, stale


def test_forecast_quantiles_cover_on_block_boundaries() -> None:
    step, block = 1, 10
    n_hist = 14 * DAY
    ys = [seasonal(n_hist + 2 * DAY, step, block=block, seed=50 + s) for s in range(n_series(step))]
    models = forecasting.fit_batch([y[:n_hist] for y in ys], step_minutes=step,
                                   starts=[START] * len(ys), quantiles=QS)
    boundary = block * np.arange(0, DAY // block, 2)
    cov = _coverage(models, None, ys, n_hist, boundary, (1, 2, block))
    _assert_nominal(cov, "forecast quantiles on block boundaries")


def test_rolling_eval_reports_the_sampling_spread_of_coverage() -> None:
    # A calibrated forecaster's coverage over n points spreads by sqrt(p (1 - p) / n): the
    # evaluation states it, and the fast path lands within it on seasonal noise.
    y = seasonal(16 * DAY, 1, seed=70)
    rep = forecasting.rolling_origin_eval(y, step_minutes=1, start=START, horizons=(5,),
                                          eval_days=2, origin_every_minutes=7)
    (s,) = rep.scores
    assert s.n_points > 300
    assert s.coverage_80_se == pytest.approx(math.sqrt(0.8 * 0.2 / s.n_points))
    assert s.coverage_95_se == pytest.approx(math.sqrt(0.95 * 0.05 / s.n_points))
    assert s.coverage_80 is not None and s.coverage_95 is not None
    assert s.coverage_80_se is not None and s.coverage_95_se is not None
    assert -max(TOL80, 3 * s.coverage_80_se) <= s.coverage_80 - 0.8 <= OVER80, s
    assert -max(TOL95, 3 * s.coverage_95_se) <= s.coverage_95 - 0.95 <= OVER95, s

"""The residual model for origins on a publication-block boundary (issue #11).

Data published in blocks (ServeGen: one rate per 10-minute window, repeated for each of its
minutes) is forecast from a block boundary with nothing of the next block known, while the
residual model fitted from every position learns to carry the last value forward (inside a
block the next steps repeat it). With ``Config.block_boundary_model`` a second model is fitted
from the boundaries alone and used for origins on them; origins inside a block and series
without blocks are untouched.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt

import forecasting
from forecasting import _core

START = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)
ON = _core.Config(block_boundary_model=True)
OFF = _core.Config(block_boundary_model=False)
BLOCK, SHIFT, PHI = 10, 3, 0.5
N_HIST = 14 * 1440


def block_series(days: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A daily profile published in 10-minute blocks starting at minute 3, each block's
    value off the profile by a factor following an AR(1) with coefficient PHI from block to
    block: (series, profile value of each step's block)."""
    rng = np.random.default_rng(seed)
    n = days * 1440
    t = np.arange(n)
    blk = (t - SHIFT) // BLOCK + 1
    first = np.clip((blk - 1) * BLOCK + SHIFT, 0, n - 1)
    prof = 100.0 * (1.0 + 0.5 * np.sin(2.0 * np.pi * first / 1440.0))
    dev = np.zeros(int(blk.max()) + 1)
    noise = rng.normal(0.0, 0.1, dev.size)
    for j in range(1, dev.size):
        dev[j] = PHI * dev[j - 1] + noise[j]
    return prof * (1.0 + dev[blk]), prof


def _fit(y: npt.NDArray[np.float64], cfg: _core.Config) -> forecasting.FittedModel:
    return forecasting.fit_batch([y], step_minutes=1, starts=[START], _config=cfg)[0]


def test_boundary_model_learns_the_block_to_block_persistence() -> None:
    ratios = []
    for seed in range(3):
        y, _prof = block_series(16, seed)
        off, on = _fit(y[:N_HIST], OFF), _fit(y[:N_HIST], ON)
        assert (on.point_block, on.point_block_offset) == (BLOCK, SHIFT)
        assert off.point_block == 1 and off.boundary_beta.size == 0
        # From a boundary the 1- and 10-minute windows both hold the last block: their
        # weights together are the persistence of a block into the next one (PHI), where
        # the model fitted from every position carries nearly all of it forward.
        assert abs(float(on.boundary_beta[0, :2].sum()) - PHI) < 0.2
        assert float(off.beta[0, :2].sum()) > 0.8
        np.testing.assert_array_equal(on.beta, off.beta)
        # Out of sample, one step after each boundary of the next two days.
        origins = np.arange(N_HIST + SHIFT, N_HIST + 2 * 1440 - BLOCK, BLOCK)
        mae = {}
        for name, model in (("off", off), ("on", on)):
            err = [abs(model.predict(y[o - 1440 : o], origin=int(o), horizon=1).mean[0] - y[o])
                   for o in origins]
            mae[name] = float(np.mean(err))
        assert mae["on"] < mae["off"], (seed, mae)
        ratios.append(mae["on"] / mae["off"])
    assert float(np.mean(ratios)) < 0.95, ratios


def test_origins_inside_a_block_are_forecast_as_before() -> None:
    y, _prof = block_series(15, 7)
    off, on = _fit(y[:N_HIST], OFF), _fit(y[:N_HIST], ON)
    for o in (N_HIST + SHIFT + 1, N_HIST + SHIFT + 5, N_HIST + SHIFT + 9 + 300):
        a = off.predict(y[o - 1440 : o], origin=o, horizon=120)
        b = on.predict(y[o - 1440 : o], origin=o, horizon=120)
        np.testing.assert_array_equal(a.mean, b.mean)
        # Up to six blocks ahead the intervals come from the origin position's own table;
        # beyond, the pooled table also holds the boundary origins' (now smaller) errors.
        np.testing.assert_array_equal(a.quantiles[:, :6 * BLOCK], b.quantiles[:, :6 * BLOCK])
    o = N_HIST + SHIFT + 300
    a = off.predict(y[o - 1440 : o], origin=o, horizon=120)
    b = on.predict(y[o - 1440 : o], origin=o, horizon=120)
    assert not np.array_equal(a.mean, b.mean)


def test_series_without_blocks_are_untouched() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(N_HIST)
    y = 100.0 * (1.0 + 0.5 * np.sin(2.0 * np.pi * t / 1440.0)) + rng.normal(0.0, 5.0, t.size)
    off, on = _fit(y, OFF), _fit(y, ON)
    assert on.point_block == 1 and on.boundary_beta.size == 0
    a = off.predict(y, origin=y.size, horizon=300)
    b = on.predict(y, origin=y.size, horizon=300)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.quantiles, b.quantiles)


def test_the_boundary_model_is_the_default() -> None:
    assert _core.DEFAULT.block_boundary_model

"""A seasonal-naive component read straight from the history, combined with the model.

The forecaster's harmonic regression smooths sharp steps (a load that jumps from 1 to 3
units at 08:00 every day comes out as a ramp with wide quantiles), and with a tight spill
bound the planner then has to hold the top of that ramp for hours. The history itself
says more: when the same minute of the day (or of the week) took the same value on each
of the last ``N`` days (weeks), and today has followed that pattern so far, the
pattern is trusted.

The rule, per forecast minute ``now + h`` and per season (daily, then weekly):

* the samples are the observations at ``now + h - k * period`` for the ``N`` most recent
  ``k`` that lie in the past (``k * period > h``);
* they *agree* when all are observed (no gap, no NaN) and ``max - min <= rel_tol * max``;
* the season is *followed today* when, over the last ``check_minutes`` observed minutes,
  every minute whose own samples agree was within ``rel_tol`` of them (and at least half
  of those minutes had agreeing samples);
* where the samples agree and the season is followed, every quantile of that minute is
  replaced by the largest sample (the envelope's top: no smoothing, no spread). Elsewhere
  the model's quantiles stand unchanged.

On real traffic (ServeGen traces) same-minute observations practically never agree within
1 %, so the model's quantiles are used there; on a strictly periodic load (the field case)
the envelope takes over and the plan follows the steps to the minute. Pure and cheap:
``O(N x horizon)`` gathers per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scheduler.planning.economics import FloatArray

#: (period in minutes, samples): the last 7 days, then the last 3 weeks.
DEFAULT_SEASONS: tuple[tuple[int, int], ...] = ((1440, 7), (10_080, 3))


def _samples(history: FloatArray, offsets: np.ndarray, period: int, count: int) -> FloatArray:
    """Observations at ``len(history) + offsets - k * period`` for the ``count`` most
    recent ``k`` in the past; NaN where the history does not reach (count x len(offsets))."""
    n = history.shape[0]
    k0 = np.maximum(np.floor_divide(offsets, period) + 1, 1)
    ks = k0[None, :] + np.arange(count)[:, None]
    idx = n + offsets[None, :] - ks * period
    ok = (idx >= 0) & (idx < n)
    out = np.full(idx.shape, np.nan)
    out[ok] = history[idx[ok]]
    return out


def _agree(samples: FloatArray, rel_tol: float) -> tuple[np.ndarray, FloatArray]:
    finite = np.isfinite(samples).all(axis=0)
    filled = np.where(np.isfinite(samples), samples, 0.0)
    top = filled.max(axis=0)
    spread = top - filled.min(axis=0)
    return finite & (spread <= rel_tol * np.abs(top) + 1e-12), top


def seasonal_envelope(
    history: FloatArray, horizon: int, *, seasons: Sequence[tuple[int, int]] = DEFAULT_SEASONS,
    rel_tol: float = 0.01, check_minutes: int = 60,
) -> tuple[np.ndarray, FloatArray]:
    """Where the history's seasonal samples agree (and today follows them): mask and value.

    ``history`` holds the observations up to now (the last element is the minute before
    now; NaN = missing). Returns ``(trusted, value)`` for the minutes ``[now, now+horizon)``.
    """
    history = np.asarray(history, dtype=np.float64)
    trusted = np.zeros(horizon, dtype=bool)
    value = np.zeros(horizon)
    if history.size == 0 or horizon <= 0:
        return trusted, value
    ahead = np.arange(horizon)
    for period, count in seasons:
        if history.size < period * count:
            continue
        # Today so far: the last check_minutes observations against their own samples.
        check = min(check_minutes, history.size - period * count)
        if check <= 0:
            continue
        past = np.arange(-check, 0)
        ok_past, top_past = _agree(_samples(history, past, period, count), rel_tol)
        seen = history[past]
        judged = ok_past & np.isfinite(seen)
        if judged.sum() * 2 < check:
            continue
        if (np.abs(seen[judged] - top_past[judged]) > rel_tol * np.abs(top_past[judged])
                + 1e-12).any():
            continue
        ok, top = _agree(_samples(history, ahead, period, count), rel_tol)
        new = ok & ~trusted
        value[new] = top[new]
        trusted |= new
    return trusted, value


def combine(values: FloatArray, history: FloatArray, **kwargs: object) -> FloatArray:
    """Model quantiles (levels x minutes) with the trusted seasonal envelope laid over them."""
    trusted, value = seasonal_envelope(history, values.shape[1], **kwargs)  # type: ignore[arg-type]
    if not trusted.any():
        return values
    out = np.array(values, dtype=np.float64, copy=True)
    out[:, trusted] = value[trusted]
    return out

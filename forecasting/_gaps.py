"""Detection of logging gaps that show up as runs of exact zeros."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._time import FloatArray, IntArray

# A zero run counts as a gap only when the load expected there is at least this
# fraction of the series' typical (median positive) level: a deployment that is
# genuinely idle at night must not have its idle minutes thrown away.
SUBSTANTIAL_FRACTION = 0.1
_NEIGHBOUR_MIN_STEPS = 60


def zero_runs(x: FloatArray, min_run: int) -> tuple[IntArray, IntArray]:
    """Start and end (exclusive) of every run of exact zeros of length >= min_run."""
    z = np.concatenate(([0], (x == 0).astype(np.int8), [0]))
    d = np.diff(z)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    keep = (ends - starts) >= max(min_run, 1)
    return starts[keep].astype(np.int64), ends[keep].astype(np.int64)


def mask_suspected_gaps(
    history: npt.ArrayLike,
    expected: npt.ArrayLike | None = None,
    *,
    min_run: int = 10,
) -> FloatArray:
    """Return a float copy of ``history`` with suspected logging gaps set to NaN.

    A suspected gap is a run of at least ``min_run`` steps of exact zeros where
    substantial load was expected. With ``expected`` (same length: the model's expected
    load), "substantial" means the run's mean expectation is at least 10 % of the
    series' median positive value. Without it, the observed neighbours on both sides
    (up to max(60, run length) steps each) stand in for the expectation: they must be
    mostly non-zero (under half zeros) with a median of at least 10 % of the series'
    median positive value. ``min_run`` <= 0 disables the detection.
    """
    x = np.array(history, dtype=np.float64, copy=True).reshape(-1)
    if min_run <= 0 or x.size == 0:
        return x
    starts, ends = zero_runs(x, min_run)
    if starts.size == 0:
        return x
    positive = x[x > 0]
    exp = None if expected is None else np.asarray(expected, dtype=np.float64).reshape(-1)
    if exp is not None and exp.shape != x.shape:
        raise ValueError("expected must have the same length as history")
    if positive.size:
        typical = float(np.median(positive))
    elif exp is not None and np.any(exp > 0):
        typical = float(np.nanmedian(exp[exp > 0]))
    else:
        return x
    threshold = SUBSTANTIAL_FRACTION * typical
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if exp is not None:
            seg = exp[s:e]
            seg = seg[np.isfinite(seg)]
            if seg.size and float(seg.mean()) >= threshold:
                x[s:e] = np.nan
            continue
        w = max(_NEIGHBOUR_MIN_STEPS, e - s)
        around = np.concatenate((x[max(0, s - w) : s], x[e : e + w]))
        around = around[np.isfinite(around)]
        if around.size < 3:
            continue
        if np.mean(around == 0) < 0.5 and float(np.median(around)) >= threshold:
            x[s:e] = np.nan
    return x

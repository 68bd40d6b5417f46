"""Data quality of a usage series: logging gaps, sustained zeros, and the evidence of demand.

The one rule every path shares (the forecaster's fit and predict, the daemon, the backtest):

* a minute no source reported is missing (NaN), never zero;
* a run of at least ``min_run`` reported zeros where load was expected is a suspected
  logging gap (a broken exporter that reports 0), so it is missing too, but only while the
  run is shorter than ``max_run`` (:data:`ZERO_LOAD_AFTER_MINUTES` by default): zeros that
  go on for longer are load (a retired or idle deployment), and capacity must follow them
  down instead of replaying the old profile;
* :func:`sustained_zeros` says when the latest minutes are such a run of load-zeros in
  place of the load the same hours carried on earlier days (a retired deployment): then
  the planner plans ``min_units`` until a non-zero minute arrives;
* :func:`evidence_level` says which level observed demand reached often enough to support
  a term commitment; missing minutes are no evidence.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._time import FloatArray, IntArray

# A zero run counts as a gap only when the load expected there is at least this
# fraction of the series' typical (median positive) level: a deployment that is
# genuinely idle at night must not have its idle minutes thrown away.
SUBSTANTIAL_FRACTION = 0.1
_NEIGHBOUR_MIN_STEPS = 60
#: Default length (minutes) after which a run of reported zeros is load, not a logging gap
#: (config: ``[ingest] zero_load_after_minutes``). Two hours: long enough for an exporter
#: restart or a short outage of the metrics path, short enough that a deployment which
#: really went idle is scaled down within a few hours.
ZERO_LOAD_AFTER_MINUTES = 120


def zero_runs(x: FloatArray, min_run: int, max_run: int = 0) -> tuple[IntArray, IntArray]:
    """Start and end (exclusive) of every run of exact zeros with
    ``min_run <= length < max_run`` (``max_run`` <= 0: no upper limit)."""
    z = np.concatenate(([0], (x == 0).astype(np.int8), [0]))
    d = np.diff(z)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    length = ends - starts
    keep = length >= max(min_run, 1)
    if max_run > 0:
        keep &= length < max_run
    return starts[keep].astype(np.int64), ends[keep].astype(np.int64)


def zero_run_is_gap(length: int, min_run: int, max_run: int = ZERO_LOAD_AFTER_MINUTES) -> bool:
    """Whether a run of ``length`` reported zeros (or zero-or-missing minutes) may be a
    logging gap: ``min_run <= length < max_run`` (``min_run`` <= 0 disables gaps,
    ``max_run`` <= 0 removes the upper limit).

    A run still in progress at a decision is judged by its length so far: under
    ``max_run`` it may still be a gap (hold, the safe reading); from ``max_run`` on it is
    load.
    """
    if min_run <= 0:
        return False
    return length >= min_run and (max_run <= 0 or length < max_run)


def gap_mask(
    values: npt.ArrayLike,
    missing: npt.ArrayLike,
    *,
    min_run: int,
    max_run: int = ZERO_LOAD_AFTER_MINUTES,
) -> npt.NDArray[np.bool_]:
    """Minutes to treat as missing in a trace whose absent minutes read as zero.

    ``values`` (demand per minute, absent minutes as 0) and ``missing`` (True where the
    file has no row) have the same length. Returns True for every missing minute and
    for every minute of a zero-or-missing run with :func:`zero_run_is_gap`; in a longer
    run only the truly missing minutes stay missing, its reported zeros are load.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    miss = np.asarray(missing, dtype=bool).reshape(-1)
    if x.shape != miss.shape:
        raise ValueError("values and missing must have the same length")
    zero = (x == 0) | miss
    padded = np.concatenate([[False], zero, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    mask = miss.copy()
    for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
        if zero_run_is_gap(b - a, min_run, max_run):
            mask[a:b] = True
    return mask


def sustained_zeros(
    history: npt.ArrayLike,
    *,
    min_run: int = ZERO_LOAD_AFTER_MINUTES,
    period: int = 1440,
    samples: int = 7,
) -> int:
    """Length (steps) of the trailing run of reported zeros when it has replaced load, else 0.

    ``history`` is demand per step up to now (NaN = missing), oldest first. The trailing
    run is the stretch since the last positive observation; it counts when it holds at
    least ``min_run`` reported zeros (missing minutes inside it are neutral) and either
    lasts a whole ``period`` or more, or the same stretch of the ``samples`` previous
    periods was mostly (at least half) positive where observed. The last condition keeps
    a deployment that is idle every night, or idle most of the time, out of it: its
    zeros are its usual shape, which the forecaster already follows.
    """
    x = np.asarray(history, dtype=np.float64).reshape(-1)
    if min_run <= 0 or x.size == 0:
        return 0
    positive = np.flatnonzero(x > 0)
    start = int(positive[-1]) + 1 if positive.size else 0
    run = x.size - start
    if run == 0 or int(np.count_nonzero(x[start:] == 0)) < min_run:
        return 0
    if run >= period:
        return run
    seen = 0
    busy = 0
    for k in range(1, samples + 1):
        a, b = start - k * period, x.size - k * period
        if b <= 0:
            break
        past = x[max(a, 0):b]
        past = past[np.isfinite(past)]
        seen += past.size
        busy += int(np.count_nonzero(past > 0))
    if seen == 0:
        return run  # nothing earlier to compare with: the zeros are all there is
    return run if busy * 2 >= seen else 0


def evidence_level(demand: npt.ArrayLike, share: float, *, window: int | None = None) -> int:
    """The highest whole number of units that observed demand needed in at least ``share``
    of the last ``window`` minutes (default: all of ``demand``).

    ``demand`` is in units per minute (NaN = missing), oldest first; minutes the window
    asks for before its start count as missing, and a missing minute supports no level,
    so a short or stale history supports little or nothing. A minute of demand ``d``
    needs ``ceil(d)`` units. Used to cap term commitments: a committed unit pays off only
    when needed more than its break-even share of the term (docs/economics.md).

    Raises ValueError when ``share`` is outside (0, 1].
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    x = np.asarray(demand, dtype=np.float64).reshape(-1)
    n = x.size if window is None else int(window)
    if n <= 0:
        return 0
    x = x[-n:]
    needed = np.where(np.isfinite(x), np.ceil(np.maximum(x, 0.0) - 1e-9), 0.0)
    k = int(np.ceil(share * n - 1e-9))  # minutes that must need the level
    if k > needed.size:
        return 0
    # The k-th largest need: at least k minutes needed this many units.
    return int(np.partition(needed, needed.size - k)[needed.size - k])


def mask_suspected_gaps(
    history: npt.ArrayLike,
    expected: npt.ArrayLike | None = None,
    *,
    min_run: int = 10,
    max_run: int = ZERO_LOAD_AFTER_MINUTES,
) -> FloatArray:
    """Return a float copy of ``history`` with suspected logging gaps set to NaN.

    A suspected gap is a run of at least ``min_run`` steps of exact zeros where
    substantial load was expected. With ``expected`` (same length: the model's expected
    load), "substantial" means the run's mean expectation is at least 10 % of the
    series' median positive value. Without it, the observed neighbours on both sides
    (up to max(60, run length) steps each) stand in for the expectation: they must be
    mostly non-zero (under half zeros) with a median of at least 10 % of the series'
    median positive value. ``min_run`` <= 0 disables the detection. Runs of ``max_run``
    steps or more are load and stay zero (``max_run`` <= 0: no upper limit).
    """
    x = np.array(history, dtype=np.float64, copy=True).reshape(-1)
    if min_run <= 0 or x.size == 0:
        return x
    starts, ends = zero_runs(x, min_run, max_run)
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

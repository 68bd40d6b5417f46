"""A deployment's usage on a dense minute grid: the one rule the backtest and the bench share.

The grid runs from the deployment's first reported minute to the end of the window; a
minute absent from the file has zero tokens and is flagged missing. ``i0`` is the window's
first minute on the grid (the minutes before it are history).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.ingest.files import ParsedUsage
from scheduler.planning.economics import FloatArray, as_datetime, as_minute


@dataclass(frozen=True)
class MinuteGrid:
    """Tokens per minute from ``first`` to the window's end; ``missing``: no row."""

    first: np.datetime64
    #: The window ``[w0, w1)`` in whole UTC minutes; ``i0`` is ``w0``'s grid index.
    w0: np.datetime64
    w1: np.datetime64
    i0: int
    input_tokens: FloatArray
    output_tokens: FloatArray
    missing: npt.NDArray[np.bool_]

    @property
    def size(self) -> int:
        return int(self.input_tokens.size)

    @property
    def origin(self) -> dt.datetime:
        """The window's first minute as an aware UTC datetime."""
        return as_datetime(self.w0)


def minute_grid(usage: ParsedUsage, deployment: str, start: dt.datetime | None = None,
                end: dt.datetime | None = None) -> MinuteGrid:
    """The rows of ``deployment`` (all rows when the file names none) over the window
    ``[start, end)`` (None: the deployment's first row / one past its last row), with the
    history before ``start``.

    Raises ValueError when the deployment has no rows, the window is empty or it starts
    before the deployment's first row.
    """
    rows = np.ones(len(usage), dtype=bool)
    if usage.deployments is not None:
        rows = usage.deployments == deployment
        if not rows.any():
            raise ValueError(f"{usage.path}: no rows for deployment {deployment!r}")
    minutes = usage.minutes[rows].astype("datetime64[m]")
    if minutes.size == 0:
        raise ValueError(f"{usage.path}: no usage rows")
    first = minutes[0]
    w0 = first if start is None else as_minute(start)
    w1 = minutes[-1] + np.timedelta64(1, "m") if end is None else as_minute(end)
    if w1 <= w0:
        raise ValueError("the backtest window is empty (end <= start)")
    if w0 < first:
        raise ValueError(f"start {as_datetime(w0):%Y-%m-%dT%H:%MZ} is before the trace")
    n_all = int((w1 - first).astype(np.int64))
    idx = (minutes - first).astype(np.int64)
    keep = idx < n_all
    inp = np.zeros(n_all)
    out = np.zeros(n_all)
    missing = np.ones(n_all, dtype=bool)
    inp[idx[keep]] = usage.input_tokens[rows][keep]
    out[idx[keep]] = usage.output_tokens[rows][keep]
    missing[idx[keep]] = False
    return MinuteGrid(first, w0, w1, int((w0 - first).astype(np.int64)), inp, out, missing)

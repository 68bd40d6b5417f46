"""The model interface and the gap filling every statsmodels member needs."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .._time import FloatArray


class FittedSeries(Protocol):
    def forecast(self, h: int) -> FloatArray:
        """The ``(h,)`` point forecast of the ``h`` steps after the fitted history."""
        ...


class SeriesModel(Protocol):
    @property
    def name(self) -> str: ...

    def usable(self, n: int, periods: tuple[int, ...]) -> bool:
        """Whether ``n`` steps are enough (and not too many) for this model."""
        ...

    def fit(self, y: FloatArray, periods: tuple[int, ...]) -> FittedSeries:
        """Fit a gap-free ``(n,)`` series with seasonal ``periods`` (steps, daily first)."""
        ...


def fill_missing(y: FloatArray, period: int) -> FloatArray:
    """Fill NaN steps for models that cannot skip them: the value one ``period`` earlier
    (else later) when known, otherwise linear interpolation; all-NaN stays all-NaN.

    Shape ``(n,) -> (n,)``; the input is not modified.
    """
    out = np.array(y, dtype=np.float64)
    miss = ~np.isfinite(out)
    if not miss.any() or miss.all():
        return out
    for shift in (period, -period, 2 * period, -2 * period):
        if not miss.any() or period <= 0 or abs(shift) >= out.size:
            break
        src = np.roll(out, shift)
        idx = np.arange(out.size) - shift
        ok = miss & (idx >= 0) & (idx < out.size) & np.isfinite(src)
        out[ok] = src[ok]
        miss = ~np.isfinite(out)
    if miss.any():
        good = np.flatnonzero(~miss)
        out[miss] = np.interp(np.flatnonzero(miss), good, out[good])
    return out

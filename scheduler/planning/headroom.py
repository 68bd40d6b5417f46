"""Headroom calibrated on the deployment's own recent history, for the elastic tier.

The service level is a bound on the *realised* spill of the whole period, not on each
minute. Requiring each minute's expected spill under the forecast band to stay within
the allowance buys capacity wherever the band is wide, and the band is widest exactly
where ServeGen-like traffic steps from one 10-minute window to the next. On m-small,
that per-minute rule cost 1.51x the hindsight optimum at 0.88 % spill. The median
forecast x 1.3 cost 1.41x at 0.89 %.

So the ratio is set the way a capacity engineer would set it. The rule "capacity for
minute t = ceil(demand last seen at the decision x (1 + h))" is replayed over the last
days of the deployment's usage with its own lead time and minimum hold (the units
activated, held and released as the providers do). The headroom is the smallest h on a
grid whose replayed spill fraction stays within the target.

Pure: arrays in, arrays out; many deployments are calibrated at once (the daemon
calibrates every deployment together, as it refits them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.config import Deployment

FloatArray = npt.NDArray[np.float64]

#: Candidate headrooms: 0 to 100 % in steps of 2.5 %.
DEFAULT_GRID = tuple(round(0.025 * i, 3) for i in range(41))
#: Days of history replayed.
DEFAULT_DAYS = 7.0


def replayed_spill_fraction(
    demand: npt.ArrayLike, headrooms: npt.ArrayLike, *, lead: int, hold: int
) -> FloatArray:
    """Spill fraction of the rule "capacity = ceil(last seen x (1 + h))", per series and h.

    ``demand`` is (m, t) demand units per minute, NaN where missing; missing minutes are
    carried forward for the decisions and not scored. ``headrooms`` is (k,) or (m, k).
    Returns (m, k). A request at minute d serves from d + lead; a unit is released only
    once it has been active ``hold`` minutes and the rule no longer needs it.
    """
    d = np.atleast_2d(np.asarray(demand, dtype=np.float64))
    m, t = d.shape
    h = np.asarray(headrooms, dtype=np.float64)
    h = np.broadcast_to(h if h.ndim == 2 else h[None, :], (m, h.shape[-1]))
    k = h.shape[1]
    seen = carry_forward(d)
    factor = 1.0 + h
    lead = max(0, int(lead))
    hold = max(1, int(hold))
    pending = np.zeros((lead + 1, m, k))  # by activation minute modulo lead + 1
    young = np.zeros((hold, m, k))  # active, by activation minute modulo hold
    eligible = np.zeros((m, k))  # active for at least the hold: may be released
    n_pending = np.zeros((m, k))
    n_active = np.zeros((m, k))
    spill = np.zeros((m, k))
    total = np.zeros((m, 1))
    truth = np.where(np.isfinite(d), d, 0.0)
    scored = np.isfinite(d)
    for step in range(1, t):
        # Units activated `hold` minutes ago become releasable; units due now activate.
        slot = step % hold
        eligible += young[slot]
        due = pending[step % (lead + 1)]
        young[slot] = due
        n_active += due
        n_pending -= due
        pending[step % (lead + 1)] = 0.0
        need = np.ceil(seen[:, step - 1, None] * factor - 1e-9)
        short = np.maximum(need - n_active - n_pending, 0.0)
        if lead == 0:
            young[slot] += short
            n_active += short
        else:
            pending[(step + lead) % (lead + 1)] += short
            n_pending += short
        release = np.clip(np.minimum(n_active + n_pending - need, eligible), 0.0, None)
        eligible -= release
        n_active -= release
        if scored[:, step].any():
            x = truth[:, step, None]
            spill += np.where(scored[:, step, None], np.maximum(x - n_active, 0.0), 0.0)
            total += np.where(scored[:, step, None], x, 0.0)
    frac = np.zeros((m, k))
    np.divide(spill, np.broadcast_to(total, (m, k)), out=frac, where=total > 0)
    return frac


def applies_to(deployment: Deployment) -> bool:
    """Whether the calibrated rule plans this deployment: spill is paid for (throttled
    requests are lost, so they stay with the per-minute rule) and the bound is not zero
    (no headroom of the grid can promise zero spill)."""
    return deployment.spill == "payg" and deployment.max_spill_fraction > 0


@dataclass(frozen=True)
class HeadroomCurve:
    """Replayed spill fraction of the rule at each candidate headroom (ascending)."""

    headrooms: tuple[float, ...]
    spill_fractions: tuple[float, ...]

    def headroom_for(self, target_fraction: float) -> float | None:
        """Smallest headroom from which every larger one replayed within the target;
        None when none did (the caller keeps the per-minute rule)."""
        if target_fraction <= 0:
            return None
        # Integer rounding can make spill non-monotone in the headroom locally.
        best: float | None = None
        for h, f in zip(reversed(self.headrooms), reversed(self.spill_fractions),
                        strict=True):
            if f > target_fraction + 1e-12:
                break
            best = h
        return best


def headroom_curves(
    demand: npt.ArrayLike, *, lead: int, hold: int, grid: tuple[float, ...] = DEFAULT_GRID,
    min_observed_minutes: int = 1440,
) -> list[HeadroomCurve | None]:
    """One curve per row of ``demand`` ((m, t) or (t,)); None with under a day observed."""
    d = np.atleast_2d(np.asarray(demand, dtype=np.float64))
    frac = replayed_spill_fraction(d, np.asarray(grid), lead=lead, hold=hold)
    enough = np.isfinite(d).sum(axis=1) >= min_observed_minutes
    return [HeadroomCurve(tuple(grid), tuple(float(x) for x in row)) if ok else None
            for row, ok in zip(frac, enough, strict=True)]


def carry_forward(x: FloatArray) -> FloatArray:
    """NaN replaced by the last observed value of its row (0 before the first)."""
    t = x.shape[1]
    ok = np.isfinite(x)
    idx = np.where(ok, np.arange(t)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = np.take_along_axis(x, idx, axis=1)
    return np.asarray(np.where(np.isfinite(out), out, 0.0), np.float64)

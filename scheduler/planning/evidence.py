"""Commitments need evidence: no term unit bought that observed demand does not support.

Pure (arrays and settings in). The daemon applies it as a rail on every commitment
decision (:mod:`scheduler.daemon.rails`), and the backtest can call it the same way, so
that a backtest and the daemon buy the same units on the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import forecasting
from scheduler.config import Deployment
from scheduler.planning.economics import Commitment, FloatArray

#: Windows over which observed demand must support a commitment: the last two hours (a
#: deployment that has just gone quiet, e.g. one now reporting zeros, or whose feed just
#: stopped, buys nothing now), the last day and the last week.
EVIDENCE_WINDOWS_MINUTES = (120, 1440, 10_080)


def commitments_with_evidence(
    new: Sequence[Commitment],
    *,
    committed_now: int,
    recent_demand: FloatArray,
    deployment: Deployment,
    stale: bool,
    windows_minutes: Sequence[int] = EVIDENCE_WINDOWS_MINUTES,
) -> tuple[tuple[Commitment, ...], tuple[str, ...]]:
    """The part of ``new`` the recent observed demand supports, and why the rest was cut.

    A unit committed for ``term_days`` pays off when it is needed more than its break-even
    share of the time (``1 - discount``: 70 % for a 30-day unit at 30 % off; the cost
    contract in docs/economics.md). Its evidence is :func:`forecasting.evidence_level` of
    ``recent_demand`` (model units per minute, NaN = missing, oldest first) at that share,
    over each of ``windows_minutes`` (the last two hours, day and week by default): the
    lowest of them caps committed + new units. Missing minutes count as no evidence, and
    reported zeros as zero load, so a feed that went stale or a deployment that reports
    zeros buys nothing. With ``stale`` every commitment is deferred.
    """
    if not new:
        return (), ()
    if stale:
        return (), ("commitment deferred: usage is stale",)
    kept: list[Commitment] = []
    notes: list[str] = []
    total = committed_now
    for c in new:
        share = 1.0 - deployment.pricing.commit_discount(c.term_days)
        level = min(
            forecasting.evidence_level(recent_demand[-w:], share, window=w)
            for w in windows_minutes)
        units = min(c.units, max(0, level - total))
        if units < c.units:
            notes.append(
                f"commitment of {c.units} unit(s) for {c.term_days} days cut to {units}: "
                f"observed demand reached {total + c.units} units in less than "
                f"{share:.0%} of the last {max(windows_minutes) // 1440} day(s)")
        if units > 0:
            kept.append(Commitment(c.start, c.term_days, units))
            total += units
    return tuple(kept), tuple(notes)

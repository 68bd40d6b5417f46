"""An in-memory provider for backtests: lead time and minimum hold enforced.

Minutes are integer offsets from the simulation origin (fast, and exact). Every elastic
unit is requested at ``r``, serves from ``r + lead`` and cannot be released before
``r + lead + hold``; pending units cannot be cancelled. Releases take effect at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from scheduler.planning.economics import Commitment, IntArray
from scheduler.planning.planner import ElasticBlock, Holdings

MINUTE = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class ProviderEvent:
    """One change the provider applied: what was asked, and when it takes effect."""

    decided: int
    effective: int
    kind: str  # "elastic_request" | "elastic_release" | "buy_commitment"
    units: int
    term_days: int | None
    target: int | None
    reason: str


class SimulatedProvider:
    def __init__(self, origin: dt.datetime, n_minutes: int, lead: int, hold: int) -> None:
        self.origin = origin
        self.n = n_minutes
        self.lead = lead
        self.hold = hold
        # Per-minute difference array of active elastic units (+1 on activation, -1 on
        # release), with room for units that would still be active after the end.
        self._diff = np.zeros(n_minutes + lead + 2, dtype=np.int64)
        #: Live units as [requested_at, active_from]; released ones leave the list.
        self._live: list[tuple[int, int]] = []
        self.commitments: list[tuple[int, Commitment]] = []
        self.events: list[ProviderEvent] = []

    def units_held(self) -> int:
        """Active plus pending elastic units."""
        return len(self._live)

    def set_target(self, now: int, target: int, reason: str = "") -> int:
        """Request or release units towards ``target``; returns the units held after it."""
        target = max(0, target)
        held = len(self._live)
        if target > held:
            add = target - held
            start = now + self.lead
            self._live.extend([(now, start)] * add)
            self._diff[min(start, self._diff.size - 1)] += add
            self.events.append(ProviderEvent(now, start, "elastic_request", add, None, target,
                                             reason))
        elif target < held:
            # Release the units whose hold ended longest ago; the rest stay (hold enforced).
            eligible = sorted(
                (i for i, (_, a) in enumerate(self._live) if a + self.hold <= now),
                key=lambda i: self._live[i][1],
            )
            drop = set(eligible[: held - target])
            if drop:
                self._live = [u for i, u in enumerate(self._live) if i not in drop]
                self._diff[now] -= len(drop)
                self.events.append(ProviderEvent(now, now, "elastic_release", len(drop), None,
                                                 target, reason))
        return len(self._live)

    def buy(self, now: int, term_days: int, units: int, reason: str = "") -> Commitment:
        c = Commitment(self.origin + now * MINUTE, term_days, units)
        self.commitments.append((now, c))
        self.events.append(ProviderEvent(now, now, "buy_commitment", units, term_days, None,
                                         reason))
        return c

    def holdings(self, now: int) -> Holdings:
        blocks: dict[tuple[int, int], int] = {}
        for unit in self._live:
            blocks[unit] = blocks.get(unit, 0) + 1
        elastic = tuple(
            ElasticBlock(k, self.origin + r * MINUTE, self.origin + a * MINUTE)
            for (r, a), k in sorted(blocks.items())
        )
        live = tuple(c for _, c in self.commitments
                     if c.end > self.origin + now * MINUTE)
        return Holdings(commitments=live, elastic=elastic)

    def active_elastic_at(self, now: int) -> int:
        return sum(1 for _, a in self._live if a <= now)

    def elastic_series(self) -> IntArray:
        """Active elastic units per minute over ``[0, n)``."""
        return np.cumsum(self._diff)[: self.n].astype(np.int64)

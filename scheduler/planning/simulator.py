"""An in-memory provider for backtests: lead time, minimum hold and a capacity pool enforced.

Minutes are integer offsets from the simulation origin (fast, and exact). Every elastic
unit is requested at ``r``, serves from ``r + lead`` and cannot be released before
``r + lead + hold``; pending units cannot be cancelled. Releases take effect at once.

Capacity pool (:class:`ProviderCapacity`): as ``available_units`` of the simulated
provider (scheduler/providers/simulated.py), a request that raises the elastic target
above what the provider can grant at that minute is refused whole (out of capacity:
nothing changes, the refusal is recorded); units already held are kept when the pool
shrinks, releases are always accepted. Commitments are sold only on ``supported_terms``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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


@dataclass(frozen=True)
class CapacityWindow:
    """``[start, end)``: the provider can grant at most ``units`` elastic units (an outage
    of regional capacity when 0)."""

    start: dt.datetime
    end: dt.datetime
    units: int

    def __post_init__(self) -> None:
        if self.units < 0 or self.end <= self.start:
            raise ValueError("a capacity window needs units >= 0 and end > start")


@dataclass(frozen=True)
class ProviderCapacity:
    """What the provider can grant, as the simulated provider's ``available_units`` and
    ``supported_terms`` (``[providers.<name>]``), plus windows where the pool differs.

    ``available_units`` None: unlimited outside the windows. ``supported_terms`` None: the
    planner's own terms. ``retry_minutes``: after a refusal the target is capped at what
    the provider says it can grant for this long, then the full target is asked for again
    (the daemon's ``GRANTABLE_RETRY``, scheduler/daemon/tick.py).
    """

    available_units: int | None = None
    windows: tuple[CapacityWindow, ...] = ()
    supported_terms: tuple[int, ...] | None = None
    retry_minutes: int = 10

    def __post_init__(self) -> None:
        if self.available_units is not None and self.available_units < 0:
            raise ValueError("available_units must be >= 0")
        if self.retry_minutes < 1:
            raise ValueError("retry_minutes must be >= 1")

    @property
    def limited(self) -> bool:
        return self.available_units is not None or bool(self.windows)

    def series(self, origin: dt.datetime, n_minutes: int) -> IntArray | None:
        """Grantable elastic units per minute of ``[origin, origin + n)`` (None: no limit).

        Unlimited minutes carry ``np.iinfo(np.int64).max``; a later window wins where
        windows overlap.
        """
        if not self.limited:
            return None
        free = np.iinfo(np.int64).max if self.available_units is None else self.available_units
        out = np.full(n_minutes, free, dtype=np.int64)
        for w in self.windows:
            a = max(0, _minutes_between(origin, w.start))
            b = min(n_minutes, _minutes_between(origin, w.end))
            if b > a:
                out[a:b] = w.units
        return out


def _minutes_between(origin: dt.datetime, t: dt.datetime) -> int:
    return int((t - origin) // MINUTE)


class SimulatedProvider:
    def __init__(self, origin: dt.datetime, n_minutes: int, lead: int, hold: int,
                 available: Sequence[int] | IntArray | None = None) -> None:
        self.origin = origin
        self.n = n_minutes
        self.lead = lead
        self.hold = hold
        #: Grantable elastic units per minute (None: unlimited); see :class:`ProviderCapacity`.
        self.available = None if available is None else np.asarray(available, dtype=np.int64)
        if self.available is not None and self.available.size < n_minutes:
            raise ValueError("the availability series is shorter than the simulation")
        # Per-minute difference array of active elastic units (+1 on activation, -1 on
        # release), with room for units that would still be active after the end.
        self._diff = np.zeros(n_minutes + lead + 2, dtype=np.int64)
        #: Live units as [requested_at, active_from]; released ones leave the list.
        self._live: list[tuple[int, int]] = []
        self.commitments: list[tuple[int, Commitment]] = []
        self.events: list[ProviderEvent] = []
        #: Scale-ups refused for want of capacity (kind "elastic_refused"; nothing changed).
        self.refusals: list[ProviderEvent] = []

    def grantable(self, now: int) -> int | None:
        """The most elastic units the provider can grant at ``now`` (None: no limit)."""
        return None if self.available is None else int(self.available[now])

    def units_held(self) -> int:
        """Active plus pending elastic units."""
        return len(self._live)

    def set_target(self, now: int, target: int, reason: str = "") -> int:
        """Request or release units towards ``target``; returns the units held after it.

        A scale-up beyond what the provider can grant at ``now`` is refused whole (the
        simulated provider's ``out_of_capacity``): nothing changes and the refusal is
        recorded in :attr:`refusals`.
        """
        target = max(0, target)
        held = len(self._live)
        free = self.grantable(now)
        if target > held and free is not None and target > free:
            self.refusals.append(ProviderEvent(now, now, "elastic_refused", target - held,
                                               None, target,
                                               f"out_of_capacity: {max(0, free - held)} "
                                               f"available; {reason}"))
            return held
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

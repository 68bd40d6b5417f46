"""The minimum-hold rule for scaling down, shared by the providers that keep books.

A scale-down never releases a unit inside its minimum hold: the provider releases what it
may and clamps the rest (see :mod:`scheduler.providers.base`). Pending units go first (never
served, nothing held), newest first; then active units past their hold, oldest first.
The simulated provider and the HTTP reference server both apply exactly this rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class TrancheLike(Protocol):
    @property
    def units(self) -> int: ...

    @property
    def active_from(self) -> dt.datetime: ...

    @property
    def hold_until(self) -> dt.datetime: ...


@dataclass(frozen=True)
class ScaleDown:
    accepted: int
    clamp_reason: str | None
    next_release: dt.datetime | None
    #: (index into the tranches given, units to release from it)
    releases: tuple[tuple[int, int], ...]


def plan_scale_down(tranches: Sequence[TrancheLike], current: int, target: int,
                    now: dt.datetime) -> ScaleDown:
    """Which units to release to go from ``current`` towards ``target`` at ``now``.

    Ties in ``active_from`` are broken by position, so callers pass tranches in a stable
    order (the simulated provider: by id).
    """
    held = [t for t in tranches if t.active_from <= now < t.hold_until]
    accepted = max(target, sum(t.units for t in held))
    clamp_reason = "min_hold" if accepted > target else None
    next_release = min(t.hold_until for t in held) if clamp_reason else None
    indexed = list(enumerate(tranches))
    pending = sorted((p for p in indexed if p[1].active_from > now),
                     key=lambda p: (p[1].active_from, p[0]), reverse=True)
    free = sorted((p for p in indexed if p[1].active_from <= now and p[1].hold_until <= now),
                  key=lambda p: (p[1].active_from, p[0]))
    to_release = current - accepted
    releases = []
    for index, tranche in [*pending, *free]:
        if to_release == 0:
            break
        take = min(tranche.units, to_release)
        releases.append((index, take))
        to_release -= take
    return ScaleDown(accepted, clamp_reason, next_release, tuple(releases))

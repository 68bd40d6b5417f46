"""Following a plan minute by minute until a re-plan is due (pure).

Re-planning every deployment every minute is what a naive scheduler does; it is also what
makes a 1,000-deployment tick (or a 30-day backtest) slow. Between plans the elastic target
comes from the plan: by default (*capped*) the target of the plan's first minute, never
more, because the forecast band widens with the horizon and a plan's later targets would
ramp up on that alone; otherwise (*plan*) the most units planned over the next ``lead``
minutes. A re-plan is due

* every ``replan_minutes``, and before the plan's horizon runs out;
* capped: when the plan's *median* requirement at the minute a unit requested now would
  serve rises above its value at plan time (an expected step); plan: where the plan's own
  target (or, optionally, its required capacity) changes;
* as soon as an observation leaves the plan's forecast band (above its top quantile, or
  further below the median than the top is above it).

Decisions are those of re-planning every minute, up to a staleness of ``replan_minutes``.
The backtest and the daemon both follow plans through this class.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from scheduler.planning.planner import Plan, quantile_at

MINUTE = dt.timedelta(minutes=1)


#: Re-plan reasons that may wait a tick: the plan already covers these minutes.
ROUTINE = frozenset({"periodic", "target_change", "required_change"})


@dataclass(frozen=True)
class FollowSettings:
    replan_minutes: int = 10
    #: Hold the first minute's target (see the module docstring); else follow the schedule.
    capped: bool = True
    replan_on_change: bool = True
    replan_on_required: bool = False
    replan_below_band: bool = True


class FollowedPlan:
    def __init__(self, plan: Plan, lead: int, *, capped: bool = True) -> None:
        self.plan = plan
        self.start = plan.now
        self.capped = capped
        elastic = plan.elastic_target
        window = lead + 1
        padded = np.concatenate([elastic, np.full(window, elastic[-1] if elastic.size else 0)])
        self.wanted = np.lib.stride_tricks.sliding_window_view(padded, window).max(axis=1)[
            : elastic.size]
        self.required = plan.required_units
        self.top = plan.forecast_values[-1]
        self.median = quantile_at(plan.forecast_levels, plan.forecast_values, 0.5)
        self.lead = lead
        # The median's requirement at the minute a unit requested now would serve.
        serve = np.minimum(np.arange(elastic.size) + lead, max(elastic.size - 1, 0))
        self.median_need = np.ceil(self.median[serve] - 1e-6) if elastic.size else self.median
        if capped and self.wanted.size:
            self.wanted = np.minimum(self.wanted, self.wanted[0])
        action = plan.action_now()
        self.reason = action.reason if action is not None else ""

    def offset(self, now: dt.datetime) -> int:
        return int((now - self.start) // MINUTE)

    def target(self, now: dt.datetime) -> int:
        return int(self.wanted[min(self.offset(now), self.wanted.size - 1)])

    def due(self, now: dt.datetime, observed: float | None, settings: FollowSettings,
            *, phase: int | None = None) -> bool:
        return self.why_due(now, observed, settings, phase=phase) is not None

    def why_due(self, now: dt.datetime, observed: float | None, settings: FollowSettings,
                *, phase: int | None = None) -> str | None:
        """Why a re-plan is due at ``now`` (None: follow the plan); ``observed`` is the
        demand of the minute before. Demand outside the band and a plan running out are
        *urgent*; the rest are *routine* (:data:`ROUTINE`): following the plan a minute
        longer is safe, so a busy tick may defer them.

        With ``phase`` the periodic re-plan falls on the minutes where ``(minute + phase)``
        is a multiple of ``replan_minutes`` instead of ``replan_minutes`` after the plan:
        many deployments planned on one tick then spread their re-plans over the following
        minutes instead of all coming due on the same one.
        """
        i = self.offset(now)
        if i < 0:
            return "clock"
        if i == 0:
            return None
        if phase is None:
            periodic = i >= settings.replan_minutes
        else:
            minute = int(now.timestamp() // 60)
            periodic = (i >= 2 * settings.replan_minutes
                        or (minute + phase) % settings.replan_minutes == 0)
        if i + self.lead + 1 >= self.wanted.size:
            return "horizon"
        if observed is not None:
            hi, mid = float(self.top[i - 1]), float(self.median[i - 1])
            if observed > hi + 1e-9:
                return "above_band"
            if settings.replan_below_band and observed < mid - (hi - mid) - 1e-9:
                return "below_band"
        if self.capped and self.median_need[i] > self.median_need[0]:
            return "need_rises"
        if periodic:
            return "periodic"
        if not self.capped and settings.replan_on_change and self.wanted[i] != self.wanted[i - 1]:
            return "target_change"
        if settings.replan_on_required and self.required[i] != self.required[i - 1]:
            return "required_change"
        return None

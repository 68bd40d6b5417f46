"""The planner: forecasts + holdings + settings + ``now`` in, a frozen :class:`Plan` out.

Pure: no clock, no I/O, no forecasting objects (plain quantile arrays in demand units).

How capacity is chosen, minute by minute (see docs/backtests.md for the measured effect):

1. The quantile forecast is turned into a dense quantile function by interpolating in
   normal-score space (exact for normal forecasts, sane tails for others).
2. Capacity ``c(t)`` is the larger of
   * the *economic* level: the newsvendor critical fractile ``1 - r_e / q`` (an elastic
     unit costs ``r_e`` a minute, a spilled unit-minute ``q``; a unit pays only when it is
     needed with probability above ``r_e / q``, otherwise pay-as-you-go is cheaper), and
   * the *service* level: the smallest integer capacity whose expected spill is at most
     the allowed fraction of that minute's expected demand. Holding the bound minute by
     minute implies it over any window and keeps capacity monotone in the forecast.
3. Committed capacity covers what it covers; elastic units fill the rest, planned unit by
   unit ("layers") with increasing set operators only (so more forecast demand never gives
   less capacity): a new unit serves from ``scale_up_lead_minutes`` on and every needed
   minute keeps it ``min_hold_minutes``; a held unit stays to the end of its own hold and
   on while the need continues; gaps up to the lead are bridged (see _elastic_layers).
4. Commitments are bought (when a commitment forecast is given) unit by unit: the j-th
   unit above the committed profile is bought on a term when the median forecast needs it
   for more than ``1 - discount`` (+ a margin) of the term and of the next decision period,
   in tranches capped per decision so the committed level is a ladder of start days.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
from scipy.special import ndtri

from scheduler.config import Deployment
from scheduler.planning.economics import (
    Commitment,
    FloatArray,
    IntArray,
    committed_profile,
    committed_unit_minute_rate,
    unit_minute_rate,
)
from scheduler.planning.headroom import (
    Cover,
    HeadroomCurve,
    applies_to,
    choose_cover,
    constant_level_spill,
)

MINUTE = dt.timedelta(minutes=1)
#: Elastic changes listed per plan (now and the next ones).
MAX_ACTIONS = 4


@dataclass(frozen=True, eq=False)
class DemandForecast:
    """Demand quantiles in units per minute from ``start`` on.

    ``values[i, k]`` is quantile ``levels[i]`` of the demand at minute ``start + k``.
    """

    start: dt.datetime
    levels: tuple[float, ...]
    values: FloatArray

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[0] != len(self.levels):
            raise ValueError("values must have one row per quantile level")
        if not self.levels or list(self.levels) != sorted(self.levels):
            raise ValueError("levels must be ascending")
        if not all(0.0 < lv < 1.0 for lv in self.levels):
            raise ValueError("levels must lie strictly between 0 and 1")

    @property
    def horizon(self) -> int:
        return int(self.values.shape[1])

    def window(self, now: dt.datetime, minutes: int) -> FloatArray:
        """Values for ``[now, now + minutes)``; the last minute repeats past the end."""
        offset = int((now - self.start) // MINUTE)
        if offset < 0:
            raise ValueError("the forecast starts after now")
        idx = np.minimum(np.arange(offset, offset + minutes), self.horizon - 1)
        return np.asarray(np.maximum(self.values[:, idx], 0.0), dtype=np.float64)


@dataclass(frozen=True)
class ElasticBlock:
    """Elastic units held or pending at the provider: they serve from ``active_from``."""

    units: int
    requested_at: dt.datetime
    active_from: dt.datetime


@dataclass(frozen=True)
class Holdings:
    """What the provider holds (or has pending) for the deployment at ``now``."""

    commitments: tuple[Commitment, ...] = ()
    elastic: tuple[ElasticBlock, ...] = ()


@dataclass(frozen=True)
class SpillToDate:
    """Service-level account of the current period, for the plan to stay within the bound."""

    demand_unit_minutes: float = 0.0
    spill_unit_minutes: float = 0.0


@dataclass(frozen=True)
class PlannerSettings:
    horizon_minutes: int = 240
    #: Fraction of the spill bound the plan aims at: forecasts miss, so plan tighter.
    #: 0.9 since the headroom is calibrated and an overrun tightens it in proportion
    #: (with the per-minute rule alone it was 0.8).
    payg_safety: float = 0.9
    #: Throttled requests are lost, so the plan aims tighter still.
    throttle_safety: float = 0.25
    #: Utilisation above break-even a commitment needs (forecast error margin).
    commit_margin: float = 0.03
    #: Quantile of the commitment forecast that decides whether a unit is needed.
    commit_quantile: float = 0.5
    #: At most ceil(level / tranches) units per term and decision: the ladder. 30-day: 1,
    #: i.e. the whole level the forecast supports at the first decision (the hindsight
    #: optimum commits its level from the window start; a ladder pays elastic meanwhile).
    ladder_tranches_30d: int = 1
    ladder_tranches_7d: int = 2
    #: Minutes until the next commitment decision (a unit must be needed before then).
    commit_period_minutes: int = 1440
    #: Commitment terms (days) the provider sells: ``ProviderLimits.supported_terms``
    #: (Azure sells none through its API, Bedrock 30-day "OneMonth" terms only).
    commit_terms: tuple[int, ...] = (30, 7)
    #: Forecast values this close above an integer still round down to it.
    round_tolerance: float = 1e-6
    #: Points of the dense quantile grid used for expected spill.
    grid_points: int = 64
    #: No capacity without evidence: committed + elastic stays within this factor of the
    #: highest demand observed recently (x a declared calendar day's multiplier).
    evidence_factor: float = 1.5
    #: Demand that held at least x for the last this many minutes is a level, not noise:
    #: the first ``persist_hold_minutes`` of the plan hold at least x (a level change
    #: reaches capacity within the hour, before the forecast has caught up with it).
    persist_minutes: int = 15
    persist_hold_minutes: int = 60


@dataclass(frozen=True)
class Action:
    """One change at the provider: ``issue_at`` is when to send it."""

    kind: str  # "elastic_set_target" | "buy_commitment"
    decided_at: dt.datetime
    issue_at: dt.datetime
    effective_at: dt.datetime
    #: Target elastic units (set-target) or units bought (commitment).
    units: int
    term_days: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Reason:
    """Why a tier changes at ``at``: the rule and the quantile that drove it."""

    at: dt.datetime
    tier: str
    rule: str
    quantile: float | None
    detail: str


@dataclass(frozen=True)
class PlanInterval:
    """A run of minutes with the same committed and elastic units (for storage)."""

    start: dt.datetime
    end: dt.datetime
    committed_units: int
    elastic_units: int
    #: (level, highest value in the interval) per forecast quantile level.
    demand_quantiles: tuple[tuple[float, float], ...]
    #: Expected spill over the interval, in unit-minutes.
    expected_spill_units: float


@dataclass(frozen=True)
class ExpectedCost:
    committed: float
    elastic: float
    spill: float

    @property
    def total(self) -> float:
        return self.committed + self.elastic + self.spill


@dataclass(frozen=True, eq=False)
class Plan:
    deployment: str
    now: dt.datetime
    #: Per minute of ``[now, now + horizon)``.
    committed_units: IntArray
    elastic_target: IntArray
    capacity_target: IntArray
    expected_demand: FloatArray
    expected_spill: FloatArray
    expected_cost: ExpectedCost
    expected_spill_fraction: float
    #: The critical fractile above which a unit beats pay-as-you-go (0: never reserve
    #: for economy alone; capacity then comes from the service level only).
    economic_quantile: float
    #: The spill fraction the plan aimed at (bound x safety, corrected by spill to date).
    target_spill_fraction: float
    payg_cheaper_than_unit: bool
    new_commitments: tuple[Commitment, ...]
    actions: tuple[Action, ...]
    reasons: tuple[Reason, ...]
    forecast_levels: tuple[float, ...]
    #: Forecast quantiles over the horizon (levels x minutes), kept for the intervals.
    forecast_values: FloatArray = field(repr=False)
    #: Capacity the forecast requires per minute, before lead, holds and bridging.
    required_units: IntArray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    #: The cover chosen on the recent replay, with what the bound would cost (None when
    #: the per-minute rule decided).
    cover: Cover | None = None
    #: The bound cannot be met at a sane price (or its overrun repaid economically).
    bound_alert: str | None = None

    @cached_property
    def intervals(self) -> tuple[PlanInterval, ...]:
        """Run-length-encoded plan, ready to store (computed on first use)."""
        return _intervals(self.now, self.committed_units, self.elastic_target,
                          self.forecast_levels, self.forecast_values, self.expected_spill)

    @property
    def horizon_minutes(self) -> int:
        return int(self.elastic_target.shape[0])

    def action_now(self) -> Action | None:
        """The elastic set-target to send at ``now`` (None when nothing changes)."""
        for action in self.actions:
            if action.kind == "elastic_set_target" and action.issue_at == self.now:
                return action
        return None


# ----------------------------------------------------------------------------------------
# Quantile function


@lru_cache(maxsize=64)
def _interp_matrix(levels: tuple[float, ...], points: int) -> tuple[FloatArray, FloatArray]:
    """Matrix mapping quantile values at ``levels`` to a grid of equal-probability points.

    Interpolation is linear in normal score z = Phi^-1(u), extrapolated with the end
    segments' slopes; a single level gives a flat (deterministic) distribution.
    """
    grid = (np.arange(points) + 0.5) / points
    z_grid = ndtri(grid)
    z = ndtri(np.asarray(levels))
    m = np.zeros((points, len(levels)))
    if len(levels) == 1:
        m[:, 0] = 1.0
        return m, grid
    seg = np.clip(np.searchsorted(z, z_grid) - 1, 0, len(levels) - 2)
    w = (z_grid - z[seg]) / (z[seg + 1] - z[seg])
    rows = np.arange(points)
    m[rows, seg] = 1.0 - w
    m[rows, seg + 1] += w
    return m, grid


def quantile_grid(levels: tuple[float, ...], values: FloatArray, points: int) -> FloatArray:
    """Dense quantiles (points x minutes), non-negative and non-decreasing in probability."""
    m, _ = _interp_matrix(levels, points)
    dense = np.maximum(m @ values, 0.0)
    return np.asarray(np.maximum.accumulate(dense, axis=0), dtype=np.float64)


def quantile_at(levels: tuple[float, ...], values: FloatArray, level: float) -> FloatArray:
    """One quantile per minute, interpolated like :func:`quantile_grid`."""
    if len(levels) == 1:
        return np.asarray(values[0], dtype=np.float64)
    z = ndtri(np.asarray(levels))
    zq = float(ndtri(min(max(level, 1e-6), 1 - 1e-6)))
    i = int(np.clip(np.searchsorted(z, zq) - 1, 0, len(levels) - 2))
    w = (zq - z[i]) / (z[i + 1] - z[i])
    return np.asarray(np.maximum((1 - w) * values[i] + w * values[i + 1], 0.0), np.float64)


def expected_spill(dense: FloatArray, capacity: FloatArray) -> FloatArray:
    """E[(D - c)+] per minute under the dense quantile grid."""
    return np.asarray(np.mean(np.maximum(dense - capacity[None, :], 0.0), axis=0), np.float64)


def service_capacity(dense: FloatArray, allowed: FloatArray) -> FloatArray:
    """Smallest real capacity x per minute with E[(D - x)+] <= allowed (vectorised).

    E is convex piecewise linear with breakpoints at the grid values; between the last
    breakpoint above the allowance and the first below, it is solved exactly.
    """
    n = dense.shape[0]
    suffix = np.cumsum(dense[::-1], axis=0)[::-1]  # suffix[j] = sum_{i >= j} Q_i
    above = np.arange(n - 1, -1, -1, dtype=np.float64)[:, None]  # points strictly above j
    suffix_next = np.vstack([suffix[1:], np.zeros((1, dense.shape[1]))])
    e_at = (suffix_next - above * dense) / n  # E at x = Q_j
    ok = e_at <= allowed[None, :] + 1e-15
    j = np.argmax(ok, axis=0)  # first breakpoint meeting the allowance (always the last)
    cols = np.arange(dense.shape[1])
    # On [Q_{j-1}, Q_j]: E(x) = (suffix[j] - (n - j) x) / n.
    x = (suffix[j, cols] - n * allowed) / np.maximum(n - j, 1)
    lower = np.where(j > 0, dense[np.maximum(j - 1, 0), cols], 0.0)
    x = np.clip(x, lower, dense[j, cols])
    return np.asarray(np.where(j == 0, np.minimum(x, dense[0]), x), np.float64)


def _ceil_units(x: FloatArray, tolerance: float) -> IntArray:
    return np.maximum(np.ceil(x - tolerance), 0).astype(np.int64)


# ----------------------------------------------------------------------------------------
# Elastic layers
#
# Each elastic unit-layer ``j`` (the j-th unit above the committed level) is planned from
# its need mask ``need > j`` with operators that are all *increasing* (a larger mask never
# gives a smaller result), so more forecast demand never gives less capacity:
#
# * a new unit serves from ``lead`` on and each needed minute keeps it for ``hold``
#   minutes (a forward dilation): every new interval lasts at least ``hold``;
# * an existing unit is held until its own hold ends and kept on while the (dilated) need
#   continues without a break longer than ``lead``;
# * gaps of at most ``lead`` minutes between held pieces are bridged (releasing and
#   re-requesting would need the request before the release).
#
# Dilating by the whole hold after the last needed minute over-states the tail in the
# plan's picture, but a plan is redone before that tail matters: once the need is past,
# the next plan sees only the unit's own hold (``Holdings``) and releases it then.


def _forward_dilate(mask: np.ndarray, width: int) -> np.ndarray:
    """``out[j, t]`` = any of ``mask[j, t - width + 1 .. t]`` (rows independent)."""
    if width <= 1:
        return mask.copy()
    cs = np.cumsum(mask, axis=1, dtype=np.int64)
    lagged = np.zeros_like(cs)
    lagged[:, width:] = cs[:, :-width]
    return np.asarray((cs - lagged) > 0)


def _close_gaps(mask: np.ndarray, gap: int) -> np.ndarray:
    """Fill interior runs of False of length at most ``gap`` (rows independent)."""
    if gap <= 0 or mask.shape[1] == 0:
        return mask
    n = mask.shape[1]
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(mask, idx, -(10 ** 9)), axis=1)
    nxt = np.minimum.accumulate(np.where(mask, idx, 10 ** 9)[:, ::-1], axis=1)[:, ::-1]
    return np.asarray(mask | ((nxt - prev - 1) <= gap))


def _elastic_layers(
    need: IntArray, blocks: Sequence[ElasticBlock], now: dt.datetime, lead: int, hold: int,
    horizon: int,
) -> IntArray:
    """Elastic units per minute: layer by layer, existing units first (longest hold low)."""
    existing: list[tuple[int, int]] = []
    for block in blocks:
        start = int((block.active_from - now) // MINUTE)
        existing += [(start, start + hold)] * block.units
    existing.sort(key=lambda se: -se[1])
    layers = max(int(need.max(initial=0)), len(existing))
    if layers == 0:
        return np.zeros(horizon, dtype=np.int64)
    t = np.arange(horizon)
    mask = need[None, :] > np.arange(layers)[:, None]
    held = _forward_dilate(mask & (t >= lead)[None, :], hold)
    if existing:
        m = len(existing)
        dilated = _forward_dilate(mask[:m], hold)
        a = np.array([se[0] for se in existing])[:, None]
        b = np.array([se[1] for se in existing])[:, None]
        own = (t[None, :] >= a) & (t[None, :] < b)
        # Held now (a virtual minute before the horizon), each unit is kept on after its
        # own hold for as long as the dilated need continues with breaks of at most lead.
        reach = _close_gaps(np.hstack([np.ones((m, 1), dtype=bool), own | dilated]),
                            lead)[:, 1:]
        p0 = np.clip(b, 0, horizon)
        after = t[None, :] >= p0
        cont = np.logical_and.accumulate(reach | ~after, axis=1) & after
        held[:m] |= own | cont
    held = _close_gaps(held, lead)
    return np.asarray(held.sum(axis=0), dtype=np.int64)


# ----------------------------------------------------------------------------------------
# The plan


def calendar_multiplier(dep: Deployment, now: dt.datetime, minutes: int) -> float:
    """Largest declared calendar multiplier of the local days in ``[now, now + minutes)``
    (1 when none is declared: a launch day declared at 1.8 lets capacity go 1.8x higher)."""
    if not dep.calendar:
        return 1.0
    zone = zoneinfo.ZoneInfo(dep.timezone)
    first = now.astimezone(zone).date()
    last = (now + max(minutes - 1, 0) * MINUTE).astimezone(zone).date()
    m = [e.multiplier for e in dep.calendar if first <= e.date <= last]
    return max([1.0, *m])


def evidence_cap(recent_peak: float, dep: Deployment, now: dt.datetime, minutes: int,
                 factor: float) -> int:
    """Most units (committed + elastic) the evidence supports over the next ``minutes``.

    ``ceil(factor x recent_peak x calendar multiplier)`` within ``[min_units, max_units]``:
    ``recent_peak`` is the highest demand (units per minute) observed recently, so a
    forecast band that explodes after a level change or an outlier cannot buy capacity
    the load never needed.
    """
    peak = max(float(recent_peak), 0.0) if math.isfinite(recent_peak) else 0.0
    units = math.ceil(factor * calendar_multiplier(dep, now, minutes) * peak - 1e-9)
    return int(min(dep.max_units, max(dep.min_units, units)))


@dataclass(frozen=True)
class CommitEvidence:
    """What the commitment decision may stand on: recent observed demand, and the flags
    the daemon raises (usage stale, a sustained run of reported zeros)."""

    #: Observed demand of the last days, units per minute, NaN where missing.
    recent: FloatArray
    stale: bool = False
    zero_run: bool = False
    #: At most this fraction of the last day missing.
    max_missing_fraction: float = 0.5


def commitment_block(ev: CommitEvidence) -> str | None:
    """Why no commitment may be bought now (None: the inputs are sound).

    No commitment on stale, zero or missing demand: a 30-day term bought on a feed that
    stopped, on reported zeros or on a day mostly unreported stands on no evidence.
    """
    if ev.stale:
        return "usage is stale: commitment decisions deferred"
    if ev.zero_run:
        return "a sustained run of reported zeros: no commitment"
    last_day = ev.recent[-1440:]
    seen = last_day[np.isfinite(last_day)]
    if last_day.size == 0 or seen.size < (1.0 - ev.max_missing_fraction) * 1440:
        return "most of the last day is missing: no commitment"
    if float(seen.sum()) <= 0.0:
        return "the last day reported zero demand: no commitment"
    return None


def typical_day_level(recent: FloatArray, days: int = 7, share: float = 0.5,
                      min_days: int = 3) -> float | None:
    """The level each of the last ``days`` whole days needed for ``share`` of its minutes
    (its ``1 - share`` quantile of observed demand), highest day left out: the highest
    of the others.

    A one-day outlier is the day left out, so it never moves the result, while a lasting
    rise (two days or more) does: the most a commitment may stand on. None under
    ``min_days`` observed days (a day needs half its minutes observed).
    """
    n = min(days, recent.shape[0] // 1440)
    levels = []
    for i in range(n):
        day = recent[recent.shape[0] - (i + 1) * 1440: recent.shape[0] - i * 1440]
        seen = day[np.isfinite(day)]
        if seen.size >= 720:
            levels.append(float(np.quantile(seen, 1.0 - share)))
    if len(levels) < max(min_days, 2):
        return None
    return sorted(levels)[-2]


def every_day_bound_level(recent: FloatArray, days: int, fraction: float,
                          min_days: int = 3) -> float | None:
    """The constant level each of the last ``days`` whole days needed to keep its own
    spill within ``fraction``: the lowest of the per-day levels (a level every one of
    them needed, so no single heavy-tailed day drives it). None under ``min_days``
    observed days (a day needs half its minutes observed)."""
    n = min(days, recent.shape[0] // 1440)
    levels = []
    for i in range(n):
        day = recent[recent.shape[0] - (i + 1) * 1440: recent.shape[0] - i * 1440]
        seen = day[np.isfinite(day)]
        if seen.size < 720:
            continue
        spill = constant_level_spill(seen, math.ceil(float(seen.max(initial=0.0)) - 1e-9) + 1)
        ok = np.flatnonzero(spill <= fraction + 1e-12)
        levels.append(float(ok[0]) if ok.size else float(spill.size - 1))
    if len(levels) < max(min_days, 1):
        return None
    return min(levels)


def persisted_level(recent: FloatArray | None, minutes: int) -> float:
    """The demand level held throughout the last ``minutes`` observed (their minimum);
    0 without enough observations (at least half of them)."""
    if recent is None or minutes <= 0:
        return 0.0
    tail = np.asarray(recent[-minutes:], dtype=np.float64)
    seen = tail[np.isfinite(tail)]
    if seen.size * 2 < minutes:
        return 0.0
    return float(seen.min())


def dep_ceiling_per_minute(dep: Deployment) -> float | None:
    """The deployment's configured cost ceiling in dollars per minute (None: default,
    dedicated capacity at the recent peak)."""
    per_hour = dep.cost_ceiling_per_hour
    return per_hour / 60.0 if per_hour > 0 else None


def default_spill_price(deployment: Deployment) -> float:
    """Dollars per spilled unit-minute when the token mix is unknown.

    Takes the cheaper of an all-input and an all-output unit, which errs towards spilling
    (the service-level bound still caps it).
    """
    p = deployment.pricing
    if deployment.spill == "throttle":
        return 0.0
    per_input = deployment.unit_tpm * p.payg_input_per_mtok / 1e6
    w = deployment.output_token_weight
    per_output = deployment.unit_tpm / w * p.payg_output_per_mtok / 1e6 if w > 0 else per_input
    return min(per_input, per_output)


def plan(
    forecast: DemandForecast,
    holdings: Holdings,
    deployment: Deployment,
    now: dt.datetime,
    *,
    settings: PlannerSettings | None = None,
    commit_forecast: DemandForecast | None = None,
    spill_to_date: SpillToDate | None = None,
    spill_price: float | None = None,
    headroom: HeadroomCurve | None = None,
    recent_peak: float | None = None,
    ceiling_per_minute: float | None = None,
    commit_evidence: CommitEvidence | None = None,
    recent: FloatArray | None = None,
) -> Plan:
    """Plan capacity for ``[now, now + horizon)``; buy commitments if ``commit_forecast``.

    ``spill_price`` is dollars per spilled unit-minute (``payg / demand_units`` of the
    recent token mix); by default the cheaper of all-input and all-output.

    ``headroom`` (:func:`scheduler.planning.headroom.headroom_curves`) sets the service
    capacity to the median forecast x (1 + h), h the smallest headroom whose replayed
    spill over the deployment's recent history met the target; a period that has
    spilled more than its share so far aims lower in proportion. Without a curve, or
    when no headroom met the target, the per-minute rule decides: the smallest capacity
    whose expected spill under the forecast band is within the allowance.
    """
    s = settings or PlannerSettings()
    dep = deployment
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    horizon = s.horizon_minutes
    lead, hold = dep.scale_up_lead_minutes, dep.min_hold_minutes
    re = unit_minute_rate(dep.pricing)
    q = default_spill_price(dep) if spill_price is None else spill_price
    if dep.spill == "throttle":
        q = 0.0
    reasons: list[Reason] = []
    values = forecast.window(now, horizon)
    levels = forecast.levels
    dense = quantile_grid(levels, values, s.grid_points)
    mean = np.asarray(dense.mean(axis=0), np.float64)

    # No capacity without evidence: at most a factor of the highest demand seen recently.
    if recent_peak is None and headroom is not None and headroom.observed_minutes:
        recent_peak = headroom.peak
    cap_units = dep.max_units
    if recent_peak is not None:
        cap_units = evidence_cap(recent_peak, dep, now, horizon, s.evidence_factor)

    # Service level: the allowance is the bound x safety, corrected by what was spilled.
    safety = s.throttle_safety if dep.spill == "throttle" else s.payg_safety
    target = dep.max_spill_fraction * safety
    aim = target
    debt = 0.0
    tight_target, tight_aim = target, aim
    if spill_to_date is not None and spill_to_date.demand_unit_minutes > 0:
        budget = target * spill_to_date.demand_unit_minutes
        debt = max(0.0, spill_to_date.spill_unit_minutes - budget)
        if debt > 0:
            # Pay back the excess over the horizon's expected demand (never below zero).
            tight_target = max(0.0, target - debt / max(float(mean.sum()), 1e-9))
            # The calibrated rule aims lower in proportion to the overrun so far.
            tight_aim = aim * budget / spill_to_date.spill_unit_minutes
    use_cover = headroom is not None and applies_to(dep)
    ceiling = (dep_ceiling_per_minute(dep) if ceiling_per_minute is None
               else ceiling_per_minute)
    base_cover = (choose_cover(headroom, dep, aim, q, ceiling_per_minute=ceiling)
                  if use_cover and headroom is not None else None)
    cover = base_cover
    bound_alert: str | None = None
    economic_q = 1.0 - re / q if q > re else 0.0
    x_econ = (quantile_at(levels, values, economic_q) if economic_q > 0
              else np.zeros(horizon))

    def service(c: Cover | None, allowance: float) -> FloatArray:
        if c is None:
            return service_capacity(dense, allowance * mean)
        if c.kind == "headroom":
            return quantile_at(levels, values, 0.5) * (1.0 + (c.headroom or 0.0))
        return np.full(horizon, float(c.level))

    def required(x: FloatArray) -> IntArray:
        need = _ceil_units(np.maximum(x, x_econ), s.round_tolerance)
        return np.clip(np.minimum(need, cap_units), dep.min_units, dep.max_units)

    persisted = persisted_level(recent, s.persist_minutes)

    def service_floor(x: FloatArray, c: Cover | None) -> FloatArray:
        if persisted <= 0 or (c is not None and c.kind == "payg"):
            return x
        x = x.copy()
        x[:s.persist_hold_minutes] = np.maximum(x[:s.persist_hold_minutes], persisted)
        return x

    x_service = service_floor(service(cover, target), cover)
    need = required(x_service)
    if debt > 0:
        # Repaying an overrun is bounded by cost: the extra capacity over the horizon may
        # cost at most what the overrun's spill cost (debt unit-minutes at the spill price).
        tight_cover = (choose_cover(headroom, dep, tight_aim, q, ceiling_per_minute=ceiling)
                       if cover is not None and headroom is not None else None)
        x_tight = service_floor(service(tight_cover, tight_target), tight_cover)
        # Tightening never holds less than the plan would without the overrun.
        need_tight = np.maximum(required(x_tight), need)
        extra = float(np.maximum(need_tight - need, 0).sum()) * re
        allowance_dollars = debt * q
        if extra <= allowance_dollars + 1e-9:
            cover, x_service, need = tight_cover, x_tight, need_tight
            target, aim = tight_target, tight_aim
        else:
            bound_alert = (f"repaying the spill overrun of {debt:,.1f} unit-minutes would "
                           f"cost ${extra:,.2f} of capacity over the next {horizon} minutes, "
                           f"more than the ${allowance_dollars:,.2f} that spill cost: the "
                           f"bound is not met economically, the overrun is not chased")
            reasons.append(Reason(now, "spill", "overrun_not_repaid", None, bound_alert))
    if cover is not None:
        if cover.kind == "headroom":
            reasons.append(Reason(now, "elastic", "calibrated_headroom", 0.5,
                                  f"median forecast x {1.0 + (cover.headroom or 0.0):.3f}: the "
                                  f"smallest headroom whose replayed spill over recent "
                                  f"history met {aim:.3%}"))
        elif cover.kind == "level":
            replay = ("recent days (weighted to the latest"
                      + ("; the heaviest day left out: a few bursts set the bound's level"
                         if cover.left_out_heaviest else "") + ")")
            reasons.append(Reason(now, "elastic", "constant_level", None,
                                  f"{cover.level} units all along: the cheapest cover whose "
                                  f"replayed spill over {replay} met {aim:.3%}"
                                  if cover.meets_aim else
                                  f"{cover.level} units all along: the cheapest cover on "
                                  f"{replay}"))
        else:
            reasons.append(Reason(now, "elastic", "payg_alone", None,
                                  "no reserved unit: pay-as-you-go alone is the cheapest "
                                  "cover on recent history"))
        summary = cover.describe(dep.max_spill_fraction)
        reasons.append(Reason(now, "spill", "cover_on_replay", None, summary))
        if not cover.bound_within_ceiling:
            bound_alert = summary
        elif cover.bound_uncertain or cover.held_below_bound:
            # Heavy-tailed traffic: what the bound costs is said at once (the first plan),
            # with its range, before any overrun can tell; so is a level held under what
            # the bound needs on the whole replay (chosen on the recent days).
            bound_alert = summary if bound_alert is None else summary + "; " + bound_alert
        elif bound_alert is not None:
            bound_alert += "; " + summary
    if int(need.max(initial=0)) >= cap_units and cap_units < dep.max_units:
        reasons.append(Reason(now, "elastic", "evidence_cap", None,
                              f"capacity held within {cap_units} units: {s.evidence_factor:g}x "
                              f"the highest demand observed recently ({recent_peak:.2f})"))

    # Commitments: decided on the cover without an overrun's repayment (that is temporary).
    new_commitments: tuple[Commitment, ...] = ()
    block = None if commit_evidence is None else commitment_block(commit_evidence)
    if commit_forecast is not None and block is not None:
        reasons.append(Reason(now, "committed", "no_commitment", None, block))
    elif commit_forecast is not None and base_cover is not None and base_cover.kind == "payg":
        reasons.append(Reason(now, "committed", "no_commitment", None,
                              "pay-as-you-go alone is the cheapest cover: nothing committed"))
    elif commit_forecast is not None:
        held_elastic = sum(b.units for b in holdings.elastic)
        # A committed unit stands in for the elastic unit the plan would otherwise hold
        # at its layer, and the calibrated rule holds median x (1 + h).
        factor, floor = 1.0, 0.0
        level_cover = base_cover is not None and base_cover.kind == "level"
        if base_cover is not None and base_cover.kind == "headroom":
            factor = 1.0 + (base_cover.headroom or 0.0)
        elif base_cover is not None:
            floor = float(base_cover.level)
        # What the observed days support: the level they needed for more than a term's
        # break-even share of their minutes (x the cover's factor). A constant-level cover
        # holds its level all along, so its units are "needed" all the time; but the level
        # is set by the replay's tail (a heavy recent day drives it), so a
        # commitment stands only on the level *every* recent day needed to meet the bound
        # on its own (the lowest per-day level), never on the pooled level itself.
        max_by_term: dict[int, int] = {}
        if commit_evidence is not None:
            for term, days, min_days in ((30, 7, 3), (7, 3, 2)):
                share = 1.0 - dep.pricing.commit_discount(term) + s.commit_margin
                typical = typical_day_level(commit_evidence.recent, days, min(share, 1.0),
                                            min_days)
                if level_cover and typical is not None:
                    # Three whole days at least for either term: a tail needs more
                    # evidence than a level.
                    every_day = every_day_bound_level(commit_evidence.recent, 7, aim, 3)
                    typical = (None if every_day is None
                               else max(typical, min(floor, every_day)))
                # Under three days observed: no 30-day term on so little evidence.
                max_by_term[term] = (0 if typical is None else max(
                    math.ceil(typical * factor - s.round_tolerance), 0))
            if level_cover and base_cover is not None and base_cover.bound_uncertain \
                    and max_by_term.get(30, 0) > 0:
                # A few bursts set the level (its cost cannot be pinned within 25 %): a
                # 30-day term would leave weeks of a tail on that evidence; 7 days at most.
                max_by_term[30] = 0
                reasons.append(Reason(now, "committed_30d", "no_30d_on_uncertain_level", None,
                                      "the level is set by a few bursts (the bound's cost "
                                      "is uncertain): no 30-day term, 7-day at most"))
        new_commitments = _decide_commitments(
            commit_forecast, holdings.commitments, dep, now, s, reasons, held_elastic,
            factor, floor=floor, max_level=cap_units, max_by_term=max_by_term)
    commitments = holdings.commitments + new_commitments
    committed, committed_cost = committed_profile(commitments, now, horizon, dep.pricing)
    payg_cheaper = economic_q < 0.5
    if q > 0:
        reasons.append(Reason(now, "spill", "payg_vs_unit", economic_q,
                              f"a unit (${re:.4f}/min) beats pay-as-you-go (${q:.4f} per "
                              f"unit-minute) only when needed with probability > "
                              f"{min(1.0, re / q):.3f}"
                              + ("; spill is the economical choice within the bound"
                                 if payg_cheaper else "")))
    else:
        reasons.append(Reason(now, "spill", "payg_vs_unit", None,
                              "spill is free (throttle) or pay-as-you-go is cheaper than any "
                              "unit; capacity is set by the service level alone"))

    elastic_need = np.maximum(need - committed, 0)
    elastic_cap = np.maximum(min(dep.max_units, max(cap_units, dep.min_units)) - committed, 0)
    elastic_need = np.minimum(elastic_need, elastic_cap)
    elastic = _elastic_layers(elastic_need, holdings.elastic, now, lead, hold, horizon)
    capacity = committed + elastic
    if cover is not None:
        # Estimated by the rule the backtest realises: the cover's replayed spill fraction
        # (the forecast band's tail is far wider than what the rule spills).
        exp_spill = mean * cover.spill_fraction
    else:
        exp_spill = expected_spill(dense, capacity.astype(np.float64))
    exp_fraction = float(exp_spill.sum() / mean.sum()) if mean.sum() > 0 else 0.0
    cost = ExpectedCost(
        committed=float(committed_cost.sum()),
        elastic=float(elastic.sum()) * re,
        spill=float(exp_spill.sum()) * q,
    )

    actions = _elastic_actions(elastic, holdings.elastic, now, lead, reasons, need, target)
    actions = [
        Action("buy_commitment", now, now, now, c.units, c.term_days,
               "needed above break-even utilisation over the term")
        for c in new_commitments
    ] + actions
    return Plan(
        deployment=dep.name, now=now, committed_units=committed, elastic_target=elastic,
        capacity_target=capacity, expected_demand=mean, expected_spill=exp_spill,
        expected_cost=cost, expected_spill_fraction=exp_fraction,
        economic_quantile=economic_q, target_spill_fraction=target,
        payg_cheaper_than_unit=payg_cheaper, new_commitments=new_commitments,
        actions=tuple(actions), reasons=tuple(reasons), forecast_levels=levels,
        forecast_values=values, required_units=need, cover=cover, bound_alert=bound_alert,
    )


def _elastic_actions(
    elastic: IntArray, blocks: Sequence[ElasticBlock], now: dt.datetime, lead: int,
    reasons: list[Reason], need: IntArray, target: float,
) -> list[Action]:
    """Set-targets: now (units to hold or request now) and the changes planned after it.

    A unit serving from ``t`` must be requested at ``t - lead``, so the count to hold at
    any decision time ``d`` is the most units planned over ``[d, d + lead]``.
    """
    horizon = elastic.shape[0]
    held = sum(b.units for b in blocks)
    window = lead + 1
    padded = np.concatenate([elastic, np.full(window, elastic[-1] if horizon else 0)])
    wanted = np.lib.stride_tricks.sliding_window_view(padded, window).max(axis=1)[:horizon]
    actions: list[Action] = []
    previous = held
    changes = np.flatnonzero(np.diff(np.concatenate([[held], wanted])) != 0)
    # The daemon re-plans every minute: only the next few changes are worth journalling.
    for step in changes[:MAX_ACTIONS]:
        i = int(step)
        units = int(wanted[i])
        issue = now + i * MINUTE
        up = units > previous
        effective = issue + lead * MINUTE if up else issue
        rule = "scale_up_ahead_of_need" if up else "release_after_hold"
        serve = min(i + lead, horizon - 1)
        detail = (f"need {int(need[serve])} units at {effective:%Y-%m-%dT%H:%MZ} "
                  f"(service-level spill target {target:.4%})")
        actions.append(Action("elastic_set_target", now, issue, effective, units, None,
                              f"{rule}: {detail}"))
        reasons.append(Reason(effective, "elastic", rule, None, detail))
        previous = units
    return actions


def _intervals(
    now: dt.datetime, committed: IntArray, elastic: IntArray, levels: tuple[float, ...],
    values: FloatArray, exp_spill: FloatArray,
) -> tuple[PlanInterval, ...]:
    n = committed.shape[0]
    change = np.flatnonzero((np.diff(committed) != 0) | (np.diff(elastic) != 0)) + 1
    bounds = np.concatenate([[0], change, [n]])
    out = []
    for a, b in itertools.pairwise(int(v) for v in bounds):
        out.append(PlanInterval(
            start=now + a * MINUTE, end=now + b * MINUTE,
            committed_units=int(committed[a]), elastic_units=int(elastic[a]),
            demand_quantiles=tuple((lv, float(values[i, a:b].max()))
                                   for i, lv in enumerate(levels)),
            expected_spill_units=float(exp_spill[a:b].sum()),
        ))
    return tuple(out)


def _decide_commitments(
    fc: DemandForecast, existing: tuple[Commitment, ...], dep: Deployment, now: dt.datetime,
    s: PlannerSettings, reasons: list[Reason], held_elastic: int = 0,
    factor: float = 1.0, *, floor: float = 0.0, max_level: int | None = None,
    max_by_term: dict[int, int] | None = None,
) -> tuple[Commitment, ...]:
    """Buy 30-day, then 7-day units that the median forecast needs often enough.

    ``factor`` scales the median to the capacity the elastic tier would hold instead
    (1 + the calibrated headroom), since that is what a committed unit replaces.

    Elastic units already held cannot be released before their hold ends, so a purchase
    never takes committed + held elastic above ``max_units``.
    """
    bought: list[Commitment] = []
    for term in (30, 7):
        if term not in s.commit_terms:
            continue
        minutes = term * 1440
        values = fc.window(now, min(fc.horizon - _offset(fc, now), minutes))
        basis = np.maximum(quantile_at(fc.levels, values, s.commit_quantile) * factor, floor)
        # A forecast shorter than the term is taken as a repeating profile (a week of
        # forecast is a weekly cycle).
        reps = math.ceil(minutes / basis.shape[0])
        basis = np.tile(basis, reps)[:minutes]
        top_units = dep.max_units if max_level is None else min(dep.max_units, max_level)
        if max_by_term and term in max_by_term:
            # Never above what the observed days support (a one-day outlier, a band).
            top_units = min(top_units, max_by_term[term])
        need = np.minimum(_ceil_units(basis, s.round_tolerance), top_units)
        committed, _ = committed_profile(existing + tuple(bought), now, minutes, dep.pricing)
        gap = need - committed
        period = min(s.commit_period_minutes, minutes)
        break_even = 1.0 - dep.pricing.commit_discount(term)
        threshold = break_even + s.commit_margin
        units = 0
        top = int(gap.max(initial=0))
        for j in range(1, top + 1):
            util = float(np.mean(gap >= j))
            soon = float(np.mean(gap[:period] >= j))
            if util < threshold or soon < threshold:
                break
            units = j
        if units == 0:
            continue
        tranches = s.ladder_tranches_30d if term == 30 else s.ladder_tranches_7d
        level = int(committed[0]) + units
        cap = max(1, math.ceil(level / tranches))
        room = dep.max_units - held_elastic - int(committed.max(initial=0))
        buy = min(units, cap, room)
        if buy < 1:
            continue
        util = float(np.mean(gap >= buy))
        bought.append(Commitment(now, term, buy))
        rate = committed_unit_minute_rate(dep.pricing, term)
        reasons.append(Reason(
            now, f"committed_{term}d", "utilisation_above_break_even", s.commit_quantile,
            f"{units} unit(s) needed > {threshold:.0%} of the {term}-day term (break-even "
            f"{break_even:.0%} at ${rate * 60:.4f}/h); buying {buy} now (ladder cap {cap}); "
            f"the last one bought is needed {util:.0%} of the term"))
    return tuple(bought)


def _offset(fc: DemandForecast, now: dt.datetime) -> int:
    return int((now - fc.start) // MINUTE)

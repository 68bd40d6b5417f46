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

import math
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
    return replay_headroom_rule(demand, headrooms, lead=lead, hold=hold)[0]


def replay_headroom_rule(
    demand: npt.ArrayLike, headrooms: npt.ArrayLike, *, lead: int, hold: int
) -> tuple[FloatArray, FloatArray]:
    """Spill fraction and mean units held of the headroom rule, per series and h.

    As :func:`replayed_spill_fraction`; the second (m, k) array is the mean number of
    active (billed) units per replayed minute, so the rule's cost can be priced.
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
    held = np.zeros((m, k))
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
        held += n_active
        if scored[:, step].any():
            x = truth[:, step, None]
            spill += np.where(scored[:, step, None], np.maximum(x - n_active, 0.0), 0.0)
            total += np.where(scored[:, step, None], x, 0.0)
    frac = np.zeros((m, k))
    np.divide(spill, np.broadcast_to(total, (m, k)), out=frac, where=total > 0)
    return frac, held / max(t - 1, 1)


def applies_to(deployment: Deployment) -> bool:
    """Whether the calibrated rule plans this deployment: spill is paid for (throttled
    requests are lost, so they stay with the per-minute rule) and the bound is not zero
    (no headroom of the grid can promise zero spill)."""
    return deployment.spill == "payg" and deployment.max_spill_fraction > 0


@dataclass(frozen=True)
class ProviderPool:
    """What the provider lets a deployment hold, passed in as data (issue #9).

    ``units``: the most units it can hold at once (None: no limit known), e.g. a pool of
    ``available_units`` elastic units when no commitment term is sold; ``terms``: the
    commitment terms (days) it sells (None: not known, as if every term were).
    """

    units: int | None = None
    terms: tuple[int, ...] | None = None

    @property
    def sells_no_term(self) -> bool:
        return self.terms is not None and not self.terms


@dataclass(frozen=True)
class HeadroomCurve:
    """Replayed spill fraction of the rule at each candidate headroom (ascending).

    The optional fields describe the same replayed window for pricing other covers
    (:func:`choose_cover`): ``capacity`` is the mean units the rule held per minute at each
    headroom; ``level_spill[c]`` is the spill fraction of a constant ``c`` units held all
    along; ``mean_demand`` (units per observed minute), ``peak`` (highest minute) and
    ``observed_minutes`` are the window's demand.
    """

    headrooms: tuple[float, ...]
    spill_fractions: tuple[float, ...]
    capacity: tuple[float, ...] = ()
    level_spill: tuple[float, ...] = ()
    mean_demand: float = 0.0
    peak: float = 0.0
    observed_minutes: int = 0
    #: The spread of ``level_spill`` over block-bootstrap resamples of the window
    #: (:func:`resampled_level_spill`): its low and high percentile at each level. Empty
    #: when not computed. On heavy-tailed traffic the level a bound needs is set by a few
    #: bursts, so one replay cannot pin it down; this says how far it may move.
    level_spill_low: tuple[float, ...] = ()
    level_spill_high: tuple[float, ...] = ()
    #: The window's whole days, counted back from its end (oldest first; an older part
    #: day left over is one more entry): each day's spill above a constant ``c`` units in
    #: unit-minutes, c = 0 .. len(level_spill) - 1, and its demand in unit-minutes. The
    #: level a cover holds is chosen on them (:func:`held_level_spill`); empty: on
    #: ``level_spill``.
    day_spill: tuple[tuple[float, ...], ...] = ()
    day_demand: tuple[float, ...] = ()
    #: The provider's pool and terms (None: unlimited, every term): :func:`choose_cover`
    #: prices no cover above what the pool lets the deployment hold.
    pool: ProviderPool | None = None

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

    def spill_at(self, headroom: float) -> float:
        """Replayed spill fraction at a headroom of the grid."""
        return self.spill_fractions[self.headrooms.index(headroom)]


#: A bound whose cost the resampled replays spread beyond this fraction either side of
#: the replay's own estimate is reported as uncertain (:attr:`Cover.bound_uncertain`).
ESTIMATE_TOLERANCE = 0.25

#: Constant levels priced by :func:`choose_cover` at most (0 .. this many units).
MAX_LEVELS = 4000


def constant_level_spill(demand: npt.ArrayLike, levels: int) -> FloatArray:
    """Spill fraction of holding ``c`` units all along, for c = 0 .. levels - 1.

    ``demand`` is (t,) demand units per minute, NaN where missing (not scored). Exact:
    sum_t max(0, d_t - c) / sum_t d_t, from the sorted demand (O(t log t + levels)).
    """
    d = np.asarray(demand, dtype=np.float64)
    d = np.sort(d[np.isfinite(d)])
    total = float(d.sum())
    c = np.arange(max(levels, 1), dtype=np.float64)
    if total <= 0:
        return np.zeros(c.shape)
    above_sum = np.concatenate([np.cumsum(d[::-1])[::-1], [0.0]])
    first_above = np.searchsorted(d, c, side="right")
    spill = above_sum[first_above] - c * (d.size - first_above)
    return np.asarray(np.maximum(spill, 0.0) / total, np.float64)


#: Half-life, in days, of a whole day's weight in the replay that chooses the constant
#: level a cover holds (:func:`held_level_spill`). A week's replay pooled with equal
#: weights keeps a heavy day's bursts at full weight for seven days, so after a heavy start
#: the level held comes down only as that day leaves the window; halving a day's weight
#: with each day after it lets the days that needed less outweigh it within days.
LEVEL_HALF_LIFE_DAYS = 1.0

#: A quiet spell does not set the level held (:func:`held_level_spill`): a whole day whose
#: demand is at most the window's median day's divided by this is quiet. A weekend before
#: a weekday is quiet; whole days of steady traffic, heavy-tailed bursts included, differ
#: by well under this (gen_bursty: 0.80x-1.35x between two days at the 5th-99th
#: percentile of the ratio), and one heavy day raises no median.
QUIET_DAY_RATIO = 1.5


#: Block bootstrap of the replay: blocks of an hour (bursts and the daily cycle stay
#: whole inside a block), this many draws, and the percentiles kept as the range.
RESAMPLE_BLOCK_MINUTES = 60
RESAMPLE_DRAWS = 100
RESAMPLE_PERCENTILES = (5.0, 95.0)


def resampled_level_spill(
    demand: npt.ArrayLike, levels: int, *, block: int = RESAMPLE_BLOCK_MINUTES,
    draws: int = RESAMPLE_DRAWS, percentiles: tuple[float, float] = RESAMPLE_PERCENTILES,
    seed: int = 0,
) -> tuple[FloatArray, FloatArray]:
    """Low and high percentile, per level c = 0 .. levels - 1, of the spill fraction of a
    constant ``c`` units over windows as long as ``demand`` resampled from its blocks.

    ``demand`` is (t,) demand units per observed minute (NaN dropped first). A block
    bootstrap (whole blocks drawn with replacement, a fixed seed: deterministic) shows how
    much the level meeting a bound depends on which bursts the window happened to hold.
    With under two whole blocks there is nothing to resample: both are the replay itself.
    """
    d = np.asarray(demand, dtype=np.float64)
    d = d[np.isfinite(d)]
    n_blocks = d.size // max(block, 1)
    if n_blocks < 2 or draws < 1:
        one = constant_level_spill(d, levels)
        return one, one
    blocks = d[: n_blocks * block].reshape(n_blocks, block)
    # Spill above a constant level is additive over minutes, so a resample's spill is the
    # sum of its blocks' spills: each block's spill curve is computed once and every draw
    # is a weighted sum (draws x blocks @ blocks x levels), not a re-sort of a week of
    # minutes per draw (100x cheaper; the daemon calibrates every deployment at a refit).
    n_levels = max(levels, 1)
    spill = _block_level_spill(blocks, n_levels)
    rng = np.random.default_rng(seed)
    weights = np.zeros((draws, n_blocks))
    for i in range(draws):
        weights[i] = np.bincount(rng.integers(0, n_blocks, size=n_blocks), minlength=n_blocks)
    totals = weights @ blocks.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(totals[:, None] > 0,
                       np.maximum(weights @ spill, 0.0) / totals[:, None], 0.0)
    lo, hi = np.percentile(out, percentiles, axis=0)
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def _block_level_spill(blocks: FloatArray, levels: int) -> FloatArray:
    """(blocks, levels): sum over each block's minutes of max(0, d - c), c = 0 .. levels-1.

    ``sum_{d > c} d - c * #{d > c}``; a minute of demand d is above the integer levels
    0 .. ceil(d) - 1, so both sums are reverse cumulative sums of per-level tallies.
    """
    n_blocks = blocks.shape[0]
    top = np.clip(np.ceil(blocks) - 1, -1, levels - 1).astype(np.int64)
    pos = top >= 0
    rows = np.broadcast_to(np.arange(n_blocks)[:, None], blocks.shape)[pos]
    sums = np.zeros((n_blocks, levels))
    counts = np.zeros((n_blocks, levels))
    np.add.at(sums, (rows, top[pos]), blocks[pos])
    np.add.at(counts, (rows, top[pos]), 1.0)
    above_sum = np.cumsum(sums[:, ::-1], axis=1)[:, ::-1]
    above_n = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    return np.asarray(above_sum - np.arange(levels) * above_n, np.float64)


def _day_level_spill(demand: FloatArray, levels: int) -> tuple[FloatArray, FloatArray]:
    """Per whole day of ``demand`` counted back from its end (oldest first, an older part
    day left over first of all): spill above c = 0 .. levels - 1 (unit-minutes) and
    demand (unit-minutes). Missing minutes (NaN) count as neither."""
    d = np.where(np.isfinite(demand), demand, 0.0)
    rest = d.size % 1440
    parts = [d[rest:].reshape(-1, 1440)]
    if rest:
        parts.insert(0, d[None, :rest])
    spill = np.vstack([_block_level_spill(p, max(levels, 1)) for p in parts if p.size])
    demand_sum = np.concatenate([p.sum(axis=1) for p in parts if p.size])
    return spill, demand_sum


def held_level_spill(curve: HeadroomCurve, aim: float, *,
                     leave_out_heaviest: bool = False,
                     half_life_days: float = LEVEL_HALF_LIFE_DAYS) -> FloatArray:
    """Spill fraction per constant level on the replay the held level is chosen on.

    The window's days pooled with weights halved every ``half_life_days`` back from the
    most recent one, so days that needed less bring the level down within days of a heavy
    start (a week pooled with equal weights keeps one heavy day's bursts at full weight
    for seven days). With ``leave_out_heaviest`` (two days at least) the day that needed
    the highest level on its own to keep its spill within ``aim`` is left out: one day's
    bursts do not set the level held on the days after it. Without per-day data:
    ``curve.level_spill``.

    A quiet spell does not set the level: when the latest day was quiet (demand at most
    the window's median day's / :data:`QUIET_DAY_RATIO`), the spill at each level is at
    least the latest ordinary day's own spill fraction, so the level held is never under
    what that day needed; unless the window holds the day a week before the coming one
    and it was quiet too (a Sunday after a Saturday). Recency weights alone choose a
    Monday's level on the weekend before it; a lasting fall holds the level of the day
    before it until quiet days are the window's median (half the window), then comes
    down as before.
    """
    pooled = np.asarray(curve.level_spill, dtype=np.float64)
    if not curve.day_spill or not curve.day_demand:
        return pooled
    spill = np.asarray(curve.day_spill, dtype=np.float64)
    dem = np.asarray(curve.day_demand, dtype=np.float64)
    n = dem.size
    if spill.shape != (n, pooled.size):
        return pooled
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    w = np.exp2(-age / half_life_days) if half_life_days > 0 else np.ones(n)
    if leave_out_heaviest and int((dem > 0).sum()) >= 2:
        meets = spill <= aim * dem[:, None] + 1e-9
        own = np.where(meets.any(axis=1), np.argmax(meets, axis=1), pooled.size)
        w = w.copy()
        w[int(np.argmax(np.where(dem > 0, own, -1)))] = 0.0
    total = float(w @ dem)
    held = pooled if total <= 0 else np.maximum(w @ spill, 0.0) / total
    floor = _quiet_spell_floor(spill, dem)
    if floor is not None:
        held = np.maximum(held, floor)
    return np.asarray(held, np.float64)


def _quiet_spell_floor(spill: FloatArray, demand: FloatArray) -> FloatArray | None:
    """The spill fraction per level on the latest ordinary day, when the latest day was
    quiet (its demand at most the window's median day's / :data:`QUIET_DAY_RATIO`) and
    the day a week before the coming one, when the window holds it (the seventh counted
    back from its end), was not quiet too (a weekend's second day follows a quiet one);
    else None. ``spill`` (days, levels) and ``demand`` (days,) are
    :attr:`HeadroomCurve.day_spill` and ``day_demand``, oldest first."""
    typical = float(np.median(demand))
    quiet = demand * QUIET_DAY_RATIO <= typical
    if typical <= 0 or not quiet[-1] or (demand.size >= 7 and quiet[-7]):
        return None
    last = int(np.flatnonzero(~quiet)[-1])
    return np.asarray(np.maximum(spill[last], 0.0) / demand[last], np.float64)


def headroom_curves(
    demand: npt.ArrayLike, *, lead: int, hold: int, grid: tuple[float, ...] = DEFAULT_GRID,
    min_observed_minutes: int = 1440,
) -> list[HeadroomCurve | None]:
    """One curve per row of ``demand`` ((m, t) or (t,)); None with under a day observed."""
    d = np.atleast_2d(np.asarray(demand, dtype=np.float64))
    frac, held = replay_headroom_rule(d, np.asarray(grid), lead=lead, hold=hold)
    observed = np.isfinite(d).sum(axis=1)
    out: list[HeadroomCurve | None] = []
    for i in range(d.shape[0]):
        if observed[i] < min_observed_minutes:
            out.append(None)
            continue
        row = d[i][np.isfinite(d[i])]
        peak = float(row.max(initial=0.0))
        levels = min(MAX_LEVELS, math.ceil(peak - 1e-9) + 1)
        lo, hi = resampled_level_spill(row, levels)
        day_spill, day_demand = _day_level_spill(d[i], levels)
        out.append(HeadroomCurve(
            tuple(grid), tuple(float(x) for x in frac[i]),
            capacity=tuple(float(x) for x in held[i]),
            level_spill=tuple(float(x) for x in constant_level_spill(row, levels)),
            mean_demand=float(row.mean()), peak=peak, observed_minutes=int(observed[i]),
            level_spill_low=tuple(float(x) for x in lo),
            level_spill_high=tuple(float(x) for x in hi),
            day_spill=tuple(tuple(float(x) for x in day) for day in day_spill),
            day_demand=tuple(float(x) for x in day_demand)))
    return out


@dataclass(frozen=True)
class Cover:
    """The capacity rule chosen on the recent replay, and what the bound would cost.

    Costs are dollars per minute of the replayed window (capacity + spill at the recent
    pay-as-you-go price per unit-minute); spill fractions are replayed. ``kind`` is
    ``"headroom"`` (median forecast x (1 + ``headroom``)), ``"level"`` (``level`` units
    all along, priced at the 30-day committed rate: what a constant level is worth
    committing) or ``"payg"`` (no reserved unit at all).
    """

    kind: str
    headroom: float | None
    level: int
    spill_fraction: float
    cost_per_minute: float
    #: Whether the chosen cover meets the plan's aim on the replay.
    meets_aim: bool
    #: The cheapest cover meeting ``max_spill_fraction`` itself, and its replayed spill.
    bound_cost_per_minute: float
    bound_spill_fraction: float
    bound_level: int
    bound_headroom: float | None
    #: The ceiling (default dedicated at the replay's peak) and the least spill a cover
    #: costing at most that buys on the replay.
    ceiling_per_minute: float
    ceiling_spill_fraction: float
    payg_cost_per_minute: float
    #: False for a curve without pricing data: only the headroom rule, costs unknown.
    priced: bool = True
    #: What meeting the bound costs on resampled replays (its low and high percentile),
    #: when the bound's cover is a constant level; NaN when not known.
    bound_cost_low_per_minute: float = math.nan
    bound_cost_high_per_minute: float = math.nan
    #: A constant level held was chosen on the replay without its heaviest day
    #: (:func:`held_level_spill`: a few bursts set the bound's level).
    left_out_heaviest: bool = False
    #: The provider's pool (:class:`ProviderPool`) the cover was chosen under, if any.
    pool: ProviderPool | None = None
    #: The least spill any capacity the pool lets one hold replays (its ``units`` held
    #: all along); 0 without a pool.
    least_spill_fraction: float = 0.0
    #: Whether some capacity the pool lets the deployment hold meets the bound on the
    #: replay (False: no schedule can; the bound's fields then describe the pool held all
    #: along, its least spill).
    bound_possible: bool = True

    @property
    def bound_uncertain(self) -> bool:
        """The replay cannot pin what meeting the bound costs to within
        :data:`ESTIMATE_TOLERANCE` (heavy-tailed traffic: a few bursts set the level)."""
        return _uncertain(self.bound_cost_low_per_minute, self.bound_cost_high_per_minute,
                          self.bound_cost_per_minute)

    @property
    def held_below_bound(self) -> bool:
        """The constant level held (chosen on recent days) is under the level the bound
        needs on the whole replay: the bound may be missed."""
        return (self.priced and self.kind == "level" and self.bound_headroom is None
                and self.level < self.bound_level)

    @property
    def bound_within_ceiling(self) -> bool:
        """The bound is met at a sane price (never when the pool cannot meet it)."""
        if not self.bound_possible:
            return False
        return not self.priced or self.bound_cost_per_minute <= self.ceiling_per_minute + 1e-9

    @property
    def payg_cheapest(self) -> bool:
        """Pay-as-you-go alone is cheaper than every cover holding a reserved unit (never
        said when the provider sells no reservation)."""
        if self.pool is not None and self.pool.sells_no_term:
            return False
        return self.kind == "payg" or (
            self.priced and self.payg_cost_per_minute <= self.cost_per_minute + 1e-12)

    def describe(self, bound: float) -> str:
        """One sentence for a plan's reasons and the backtest summary."""
        if not self.priced:
            return (f"median forecast x {1 + (self.headroom or 0.0):.3f} replayed "
                    f"{self.spill_fraction:.2%} spill on recent history (costs not priced)")
        day = 1440.0
        if not self.bound_possible:
            assert self.pool is not None and self.pool.units is not None
            text = (f"meeting the {bound:.2%} spill bound is not possible with the "
                    f"provider's {self.pool.units} units: least spill "
                    f"{self.least_spill_fraction:.2%} on the recent replay "
                    f"({self.pool.units} units held all along, "
                    f"${self.bound_cost_per_minute * day:,.2f}/day); pay-as-you-go alone "
                    f"costs ${self.payg_cost_per_minute * day:,.2f}/day")
            if self.pool.sells_no_term:
                text += "; the provider sells no reservation"
            elif self.payg_cheapest:
                text += "; pay-as-you-go alone is cheaper than any reservation"
            return text
        text = (f"meeting the {bound:.2%} spill bound on the recent replay costs "
                f"${self.bound_cost_per_minute * day:,.2f}/day "
                f"(${self.bound_cost_per_minute * 43_200:,.0f} per 30 days: "
                + (f"{self.bound_level} units held all along"
                   if self.bound_headroom is None else
                   f"median forecast x {1 + self.bound_headroom:.3f}")
                + (f"; ${self.bound_cost_low_per_minute * day:,.2f}-"
               f"${self.bound_cost_high_per_minute * day:,.2f}/day on resampled replays"
               if math.isfinite(self.bound_cost_low_per_minute)
               and math.isfinite(self.bound_cost_high_per_minute) else "")
            + f"); the ceiling ${self.ceiling_per_minute * day:,.2f}/day buys "
                  f"{self.ceiling_spill_fraction:.2%} spill; pay-as-you-go alone costs "
                  f"${self.payg_cost_per_minute * day:,.2f}/day")
        if not self.bound_within_ceiling:
            text += "; the bound is not met at a sane price, holding the cheapest cover"
        elif self.bound_uncertain:
            text += ("; a few bursts set that level, so the recent replay cannot estimate "
                     f"it within {ESTIMATE_TOLERANCE:.0%}: the bound may be missed or cost "
                     "more")
        if self.bound_within_ceiling and self.held_below_bound:
            text += (f"; the {self.level} units held, chosen on the recent days, are under "
                     f"the {self.bound_level} the bound needs on the whole replay: the bound "
                     "may be missed")
        if self.payg_cheapest:
            text += "; pay-as-you-go alone is cheaper than any reservation"
        return text


def _uncertain(lo: float, hi: float, mid: float) -> bool:
    """A range [lo, hi] around ``mid`` wider than :data:`ESTIMATE_TOLERANCE` either side."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or mid <= 0:
        return False
    return hi > mid * (1 + ESTIMATE_TOLERANCE) or lo < mid * (1 - ESTIMATE_TOLERANCE)


def choose_cover(
    curve: HeadroomCurve, deployment: Deployment, aim: float, spill_price: float,
    *, ceiling_per_minute: float | None = None,
) -> Cover | None:
    """Cheapest cover that meets ``aim`` on the replay, within the cost ceiling.

    Candidates: the headroom rule at each grid point (elastic units, the replay's mean
    holding), a constant level of ``c`` units for every ``c`` up to the replay's peak
    (30-day committed rate) and pay-as-you-go alone (``c = 0``); each costs its capacity
    plus its replayed spill at ``spill_price`` dollars per unit-minute. The smallest
    headroom meeting ``aim`` (:meth:`HeadroomCurve.headroom_for`) is kept whenever it
    costs at most the ceiling; otherwise the cheapest cover meeting ``aim`` is held.
    When no cover meets ``aim`` at or under the ceiling (default: dedicated capacity at
    the replay's peak), the cheapest cover of all is held and the bound is reported,
    not chased.
    A curve without pricing data gives the smallest headroom meeting ``aim`` (None when
    none does).

    With the provider's pool on the curve (``curve.pool.units``), no schedule holds more
    than those units: the least spill is those units held all along, every cover's
    replayed spill is at least that, and when it is above the bound the bound is
    reported as not possible with the pool (:attr:`Cover.bound_possible`) rather than
    priced on capacity the provider cannot grant. The cover the plan holds is still
    chosen as without the pool: asking beyond it is refused whole and capped, and keeps
    asking in case the pool grows.
    """
    if not curve.level_spill or not curve.capacity:
        hr = curve.headroom_for(aim)
        if hr is None:
            return None
        nan = math.nan
        return Cover("headroom", hr, 0, curve.spill_at(hr), nan, True, nan, nan, 0, None,
                     math.inf, nan, nan, priced=False)
    p = deployment.pricing
    re = p.elastic_unit_hour / 60.0
    r30 = p.elastic_unit_hour * (1.0 - p.commit_30d_discount) / 60.0
    q = max(spill_price, 0.0)
    dem = curve.mean_demand
    h = np.asarray(curve.headrooms)
    h_spill = np.asarray(curve.spill_fractions)
    h_cost = np.asarray(curve.capacity) * re + h_spill * dem * q
    c_spill = np.asarray(curve.level_spill)
    levels = np.arange(c_spill.size)
    c_cost = levels * r30 + c_spill * dem * q
    ceiling = (ceiling_per_minute if ceiling_per_minute is not None and ceiling_per_minute > 0
               else math.ceil(curve.peak - 1e-9) * p.dedicated_per_unit_month / 43_200.0)
    tol = 1e-12

    def cheapest(target: float, c_spill: FloatArray = c_spill,
                 c_cost: FloatArray = c_cost) -> tuple[str, int, float]:
        """(kind, index, cost) of the cheapest cover meeting ``target``."""
        lv = np.flatnonzero(c_spill <= target + tol)
        best_c = int(lv[np.argmin(c_cost[lv])]) if lv.size else c_spill.size - 1
        hr = curve.headroom_for(target)
        if hr is not None:
            i = curve.headrooms.index(hr)
            # A calibrated headroom that meets the target is kept (a constant level priced
            # at the 30-day rate looks cheaper on a replay than it is when demand falls).
            if h_cost[i] <= ceiling + 1e-9 or h_cost[i] <= c_cost[best_c]:
                return "headroom", i, float(h_cost[i])
        return "level", best_c, float(c_cost[best_c])

    b_kind, b_i, b_cost = cheapest(deployment.max_spill_fraction)
    b_spill = float(h_spill[b_i] if b_kind == "headroom" else c_spill[b_i])
    affordable_spill = np.concatenate([h_spill[h_cost <= ceiling + 1e-9],
                                       c_spill[c_cost <= ceiling + 1e-9]])
    ceiling_spill = float(affordable_spill.min()) if affordable_spill.size else 1.0
    lo_cost = hi_cost = math.nan
    bound = deployment.max_spill_fraction
    # A limited pool: no schedule holds more than its units, so none spills less than
    # those units held all along replay (the headroom rule's replay does not see the cap).
    pool = curve.pool
    least = 0.0
    possible = True
    if pool is not None and pool.units is not None and pool.units < c_spill.size - 1:
        top = max(pool.units, 0)
        least = float(c_spill[top])
        ceiling_spill = max(ceiling_spill, least)
        if least > bound + tol:
            possible = False
            # What the bound's fields then say: the pool held all along, at the elastic
            # rate when no term is sold (no level can be committed).
            rate = re if pool.sells_no_term else r30
            b_kind, b_i, b_spill = "level", top, least
            b_cost = float(top * rate + least * dem * q)
    if possible and b_kind == "level" and curve.level_spill_low and curve.level_spill_high:
        def level_cost(spills: tuple[float, ...]) -> float:
            s = np.asarray(spills)
            ok = np.flatnonzero(s <= bound + tol)
            c = int(ok[0]) if ok.size else s.size - 1
            return float(c * r30 + s[c] * dem * q)

        # A prediction, not the replay's own spread: the coming window varies as much
        # as the replayed one did, on top of the replay's error (independent: sqrt 2).
        mid = b_cost
        lo_cost = max(mid - math.sqrt(2.0) * (mid - level_cost(curve.level_spill_low)), 0.0)
        hi_cost = mid + math.sqrt(2.0) * (level_cost(curve.level_spill_high) - mid)
    # The level held is chosen on the replay weighted to recent days, and without the
    # heaviest day when a few bursts set the bound's level (its resampled range is wide);
    # what the bound costs is estimated on the pooled replay and its resamples.
    leave_out = _uncertain(lo_cost, hi_cost, b_cost) and len(curve.day_demand) >= 2
    held_spill = held_level_spill(curve, aim, leave_out_heaviest=leave_out)
    held_cost = levels * r30 + held_spill * dem * q
    kind, i, cost = cheapest(aim, held_spill, held_cost)
    meets = True
    if cost > ceiling + 1e-9:
        # Not met at a sane price: hold the cheapest cover of all.
        meets = False
        ih, ic = int(np.argmin(h_cost)), int(np.argmin(held_cost))
        kind, i, cost = (("headroom", ih, float(h_cost[ih])) if h_cost[ih] < held_cost[ic]
                         else ("level", ic, float(held_cost[ic])))
    if kind == "level" and i == 0:
        kind = "payg"
    spill = max(float(h_spill[i] if kind == "headroom" else held_spill[i]), least)
    return Cover(
        kind=kind, headroom=float(h[i]) if kind == "headroom" else None,
        level=i if kind != "headroom" else 0,
        spill_fraction=spill,
        cost_per_minute=cost, meets_aim=meets and spill <= aim + tol,
        bound_cost_per_minute=b_cost,
        bound_spill_fraction=b_spill, bound_level=b_i if b_kind == "level" else 0,
        bound_headroom=float(h[b_i]) if b_kind == "headroom" else None,
        ceiling_per_minute=float(ceiling), ceiling_spill_fraction=ceiling_spill,
        payg_cost_per_minute=float(c_cost[0]),
        bound_cost_low_per_minute=lo_cost, bound_cost_high_per_minute=hi_cost,
        left_out_heaviest=leave_out and kind == "level",
        pool=pool, least_spill_fraction=least, bound_possible=possible,
    )


def carry_forward(x: FloatArray) -> FloatArray:
    """NaN replaced by the last observed value of its row (0 before the first)."""
    t = x.shape[1]
    ok = np.isfinite(x)
    idx = np.where(ok, np.arange(t)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = np.take_along_axis(x, idx, axis=1)
    return np.asarray(np.where(np.isfinite(out), out, 0.0), np.float64)

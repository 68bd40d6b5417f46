"""A seasonal-naive component read straight from the history, combined with the model.

The forecaster's harmonic regression smooths sharp steps (a load that jumps from 1 to 3
units at 08:00 every day comes out as a ramp with wide quantiles), and with a tight spill
bound the planner then has to hold the top of that ramp for hours. The history itself
says more: when the same minute of the day (or of the week) took the same value on each
of the last ``N`` days (weeks), and today has followed that pattern so far, the
pattern is trusted.

The rule, per forecast minute ``now + h`` and per season (daily, then weekly):

* the samples are the observations at the same *local* time ``k`` periods before
  ``now + h`` (``now + h - k * period`` in UTC, shifted by the change of the deployment's
  UTC offset in between: 1380 or 1500 minutes back across a daylight-saving change, so
  local peaks are not an hour late for a week after it) for the ``N`` most recent ``k``
  that lie in the past (``k * period > h``);
* they *agree* when at least half of them (and at least two) are observed and the
  observed ones satisfy ``max - min <= rel_tol * max``: a few unreported minutes do not
  void the envelope (a lossy pipeline would otherwise distrust a third of all minutes
  at 5 % missing and re-plan from the wider model band);
* the season is *followed today* when, over the last ``check_minutes`` minutes, every
  observed minute whose own samples agree was within ``rel_tol`` of them (and at least
  a sixth of those minutes, and 10, were so judged);
* a run of at most an hour of untrusted minutes between two trusted minutes of the same
  value takes that value (its samples were unreported, the stretch is flat);
* where the samples agree and the season is followed, every quantile of that minute is
  replaced by the largest sample (the envelope's top: no smoothing, no spread). Elsewhere
  the model's quantiles stand unchanged.

On real traffic (ServeGen traces) same-minute observations practically never agree within
1 %, so the model's quantiles are used there; on a strictly periodic load (the field case)
the envelope takes over and the plan follows the steps to the minute. Pure and cheap:
``O(N x horizon)`` gathers per call.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence

import numpy as np

from scheduler.planning.economics import FloatArray

#: Today's minutes (at least) that must have agreeing samples to judge today.
_MIN_JUDGED = 10
#: (period in minutes, samples): the last 7 days, then the last 3 weeks.
DEFAULT_SEASONS: tuple[tuple[int, int], ...] = ((1440, 7), (10_080, 3))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: UTC offsets are looked up on a quarter-hour grid: every real time-zone transition
#: happens on a quarter-hour boundary.
_OFFSET_GRID_MINUTES = 15


def utc_offsets(utc_minutes: np.ndarray, timezone: str | None) -> np.ndarray:
    """The zone's UTC offset (minutes) at each of ``utc_minutes`` (minutes since the epoch)."""
    if timezone in (None, "UTC", "Etc/UTC") or utc_minutes.size == 0:
        return np.zeros(utc_minutes.shape, dtype=np.int64)
    zone = zoneinfo.ZoneInfo(timezone)
    q = np.floor_divide(utc_minutes, _OFFSET_GRID_MINUTES)
    q0, q1 = int(q.min()), int(q.max())
    table = np.empty(q1 - q0 + 1, dtype=np.int64)
    for j in range(q1 - q0 + 1):
        instant = _EPOCH + dt.timedelta(minutes=(q0 + j) * _OFFSET_GRID_MINUTES)
        off = instant.astimezone(zone).utcoffset() or dt.timedelta(0)
        table[j] = int(off // dt.timedelta(minutes=1))
    out: np.ndarray = table[q - q0]
    return out


def _samples(history: FloatArray, offsets: np.ndarray, period: int, count: int,
             now_minutes: int | None = None, timezone: str | None = None) -> FloatArray:
    """Observations at the same local time ``k`` periods before ``len(history) + offsets``
    for the ``count`` most recent ``k`` in the past; NaN where the history does not reach
    (count x len(offsets)). ``now_minutes`` (UTC minutes since the epoch of index
    ``len(history)``) and ``timezone`` place the history in local time; without them
    the lag is exactly ``k * period``."""
    n = history.shape[0]
    k0 = np.maximum(np.floor_divide(offsets, period) + 1, 1)
    ks = k0[None, :] + np.arange(count)[:, None]
    idx = n + offsets[None, :] - ks * period
    if now_minutes is not None and timezone not in (None, "UTC", "Etc/UTC"):
        target = now_minutes + offsets
        back = target[None, :] - ks * period
        # Same local clock time: move by the change of UTC offset between the two days.
        shift = (utc_offsets(target, timezone)[None, :]
                 - utc_offsets(back.reshape(-1), timezone).reshape(back.shape))
        idx = idx + shift
    ok = (idx >= 0) & (idx < n)
    out = np.full(idx.shape, np.nan)
    out[ok] = history[idx[ok]]
    return out


def _spare(offsets: np.ndarray, period: int, count: int) -> np.ndarray | None:
    """(count, len(offsets)): which of :func:`_samples`' rows may be set aside as one
    unusual day: a daily season's samples except the one a whole week back (same
    weekday). None for a weekly season (only a few samples: never set one aside)."""
    if period >= 10_080:
        return None
    k0 = np.maximum(np.floor_divide(offsets, period) + 1, 1)
    ks = k0[None, :] + np.arange(count)[:, None]
    return np.asarray(ks * period % 10_080 != 0)


def _agree(samples: FloatArray, rel_tol: float, *, spare: np.ndarray | None = None
           ) -> tuple[np.ndarray, FloatArray]:
    """Per column: do the observed samples agree within ``rel_tol``, and their top.

    ``spare`` (count, columns) marks the samples that may be set aside, one per column,
    when the rest (still enough of them) agree: one unusual day (a one-off launch, an
    incident, an outage) then no longer voids the daily envelope for the week after it.
    The sample a whole week back is never spare (see :func:`_spare`): a weekly pattern
    (a quiet Sunday, a Monday peak) shows there and is the weekly season's to judge.
    Setting aside the top lowers the envelope's value to the next one.
    """
    observed = np.isfinite(samples)
    need = max(2, (samples.shape[0] + 1) // 2)
    count = observed.sum(axis=0)
    enough = count >= need
    hi_s = np.where(observed, samples, -np.inf)
    lo_s = np.where(observed, samples, np.inf)
    top = hi_s.max(axis=0)
    low = lo_s.min(axis=0)

    def within(t: FloatArray, lo: FloatArray) -> np.ndarray:
        return np.asarray((t - lo) <= rel_tol * np.abs(t) + 1e-12)

    ok = enough & within(top, low)
    if spare is not None and samples.shape[0] >= 3:
        fewer = count - 1 >= need
        # Without the lowest sample: the top stays the envelope's value.
        i_lo = lo_s.argmin(axis=0)
        lo2 = np.partition(lo_s, 1, axis=0)[1]
        pick = np.take_along_axis
        drop_low = ~ok & fewer & within(top, lo2) & pick(spare, i_lo[None, :], axis=0)[0]
        # Without the highest sample (not the same weekday as the target).
        i_hi = hi_s.argmax(axis=0)
        top2 = -np.partition(-hi_s, 1, axis=0)[1]
        drop_high = (~ok & ~drop_low & fewer & within(top2, low)
                     & pick(spare, i_hi[None, :], axis=0)[0])
        top = np.where(drop_high, top2, top)
        ok = ok | drop_low | drop_high
    top = np.where(enough, top, 0.0)
    return ok, top


def seasonal_envelope(
    history: FloatArray, horizon: int, *, seasons: Sequence[tuple[int, int]] = DEFAULT_SEASONS,
    rel_tol: float = 0.01, check_minutes: int = 60, now: dt.datetime | None = None,
    timezone: str | None = None, max_hole_minutes: int = 60,
) -> tuple[np.ndarray, FloatArray]:
    """Where the history's seasonal samples agree (and today follows them): mask and value.

    ``history`` holds the observations up to now (the last element is the minute before
    now; NaN = missing). ``now`` (timezone-aware) and ``timezone`` (IANA name) make the
    samples local-time aligned; without them the lags are whole UTC periods. Runs of at
    most ``max_hole_minutes`` untrusted minutes inside a flat trusted stretch take its
    value. Returns ``(trusted, value)`` for the minutes ``[now, now+horizon)``.
    """
    history = np.asarray(history, dtype=np.float64)
    now_minutes = (None if now is None else
                   int((now.astimezone(dt.UTC).replace(second=0, microsecond=0) - _EPOCH)
                       // dt.timedelta(minutes=1)))

    trusted = np.zeros(horizon, dtype=bool)
    value = np.zeros(horizon)
    if history.size == 0 or horizon <= 0:
        return trusted, value
    ahead = np.arange(horizon)

    def season(period: int, count: int, spare: str) -> tuple[np.ndarray, FloatArray] | None:
        """(agree, top) over the horizon, or None when the history is too short or today
        has not followed the season. ``spare``: which samples may be set aside as one
        unusual day: "none", "not-weekly" (not the one a whole week back) or "any"."""
        if history.size < period * count:
            return None
        # Today so far: the last check_minutes observations against their own samples.
        check = min(check_minutes, history.size - period * count)
        if check <= 0:
            return None
        past = np.arange(-check, 0)

        def mask(offsets: np.ndarray) -> np.ndarray | None:
            if spare == "none":
                return None
            if spare == "any":
                return np.ones((count, offsets.size), dtype=bool)
            return _spare(offsets, period, count)

        ok_past, top_past = _agree(_samples(history, past, period, count, now_minutes,
                                            timezone), rel_tol, spare=mask(past))
        seen = history[past]
        judged = ok_past & np.isfinite(seen)
        # Enough of today's minutes must be judged; a lossy feed (a daily hole of most of
        # an hour) still leaves enough observed ones to tell whether today follows.
        if judged.sum() < max(_MIN_JUDGED, check // 6):
            return None
        if (np.abs(seen[judged] - top_past[judged]) > rel_tol * np.abs(top_past[judged])
                + 1e-12).any():
            return None
        return _agree(_samples(history, ahead, period, count, now_minutes, timezone),
                      rel_tol, spare=mask(ahead))

    for period, count in seasons:
        # A daily season may set aside one unusual day among its samples, except the one
        # a whole week back (same weekday: a weekly pattern is the weekly season's to
        # judge); a weekly season's few samples are all kept.
        got = season(period, count, "not-weekly" if period < 10_080 else "none")
        if got is None:
            continue
        ok, top = got
        new = ok & ~trusted
        value[new] = top[new]
        trusted |= new
    if len(seasons) == 2 and seasons[0][0] < 10_080 <= seasons[1][0] and not trusted.all():
        # An unusual day exactly a week back (cases/one-off-spike, a week on) voids both
        # seasons above. Set it aside in both at once: trusted only where the daily samples
        # without it and the weekly samples without one of theirs agree on the same value
        # (a weekly pattern keeps its weekly samples in agreement, so it never lands here).
        daily = season(*seasons[0], "any")
        weekly = season(*seasons[1], "any")
        if daily is not None and weekly is not None:
            (ok_d, top_d), (ok_w, top_w) = daily, weekly
            same = np.abs(top_d - top_w) <= rel_tol * np.maximum(np.abs(top_d),
                                                                 np.abs(top_w)) + 1e-12
            new = ok_d & ok_w & same & ~trusted
            value[new] = np.maximum(top_d, top_w)[new]
            trusted |= new
    _fill_holes(trusted, value, max_hole_minutes)
    return trusted, value


def _fill_holes(trusted: np.ndarray, value: FloatArray, max_hole: int) -> None:
    """Trust a run of at most ``max_hole`` untrusted minutes between two trusted minutes
    of the same value (in place): the minutes inside a flat stretch whose own samples
    were unreported (the same minutes lost every day, or by chance) carry that value;
    distrusting them would hand single minutes to the wider model band and add a unit
    for a minimum hold each time."""
    if max_hole <= 0 or trusted.all() or not trusted.any():
        return
    edges = np.flatnonzero(np.diff(trusted.astype(np.int8)))
    # Untrusted runs start after a 1->0 edge and end at the next 0->1 edge.
    for i in edges[trusted[edges]].tolist():
        after = np.flatnonzero(trusted[i + 1:])
        if after.size == 0:
            break
        j = i + 1 + int(after[0])
        if j - i - 1 <= max_hole and value[i] == value[j]:
            trusted[i + 1:j] = True
            value[i + 1:j] = value[i]


def combine(values: FloatArray, history: FloatArray, *,
            past_scale: FloatArray | None = None, ahead_scale: FloatArray | None = None,
            **kwargs: object) -> FloatArray:
    """Model quantiles (levels x minutes) with the trusted seasonal envelope laid over them.

    ``past_scale`` / ``ahead_scale``: the declared calendar multiplier of each minute of
    ``history`` / of the horizon (1 on ordinary days). The envelope is read on the
    history divided by its multipliers and laid over the horizon times its own, so a
    declared 3x day follows its usual pattern x 3 (today's minutes are judged on the
    same scale) instead of falling back to the model's quantiles, whose ~1 % wiggle
    around an exact level flips a whole unit on and off for a minimum hold each time.
    """
    if past_scale is not None:
        # A day declared at multiplier 0 (closed) says nothing of the usual pattern.
        history = np.asarray(history, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            history = np.where(past_scale > 0, history / np.where(past_scale > 0, past_scale,
                                                                   1.0), np.nan)
    trusted, value = seasonal_envelope(history, values.shape[1], **kwargs)  # type: ignore[arg-type]
    if not trusted.any():
        return values
    if ahead_scale is not None:
        value = value * ahead_scale
    out = np.array(values, dtype=np.float64, copy=True)
    out[:, trusted] = value[trusted]
    return out

"""A declared calendar day follows its usual pattern x its multiplier (seasonal envelope)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from scheduler.config import CalendarEntry
from scheduler.planning import seasonal
from scheduler.planning.inputs import calendar_scale

UTC = dt.UTC


def test_calendar_scale_marks_the_declared_local_day() -> None:
    start = dt.datetime(2026, 3, 16, 22, tzinfo=UTC)
    cal = (CalendarEntry(dt.date(2026, 3, 17), multiplier=3.0),)
    s = calendar_scale(cal, "UTC", start, 30 * 60)
    assert s[: 2 * 60].tolist() == [1.0] * 120 and (s[120:120 + 1440] == 3.0).all()
    assert (s[120 + 1440:] == 1.0).all()
    berlin = calendar_scale(cal, "Europe/Berlin", start, 3 * 60)  # 23:00 local at start
    assert berlin[0] == 1.0 and berlin[60] == 3.0


def test_a_declared_day_keeps_the_envelope_times_its_multiplier() -> None:
    day = 1440
    hist = np.tile(np.where(np.arange(day) // 60 % 24 >= 8, 3.0, 1.0), 8)[: 7 * day + 120]
    hist[7 * day:] *= 3.0  # today (declared x3) so far: its first two hours
    model = np.full((3, 60), 3.0) + np.array([[-0.1], [0.02], [0.2]])  # a wiggling band
    past = np.ones(hist.size)
    past[7 * day:] = 3.0
    ahead = np.full(60, 3.0)
    plain = seasonal.combine(model, hist)
    assert np.array_equal(plain, model)  # today does not follow the unscaled pattern
    out = seasonal.combine(model, hist, past_scale=past, ahead_scale=ahead)
    assert np.allclose(out, 3.0)  # the envelope x 3: exactly the declared level


def test_a_day_declared_closed_is_not_read_as_the_usual_pattern() -> None:
    """multiplier = 0 (a closed day) is allowed: its minutes are unknown, not infinite."""
    day = 1440
    hist = np.tile(np.where(np.arange(day) // 60 % 24 >= 8, 3.0, 1.0), 8)[: 7 * day + 120]
    past = np.ones(hist.size)
    past[3 * day:4 * day] = 0.0
    hist[3 * day:4 * day] = 0.0
    model = np.full((3, 60), 3.0)
    with np.errstate(all="raise"):
        out = seasonal.combine(model, hist, past_scale=past, ahead_scale=np.ones(60))
    assert np.isfinite(out).all()

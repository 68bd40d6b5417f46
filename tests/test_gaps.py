"""The data-quality rules (forecasting._gaps): zeros vs missing, sustained zeros, evidence."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import forecasting

DAY = 1440


def daily(days: int, night: float = 1.0, day: float = 3.0, idle_night: bool = False
          ) -> np.ndarray:
    minute = np.arange(days * DAY) % DAY
    busy = (minute >= 480) & (minute < 1080)
    return np.where(busy, day, 0.0 if idle_night else night)


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 600), min_run=st.integers(1, 30), max_run=st.integers(0, 300))
def test_gap_mask_follows_the_run_rule(length: int, min_run: int, max_run: int) -> None:
    values = np.concatenate([np.ones(50), np.zeros(length), np.ones(50)])
    missing = np.zeros(values.size, dtype=bool)
    mask = forecasting.gap_mask(values, missing, min_run=min_run, max_run=max_run)
    expected = forecasting.zero_run_is_gap(length, min_run, max_run)
    assert bool(mask[50:50 + length].all()) == expected
    assert not mask[:50].any() and not mask[-50:].any()
    # A long run of reported zeros is load; its truly missing minutes stay missing.
    missing[60] = True
    mask = forecasting.gap_mask(values, missing, min_run=min_run, max_run=max_run)
    assert mask[60]


@settings(max_examples=40, deadline=None)
@given(hour=st.integers(0, 23), minutes=st.integers(121, 20 * 60), level=st.floats(0.5, 50))
def test_a_deployment_that_went_quiet_is_sustained_zeros(hour: int, minutes: int,
                                                         level: float) -> None:
    y = daily(14, night=level, day=3 * level)
    stop = 13 * DAY + hour * 60
    history = np.concatenate([y[:stop], np.zeros(minutes)])
    assert forecasting.sustained_zeros(history) == minutes
    # Under the zero-load limit the run may still be a logging gap.
    assert forecasting.sustained_zeros(history[: stop + 119]) == 0


@settings(max_examples=40, deadline=None)
@given(hour=st.integers(0, 7))
def test_nightly_idle_is_the_usual_shape_not_sustained_zeros(hour: int) -> None:
    y = daily(15, idle_night=True)
    now = 14 * DAY + hour * 60 + 59  # inside the 18:00-08:00 idle stretch
    assert forecasting.sustained_zeros(y[:now]) == 0
    # A whole day of zeros is sustained whatever came before.
    assert forecasting.sustained_zeros(np.concatenate([y, np.zeros(DAY)])) >= DAY


@settings(max_examples=80, deadline=None)
@given(hourly=st.lists(st.one_of(st.floats(0, 9), st.just(float("nan"))), min_size=1,
                       max_size=48),
       share=st.floats(0.05, 1.0))
def test_evidence_level_is_reached_in_its_share_and_missing_is_no_evidence(
        hourly: list[float], share: float) -> None:
    demand = np.repeat(np.array(hourly), 60)
    level = forecasting.evidence_level(demand, share)
    need = np.where(np.isfinite(demand), np.ceil(demand - 1e-9), 0)
    assert np.mean(need >= level) >= share - 1e-9
    assert np.mean(need >= level + 1) < share
    assert forecasting.evidence_level(np.full(demand.size, np.nan), share) == 0
    # A window longer than the history counts the rest as missing.
    assert forecasting.evidence_level(demand, share, window=4 * demand.size) <= level

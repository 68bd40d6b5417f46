from __future__ import annotations

import datetime as dt

import numpy as np

from scheduler.config import parse_config
from scheduler.pipeline.forecast import History, HistoryBuffer

DEPLOYMENT = parse_config({"deployment": [
    {"name": "d", "provider": "simulated", "unit_tpm": 1, "pricing": {"elastic_unit_hour": 1}}]
}).deployments[0]
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def history(start: dt.datetime, values: np.ndarray) -> History:
    return History(DEPLOYMENT, 1, start, values.astype(float), values * 10.0, values * 20.0)


def test_buffer_matches_a_fresh_read_across_the_shift() -> None:
    truth = np.arange(400, dtype=float)
    truth[50:60] = np.nan  # a gap stays a gap
    buffer = HistoryBuffer(history(T0, truth[:100]), spare_minutes=30)
    for end in range(101, 400):
        # Each tick re-reads the last 5 minutes; one late minute arrives only now.
        fresh = truth[end - 5: end].copy()
        view = buffer.update(history(T0 + dt.timedelta(minutes=end - 5), fresh))
        expected = truth[end - 100: end]
        assert view.start == T0 + dt.timedelta(minutes=end - 100)
        np.testing.assert_array_equal(view.demand, expected)
        np.testing.assert_array_equal(view.output_tokens, expected * 20)


def test_a_long_absence_leaves_missing_minutes_missing() -> None:
    buffer = HistoryBuffer(history(T0, np.ones(60)), spare_minutes=10)
    view = buffer.update(history(T0 + dt.timedelta(minutes=200), np.full(2, 5.0)))
    assert view.end == T0 + dt.timedelta(minutes=202)
    assert np.isnan(view.demand[:-2]).all()
    assert list(view.demand[-2:]) == [5.0, 5.0]

"""Stream keys, the many-to-many key lookup, and the latest value per stream."""

from __future__ import annotations

import numpy as np

from alerts.streams import MISSING_T, SLOTS, LatestValues, expand, metric_code


def test_expand_finds_every_match_in_query_order() -> None:
    keys = np.array([3, 5, 5, 9], dtype=np.int64)
    rows, at = expand(keys, np.array([5, 1, 9, 5], dtype=np.int64))
    assert rows.tolist() == [0, 0, 2, 3, 3]
    assert at.tolist() == [1, 2, 3, 1, 2]
    empty_rows, empty_at = expand(keys, np.array([], dtype=np.int64))
    assert (empty_rows.tolist(), empty_at.tolist()) == ([], [])


def test_latest_keeps_the_newest_value_and_reports_what_changed() -> None:
    latest = LatestValues()
    latest.ensure(2)
    hr = 1 * SLOTS + metric_code("heart_rate")
    spo2 = 1 * SLOTS + metric_code("spo2")
    pk = np.array([hr, hr, spo2, hr], dtype=np.int64)
    t = np.array([20, 10, 5, 15], dtype=np.int64)
    latest.update(pk, t, np.array([80.0, 70.0, np.nan, 75.0]))
    assert (latest.t[hr], latest.v[hr]) == (20, 80.0)
    assert latest.t[spo2] == MISSING_T  # a NaN value is not a value
    assert latest.newer(np.array([hr, hr]), np.array([20, 21])).tolist() == [False, True]
    assert latest.take_dirty().tolist() == [hr]
    assert latest.take_dirty().tolist() == []
    frame = latest.frame(np.array([hr, spo2]), ["P0", "P1"])
    assert frame.rows() == [(hr, "P1", "heart_rate", 20, 80.0)]

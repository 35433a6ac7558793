"""Stream keys, the many-to-many key lookup, the latest value per stream, and the readings
frame keyed by stream."""

from __future__ import annotations

import numpy as np
import polars as pl

from alerts.compile import compile_plans
from alerts.signals import readings_frame
from alerts.streams import MISSING_T, SLOTS, LatestValues, expand, metric_code, positions
from tests.alerts.helpers import T0, assignments, batch, plan, rule_toml


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


def test_positions_match_isin_on_sorted_keys() -> None:
    keys = np.array([2, 4, 7, 9], dtype=np.uint32)
    wanted = np.array([9, 1, 4, 4, 10], dtype=np.uint32)
    assert positions(keys, wanted).tolist() == np.flatnonzero(np.isin(keys, wanted)).tolist()
    assert positions(keys, np.zeros(0, dtype=np.uint32)).tolist() == []
    assert positions(np.zeros(0, dtype=np.uint32), wanted).tolist() == []


def test_readings_frame_keeps_planned_patients_in_batch_order() -> None:
    rule = rule_toml(id="hr", kind="threshold", metric="heart_rate", high=120)
    comp = compile_plans({p: plan(rule, p) for p in ("P2", "P1")})
    readings = pl.concat([
        batch([("heart_rate", 80.0, T0 + 2)], device="D2").readings,
        batch([("spo2", 97.0, T0 + 1), ("heart_rate", 70.0, T0)]).readings,
        batch([("heart_rate", 90.0, T0)], device="D9",
              assigned=assignments([("D9", "P9")])).readings,
    ])  # fmt: skip
    r = readings_frame(readings, comp)
    code = dict(comp.codes.iter_rows())
    assert r.select("patient_id", "metric", "t").rows() == [
        ("P2", "heart_rate", T0 + 2), ("P1", "spo2", T0 + 1), ("P1", "heart_rate", T0)]
    assert r["pk"].to_list() == [code["P2"] * SLOTS + metric_code("heart_rate"),
                                 code["P1"] * SLOTS + metric_code("spo2"),
                                 code["P1"] * SLOTS + metric_code("heart_rate")]

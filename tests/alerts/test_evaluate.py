"""The vectorized condition machinery: boundaries, hysteresis, sustain, carried state."""

from __future__ import annotations

import itertools

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.compile import compile_plans
from alerts.evaluate import SIGNAL_SCHEMA, naive_breaches
from alerts.reference import ReferenceEvaluator
from tests.alerts.helpers import MIN, T0, Runner, S, plan, rule_toml, signals

HR = {"id": "hr", "kind": "threshold", "metric": "heart_rate"}


def levels(rule: str, points: list[tuple[int, float]]) -> list[tuple[int, int, bool]]:
    return Runner.of(plan(rule)).levels(signals(0, points))


@pytest.mark.parametrize(
    ("inclusive", "value", "fires"),
    [(True, 50.0, True), (True, 50.000001, False), (True, 49.999999, True),
     (False, 50.0, False), (False, 49.999999, True)],
)
def test_low_boundary_both_sides(inclusive: bool, value: float, fires: bool) -> None:
    rule = rule_toml(**HR, low=50, inclusive=inclusive)
    got = levels(rule, [(T0, value)])
    assert got == ([(T0, 1, True)] if fires else [])


@pytest.mark.parametrize(
    ("inclusive", "value", "fires"),
    [(True, 120.0, True), (True, 119.999999, False), (True, 120.000001, True),
     (False, 120.0, False), (False, 120.000001, True)],
)
def test_high_boundary_both_sides(inclusive: bool, value: float, fires: bool) -> None:
    rule = rule_toml(**HR, high=120, inclusive=inclusive)
    got = levels(rule, [(T0, value)])
    assert got == ([(T0, 1, False)] if fires else [])


def test_critical_band_edges_and_levels() -> None:
    rule = rule_toml(**HR, high=120, critical_high=140)
    got = levels(rule, [(T0, 119.0), (T0 + 1, 120.0), (T0 + 2, 139.0), (T0 + 3, 140.0),
                        (T0 + 4, 139.0), (T0 + 5, 100.0)])
    assert got == [(T0 + 1, 1, False), (T0 + 3, 2, False), (T0 + 4, 1, False),
                   (T0 + 5, 0, False)]


def test_hysteresis_holds_between_trigger_and_clear() -> None:
    rule = rule_toml(**HR, low=50, hysteresis=5)
    pts = [(T0, 60.0), (T0 + 1, 50.0), (T0 + 2, 54.0), (T0 + 3, 55.0), (T0 + 4, 55.1),
           (T0 + 5, 51.0), (T0 + 6, 50.0)]
    # 55 is still "at or below" the clear threshold (inclusive): only 55.1 clears.
    assert levels(rule, pts) == [(T0 + 1, 1, True), (T0 + 4, 0, True), (T0 + 6, 1, True)]


def test_without_hysteresis_the_condition_clears_just_past_the_limit() -> None:
    rule = rule_toml(**HR, low=50)
    pts = [(T0, 50.0), (T0 + 1, 50.5), (T0 + 2, 50.0)]
    assert levels(rule, pts) == [(T0, 1, True), (T0 + 1, 0, True), (T0 + 2, 1, True)]


def test_sustain_by_time() -> None:
    rule = rule_toml(**HR, high=120, **{"for": "20s"})
    pts = [(T0 + k * 5 * S, 125.0) for k in range(6)]
    assert levels(rule, pts) == [(T0 + 20 * S, 1, False)]
    short = [(T0, 125.0), (T0 + 10 * S, 125.0), (T0 + 15 * S, 110.0), (T0 + 30 * S, 125.0)]
    assert levels(rule, short) == []


def test_sustain_by_count() -> None:
    rule = rule_toml(**HR, high=120, consecutive=3)
    assert levels(rule, [(T0 + k, 121.0) for k in range(4)]) == [(T0 + 2, 1, False)]
    broken = [(T0, 121.0), (T0 + 1, 121.0), (T0 + 2, 100.0), (T0 + 3, 121.0), (T0 + 4, 121.0)]
    assert levels(rule, broken) == []


def test_high_priority_count_sustain_is_capped_in_time() -> None:
    rule = rule_toml(**HR, critical_high=140, consecutive=10, priority="high")
    pts = [(T0 + k * 30 * S, 150.0) for k in range(4)]
    assert levels(rule, pts) == [(T0 + 60 * S, 2, False)]


def test_state_carries_across_batches_exactly() -> None:
    rule = rule_toml(**HR, high=120, critical_high=140, hysteresis=5, consecutive=2)
    values = [100, 125, 118, 130, 145, 150, 119, 114, 100]
    pts = [(T0 + k * S, float(v)) for k, v in enumerate(values)]
    whole = Runner.of(plan(rule)).levels(signals(0, pts))
    assert whole == [(T0 + 2 * S, 1, False), (T0 + 5 * S, 2, False), (T0 + 6 * S, 1, False),
                     (T0 + 7 * S, 0, False)]
    runner = Runner.of(plan(rule))
    split = []
    for part in (pts[:4], pts[4:6], pts[6:]):
        split += runner.levels(signals(0, part))
    assert split == whole


def test_null_signal_holds_the_state() -> None:
    rule = rule_toml(**HR, high=120, consecutive=3)
    pts: list[tuple[int, float | None]] = [(T0, 125.0), (T0 + 1, None), (T0 + 2, 125.0)]
    assert Runner.of(plan(rule)).levels(signals(0, pts)) == [(T0 + 2, 1, False)]


def test_night_limits_apply_in_the_plans_time_zone() -> None:
    text = ('[plan]\ntimezone = "Europe/Paris"\nnight = ["22:00", "07:00"]\n'
            + rule_toml(**HR, low=50).replace("low = 50", "low = 50\nnight = { low = 40 }"))
    # 2025-03-03 21:30 UTC is 22:30 in Paris (night); 2025-03-03 20:30 UTC is 21:30 (day).
    night = 1_741_037_400_000_000
    day = night - 3600 * S
    runner = Runner.of(plan(text))
    assert runner.levels(signals(0, [(day, 45.0)])) == [(day, 1, True)]
    runner = Runner.of(plan(text))
    assert runner.levels(signals(0, [(night, 45.0)])) == []
    assert runner.levels(signals(0, [(night + S, 40.0)])) == [(night + S, 1, True)]


def test_gate_blocks_the_rate_condition_outside_its_range() -> None:
    rule = rule_toml(id="fall", kind="rate", metric="cgm_glucose", low=-2, when_below=120)
    runner = Runner.of(plan(rule))
    rows = signals(0, [(T0, -3.0), (T0 + MIN, -3.0)], value=[150.0, 110.0])
    assert runner.levels(rows) == [(T0 + MIN, 1, True)]


def test_naive_policy_counts_every_sample_beyond_the_top_limit() -> None:
    comp = compile_plans({"P1": plan(rule_toml(**HR, high=120, critical_high=140))})
    hits = naive_breaches(signals(0, [(T0, 139.0), (T0 + 1, 140.0), (T0 + 2, 150.0)]),
                          comp.conds)
    assert hits["t"].to_list() == [T0 + 1, T0 + 2]


RULE = rule_toml(**HR, low=50, critical_low=40, high=120, critical_high=140, hysteresis=4,
                 consecutive=2, **{"for": "3s"})
RULE_FAST = rule_toml(id="rr", kind="threshold", metric="respiratory_rate", high=24,
                      inclusive=False, hysteresis=1)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(30, 150)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 39), max_size=4),
)
def test_vectorized_matches_the_per_reading_reference(values: list[int | None],
                                                      cuts: list[int]) -> None:
    p = plan(RULE + RULE_FAST)
    comp = compile_plans({"P1": p})
    rows = []
    for k, v in enumerate(values):
        sig = None if v is None else float(v)
        rows.append((k % 2, T0 + k * S, sig))
    frame = pl.DataFrame(
        {"rule_idx": [r for r, _, _ in rows], "t": [t for _, t, _ in rows],
         "signal": [s for _, _, s in rows], "value": [s for _, _, s in rows],
         "device_id": ["D1"] * len(rows), "lo_max": [None] * len(rows),
         "hi_min": [None] * len(rows)},
        schema=SIGNAL_SCHEMA,
    )
    expected = ReferenceEvaluator(comp).run_frame(frame)
    runner = Runner(comp)
    got = []
    bounds = [0, *sorted(set(c for c in cuts if c < len(rows))), len(rows)]
    for a, b in itertools.pairwise(bounds):
        ev = runner(frame[a:b])
        got += [{"ep_id": r["ep_id"], "t": r["t"], "level": r["level"],
                 "prev_level": r["prev_level"]} for r in ev.transitions.iter_rows(named=True)]
    key = lambda d: (d["t"], d["ep_id"])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)

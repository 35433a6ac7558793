"""The engine on normalized batches: every rule kind, from readings to alert events."""

from __future__ import annotations

import polars as pl
import pytest

from alerts.config import AlertConfig
from alerts.engine import AlertEngine
from alerts.lifecycle import AlertEvent
from pipeline.readings import Quality
from tests.alerts.helpers import MIN, T0, S, batch, plan, rule_toml

QUIET = AlertConfig(check_interval_s=1.0)


def opened(events: list[AlertEvent]) -> list[tuple[str, str, int]]:
    return [(e.rule_id, e.side, e.level) for e in events if e.kind == "opened"]


def engine(*rules: str, patient: str = "P1", text: str = "") -> AlertEngine:
    return AlertEngine(QUIET, plans=[plan(text + "".join(rules), patient)])


def test_threshold_alert_records_value_limit_and_plan_version() -> None:
    eng = engine(rule_toml(id="hr", kind="threshold", metric="heart_rate", high=120,
                           priority="high", warning_priority="medium"))
    (event,) = eng.process(batch([("heart_rate", 134, T0)]), T0)
    assert (event.kind, event.value, event.limit, event.plan_version) == ("opened", 134.0,
                                                                         120.0, 1)
    (alert,) = eng.open_alerts()
    assert alert.message == "heart_rate 134 /min >= 120"
    assert (alert.trigger_value, alert.trigger_limit, alert.category) == (134.0, 120.0,
                                                                         "physiological")


def test_readings_in_other_units_are_compared_in_canonical_units() -> None:
    eng = engine(rule_toml(id="g", kind="threshold", metric="cgm_glucose", low=70,
                           inclusive=False))
    assert opened(eng.process(batch([("cgm_glucose", 3.9, T0)], unit="mmol/L"), T0)) == []
    events = eng.process(batch([("cgm_glucose", 3.8, T0 + 5 * MIN)], unit="mmol/L"),
                         T0 + 5 * MIN)
    assert opened(events) == [("g", "low", 1)]


FALL = rule_toml(id="fall", kind="rate", metric="cgm_glucose", low=-2, critical_low=-3,
                 when_below=150, window="15m")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([150, 140, 130, 119], [1]),    # -31 / 15 min = -2.07 mg/dL/min, below 150
        ([120, 110, 100, 90], [1]),     # exactly -2.0: limits are inclusive
        ([150, 138, 126, 105], [2]),    # -3.0: critical
        ([120, 115, 110, 91], []),      # -1.93: not fast enough
        ([200, 185, 170, 155], []),     # -3.0 but at 155, above the 150 gate
        ([150, 140], []),               # no reading 15 minutes back yet
    ],
)
def test_rate_of_change_over_a_window_is_level_gated(values: list[float],
                                                     expected: list[int]) -> None:
    eng = engine(FALL)
    events: list[AlertEvent] = []
    for k, v in enumerate(values):
        t = T0 + k * 5 * MIN
        events += eng.process(batch([("cgm_glucose", v, t)]), t)
    assert [(e.level, e.at_us) for e in events if e.kind == "opened"] == [
        (level, T0 + 15 * MIN) for level in expected]


def test_rate_value_is_the_change_per_minute() -> None:
    eng = engine(FALL)
    events: list[AlertEvent] = []
    for k, v in enumerate([140, 130, 120, 110]):
        t = T0 + k * 5 * MIN
        events += eng.process(batch([("cgm_glucose", v, t)]), t)
    (first,) = [e for e in events if e.kind == "opened"]
    assert first.value == pytest.approx(-2.0)
    assert first.at_us == T0 + 15 * MIN


def test_predicted_low_is_tagged_and_fires_before_the_value_is_low() -> None:
    eng = engine(rule_toml(id="soon", kind="predicted", metric="cgm_glucose", critical_low=55,
                           horizon="20m", window="15m", priority="high"))
    events: list[AlertEvent] = []
    for k, v in enumerate([130, 115, 100, 85]):
        t = T0 + k * 5 * MIN
        events += eng.process(batch([("cgm_glucose", v, t)]), t)
    (event,) = [e for e in events if e.kind == "opened"]
    # 85 mg/dL falling 3 mg/dL/min -> 25 mg/dL forecast in 20 minutes.
    assert (event.at_us, event.predicted, event.value) == (T0 + 15 * MIN, True, 25.0)
    (alert,) = eng.open_alerts()
    assert alert.predicted and "predicted" in alert.message


def test_staleness_warns_at_three_missed_intervals_and_escalates_at_six() -> None:
    eng = engine(rule_toml(id="stale", kind="staleness", metric="cgm_glucose", cadence="5m",
                           priority="medium", warning_priority="low"))
    eng.process(batch([("cgm_glucose", 120, T0)]), T0)
    assert eng.tick(T0 + 15 * MIN - S) == []
    (warn,) = eng.tick(T0 + 15 * MIN)
    assert (warn.kind, warn.level, warn.priority, warn.category) == ("opened", 1, "low",
                                                                    "technical")
    assert eng.tick(T0 + 30 * MIN - S) == []
    (crit,) = [e for e in eng.tick(T0 + 30 * MIN) if e.kind == "worsened"]
    assert (crit.level, crit.priority) == (2, "medium")
    events = eng.process(batch([("cgm_glucose", 118, T0 + 31 * MIN)]), T0 + 31 * MIN)
    assert [(e.kind, e.to_state) for e in events] == [("resolved", "resolved")]


def test_staleness_counts_from_the_plan_when_nothing_ever_arrived() -> None:
    eng = engine(rule_toml(id="stale", kind="staleness", metric="heart_rate", cadence="15s"))
    assert eng.tick(T0 + 44 * S) == []
    assert [(e.kind, e.level) for e in eng.tick(T0 + 45 * S)] == [("opened", 1)]


def test_sensor_flags_raise_a_technical_alert_after_consecutive_payloads() -> None:
    eng = engine(rule_toml(id="flags", kind="technical", signal="sensor_error",
                           consecutive=2, priority="high"))
    flag = int(Quality.CALIBRATING)
    assert opened(eng.process(batch([("cgm_glucose", 100, T0)], quality=flag), T0)) == []
    events = eng.process(batch([("cgm_glucose", 100, T0 + 5 * MIN)], quality=flag),
                         T0 + 5 * MIN)
    assert opened(events) == [("flags", "high", 1)]
    events = eng.process(batch([("cgm_glucose", 100, T0 + 10 * MIN)]), T0 + 10 * MIN)
    # A technical alert never latches, even at high priority.
    assert [(e.kind, e.category) for e in events] == [("resolved", "technical")]


def test_a_clean_payload_between_flagged_ones_breaks_the_count() -> None:
    eng = engine(rule_toml(id="flags", kind="technical", signal="sensor_error",
                           consecutive=2))
    flag = int(Quality.QUESTIONABLE)
    rows = [("heart_rate", 70, T0), ("heart_rate", 71, T0 + S), ("heart_rate", 72, T0 + 2 * S)]
    flagged = batch(rows[:1], quality=flag)
    clean = batch(rows[1:2])
    again = batch(rows[2:], quality=flag)
    joined = flagged.replace(readings=pl.concat([flagged.readings, clean.readings,
                                                 again.readings]))
    assert eng.process(joined, T0 + 2 * S) == []


def test_rejected_payloads_of_the_patients_device_raise_a_technical_alert() -> None:
    eng = engine(rule_toml(id="garbage", kind="technical", signal="decode_errors",
                           consecutive=3))
    eng.process(batch([("heart_rate", 70, T0)]), T0)
    assert opened(eng.process(batch([], garbage=2, now_us=T0 + S), T0 + S)) == []
    events = eng.process(batch([], garbage=1, now_us=T0 + 2 * S), T0 + 2 * S)
    assert opened(events) == [("garbage", "high", 1)]
    events = eng.process(batch([("heart_rate", 71, T0 + 3 * S)]), T0 + 3 * S)
    assert [e.kind for e in events] == ["resolved"]


def test_news2_from_the_latest_fresh_vitals_and_manual_consciousness() -> None:
    eng = engine(rule_toml(id="news2", kind="news2", freshness="30m"))
    vitals = [("respiratory_rate", 22, T0), ("spo2", 95, T0), ("systolic_bp", 120, T0),
              ("heart_rate", 95, T0), ("body_temperature", 38.2, T0)]
    assert eng.process(batch(vitals), T0) == []  # NEWS2 is scored by the sweep
    events = eng.tick(T0)
    # RR 2 + SpO2 1 + pulse 1 + temperature 1 = 5: medium.
    assert [(e.kind, e.level, e.priority, e.value) for e in events] == [
        ("opened", 2, "medium", 5.0)]
    score = eng.news2_scores().row(0, named=True)
    assert (score["aggregate"], score["risk_band"], score["complete"]) == (5, "medium", True)
    events = eng.record_observation("P1", consciousness="V", by="nurse", now_us=T0 + S)
    assert [(e.kind, e.level, e.priority) for e in events] == [("worsened", 3, "high")]


def test_news2_leaves_stale_parameters_out_and_says_so() -> None:
    eng = engine(rule_toml(id="news2", kind="news2", freshness="30m"))
    eng.process(batch([("respiratory_rate", 26, T0), ("heart_rate", 70, T0)]), T0)
    eng.process(batch([("heart_rate", 70, T0 + 40 * MIN)]), T0 + 40 * MIN)
    eng.tick(T0 + 40 * MIN)
    score = eng.news2_scores().row(0, named=True)
    assert (score["aggregate"], score["complete"]) == (0, False)
    assert score["missing"] == "respiration_rate,spo2,systolic_bp,temperature_c"


def test_late_and_repeated_readings_are_not_evaluated_twice() -> None:
    eng = engine(rule_toml(id="hr", kind="threshold", metric="heart_rate", high=120,
                           consecutive=2))
    eng.process(batch([("heart_rate", 130, T0)]), T0)
    assert eng.process(batch([("heart_rate", 130, T0)]), T0 + S) == []
    assert eng.process(batch([("heart_rate", 130, T0 - S)]), T0 + S) == []
    assert eng.stats.late == 2
    assert opened(eng.process(batch([("heart_rate", 130, T0 + S)]), T0 + S)) == [
        ("hr", "high", 1)]


def test_patients_are_independent() -> None:
    hr = rule_toml(id="hr", kind="threshold", metric="heart_rate", high=120)
    eng = AlertEngine(QUIET, plans=[plan(hr, "P1"), plan(hr, "P2")])
    events = eng.process(batch([("heart_rate", 130, T0)], device="D2"), T0)
    assert [(e.patient_id, e.kind) for e in events] == [("P2", "opened")]
    assert eng.open_alerts("P1") == []


def test_news2_needs_data_and_its_episode_ends_when_the_data_goes_stale() -> None:
    eng = engine(rule_toml(id="news2", kind="news2", freshness="30m"))
    assert eng.tick(T0) == []
    assert eng.news2_scores().height == 0  # no data: no NEWS2, not a NEWS2 of 0
    eng.process(batch([("respiratory_rate", 26, T0 + S)]), T0 + S)
    assert [(e.kind, e.level) for e in eng.tick(T0 + 2 * S)] == [("opened", 1)]
    events = eng.tick(T0 + S + 30 * MIN + S)
    assert [(e.kind, e.level) for e in events] == [("resolved", 0)]
    score = eng.news2_scores().row(0, named=True)
    assert (score["aggregate"], score["complete"]) == (0, False)

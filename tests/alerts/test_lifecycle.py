"""Alert lifecycle: one episode one alert, latching, acknowledgement, snooze scope, cap and
break, re-notification and escalation on an injected clock."""

from __future__ import annotations

import pytest

from alerts.config import AlertConfig
from alerts.engine import AlertEngine
from alerts.errors import AlertActionError, LifecycleError, PlanNotFound
from alerts.lifecycle import TRANSITIONS, AlertEvent, next_state
from tests.alerts.helpers import MIN, T0, S, batch, plan, rule_toml

CFG = AlertConfig(check_interval_s=3600.0)
HR = {"id": "hr", "kind": "threshold", "metric": "heart_rate"}
HIGH = rule_toml(**HR, low=50, high=120, critical_high=140, hysteresis=5, priority="high",
                 warning_priority="medium")


class Ward:
    """One engine, a clock and a helper to send heart rates."""

    def __init__(self, *rules: str, patients: tuple[str, ...] = ("P1",),
                 config: AlertConfig = CFG) -> None:
        self.engine = AlertEngine(config, plans=[plan("".join(rules), p) for p in patients])
        self.now = T0
        self.log: list[AlertEvent] = []

    def hr(self, value: float, device: str = "D1", dt: int = S) -> list[AlertEvent]:
        self.now += dt
        events = self.engine.process(batch([("heart_rate", value, self.now)], device=device),
                                     self.now)
        self.log += events
        return events

    def at(self, t_us: int) -> list[AlertEvent]:
        self.now = t_us
        events = self.engine.tick(t_us)
        self.log += events
        return events


def kinds(events: list[AlertEvent]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.to_state) for e in events]


def test_the_transition_table_refuses_illegal_moves() -> None:
    assert next_state(None, "open") == "active"
    assert next_state("latched", "acknowledge") == "resolved"
    with pytest.raises(LifecycleError, match="cannot acknowledge an alert that is resolved"):
        next_state("resolved", "acknowledge", "A1")
    with pytest.raises(LifecycleError, match="cannot latch an alert that is acknowledged"):
        next_state("acknowledged", "latch")
    assert all(s is None or s in ("active", "acknowledged", "latched") for s, _ in TRANSITIONS)


def test_high_priority_alert_latches_until_acknowledged() -> None:
    w = Ward(HIGH)
    assert kinds(w.hr(145)) == [("opened", "active")]
    assert kinds(w.hr(100)) == [("latched", "latched")]
    (alert,) = w.engine.open_alerts()
    assert (alert.state, alert.level, alert.peak_level) == ("latched", 0, 2)
    event = w.engine.acknowledge(alert.alert_id, "nurse.kim", w.now)
    assert (event.kind, event.from_state, event.to_state, event.actor) == (
        "acknowledged", "latched", "resolved", "nurse.kim")
    assert w.engine.open_alerts() == []


def test_latched_alert_reopens_silently_when_the_condition_returns() -> None:
    w = Ward(HIGH)
    w.hr(145)
    w.hr(100)
    (event,) = w.hr(141)
    assert (event.kind, event.to_state, event.notify) == ("reopened", "active", False)
    assert len(w.engine.open_alerts()) == 1


def test_acknowledged_alert_resolves_when_the_condition_clears() -> None:
    w = Ward(HIGH)
    w.hr(125)
    (alert,) = w.engine.open_alerts()
    w.engine.acknowledge(alert.alert_id, "nurse", w.now)
    assert kinds(w.hr(110)) == [("resolved", "resolved")]


def test_medium_priority_alert_does_not_latch() -> None:
    w = Ward(rule_toml(**HR, high=120, priority="medium"))
    w.hr(125)
    assert kinds(w.hr(100)) == [("resolved", "resolved")]


def test_worsening_to_a_new_peak_notifies_and_reactivates_but_flapping_bands_do_not() -> None:
    w = Ward(HIGH)
    w.hr(125)
    (alert,) = w.engine.open_alerts()
    w.engine.acknowledge(alert.alert_id, "nurse", w.now)
    (worse,) = w.hr(142)
    assert (worse.kind, worse.to_state, worse.notify, worse.priority) == (
        "worsened", "active", True, "high")
    (down,) = w.hr(130)
    assert (down.kind, down.notify, down.priority) == ("level_changed", False, "medium")
    (up,) = w.hr(141)
    assert (up.kind, up.notify) == ("level_changed", False)


def test_a_value_flapping_around_the_limit_is_one_alert() -> None:
    rule = rule_toml(**HR, low=50, hysteresis=5, clear_for="5m", priority="medium")
    w = Ward(rule)
    for value in (49, 56, 49, 57, 48, 58):
        w.hr(value, dt=30 * S)
    assert [e.kind for e in w.log] == ["opened", "condition_cleared", "recurred",
                                       "condition_cleared", "recurred", "condition_cleared"]
    assert [e.notify for e in w.log] == [True, False, False, False, False, False]
    cleared = w.now
    assert w.at(cleared + 5 * MIN - S) == []
    assert kinds(w.at(cleared + 5 * MIN)) == [("resolved", "resolved")]


def test_snooze_is_scoped_to_patient_rule_and_side() -> None:
    w = Ward(HIGH, patients=("P1", "P2"))
    w.engine.snooze("P1", "hr", "high", 600, "nurse", w.now, reason="exercise test")
    (p1_high,) = w.hr(125)
    assert (p1_high.kind, p1_high.notify) == ("opened", False)
    (p2_high,) = w.hr(125, device="D2")
    assert (p2_high.patient_id, p2_high.notify) == ("P2", True)
    w.hr(100)
    (p1_low,) = w.hr(45)
    assert (p1_low.side, p1_low.notify) == ("low", True)


def test_snooze_is_capped_per_priority() -> None:
    w = Ward(HIGH)
    with pytest.raises(AlertActionError) as info:
        w.engine.snooze("P1", "hr", "high", 1801, "nurse", w.now)
    assert str(info.value) == ("snooze: duration: 1801 s is outside (0, 1800] s, the cap for "
                               "high-priority alerts of rule 'hr'")
    w.engine.snooze("P1", "hr", "high", 1800, "nurse", w.now)
    low = Ward(rule_toml(**HR, high=120, priority="low"))
    low.engine.snooze("P1", "hr", "high", 7200, "nurse", low.now)
    with pytest.raises(AlertActionError, match="outside \\(0, 7200\\] s"):
        low.engine.snooze("P1", "hr", "high", 7201, "nurse", low.now)


def test_snooze_is_broken_when_the_condition_worsens() -> None:
    w = Ward(HIGH)
    w.hr(125)
    (alert,) = w.engine.open_alerts()
    event = w.engine.snooze("P1", "hr", "high", 900, "nurse", w.now)
    assert (event.kind, event.alert_id, event.to_state) == ("snoozed", alert.alert_id, "active")
    assert w.hr(126) == []
    events = w.hr(145)
    assert [(e.kind, e.notify) for e in events] == [("snooze_broken", False), ("worsened", True)]


def test_snooze_survives_new_episodes_and_expires_with_a_reminder() -> None:
    rule = rule_toml(**HR, high=120, priority="medium")
    w = Ward(rule)
    w.engine.snooze("P1", "hr", "high", 600, "nurse", w.now)
    start = w.now
    assert [e.notify for e in w.hr(125)] == [False]
    w.hr(100)
    assert [e.notify for e in w.hr(125)] == [False]
    events = w.at(start + 600 * S)
    assert [(e.kind, e.notify) for e in events] == [("snooze_expired", False),
                                                    ("renotified", True)]


def test_snooze_needs_a_known_rule_and_side() -> None:
    w = Ward(HIGH)
    with pytest.raises(AlertActionError, match="side: expected low or high, got 'up'"):
        w.engine.snooze("P1", "hr", "up", 60, "nurse", w.now)
    with pytest.raises(PlanNotFound, match="has no rule 'spo2'"):
        w.engine.snooze("P1", "spo2", "low", 60, "nurse", w.now)
    with pytest.raises(AlertActionError, match="no open alert 'nope'"):
        w.engine.acknowledge("nope", "nurse", w.now)


def test_unacknowledged_high_alert_is_renotified_and_escalated_on_the_clock() -> None:
    w = Ward(HIGH)
    (opened,) = w.hr(145)
    t0 = w.now
    assert (opened.notify, opened.role) == (True, "bedside_nurse")
    assert w.at(t0 + 119 * S) == []
    (again,) = w.at(t0 + 120 * S)
    assert (again.kind, again.role) == ("renotified", "bedside_nurse")
    (again,) = w.at(t0 + 240 * S)
    assert again.kind == "renotified"
    (up,) = w.at(t0 + 300 * S)
    assert (up.kind, up.role, up.notify) == ("escalated", "charge_nurse", True)
    assert w.at(t0 + 419 * S) == []
    assert [e.role for e in w.at(t0 + 420 * S)] == ["charge_nurse"]
    (top,) = w.at(t0 + 600 * S)
    assert (top.kind, top.role) == ("escalated", "rapid_response_team")
    (alert,) = w.engine.open_alerts()
    w.engine.acknowledge(alert.alert_id, "dr.lee", t0 + 601 * S)
    assert w.at(t0 + 3600 * S) == []


def test_physiological_and_technical_alerts_are_kept_apart() -> None:
    rules = HIGH + rule_toml(id="stale", kind="staleness", metric="heart_rate", cadence="10s")
    w = Ward(rules, config=AlertConfig(check_interval_s=1.0))
    w.hr(145)
    events = w.at(w.now + 30 * S)
    assert [(e.rule_id, e.kind, e.category) for e in events] == [
        ("stale", "opened", "technical")]
    cats = {e.rule_id: e.category for e in w.log if e.kind == "opened"}
    assert cats == {"hr": "physiological", "stale": "technical"}


def test_alerts_of_a_rule_removed_from_the_plan_are_retired() -> None:
    w = Ward(HIGH)
    w.hr(125)
    events = w.engine.set_plans([plan(rule_toml(id="spo2", kind="threshold", metric="spo2",
                                                low=90), version=2)], w.now)
    assert kinds(events) == [("retired", "resolved")]
    assert w.engine.open_alerts() == []

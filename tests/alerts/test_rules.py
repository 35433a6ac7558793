"""Care-plan validation: every error names the rule and the field; templates load."""

from __future__ import annotations

import pytest

from alerts.errors import CarePlanError, PlanNotFound
from alerts.plans import (
    PlanSettings,
    list_templates,
    load_template,
    merge_templates,
    parse_plan_text,
    to_toml,
)
from alerts.rules import HIGH_SUSTAIN_CAP_S
from pipeline.catalogue import catalogue
from tests.alerts.helpers import rule_toml

HR = {"id": "hr", "kind": "threshold", "metric": "heart_rate"}


def error(text: str) -> str:
    with pytest.raises(CarePlanError) as info:
        parse_plan_text(text, "plan.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**HR, "low": 120, "high": 110},
         "plan.toml: rule 'hr': low: 120 /min must be below high 110 /min"),
        ({**HR, "low": 50, "critical_low": 55},
         "plan.toml: rule 'hr': critical_low: 55 /min must be below low 50 /min"),
        ({**HR, "high": 120, "critical_high": 110},
         "plan.toml: rule 'hr': high: 120 /min must be below critical_high 110 /min"),
        ({"id": "hr", "kind": "threshold", "metric": "hart_rate", "low": 50},
         "plan.toml: rule 'hr': metric: unknown metric 'hart_rate' (known: "
         + ", ".join(catalogue().names) + ")"),
        ({**HR, "unit": "mmol/L", "low": 50},
         "plan.toml: rule 'hr': unit: 'mmol/L' is not convertible to /min for heart_rate "
         "(accepted: /min, {beats}/min, {beat}/min, bpm)"),
        ({**HR}, "plan.toml: rule 'hr': low/high: at least one of low, high, critical_low, "
                 "critical_high is needed"),
        ({**HR, "low": 50, "high": 60, "hysteresis": 5},
         "plan.toml: rule 'hr': hysteresis: 5 /min makes the clear thresholds cross (low side "
         "clears above 55, high side below 55 /min)"),
        ({**HR, "low": 50, "hysteresis": -1},
         "plan.toml: rule 'hr': hysteresis: expected a number >= 0, got -1"),
        ({**HR, "low": 50, "priority": "urgent"},
         "plan.toml: rule 'hr': priority: expected one of info, low, medium, high, got 'urgent'"),
        ({**HR, "low": 50, "priority": "low", "warning_priority": "high"},
         "plan.toml: rule 'hr': warning_priority: high must not be above priority low"),
        ({**HR, "low": 50, "for": "2m", "priority": "high"},
         f"plan.toml: rule 'hr': for: 120 s exceeds the {HIGH_SUSTAIN_CAP_S:g} s cap for "
         "high-priority rules"),
        ({**HR, "low": 50, "for": "soon"},
         "plan.toml: rule 'hr': for: expected a duration such as 90, \"90s\", \"15m\" or "
         "\"1h30m\", got 'soon'"),
        ({**HR, "low": 50, "consecutive": 0},
         "plan.toml: rule 'hr': consecutive: expected a whole number >= 1, got 0"),
        ({**HR, "low": "fifty"}, "plan.toml: rule 'hr': low: expected a number, got 'fifty'"),
        ({**HR, "low": 50, "colour": "red"},
         "plan.toml: rule 'hr': colour: unknown key for a threshold rule (allowed: clear_for, "
         "consecutive, critical_high, critical_low, for, high, hysteresis, id, inclusive, kind, "
         "label, low, metric, night, priority, unit, warning_priority)"),
        ({"id": "hr", "kind": "magic"},
         "plan.toml: rule 'hr': kind: expected one of threshold, rate, predicted, staleness, "
         "technical, news2, got 'magic'"),
        ({"id": "bad id", "kind": "threshold"},
         "plan.toml: rule #1: id: expected a short name such as 'hr_high' (letters, digits, "
         "_ . -), got 'bad id'"),
        ({"id": "fall", "kind": "rate", "metric": "cgm_glucose", "low": 2},
         "plan.toml: rule 'fall': low: a rate limit here must be negative (falling), got 2 "
         "mg/dL/min"),
        ({"id": "s", "kind": "staleness", "metric": "cgm_glucose"},
         "plan.toml: rule 's': cadence: missing (the device's reporting interval, e.g. \"5m\")"),
        ({"id": "s", "kind": "staleness", "metric": "cgm_glucose", "cadence": "5m",
          "warning_missed": 6, "critical_missed": 3},
         "plan.toml: rule 's': warning_missed: expected 0 < warning_missed (6) < "
         "critical_missed (3)"),
        ({"id": "t", "kind": "technical", "signal": "smoke"},
         "plan.toml: rule 't': signal: expected one of sensor_error, decode_errors, threshold, "
         "got 'smoke'"),
        ({"id": "t", "kind": "technical", "signal": "sensor_error", "quality": ["wet"]},
         "plan.toml: rule 't': quality: expected a list of questionable, calibrating, "
         "value_absent, got ['wet']"),
        ({"id": "t", "kind": "technical", "signal": "decode_errors", "low": 1},
         "plan.toml: rule 't': low: a decode_errors rule has no limits (it fires on flagged "
         "readings or rejected payloads)"),
    ],
)
def test_invalid_rules_are_rejected_naming_rule_and_field(fields: dict[str, object],
                                                           message: str) -> None:
    assert error(rule_toml(**fields)) == message


def test_night_limits_are_checked_against_the_day_limits() -> None:
    text = rule_toml(**HR, low=50, high=120).replace(
        "high = 120", "high = 120\nnight = { low = 130 }")
    assert error(text) == ("plan.toml: rule 'hr': night.low: 130 /min must be below night.high "
                           "120 /min")


def test_duplicate_ids_and_two_news2_rules_are_rejected() -> None:
    two = rule_toml(**HR, low=50) + rule_toml(**HR, high=120)
    assert error(two) == "plan.toml: rule 'hr': id: used by two rules"
    news = rule_toml(id="a", kind="news2") + rule_toml(id="b", kind="news2")
    assert error(news) == "plan.toml: rule: at most one news2 rule per plan"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("[plan]\nspo2_scale = 3\n", "plan.toml: [plan]: spo2_scale: expected 1 or 2, got 3"),
        ('[plan]\ntimezone = "Mars/Olympus"\n',
         "plan.toml: [plan]: timezone: unknown IANA time zone 'Mars/Olympus'"),
        ('[plan]\nnight = ["22:00"]\n',
         "plan.toml: [plan]: night: expected [\"HH:MM\", \"HH:MM\"] (start, end), got ['22:00']"),
        ("[plan]\nwards = 2\n",
         "plan.toml: [plan]: wards: unknown key (allowed: night, spo2_scale, timezone)"),
        ("[rules]\n", "plan.toml: rules: unknown table (expected [plan] and [[rule]])"),
    ],
)
def test_invalid_plan_settings_are_rejected(plan: str, message: str) -> None:
    assert error(plan) == message


def test_units_are_converted_to_canonical_for_the_conditions() -> None:
    text = rule_toml(id="g", kind="threshold", metric="cgm_glucose", unit="mmol/L", low=3.9,
                     critical_low=3.0, hysteresis=0.3)
    _, (rule,) = parse_plan_text(text)
    conds = {(c.level, c.low_side): c for c in rule.conditions(catalogue())}
    assert conds[(1, True)].trigger == pytest.approx(3.9 * 18.0156)
    assert conds[(1, True)].clear == pytest.approx(4.2 * 18.0156)
    assert conds[(2, True)].trigger == pytest.approx(3.0 * 18.0156)


def test_fahrenheit_limits_use_the_offset_but_hysteresis_only_the_factor() -> None:
    text = rule_toml(id="t", kind="threshold", metric="body_temperature", unit="[degF]",
                     high=100.4, hysteresis=0.9)
    _, (rule,) = parse_plan_text(text)
    (cond,) = rule.conditions(catalogue())
    assert cond.trigger == pytest.approx(38.0)
    assert cond.clear == pytest.approx(37.5)


def test_warning_priority_defaults_one_below_and_high_gets_the_cap() -> None:
    _, (rule,) = parse_plan_text(rule_toml(**HR, low=50, critical_low=40, priority="high"))
    assert (rule.priority, rule.warning_priority) == ("high", "medium")
    conds = {c.level: c for c in rule.conditions(catalogue())}
    assert conds[2].cap_us == HIGH_SUSTAIN_CAP_S * 1_000_000
    assert conds[1].cap_us is None


def test_every_shipped_template_loads_and_round_trips_through_toml() -> None:
    assert list_templates() == ["adult-ward", "copd-scale2", "post-operative", "t1d-cgm"]
    for name in list_templates():
        tpl = load_template(name)
        settings, rules = parse_plan_text(to_toml(tpl.document))
        assert settings == tpl.settings
        assert [r.id for r in rules] == [r.id for r in tpl.rules]
    assert load_template("copd-scale2").settings.spo2_scale == 2


def test_templates_merge_without_duplicate_rules() -> None:
    merged = merge_templates(["adult-ward", "t1d-cgm"])
    ids = [r.id for r in merged.rules]
    assert merged.name == "adult-ward+t1d-cgm"
    assert ids.count("payload_errors") == 1
    assert "glucose_low" in ids and "news2" in ids
    assert merge_templates(["t1d-cgm", "copd-scale2"]).settings.spo2_scale == 2


def test_unknown_template_names_the_available_ones() -> None:
    with pytest.raises(PlanNotFound, match="no template 'icu' \\(available: adult-ward, "
                                           "copd-scale2, post-operative, t1d-cgm\\)"):
        load_template("icu")


def test_plan_settings_default() -> None:
    settings, rules = parse_plan_text("")
    assert settings == PlanSettings(1, "UTC", 22 * 60, 7 * 60)
    assert rules == ()

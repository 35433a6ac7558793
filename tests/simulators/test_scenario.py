"""Scenario files: the shipped ones load, and every error names the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from simulators.config import FleetConfig
from simulators.fleet import plan_fleet
from simulators.scenario import (
    EventRecord,
    PatientOverride,
    ScenarioEvent,
    load_scenario,
    parse_duration,
    read_event_log,
    write_event_log,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "simulators" / "scenarios"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "case.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_clinical_events_scenario_loads() -> None:
    sc = load_scenario(SCENARIOS / "clinical-events.toml")
    assert sc.name == "clinical-events"
    assert sc.duration_s == 3600.0
    assert [e.kind for e in sc.events] == [
        "hypoglycaemia",
        "desaturation",
        "tachycardia",
        "fever",
        "hypotension",
        "dropout",
        "garbage",
    ]
    assert sc.events[0] == ScenarioEvent(
        index=0,
        kind="hypoglycaemia",
        patient_id="P003",
        at_s=600.0,
        ramp_s=600.0,
        plateau_s=900.0,
        recovery_s=900.0,
        target=48.0,
        device_kind=None,
        note="CGM shows glucose below 54 mg/dL (level 2 hypoglycaemia)",
    )
    assert sc.events[5].device_kind == "cgm"
    assert (sc.events[5].at_s, sc.events[5].plateau_s) == (720.0, 1200.0)
    assert sc.patients["P003"] == PatientOverride(True, ("bedside_monitor", "cgm", "glucose_meter"))


def test_demo_scenario_loads_and_fits_the_default_fleet() -> None:
    sc = load_scenario(SCENARIOS / "demo.toml")
    assert sc.duration_s == 1800.0
    assert all(e.at_s + e.ramp_s + e.plateau_s + e.recovery_s <= 1800.0 for e in sc.events)
    plan = plan_fleet(FleetConfig(scenario=SCENARIOS / "demo.toml"))
    assert len(plan.patients) == 8


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (2.5, 2.5), ("90s", 90.0), ("+10m", 600.0), ("1h30m", 5400.0), ("250ms", 0.25)],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", ["ten minutes", "10 m", "", -1, True, "5x"])
def test_bad_duration_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^where\.at: expected a duration"):
        parse_duration(value, "where.at")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[event]]\nkind = 'meltdown'\npatient = 1\nat = 5",
         "[[event]] #1.kind: unknown event kind 'meltdown'"),
        ("[[event]]\nkind = 'fever'\npatient = 'P001'\nat = 'soon'",
         "[[event]] #1 (fever).at: expected a duration"),
        ("[[event]]\nkind = 'fever'\npatient = 'P001'",
         "[[event]] #1 (fever): missing key 'at'"),
        ("[[event]]\nkind = 'fever'\npatient = 'P001'\nat = 5\nplateu = '5m'",
         "[[event]] #1 (fever): unknown key 'plateu'"),
        ("[[event]]\nkind = 'desaturation'\npatient = 'P001'\nat = 5\ntarget = 30",
         "[[event]] #1 (desaturation).target: 30 % is outside the plausible range 50.0..100.0 %"),
        ("[[event]]\nkind = 'dropout'\npatient = 'P001'\nat = 5\nduration = '5m'",
         "[[event]] #1 (dropout): missing key 'device'"),
        ("[[event]]\nkind = 'garbage'\npatient = 'P001'\ndevice = 'fridge'\nat = 5\nduration = 9",
         "[[event]] #1 (garbage).device: expected one of smartwatch"),
        ("[[event]]\nkind = 'fever'\npatient = 'Q7'\nat = 5",
         "[[event]] #1 (fever).patient: expected a patient id"),
        ("[patient.P003]\nkinds = ['cgm', 'pager']", "[patient.P003].kinds: expected a non-empty"),
        ("[patient.P003]\ndiabetic = 'yes'", "[patient.P003].diabetic: expected true or false"),
        ("[scenario]\nlength = 5", "[scenario]: unknown key 'length'"),
        ("[[event]]\nkind = 'fever'\npatient = 'P001'\nat = 5\n[[event]]\nkind = 'fever'",
         "[[event]] #2 (fever): missing key 'patient'"),
        ("title = 'x'", "unknown key 'title'"),
        ("[[event]\nkind = 1", "not valid TOML"),
    ],
)  # fmt: skip
def test_file_errors_name_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert str(err.value).startswith(str(path))
    assert fragment in str(err.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: cannot read scenario file"):
        load_scenario(tmp_path / "nowhere.toml")


def test_event_for_a_patient_outside_the_fleet(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[event]]\nkind = 'fever'\npatient = 9\nat = 5")
    with pytest.raises(ConfigError) as err:
        plan_fleet(FleetConfig(patients=4, scenario=path))
    assert str(err.value) == (
        f"{path}: [[event]] #1 (fever): patient P009 is not in the fleet of 4 patients "
        "(P001..P004); raise the patient count"
    )


def test_event_no_device_of_the_patient_shows(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[patient.P001]\nkinds = ['smartwatch']\n[[event]]\nkind = 'fever'\npatient = 1\nat = 5",
    )
    with pytest.raises(ConfigError) as err:
        plan_fleet(FleetConfig(patients=2, scenario=path))
    assert str(err.value) == (
        f"{path}: [[event]] #1 (fever): no device of P001 reports body_temperature "
        "(has smartwatch); set [patient.P001] kinds"
    )


def test_device_event_for_a_missing_device(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[patient.P002]\nkinds = ['scale']\n"
        "[[event]]\nkind = 'dropout'\npatient = 2\ndevice = 'cgm'\nat = 5\nduration = 60",
    )
    with pytest.raises(ConfigError, match=r"#1 \(dropout\)\.device: P002 has no cgm \(has scale\)"):
        plan_fleet(FleetConfig(patients=2, scenario=path))


def test_patient_override_outside_the_fleet(tmp_path: Path) -> None:
    path = _write(tmp_path, "[patient.P012]\ndiabetic = true")
    with pytest.raises(ConfigError, match=r"\[patient\.P012\] is not in the fleet of 8 patients"):
        plan_fleet(FleetConfig(scenario=path))


def test_event_log_round_trips(tmp_path: Path) -> None:
    record = EventRecord(
        event=2,
        kind="hypotension",
        patient_id="P005",
        device_ids=("BM-P005",),
        metrics=("systolic_bp",),
        derived_metrics=("diastolic_bp", "mean_bp"),
        target=80.0,
        unit="mm[Hg]",
        start_us=1_767_225_600_000_000,
        peak_us=1_767_225_900_000_000,
        plateau_end_us=1_767_227_100_000_000,
        end_us=1_767_227_700_000_000,
        note="cuff",
    )
    path = tmp_path / "events.jsonl"
    write_event_log(path, [record])
    assert path.read_text(encoding="utf-8") == (
        '{"event":2,"kind":"hypotension","patient_id":"P005","device_ids":["BM-P005"],'
        '"metrics":["systolic_bp"],"derived_metrics":["diastolic_bp","mean_bp"],"target":80.0,'
        '"unit":"mm[Hg]","start_us":1767225600000000,"peak_us":1767225900000000,'
        '"plateau_end_us":1767227100000000,"end_us":1767227700000000,"note":"cuff",'
        '"start":"2026-01-01T00:00:00+00:00","peak":"2026-01-01T00:05:00+00:00",'
        '"plateau_end":"2026-01-01T00:25:00+00:00","end":"2026-01-01T00:35:00+00:00"}\n'
    )
    assert read_event_log(path) == [record]

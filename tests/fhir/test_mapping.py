"""Mapping readings to Observations: exact shapes, codes, panels, limits, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from pipeline.catalogue import load_catalogue
from pipeline.fhir import codes
from pipeline.fhir.bundle import build_bundle
from pipeline.fhir.config import FhirConfig
from pipeline.fhir.mapping import device_urn, observation_identifier, to_fhir_observations
from pipeline.fhir.ranges import TableReferenceRanges
from pipeline.fhir.rules import check_bundle, check_observation
from pipeline.readings import Quality
from tests.fhir.support import NOW, T0, frame

CFG = FhirConfig()


def limits(
    metric: str,
    low: float,
    high: float,
    crit_low: float | None = None,
    crit_high: float | None = None,
    version: str = "3",
) -> TableReferenceRanges:
    return TableReferenceRanges(pl.DataFrame({
        "patient_id": ["P1"], "metric": [metric],
        "valid_from": [datetime(2026, 1, 1, tzinfo=UTC)],
        "low": [low], "high": [high], "critical_low": [crit_low], "critical_high": [crit_high],
        "plan_version": [version],
    }))  # fmt: skip


def only(readings: pl.DataFrame, **kw: Any) -> dict[str, Any]:
    result = to_fhir_observations(readings, CFG, **kw)
    assert result.failures == []
    assert len(result.observations) == 1
    return result.observations[0].resource


def test_heart_rate_observation_exactly() -> None:
    obs = only(frame(("heart_rate", "HR-1", 72.5, "/min")))
    ident = observation_identifier("HR-1", "P1", "8867-4", 1772353815000000)
    assert obs == {
        "resourceType": "Observation",
        "meta": {"profile": [codes.VITALSIGNS_PROFILE,
                             "http://hl7.org/fhir/StructureDefinition/heartrate"]},
        "extension": [{"url": codes.GATEWAY_EXT, "valueReference": {
            "reference": device_urn(CFG.device_system, "vitalwire-gateway")}}],
        "identifier": [{"system": "urn:vitalwire:fhir:observation", "value": ident}],
        "status": "final",
        "category": [
            {"coding": [{"system": codes.CATEGORY, "code": "vital-signs"}]},
            {"coding": [{"system": codes.PHD_CATEGORY, "code": "phd"}]},
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"},
                            {"system": "urn:iso:std:iso:11073:10101", "code": "147842"}],
                 "text": "Heart rate"},
        "subject": {"reference": "Patient/P1"},
        "effectiveDateTime": "2026-03-01T08:30:15+00:00",
        "valueQuantity": {"value": 72.5, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
        "device": {"reference": device_urn(CFG.device_system, "HR-1")},
    }  # fmt: skip
    assert len(ident) == 40
    assert check_observation(obs, now=NOW) == []
    Observation.model_validate(obs)


def test_identifier_is_deterministic_and_distinguishes_inputs() -> None:
    a = observation_identifier("D", "P", "8867-4", 1)
    assert a == observation_identifier("D", "P", "8867-4", 1)
    assert len({a, observation_identifier("D", "P", "8867-4", 2),
                observation_identifier("D", "Q", "8867-4", 1),
                observation_identifier("E", "P", "8867-4", 1),
                observation_identifier("D", "P", "9279-1", 1)}) == 5  # fmt: skip


def test_spo2_carries_both_loinc_codes_first_then_mdc() -> None:
    obs = only(frame(("spo2", "OX-1", 97.0, "%")))
    assert obs["code"]["coding"] == [
        {"system": codes.LOINC, "code": "2708-6"},
        {"system": codes.LOINC, "code": "59408-5"},
        {"system": codes.MDC, "code": "150456"},
    ]


def test_bp_readings_become_one_panel_with_components() -> None:
    obs = only(frame(("systolic_bp", "BP-1", 121.0, "mm[Hg]"),
                     ("diastolic_bp", "BP-1", 79.0, "mm[Hg]"),
                     ("mean_bp", "BP-1", 93.0, "mm[Hg]")))  # fmt: skip
    assert obs["code"]["coding"][0] == {"system": codes.LOINC, "code": "85354-9"}
    assert obs["meta"]["profile"][1] == "http://hl7.org/fhir/StructureDefinition/bp"
    assert "valueQuantity" not in obs
    comps = obs["component"]
    assert [c["code"]["coding"][0]["code"] for c in comps] == ["8480-6", "8462-4", "8478-0"]
    assert [c["valueQuantity"]["value"] for c in comps] == [121.0, 79.0, 93.0]
    assert {c["valueQuantity"]["code"] for c in comps} == {"mm[Hg]"}
    assert check_observation(obs, now=NOW) == []
    Observation.model_validate(obs)


def test_lone_systolic_panel_marks_diastolic_absent() -> None:
    obs = only(frame(("systolic_bp", "BP-1", 121.0, "mm[Hg]")))
    dia = obs["component"][1]
    assert dia["dataAbsentReason"] == {"coding": [{"system": codes.DATA_ABSENT, "code": "unknown"}]}
    assert check_observation(obs, now=NOW) == []


def test_glucose_is_laboratory_without_vital_signs_profile() -> None:
    obs = only(frame(("glucose", "GM-1", 99.0858, "mg/dL")))
    assert "meta" not in obs
    assert obs["category"][0] == {"coding": [{"system": codes.CATEGORY, "code": "laboratory"}]}
    assert obs["code"]["coding"][0]["code"] == "41653-7"
    assert obs["valueQuantity"]["value"] == 99.0858
    cgm = only(frame(("cgm_glucose", "CGM-1", 120.0, "mg/dL")))
    assert [c["code"] for c in cgm["code"]["coding"]] == ["99504-3", "160212"]


def test_value_precision_is_kept_without_float_noise() -> None:
    obs = only(frame(("body_temperature", "T-1", 98.6, "[degF]")))
    assert obs["valueQuantity"]["value"] == 37.0
    assert json.dumps(obs["valueQuantity"]) == (
        '{"value": 37.0, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"}'
    )
    weight = only(frame(("body_weight", "SC-1", 68.0388555, "kg")))
    assert weight["valueQuantity"]["value"] == 68.0388555


def test_limits_give_interpretation_and_reference_range_citing_the_plan() -> None:
    ranges = limits("heart_rate", 50.0, 100.0, 40.0, 130.0, version="7")
    values = {45.0: "L", 35.0: "LL", 72.0: "N", 100.0: "N", 101.0: "H", 131.0: "HH"}
    for value, expected in values.items():
        obs = only(frame(("heart_rate", "HR-1", value, "/min")), ranges=ranges)
        assert obs["interpretation"] == [
            {"coding": [{"system": codes.INTERPRETATION, "code": expected}]}
        ]
        assert [r["text"] for r in obs["referenceRange"]] == [
            "patient-specific alert limits, care plan version 7",
            "patient-specific critical limits, care plan version 7",
        ]
        assert obs["referenceRange"][0]["low"]["value"] == 50.0
        assert check_observation(obs, now=NOW) == [], value


def test_bp_panel_interpretation_is_abnormal_when_components_disagree() -> None:
    ranges = TableReferenceRanges(pl.DataFrame({
        "patient_id": ["P1", "P1"], "metric": ["systolic_bp", "diastolic_bp"],
        "valid_from": [datetime(2026, 1, 1, tzinfo=UTC)] * 2,
        "low": [90.0, 60.0], "high": [140.0, 90.0], "critical_low": [None, None],
        "critical_high": [None, None], "plan_version": ["2", "2"],
    }))  # fmt: skip
    high_low = frame(
        ("systolic_bp", "BP-1", 150.0, "mm[Hg]"), ("diastolic_bp", "BP-1", 55.0, "mm[Hg]")
    )
    obs = only(high_low, ranges=ranges)
    assert obs["interpretation"][0]["coding"][0]["code"] == "A"
    assert [c["interpretation"][0]["coding"][0]["code"] for c in obs["component"]] == ["H", "L"]
    assert check_observation(obs, now=NOW) == []


def test_quality_flags_and_simulated_source() -> None:
    obs = only(
        frame(("heart_rate", "HR-1", 70.0, "/min"), source="sim", quality=int(Quality.QUESTIONABLE))
    )
    assert obs["meta"]["security"] == [codes.HTEST]
    assert obs["interpretation"] == [
        {"coding": [{"system": codes.MEASUREMENT_STATUS, "code": "questionable"}]}
    ]
    absent = only(frame(("heart_rate", "HR-1", None, "/min"), quality=int(Quality.VALUE_ABSENT)))
    assert "valueQuantity" not in absent
    assert absent["dataAbsentReason"] == {
        "coding": [{"system": codes.DATA_ABSENT, "code": "error"}]
    }
    assert check_observation(absent, now=NOW) == []


def test_unmappable_readings_fail_with_reasons(tmp_path: Path) -> None:
    text = Path("pipeline/metrics.toml").read_text()
    text += (
        '\n[metric.mystery]\nlabel = "Mystery"\ncanonical_unit = "1"\nloinc = []\n'
        'plausible = [0.0, 1.0]\ncategory = "procedure"\nunits = { "1" = [1.0, 0.0] }\n'
    )
    (tmp_path / "m.toml").write_text(text)
    cat = load_catalogue(tmp_path / "m.toml")
    readings = frame(("heart_rate", "HR-1", 72.0, "Hz"), ("heart_rate", "HR-1", 72.0, "/min"))
    readings = pl.concat(
        [
            readings.with_columns(pl.col("metric").cast(pl.Utf8)),
            pl.DataFrame({"metric": ["mystery"]})
            .join(readings.drop("metric").head(1), how="cross")
            .select(readings.columns),
        ],
        how="vertical_relaxed",
    )
    result = to_fhir_observations(readings, CFG, cat=cat)
    assert [(f.outbox_ids, f.reason_code, f.reason) for f in result.failures] == [
        ((0,), "unit_not_convertible", "unit: 'Hz' cannot be converted to /min (heart_rate)"),
        ((2,), "no_code", "metric: no LOINC or MDC code for 'mystery' in the catalogue"),
    ]
    assert [o.outbox_ids for o in result.observations] == [(1,)]


@pytest.mark.parametrize("size", [1, 7])
def test_every_bundle_parses_with_r4b_and_passes_rules(size: int) -> None:
    readings = frame(
        ("heart_rate", "BM-1", 88.0, "/min"), ("respiratory_rate", "BM-1", 18.0, "/min"),
        ("spo2", "BM-1", 95.0, "%"), ("systolic_bp", "BM-1", 121.0, "mm[Hg]"),
        ("diastolic_bp", "BM-1", 79.0, "mm[Hg]"), ("body_temperature", "BM-1", 37.2, "Cel"),
        ("body_weight", "SC-1", 70.25, "kg"), ("glucose", "GM-1", 5.5, "mmol/L"),
        ("cgm_glucose", "FE-ED-AB-EE-FE-ED-AB-EE", 101.0, "mg/dL"),
        ("steps", "PW-1", 5123.0, "{steps}"), ("hrv_sdnn", "PW-1", 42.0, "ms"),
    )  # fmt: skip
    result = to_fhir_observations(readings, CFG)
    assert result.failures == []
    assert len(result.observations) == 10
    for start in range(0, 10, size):
        bundle = build_bundle(result.observations[start : start + size], CFG)
        assert check_bundle(bundle, now=NOW, identifier_system=CFG.identifier_system) == []
        parsed = Bundle.model_validate(bundle)
        assert parsed.type == "transaction"
    eui = build_bundle([o for o in result.observations if o.device_id.startswith("FE")], CFG)
    device = eui["entry"][1]["resource"]
    assert device["identifier"][1]["value"] == "FE-ED-AB-EE-FE-ED-AB-EE"
    assert T0.tzinfo is UTC

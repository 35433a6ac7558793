"""The Open mHealth decoder."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.errors import DecodeError
from gateway.formats.base import DecodeContext
from gateway.formats.openmhealth import decode_openmhealth
from gateway.records import RawReading, Rejection

PAYLOADS = Path(__file__).parent.parent / "testdata" / "payloads"
NO_CAPTURE = DecodeContext("omh/in", None, 0)
CAPTURED = DecodeContext("openmhealth/v1/devices/scale-1", "scale-1", 0)
T0_US = 1_740_816_000_000_000  # 2025-03-01T08:00:00Z
T0 = "2025-03-01T08:00:00Z"


def _decode(
    payload: object, ctx: DecodeContext = CAPTURED
) -> tuple[list[RawReading], list[Rejection]]:
    result = decode_openmhealth(orjson.dumps(payload), ctx)
    return result.readings, result.rejections


def test_heart_rate_data_point_uses_source_name_and_maps_the_unit() -> None:
    result = decode_openmhealth((PAYLOADS / "omh-heart-rate.json").read_bytes(), NO_CAPTURE)
    assert result.readings == [RawReading("hr-strap-17", "heart_rate", 61.0, "/min", T0_US, None)]
    assert result.rejections == []


def test_topic_capture_wins_over_source_name() -> None:
    result = decode_openmhealth((PAYLOADS / "omh-heart-rate.json").read_bytes(), CAPTURED)
    assert [r.device_id for r in result.readings] == ["scale-1"]


def test_blood_pressure_gives_systolic_and_diastolic() -> None:
    result = decode_openmhealth((PAYLOADS / "omh-blood-pressure.json").read_bytes(), NO_CAPTURE)
    assert result.readings == [
        RawReading("cuff-4", "systolic_bp", 160.0, "mm[Hg]", T0_US, None),
        RawReading("cuff-4", "diastolic_bp", 60.0, "mm[Hg]", T0_US, None),
    ]


def test_step_count_interval_from_start_plus_duration() -> None:
    path = PAYLOADS / "omh-step-count-interval.json"
    result = decode_openmhealth(path.read_bytes(), NO_CAPTURE)
    assert result.readings == [RawReading("pedometer-2", "steps", 7939.0, "{steps}", T0_US, None)]


def test_array_of_bare_bodies_detected_by_key() -> None:
    result = decode_openmhealth((PAYLOADS / "omh-mixed-bodies.json").read_bytes(), CAPTURED)
    assert result.readings == [
        RawReading("scale-1", "body_temperature", 98.6, "[degF]", T0_US, None),
        RawReading("scale-1", "spo2", 96.0, "%", T0_US, None),
        RawReading("scale-1", "cgm_glucose", 6.1, "mmol/L", T0_US, None),
        RawReading("scale-1", "respiratory_rate", 14.0, "{breaths}/min", T0_US, None),
        RawReading("scale-1", "steps", 120.0, "{steps}", T0_US, None),
    ]
    (rejection,) = result.rejections
    assert (rejection.reason_code, rejection.field) == ("bad_shape", "$[5]")
    assert "no supported Open mHealth measure" in rejection.reason


@pytest.mark.parametrize(
    ("measure", "expected"),
    [
        ({"body_weight": {"value": 165.3, "unit": "lb"}}, ("body_weight", 165.3, "[lb_av]")),
        ({"body_weight": {"value": 75, "unit": "kg"}}, ("body_weight", 75.0, "kg")),
        ({"body_temperature": {"value": 37.2, "unit": "C"}}, ("body_temperature", 37.2, "Cel")),
        ({"body_temperature": {"value": 310.2, "unit": "K"}}, ("body_temperature", 310.2, "K")),
        ({"blood_glucose": {"value": 95, "unit": "mg/dL"}}, ("glucose", 95.0, "mg/dL")),
        (
            {"blood_glucose": {"value": 95, "unit": "mg/dL"}, "specimen_source": "capillary blood"},
            ("glucose", 95.0, "mg/dL"),
        ),
        ({"heart_rate": {"value": 70, "unit": "bpm"}}, ("heart_rate", 70.0, "bpm")),
    ],
)
def test_units_are_mapped_but_values_never_converted(
    measure: dict[str, object], expected: tuple[str, float, str]
) -> None:
    body = {**measure, "effective_time_frame": {"date_time": T0}}
    readings, rejections = _decode(body)
    assert rejections == []
    assert readings == [RawReading("scale-1", *expected, T0_US, None)]


def test_schema_name_in_header_selects_the_extractor() -> None:
    point = {
        "header": {"schema_id": {"namespace": "omh", "name": "body-weight", "version": "2.0"}},
        "body": {
            "body_weight": {"value": 80, "unit": "kg"},
            "effective_time_frame": {"date_time": T0},
        },
    }
    readings, _ = _decode(point)
    assert [r.metric for r in readings] == ["body_weight"]


def test_one_bad_blood_pressure_part_keeps_the_other() -> None:
    body = {
        "systolic_blood_pressure": {"value": "high", "unit": "mmHg"},
        "diastolic_blood_pressure": {"value": 70, "unit": "mmHg"},
        "effective_time_frame": {"date_time": T0},
    }
    readings, rejections = _decode(body)
    assert readings == [RawReading("scale-1", "diastolic_bp", 70.0, "mm[Hg]", T0_US, None)]
    assert rejections == [
        Rejection(
            "bad_value",
            "$.systolic_blood_pressure.value",
            "$.systolic_blood_pressure.value: expected a number, got string 'high'",
            "scale-1",
        )
    ]


def _point(body: dict[str, object], header: dict[str, object] | None = None) -> object:
    return {"header": header or {}, "body": body}


WHEN = {"effective_time_frame": {"date_time": T0}}


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (
            _point({"heart_rate": {"unit": "beats/min"}, **WHEN}),
            "missing_field",
            "$.body.heart_rate.value",
        ),
        (_point({"heart_rate": {"value": 60}, **WHEN}), "missing_field", "$.body.heart_rate.unit"),
        (
            _point({"heart_rate": {"value": 60, "unit": 5}, **WHEN}),
            "bad_value",
            "$.body.heart_rate.unit",
        ),
        (_point({"heart_rate": 60, **WHEN}), "bad_value", "$.body.heart_rate"),
        (
            _point({"heart_rate": {"value": "60", "unit": "beats/min"}, **WHEN}),
            "bad_value",
            "$.body.heart_rate.value",
        ),
        (
            _point({"heart_rate": {"value": 60, "unit": "beats/min"}}),
            "missing_field",
            "$.body.effective_time_frame",
        ),
        (
            _point(
                {
                    "heart_rate": {"value": 60, "unit": "beats/min"},
                    "effective_time_frame": {"date_time": "2025-03-01T08:00:00"},
                }
            ),
            "bad_timestamp",
            "$.body.effective_time_frame.date_time",
        ),
        (
            _point(
                {
                    "heart_rate": {"value": 60, "unit": "beats/min"},
                    "effective_time_frame": {"date_time": 1740816000},
                }
            ),
            "bad_timestamp",
            "$.body.effective_time_frame.date_time",
        ),
        (
            _point({"heart_rate": {"value": 60, "unit": "beats/min"}, "effective_time_frame": {}}),
            "missing_field",
            "$.body.effective_time_frame",
        ),
        (
            _point(
                {
                    "step_count": 5,
                    "effective_time_frame": {"time_interval": {"start_date_time": T0}},
                }
            ),
            "missing_field",
            "$.body.effective_time_frame.time_interval",
        ),
        (
            _point(
                {
                    "step_count": 5,
                    "effective_time_frame": {
                        "time_interval": {
                            "start_date_time": T0,
                            "duration": {"value": 1, "unit": "Mo"},
                        }
                    },
                }
            ),
            "bad_value",
            "$.body.effective_time_frame.time_interval.duration.unit",
        ),
        (
            _point(
                {
                    "blood_glucose": {"value": 5, "unit": "mmol/L"},
                    "specimen_source": "tears",
                    **WHEN,
                }
            ),
            "bad_value",
            "$.body.specimen_source",
        ),
        (
            _point(
                {"heart_rate": {"value": 60, "unit": "beats/min"}, **WHEN},
                {"schema_id": {"name": "sleep-duration"}},
            ),
            "bad_value",
            "$.header.schema_id.name",
        ),
        (
            _point(
                {"heart_rate": {"value": 60, "unit": "beats/min"}, **WHEN},
                {"schema_id": {"name": "blood-pressure"}},
            ),
            "missing_field",
            "$.body.systolic_blood_pressure",
        ),
        (
            _point(
                {"heart_rate": {"value": 60, "unit": "beats/min"}, **WHEN},
                {"schema_id": {"name": "body-weight"}},
            ),
            "missing_field",
            "$.body.body_weight",
        ),
        (
            _point({"step_count": None, **WHEN}, {"schema_id": {"name": "step-count"}}),
            "bad_value",
            "$.body.step_count",
        ),
        ({"header": {}, "body": None}, "missing_field", "$.body"),
        ({"header": [], "body": {}}, "bad_value", "$.header"),
        (
            _point(
                {"heart_rate": {"value": 60, "unit": "beats/min"}, **WHEN},
                {"schema_id": "heart-rate"},
            ),
            "bad_value",
            "$.header.schema_id",
        ),
    ],
)
def test_each_error_names_its_field(payload: object, code: str, field: str) -> None:
    readings, rejections = _decode(payload)
    assert readings == []
    (rejection,) = rejections
    assert (rejection.reason_code, rejection.field) == (code, field)
    assert rejection.reason.startswith(f"{field}: ")


def test_missing_device_id_names_source_name() -> None:
    readings, rejections = _decode(
        {"heart_rate": {"value": 60, "unit": "beats/min"}, **WHEN}, NO_CAPTURE
    )
    assert readings == []
    assert [(r.reason_code, r.field) for r in rejections] == [
        ("missing_field", "$.header.acquisition_provenance.source_name")
    ]


def test_rejection_in_array_names_item_and_source_name() -> None:
    good = _point(
        {"heart_rate": {"value": 60, "unit": "beats/min"}, **WHEN},
        {"acquisition_provenance": {"source_name": "strap-1"}},
    )
    bad = _point(
        {"heart_rate": {"value": None, "unit": "beats/min"}, **WHEN},
        {"acquisition_provenance": {"source_name": "strap-2"}},
    )
    readings, rejections = _decode([good, bad, 7], NO_CAPTURE)
    assert readings == [RawReading("strap-1", "heart_rate", 60.0, "/min", T0_US, None)]
    assert [(r.reason_code, r.field, r.device_id) for r in rejections] == [
        ("bad_value", "$[1].body.heart_rate.value", "strap-2"),
        ("bad_shape", "$[2]", ""),
    ]


@pytest.mark.parametrize(("payload", "code"), [(b"{", "malformed_json"), (b"3", "bad_shape")])
def test_unusable_payload_raises(payload: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_openmhealth(payload, CAPTURED)
    assert info.value.reason_code == code

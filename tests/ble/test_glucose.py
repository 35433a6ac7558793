"""Glucose, glucose context and CGM decoders against vectors from the GSS tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.ble.codec import Quantity
from gateway.ble.glucose import (
    decode_cgm_feature,
    decode_cgm_measurement,
    decode_cgm_session_start_time,
    decode_glucose_context,
    decode_glucose_measurement,
    glucose_sequence,
    session_start_utc_us,
)
from gateway.ble.model import CALIBRATING, QUESTIONABLE, BleContext, BleReading
from gateway.errors import DecodeError

T = 1_714_566_600_000_000  # 2024-05-01T12:30:00Z
DATE = "e80705010c1e00"
MIN = 60_000_000


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# -- Glucose Measurement 0x2A18 ---------------------------------------------------------------


def test_glucose_kg_per_l_with_negative_time_offset() -> None:
    d = decode_glucose_measurement(h("03" "0100" + DATE + "f6ff" "5fb0" "11"))
    assert d.readings == (
        BleReading("glucose", Quantity(Decimal("0.00095")), "kg/L", T - 10 * MIN, 1, 0),
    )
    assert d.fields["type"] == "capillary_whole_blood"
    assert d.fields["sample_location"] == "finger"
    assert d.fields["time_offset_min"] == -10
    assert d.fields["concentration"] == {"value": 0.00095, "unit": "kg/L"}


def test_glucose_mol_per_l() -> None:
    d = decode_glucose_measurement(h("06" "2a00" + DATE + "35c0" "21"))
    assert d.readings == (
        BleReading("glucose", Quantity(Decimal("0.0053")), "mol/L", T, 42, 0),
    )
    assert d.fields["type"] == "capillary_whole_blood"
    assert d.fields["sample_location"] == "alternate_site_test"


@pytest.mark.parametrize(
    ("status", "names", "quality"),
    [
        ("0100", ["device_battery_low"], 0),
        ("2000", ["result_too_high"], QUESTIONABLE),
        ("0008", ["time_fault"], QUESTIONABLE),
        ("0204", ["sensor_malfunction", "general_device_fault"], QUESTIONABLE),
    ],
)
def test_glucose_annunciation(status: str, names: list[str], quality: int) -> None:
    d = decode_glucose_measurement(h("0a" "0500" + DATE + "5fb0" "11" + status))
    assert d.fields["sensor_status_annunciation"] == names
    assert d.readings[0].quality == quality


def test_glucose_control_solution_is_not_a_reading() -> None:
    d = decode_glucose_measurement(h("02" "0700" + DATE + "5fb0" "4a"))
    assert d.readings == ()
    assert d.fields["control_solution"] is True
    assert d.fields["type"] == "control_solution"


def test_glucose_without_concentration_and_unknown_time() -> None:
    d = decode_glucose_measurement(h("10" "0900" "00000000000000"))
    assert d.readings == ()
    assert d.fields["base_time"] == "unknown"
    assert d.fields["context_follows"] is True


def test_glucose_unknown_base_time_and_nan() -> None:
    d = decode_glucose_measurement(h("02" "0900" "00000000000000" "ff07" "11"))
    assert d.readings == (BleReading("glucose", Quantity(None, "NaN"), "kg/L", None, 9, 0),)


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ("03" "0100", "truncated", "base_time"),
        ("03" "0100" + DATE + "f6ff" "5fb0", "truncated", "type_sample_location"),
        ("00" "0100" + DATE + "00", "trailing_bytes", "flags"),
        ("00" "0100" "e8070d010c1e00", "bad_timestamp", "base_time"),
    ],
)
def test_glucose_bad_payloads(payload: str, code: str, field: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_glucose_measurement(h(payload))
    assert (exc.value.reason_code, exc.value.field) == (code, field)


def test_glucose_sequence_peek() -> None:
    assert glucose_sequence(h("03" "3412")) == 0x1234
    assert glucose_sequence(h("03" "34")) is None


# -- Glucose Measurement Context 0x2A34 -------------------------------------------------------


def test_glucose_context_every_field() -> None:
    payload = "ff" "0100" "00" "01" "05e0" "01" "21" "3c00" "32" "01" "01d0" "41f0"
    d = decode_glucose_context(h(payload))
    assert d.readings == ()
    assert d.fields == {
        "flags": 0xFF,
        "sequence_number": 1,
        "extended_flags": 0,
        "carbohydrate": "breakfast",
        "carbohydrate_amount": {"value": 0.05, "unit": "kg"},
        "meal": "preprandial",
        "tester": "self",
        "health": "major_health_issues",
        "exercise_duration_s": 60,
        "exercise_overrun": False,
        "exercise_intensity_pct": 50,
        "medication": "rapid_acting_insulin",
        "medication_amount": {"value": 0.001, "unit": "L"},
        "hba1c": {"value": 6.5, "unit": "%"},
    }


def test_glucose_context_medication_in_kg_and_exercise_overrun() -> None:
    d = decode_glucose_context(h("18" "0200" "ffff" "64" "04" "05d0"))
    assert d.fields["exercise_overrun"] is True
    assert d.fields["exercise_duration_s"] is None
    assert d.fields["medication"] == "long_acting_insulin"
    assert d.fields["medication_amount"] == {"value": 0.005, "unit": "kg"}


def test_glucose_context_truncated_meal() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_glucose_context(h("02" "0100"))
    assert (exc.value.reason_code, exc.value.field) == ("truncated", "meal")


# -- CGM Measurement 0x2AA7 -------------------------------------------------------------------

SST = T


def test_cgm_minimal_record_with_session_start() -> None:
    d = decode_cgm_measurement(h("06" "00" "7800" "0500"), BleContext(session_start_us=SST))
    assert d.readings == (BleReading("cgm_glucose", Quantity(Decimal(120)), "mg/dL",
                                     SST + 5 * MIN, 5, 0),)


def test_cgm_without_session_start_has_no_device_time() -> None:
    d = decode_cgm_measurement(h("06" "00" "7800" "0500"))
    assert d.readings[0].time_us is None
    assert d.readings[0].seq == 5


def test_cgm_several_records_per_notification() -> None:
    d = decode_cgm_measurement(h("06007800050006007a000a00"), BleContext(session_start_us=SST))
    assert [(r.quantity.value, r.time_us) for r in d.readings] == [
        (Decimal(120), SST + 5 * MIN), (Decimal(122), SST + 10 * MIN)
    ]


def test_cgm_annunciation_octets_in_gss_order() -> None:
    d = decode_cgm_measurement(h("09" "e0" "7800" "0f00" "08" "08" "80"))
    record = d.fields["records"][0]  # type: ignore[index]
    assert record["sensor_status_annunciation"] == [
        "sensor_malfunction", "calibration_required", "result_above_device_range"
    ]
    assert d.readings[0].quality == QUESTIONABLE | CALIBRATING


def test_cgm_status_octet_only() -> None:
    d = decode_cgm_measurement(h("07" "80" "7800" "0f00" "02"))
    assert d.fields["records"][0]["sensor_status_annunciation"] == ["device_battery_low"]  # type: ignore[index]
    assert d.readings[0].quality == 0


def test_cgm_trend_and_quality() -> None:
    d = decode_cgm_measurement(h("0a" "03" "7800" "1400" "fe0f" "5f00"))
    record = d.fields["records"][0]  # type: ignore[index]
    assert record["trend"] == {"value": -2, "unit": "mg/dL/min"}
    assert record["quality"] == {"value": 95, "unit": "%"}


def test_cgm_e2e_crc_good() -> None:
    d = decode_cgm_measurement(h("08" "00" "7800" "0500" "0de8"))
    assert len(d.readings) == 1
    assert d.rejected == ()
    assert d.fields["records"][0]["e2e_crc"] == "0xE80D"  # type: ignore[index]


def test_cgm_e2e_crc_mismatch_drops_only_that_record() -> None:
    d = decode_cgm_measurement(h("08" "00" "7800" "0500" "0000" "06" "00" "7a00" "0a00"))
    assert [r.seq for r in d.readings] == [10]
    assert len(d.rejected) == 1
    assert d.rejected[0].reason_code == "crc_mismatch"
    assert d.rejected[0].field == "records[0].e2e_crc"
    assert "computed 0xE80D" in d.rejected[0].reason


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ("", "truncated", "records[0].size"),
        ("08" "00" "7800" "0500", "truncated", "records[0].size"),
        ("07" "00" "7800" "0500" "00", "inconsistent", "records[0].size"),
        ("03" "00" "78", "inconsistent", "records[0].size"),
        ("06007800050009e0780005000000", "truncated", "records[1].size"),
    ],
)
def test_cgm_bad_payloads(payload: str, code: str, field: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_cgm_measurement(h(payload))
    assert (exc.value.reason_code, exc.value.field) == (code, field)


def test_cgm_nan_glucose_is_absent() -> None:
    d = decode_cgm_measurement(h("06" "00" "ff07" "0500"))
    assert d.readings[0].quantity == Quantity(None, "NaN")


# -- CGM Session Start Time 0x2AAA, CGM Feature 0x2AA8 ------------------------------------------


def test_session_start_time_zone_and_dst() -> None:
    local_0800 = "e807050108" "0000"
    assert session_start_utc_us(h(local_0800 + "04" "00")) == T - 330 * MIN  # UTC+1: 07:00Z
    assert session_start_utc_us(h(local_0800 + "04" "04")) == T - 390 * MIN  # + DST: 06:00Z
    assert session_start_utc_us(h(local_0800 + "f8" "00")) == T - 150 * MIN  # UTC-2: 10:00Z
    assert session_start_utc_us(h(local_0800 + "80" "ff")) == T - 270 * MIN  # unknown: 08:00Z


def test_session_start_unknown() -> None:
    assert session_start_utc_us(h("00000000000000" "00" "00")) is None


def test_session_start_bad_time_zone() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_cgm_session_start_time(h(DATE + "40" "00"))
    assert (exc.value.reason_code, exc.value.field) == ("bad_value", "time_zone")


def test_cgm_feature() -> None:
    d = decode_cgm_feature(h("001000" "21" "3fb6"))
    assert d.fields["features"] == ["e2e_crc"]
    assert d.fields["type"] == "capillary_whole_blood"
    assert d.fields["sample_location"] == "alternate_site_test"

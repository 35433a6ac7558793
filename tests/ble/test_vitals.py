"""Vital-sign decoders against vectors built from the GSS field tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.ble.codec import Quantity
from gateway.ble.model import CALIBRATING, CLOCK_UNSET, QUESTIONABLE, BleReading
from gateway.ble.vitals import (
    decode_battery_level,
    decode_blood_pressure,
    decode_current_time,
    decode_heart_rate,
    decode_intermediate_cuff_pressure,
    decode_intermediate_temperature,
    decode_plx_continuous,
    decode_plx_spot_check,
    decode_temperature,
    decode_weight,
)
from gateway.errors import DecodeError

T = 1_714_566_600_000_000  # 2024-05-01T12:30:00Z
DATE = "e80705010c1e00"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def q(value: str | int) -> Quantity:
    return Quantity(Decimal(value))


# -- Heart Rate Measurement 0x2A37 ---------------------------------------------------------


def test_hr_uint8_minimal() -> None:
    d = decode_heart_rate(h("0048"))
    assert d.readings == (BleReading("heart_rate", q(72), "/min", None, None, 0),)
    assert d.fields == {
        "flags": 0,
        "heart_rate": {"value": 72, "unit": "/min"},
        "sensor_contact": "not_supported",
    }


def test_hr_uint16() -> None:
    assert decode_heart_rate(h("012c01")).readings[0].quantity == q(300)


@pytest.mark.parametrize(
    ("flags", "contact", "quality"),
    [("02", "not_supported", 0), ("04", "not_detected", QUESTIONABLE), ("06", "detected", 0)],
)
def test_hr_sensor_contact(flags: str, contact: str, quality: int) -> None:
    d = decode_heart_rate(h(flags + "48"))
    assert d.fields["sensor_contact"] == contact
    assert d.readings[0].quality == quality


def test_hr_energy_expended_and_saturation() -> None:
    d = decode_heart_rate(h("08483412"))
    assert d.fields["energy_expended"] == {"value": 0x1234, "unit": "kJ"}
    assert d.fields["energy_saturated"] is False
    assert decode_heart_rate(h("0848ffff")).fields["energy_saturated"] is True


def test_hr_rr_intervals_in_1024ths_oldest_first() -> None:
    d = decode_heart_rate(h("1048" "0003" "0004"))
    assert d.fields["rr_intervals_1024"] == [768, 1024]
    assert d.fields["rr_intervals_s"] == [0.75, 1]


def test_hr_every_optional_field() -> None:
    d = decode_heart_rate(h("1f" "2c01" "1000" "0004" "cd03"))
    assert d.readings[0].quantity == q(300)
    assert d.fields["sensor_contact"] == "detected"
    assert d.fields["energy_expended"] == {"value": 16, "unit": "kJ"}
    assert d.fields["rr_intervals_1024"] == [1024, 973]
    assert d.fields["rr_intervals_s"] == [1, 0.9501953125]


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ("", "truncated", "flags"),
        ("01", "truncated", "heart_rate"),
        ("0148", "truncated", "heart_rate"),
        ("084801", "truncated", "energy_expended"),
        ("1048", "inconsistent", "rr_intervals"),
        ("104800", "inconsistent", "rr_intervals"),
        ("004800", "trailing_bytes", "flags"),
    ],
)
def test_hr_bad_payloads(payload: str, code: str, field: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_heart_rate(h(payload))
    assert (exc.value.reason_code, exc.value.field) == (code, field)


# -- Blood Pressure Measurement 0x2A35 / Intermediate Cuff Pressure 0x2A36 ------------------


def test_bp_mmhg_minimal() -> None:
    d = decode_blood_pressure(h("00" "7800" "5000" "5a00"))
    assert d.readings == (
        BleReading("systolic_bp", q(120), "mm[Hg]", None),
        BleReading("diastolic_bp", q(80), "mm[Hg]", None),
        BleReading("mean_bp", q(90), "mm[Hg]", None),
    )


def test_bp_kpa_negative_exponent() -> None:
    d = decode_blood_pressure(h("01" "a0f0" "6bf0" "7df0"))
    assert [(r.quantity, r.unit) for r in d.readings] == [
        (q("16.0"), "kPa"), (q("10.7"), "kPa"), (q("12.5"), "kPa")
    ]


def test_bp_every_field() -> None:
    d = decode_blood_pressure(h("1e" "7800" "5000" "5a00" + DATE + "4800" "01" "0100"))
    metrics = [r.metric for r in d.readings]
    assert metrics == ["systolic_bp", "diastolic_bp", "mean_bp", "heart_rate"]
    assert {r.time_us for r in d.readings} == {T}
    assert {r.quality for r in d.readings} == {QUESTIONABLE}  # body movement
    assert d.fields["time_stamp"] == "2024-05-01T12:30:00"
    assert d.fields["user_id"] == 1
    assert d.fields["measurement_status"] == ["body_movement"]
    assert d.fields["pulse_rate_range"] == "within_range"


@pytest.mark.parametrize(
    ("status", "names", "bp_quality", "pulse_quality", "pulse_range"),
    [
        ("0000", [], 0, 0, "within_range"),
        ("0200", ["cuff_too_loose"], QUESTIONABLE, QUESTIONABLE, "within_range"),
        ("0400", ["irregular_pulse"], 0, 0, "within_range"),
        ("0800", [], 0, QUESTIONABLE, "above_upper_limit"),
        ("1000", [], 0, QUESTIONABLE, "below_lower_limit"),
        ("2000", ["improper_position"], QUESTIONABLE, QUESTIONABLE, "within_range"),
    ],
)
def test_bp_status_bits(
    status: str, names: list[str], bp_quality: int, pulse_quality: int, pulse_range: str
) -> None:
    d = decode_blood_pressure(h("14" "7800" "5000" "5a00" "4800" + status))
    assert d.fields["measurement_status"] == names
    assert d.fields["pulse_rate_range"] == pulse_range
    assert [r.quality for r in d.readings] == [bp_quality] * 3 + [pulse_quality]


def test_bp_unknown_user_and_nan_mean() -> None:
    d = decode_blood_pressure(h("08" "7800" "5000" "ff07" "ff"))
    assert d.fields["user_id"] is None
    assert d.readings[2].quantity == Quantity(None, "NaN")
    assert d.fields["mean_arterial"] == {"value": None, "unit": "mm[Hg]", "absent": "NaN"}


def test_intermediate_cuff_pressure_has_no_readings() -> None:
    d = decode_intermediate_cuff_pressure(h("00" "9600" "ff07" "ff07"))
    assert d.readings == ()
    assert d.fields["cuff_pressure"] == {"value": 150, "unit": "mm[Hg]"}


def test_intermediate_cuff_pressure_requires_nan_diastolic() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_intermediate_cuff_pressure(h("00" "9600" "5000" "ff07"))
    assert (exc.value.reason_code, exc.value.field) == ("inconsistent", "diastolic")


@pytest.mark.parametrize("payload", ["00785000", "02" "7800" "5000" "5a00" "e807", "10785000"])
def test_bp_truncated(payload: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_blood_pressure(h(payload))
    assert exc.value.reason_code == "truncated"


# -- Temperature 0x2A1C / 0x2A1E ------------------------------------------------------------


def test_temperature_celsius() -> None:
    d = decode_temperature(h("00" "6c0100ff"))
    assert d.readings == (BleReading("body_temperature", q("36.4"), "Cel", None),)


def test_temperature_fahrenheit_time_and_type() -> None:
    d = decode_temperature(h("07" "cf0300ff" + DATE + "06"))
    assert d.readings == (BleReading("body_temperature", q("97.5"), "[degF]", T),)
    assert d.fields["temperature_type"] == "mouth"


@pytest.mark.parametrize(("raw", "reason"), [("ffff7f00", "NaN"), ("02008000", "-INF")])
def test_temperature_special_values(raw: str, reason: str) -> None:
    assert decode_temperature(h("00" + raw)).readings[0].quantity == Quantity(None, reason)


def test_intermediate_temperature_has_no_readings() -> None:
    d = decode_intermediate_temperature(h("04" "6c0100ff" "09"))
    assert d.readings == ()
    assert d.fields["temperature_type"] == "tympanum"


# -- Pulse oximeter 0x2A5E / 0x2A5F ---------------------------------------------------------


def test_plx_spot_check_minimal() -> None:
    d = decode_plx_spot_check(h("00" "6200" "4800"))
    assert d.readings == (
        BleReading("spo2", q(98), "%", None), BleReading("heart_rate", q(72), "/min", None)
    )
    assert d.fields["device_clock_set"] is True


def test_plx_spot_check_every_field_and_clock_not_set() -> None:
    d = decode_plx_spot_check(h("1f" "6200" "4800" + DATE + "4040" "200000" "19f0"))
    assert d.fields["measurement_status"] == ["early_estimated_data", "questionable_measurement"]
    assert d.fields["device_and_sensor_status"] == ["low_perfusion"]
    assert d.fields["pulse_amplitude_index"] == {"value": 2.5, "unit": "%"}
    assert d.fields["device_clock_set"] is False
    expected = CALIBRATING | QUESTIONABLE | CLOCK_UNSET
    assert [(r.time_us, r.quality) for r in d.readings] == [(None, expected)] * 2


def test_plx_spot_check_with_time() -> None:
    d = decode_plx_spot_check(h("01" "6200" "4800" + DATE))
    assert [r.time_us for r in d.readings] == [T, T]


def test_plx_continuous_every_field() -> None:
    payload = "1f" "6200" "4800" "6100" "4900" "6000" "4700" "0002" "000200" "19f0"
    d = decode_plx_continuous(h(payload))
    assert d.fields["spo2_fast"] == {"value": 97, "unit": "%"}
    assert d.fields["pulse_rate_slow"] == {"value": 71, "unit": "/min"}
    assert d.fields["measurement_status"] == ["data_from_measurement_storage"]
    assert d.fields["device_and_sensor_status"] == ["signal_analysis_ongoing"]
    assert [(r.metric, r.quantity, r.quality) for r in d.readings] == [
        ("spo2", q(98), CALIBRATING), ("heart_rate", q(72), CALIBRATING)
    ]


def test_plx_continuous_device_fault_is_questionable_and_nan_pr_absent() -> None:
    d = decode_plx_continuous(h("08" "6200" "ff07" "008000"))
    assert d.fields["device_and_sensor_status"] == ["sensor_disconnected"]
    assert d.readings[0].quality == QUESTIONABLE
    assert d.readings[1].quantity == Quantity(None, "NaN")


def test_plx_continuous_truncated_fast_pair() -> None:
    with pytest.raises(DecodeError) as exc:
        decode_plx_continuous(h("01" "6200" "4800" "6100"))
    assert (exc.value.reason_code, exc.value.field) == ("truncated", "pulse_rate_fast")


# -- Weight 0x2A9D ---------------------------------------------------------------------------


def test_weight_si_resolution() -> None:
    assert decode_weight(h("00" "703a")).readings == (
        BleReading("body_weight", q("74.800"), "kg", None),
    )


def test_weight_imperial_resolution() -> None:
    assert decode_weight(h("01" "7440")).readings[0] == BleReading(
        "body_weight", q("165.00"), "[lb_av]", None
    )


def test_weight_unsuccessful_is_absent() -> None:
    d = decode_weight(h("00" "ffff"))
    assert d.readings[0].quantity == Quantity(None, "unsuccessful")


def test_weight_every_field_si() -> None:
    d = decode_weight(h("0e" "703a" + DATE + "02" "f400" "d606"))
    assert d.readings[0].time_us == T
    assert d.fields["user_id"] == 2
    assert d.fields["bmi"] == {"value": 24.4, "unit": "kg/m2"}
    assert d.fields["height"] == {"value": 1.75, "unit": "m"}


def test_weight_imperial_height() -> None:
    d = decode_weight(h("09" "7440" "f400" "b102"))
    assert d.fields["height"] == {"value": 68.9, "unit": "[in_i]"}


# -- Battery Level 0x2A19, Current Time 0x2A2B -------------------------------------------------


def test_battery_level() -> None:
    assert decode_battery_level(h("64")).fields == {"battery_level": {"value": 100, "unit": "%"}}
    with pytest.raises(DecodeError) as exc:
        decode_battery_level(h("65"))
    assert exc.value.reason_code == "bad_value"


def test_current_time() -> None:
    d = decode_current_time(h(DATE + "03" "80" "01"))
    assert d.fields["device_time_us"] == T + 500_000
    assert d.fields["day_of_week"] == 3
    assert d.fields["adjust_reason"] == ["manual_time_update"]

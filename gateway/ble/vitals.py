"""Decoders of the vital-sign characteristics: heart rate, blood pressure, temperature,
pulse oximetry, weight, battery level and current time.

Each is a pure function ``(payload, BleContext) -> Decoded`` following the field tables of the
Bluetooth GATT Specification Supplement; see ``docs/ble.md``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from gateway.ble.codec import DeviceTime, Quantity, Reader, json_number
from gateway.ble.model import (
    CALIBRATING,
    CLOCK_UNSET,
    NO_CONTEXT,
    QUESTIONABLE,
    BleContext,
    BleReading,
    Decoded,
    bit_names,
)
from gateway.errors import DecodeError

__all__ = [
    "BP_STATUS",
    "PLX_DEVICE_STATUS",
    "PLX_MEASUREMENT_STATUS",
    "decode_battery_level",
    "decode_blood_pressure",
    "decode_current_time",
    "decode_heart_rate",
    "decode_intermediate_cuff_pressure",
    "decode_intermediate_temperature",
    "decode_plx_continuous",
    "decode_plx_spot_check",
    "decode_temperature",
    "decode_weight",
]

CONTACT: Final = {0: "not_supported", 1: "not_supported", 2: "not_detected", 3: "detected"}
SENSOR_LOCATION: Final = {
    0: "other", 1: "chest", 2: "wrist", 3: "finger", 4: "hand", 5: "ear_lobe", 6: "foot",
}

BP_STATUS: Final = {
    0: "body_movement", 1: "cuff_too_loose", 2: "irregular_pulse", 5: "improper_position",
}
"""Blood Pressure Measurement Status bits (pulse range, bits 3-4, is reported apart)."""
_BP_QUESTIONABLE: Final = 0b100011  # movement, cuff loose, improper position
PULSE_RANGE: Final = {0: "within_range", 1: "above_upper_limit", 2: "below_lower_limit", 3: "rfu"}

TEMPERATURE_TYPE: Final = {
    1: "armpit", 2: "body", 3: "ear", 4: "finger", 5: "gastro_intestinal_tract", 6: "mouth",
    7: "rectum", 8: "toe", 9: "tympanum",
}

PLX_MEASUREMENT_STATUS: Final = {
    5: "measurement_ongoing", 6: "early_estimated_data", 7: "validated_data",
    8: "fully_qualified_data", 9: "data_from_measurement_storage", 10: "data_for_demonstration",
    11: "data_for_testing", 12: "calibration_ongoing", 13: "measurement_unavailable",
    14: "questionable_measurement", 15: "invalid_measurement",
}
"""PLX Measurement Status bits."""
_PLX_MEAS_CALIBRATING: Final = 1 << 6 | 1 << 12
_PLX_MEAS_QUESTIONABLE: Final = 1 << 10 | 1 << 11 | 1 << 14 | 1 << 15

PLX_DEVICE_STATUS: Final = {
    0: "extended_display_update_ongoing", 1: "equipment_malfunction",
    2: "signal_processing_irregularity", 3: "inadequate_signal", 4: "poor_signal",
    5: "low_perfusion", 6: "erratic_signal", 7: "non_pulsatile_signal", 8: "questionable_pulse",
    9: "signal_analysis_ongoing", 10: "sensor_interference", 11: "sensor_unconnected_to_user",
    12: "unknown_sensor_connected", 13: "sensor_displaced", 14: "sensor_malfunctioning",
    15: "sensor_disconnected",
}
"""PLX Device and Sensor Status bits (bits 16-23 are reserved)."""
_PLX_DEV_CALIBRATING: Final = 1 << 9
_PLX_DEV_QUESTIONABLE: Final = 0xFFFF & ~(1 << 0 | 1 << 9)

_RR_SCALE: Final = Decimal(1) / Decimal(1024)
_KG_PER_STEP: Final = Decimal("0.005")
_LB_PER_STEP: Final = Decimal("0.01")
_M_PER_STEP: Final = Decimal("0.001")
_IN_PER_STEP: Final = Decimal("0.1")
_BMI_PER_STEP: Final = Decimal("0.1")


def _time_fields(fields: dict[str, object], t: DeviceTime | None) -> int | None:
    if t is None:
        return None
    fields["time_stamp"] = t.to_json() if t.utc_us is not None else "unknown"
    return t.utc_us


def decode_heart_rate(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Heart Rate Measurement (0x2A37)."""
    r = Reader(data, "Heart Rate Measurement")
    flags = r.u8("flags")
    hr = r.u16("heart_rate") if flags & 0x01 else r.u8("heart_rate")
    contact = flags >> 1 & 0x3
    fields: dict[str, object] = {
        "flags": flags,
        "heart_rate": {"value": hr, "unit": "/min"},
        "sensor_contact": CONTACT[contact],
    }
    if flags & 0x08:
        energy = r.u16("energy_expended")
        fields["energy_expended"] = {"value": energy, "unit": "kJ"}
        fields["energy_saturated"] = energy == 0xFFFF
    if flags & 0x10:
        if r.remaining == 0 or r.remaining % 2:
            raise DecodeError(
                "inconsistent",
                f"Heart Rate Measurement: rr_intervals: flags announce RR-Intervals but "
                f"{r.remaining} byte(s) remain (need a positive even count)",
                "rr_intervals",
            )
        rr = [r.u16("rr_intervals") for _ in range(r.remaining // 2)]
        fields["rr_intervals_1024"] = rr
        fields["rr_intervals_s"] = [json_number(v * _RR_SCALE) for v in map(Decimal, rr)]
    r.finish()
    quality = QUESTIONABLE if contact == 2 else 0
    reading = BleReading("heart_rate", Quantity(Decimal(hr)), "/min", None, None, quality)
    return Decoded(0x2A37, "Heart Rate Measurement", fields, (reading,))


def _blood_pressure(data: bytes, uuid16: int, name: str) -> tuple[dict[str, object], Reader,
                                                                   list[Quantity], str, int]:
    r = Reader(data, name)
    flags = r.u8("flags")
    unit = "kPa" if flags & 0x01 else "mm[Hg]"
    sys_, dia, mean = r.sfloat("systolic"), r.sfloat("diastolic"), r.sfloat("mean_arterial")
    return {"flags": flags}, r, [sys_, dia, mean], unit, flags


def _bp_tail(
    r: Reader, flags: int, fields: dict[str, object], ctx: BleContext
) -> tuple[int | None, Quantity | None, int, int]:
    """Time stamp, pulse rate, user id and status; returns (time, pulse, quality, pulse q)."""
    time_us = _time_fields(fields, r.date_time("time_stamp")) if flags & 0x02 else None
    pulse = r.sfloat("pulse_rate") if flags & 0x04 else None
    if pulse is not None:
        fields["pulse_rate"] = pulse.to_json("/min")
    if flags & 0x08:
        user = r.u8("user_id")
        fields["user_id"] = None if user == 0xFF else user
    quality = pulse_quality = 0
    if flags & 0x10:
        status = r.u16("measurement_status")
        fields["measurement_status"] = bit_names(status, BP_STATUS)
        fields["pulse_rate_range"] = PULSE_RANGE[status >> 3 & 0x3]
        quality = QUESTIONABLE if status & _BP_QUESTIONABLE else 0
        pulse_quality = quality | (QUESTIONABLE if status >> 3 & 0x3 else 0)
    r.finish()
    return time_us, pulse, quality, pulse_quality


def decode_blood_pressure(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Blood Pressure Measurement (0x2A35)."""
    fields, r, (sys_, dia, mean), unit, flags = _blood_pressure(
        data, 0x2A35, "Blood Pressure Measurement"
    )
    fields["systolic"] = sys_.to_json(unit)
    fields["diastolic"] = dia.to_json(unit)
    fields["mean_arterial"] = mean.to_json(unit)
    time_us, pulse, quality, pulse_quality = _bp_tail(r, flags, fields, ctx)
    readings = [
        BleReading("systolic_bp", sys_, unit, time_us, None, quality),
        BleReading("diastolic_bp", dia, unit, time_us, None, quality),
        BleReading("mean_bp", mean, unit, time_us, None, quality),
    ]
    if pulse is not None:
        readings.append(BleReading("heart_rate", pulse, "/min", time_us, None, pulse_quality))
    return Decoded(0x2A35, "Blood Pressure Measurement", fields, tuple(readings))


def decode_intermediate_cuff_pressure(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Intermediate Cuff Pressure (0x2A36): the cuff pressure while inflating; no readings."""
    name = "Intermediate Cuff Pressure"
    fields, r, (cuff, dia, mean), unit, flags = _blood_pressure(data, 0x2A36, name)
    for label, q in (("diastolic", dia), ("mean_arterial", mean)):
        if q.absent != "NaN":
            raise DecodeError(
                "inconsistent",
                f"{name}: {label}: must be NaN (0x07FF) in an intermediate cuff pressure, "
                f"got {q.value if q.value is not None else q.absent}",
                label,
            )
    fields["cuff_pressure"] = cuff.to_json(unit)
    _bp_tail(r, flags, fields, ctx)
    return Decoded(0x2A36, name, fields)


def _temperature(data: bytes, uuid16: int, name: str) -> tuple[dict[str, object], BleReading]:
    r = Reader(data, name)
    flags = r.u8("flags")
    unit = "[degF]" if flags & 0x01 else "Cel"
    value = r.float32("temperature")
    fields: dict[str, object] = {"flags": flags, "temperature": value.to_json(unit)}
    time_us = _time_fields(fields, r.date_time("time_stamp")) if flags & 0x02 else None
    if flags & 0x04:
        kind = r.u8("temperature_type")
        fields["temperature_type"] = TEMPERATURE_TYPE.get(kind, f"reserved ({kind})")
    r.finish()
    return fields, BleReading("body_temperature", value, unit, time_us)


def decode_temperature(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Temperature Measurement (0x2A1C)."""
    fields, reading = _temperature(data, 0x2A1C, "Temperature Measurement")
    return Decoded(0x2A1C, "Temperature Measurement", fields, (reading,))


def decode_intermediate_temperature(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Intermediate Temperature (0x2A1E): a value while measuring; no readings."""
    fields, _ = _temperature(data, 0x2A1E, "Intermediate Temperature")
    return Decoded(0x2A1E, "Intermediate Temperature", fields)


def _plx_status(r: Reader, flags: int, meas_bit: int, dev_bit: int,
                fields: dict[str, object]) -> int:
    quality = 0
    if flags & meas_bit:
        meas = r.u16("measurement_status")
        fields["measurement_status"] = bit_names(meas, PLX_MEASUREMENT_STATUS)
        quality |= CALIBRATING if meas & _PLX_MEAS_CALIBRATING else 0
        quality |= QUESTIONABLE if meas & _PLX_MEAS_QUESTIONABLE else 0
    if flags & dev_bit:
        dev = r.u24("device_and_sensor_status")
        fields["device_and_sensor_status"] = bit_names(dev, PLX_DEVICE_STATUS)
        quality |= CALIBRATING if dev & _PLX_DEV_CALIBRATING else 0
        quality |= QUESTIONABLE if dev & _PLX_DEV_QUESTIONABLE else 0
    return quality


def decode_plx_spot_check(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """PLX Spot-Check Measurement (0x2A5E)."""
    r = Reader(data, "PLX Spot-Check Measurement")
    flags = r.u8("flags")
    spo2, pr = r.sfloat("spo2"), r.sfloat("pulse_rate")
    fields: dict[str, object] = {
        "flags": flags, "spo2": spo2.to_json("%"), "pulse_rate": pr.to_json("/min"),
    }
    time_us = _time_fields(fields, r.date_time("time_stamp")) if flags & 0x01 else None
    quality = _plx_status(r, flags, 0x02, 0x04, fields)
    if flags & 0x08:
        fields["pulse_amplitude_index"] = r.sfloat("pulse_amplitude_index").to_json("%")
    r.finish()
    fields["device_clock_set"] = not flags & 0x10
    if flags & 0x10:
        time_us = None
        quality |= CLOCK_UNSET
    readings = (
        BleReading("spo2", spo2, "%", time_us, None, quality),
        BleReading("heart_rate", pr, "/min", time_us, None, quality),
    )
    return Decoded(0x2A5E, "PLX Spot-Check Measurement", fields, readings)


def decode_plx_continuous(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """PLX Continuous Measurement (0x2A5F); the normal SpO2/PR pair becomes readings."""
    r = Reader(data, "PLX Continuous Measurement")
    flags = r.u8("flags")
    spo2, pr = r.sfloat("spo2"), r.sfloat("pulse_rate")
    fields: dict[str, object] = {
        "flags": flags, "spo2": spo2.to_json("%"), "pulse_rate": pr.to_json("/min"),
    }
    for bit, label in ((0x01, "fast"), (0x02, "slow")):
        if flags & bit:
            fields[f"spo2_{label}"] = r.sfloat(f"spo2_{label}").to_json("%")
            fields[f"pulse_rate_{label}"] = r.sfloat(f"pulse_rate_{label}").to_json("/min")
    quality = _plx_status(r, flags, 0x04, 0x08, fields)
    if flags & 0x10:
        fields["pulse_amplitude_index"] = r.sfloat("pulse_amplitude_index").to_json("%")
    r.finish()
    readings = (
        BleReading("spo2", spo2, "%", None, None, quality),
        BleReading("heart_rate", pr, "/min", None, None, quality),
    )
    return Decoded(0x2A5F, "PLX Continuous Measurement", fields, readings)


def decode_weight(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Weight Measurement (0x2A9D): 0.005 kg or 0.01 lb steps; 0xFFFF = unsuccessful."""
    r = Reader(data, "Weight Measurement")
    flags = r.u8("flags")
    imperial = bool(flags & 0x01)
    unit = "[lb_av]" if imperial else "kg"
    raw = r.u16("weight")
    weight = (
        Quantity.missing("unsuccessful")
        if raw == 0xFFFF
        else Quantity(Decimal(raw) * (_LB_PER_STEP if imperial else _KG_PER_STEP))
    )
    fields: dict[str, object] = {"flags": flags, "weight": weight.to_json(unit)}
    time_us = _time_fields(fields, r.date_time("time_stamp")) if flags & 0x02 else None
    if flags & 0x04:
        user = r.u8("user_id")
        fields["user_id"] = None if user == 0xFF else user
    if flags & 0x08:
        bmi, height = r.u16("bmi"), r.u16("height")
        fields["bmi"] = {"value": json_number(bmi * _BMI_PER_STEP), "unit": "kg/m2"}
        fields["height"] = {
            "value": json_number(height * (_IN_PER_STEP if imperial else _M_PER_STEP)),
            "unit": "[in_i]" if imperial else "m",
        }
    r.finish()
    return Decoded(0x2A9D, "Weight Measurement", fields,
                   (BleReading("body_weight", weight, unit, time_us),))


def decode_battery_level(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Battery Level (0x2A19): percent 0-100."""
    r = Reader(data, "Battery Level")
    level = r.u8("battery_level")
    r.finish()
    if level > 100:
        raise DecodeError(
            "bad_value", f"Battery Level: battery_level: {level} is above 100 %", "battery_level"
        )
    return Decoded(0x2A19, "Battery Level", {"battery_level": {"value": level, "unit": "%"}})


ADJUST_REASON: Final = {
    0: "manual_time_update", 1: "external_reference_time_update", 2: "change_of_time_zone",
    3: "change_of_dst",
}


def decode_current_time(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Current Time (0x2A2B): Date Time, day of week, 1/256 s fractions, adjust reason."""
    r = Reader(data, "Current Time")
    when = r.date_time("date_time")
    dow = r.u8("day_of_week")
    fractions = r.u8("fractions256")
    reason = r.u8("adjust_reason")
    r.finish()
    if dow > 7:
        raise DecodeError("bad_value", f"Current Time: day_of_week: {dow} is not 0-7",
                          "day_of_week")
    fields: dict[str, object] = {
        "date_time": when.to_json() if when.utc_us is not None else "unknown",
        "device_time_us": (
            None if when.utc_us is None else when.utc_us + fractions * 1_000_000 // 256
        ),
        "day_of_week": dow or None,
        "fractions256": fractions,
        "adjust_reason": bit_names(reason, ADJUST_REASON),
    }
    return Decoded(0x2A2B, "Current Time", fields)

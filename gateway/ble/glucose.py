"""Decoders of the glucose characteristics: Glucose Measurement and Context (GLS), CGM
Measurement, CGM Session Start Time and CGM Feature.

Pure functions ``(payload, BleContext) -> Decoded``; see ``docs/ble.md`` for the layouts.
"""

from __future__ import annotations

from typing import Final

from gateway.ble.codec import Reader, crc16_mcrf4xx, parse_date_time
from gateway.ble.model import (
    CALIBRATING,
    NO_CONTEXT,
    QUESTIONABLE,
    BleContext,
    BleReading,
    Decoded,
    Rejected,
    bit_names,
)
from gateway.errors import DecodeError

__all__ = [
    "CGM_ANNUNCIATION",
    "GLUCOSE_ANNUNCIATION",
    "decode_cgm_feature",
    "decode_cgm_measurement",
    "decode_cgm_session_start_time",
    "decode_glucose_context",
    "decode_glucose_measurement",
    "glucose_sequence",
    "session_start_utc_us",
]

US_PER_MIN: Final = 60_000_000

GLUCOSE_TYPE: Final = {
    1: "capillary_whole_blood", 2: "capillary_plasma", 3: "venous_whole_blood",
    4: "venous_plasma", 5: "arterial_whole_blood", 6: "arterial_plasma",
    7: "undetermined_whole_blood", 8: "undetermined_plasma", 9: "interstitial_fluid",
    10: "control_solution",
}
SAMPLE_LOCATION: Final = {
    1: "finger", 2: "alternate_site_test", 3: "earlobe", 4: "control_solution",
    15: "not_available",
}
GLUCOSE_ANNUNCIATION: Final = {
    0: "device_battery_low", 1: "sensor_malfunction", 2: "sample_size_insufficient",
    3: "strip_insertion_error", 4: "strip_type_incorrect", 5: "result_too_high",
    6: "result_too_low", 7: "temperature_too_high", 8: "temperature_too_low",
    9: "read_interrupted", 10: "general_device_fault", 11: "time_fault",
}
"""Sensor Status Annunciation bits of a Glucose Measurement."""
_GLUCOSE_QUESTIONABLE: Final = 0x0FFE  # every bit but battery low

CARBOHYDRATE: Final = {
    1: "breakfast", 2: "lunch", 3: "dinner", 4: "snack", 5: "drink", 6: "supper", 7: "brunch",
}
MEAL: Final = {1: "preprandial", 2: "postprandial", 3: "fasting", 4: "casual", 5: "bedtime"}
TESTER: Final = {1: "self", 2: "health_care_professional", 3: "lab_test", 15: "not_available"}
HEALTH: Final = {
    1: "minor_health_issues", 2: "major_health_issues", 3: "during_menses", 4: "under_stress",
    5: "no_health_issues", 15: "not_available",
}
MEDICATION: Final = {
    1: "rapid_acting_insulin", 2: "short_acting_insulin", 3: "intermediate_acting_insulin",
    4: "long_acting_insulin", 5: "pre_mixed_insulin",
}

CGM_ANNUNCIATION: Final = {
    0: "session_stopped", 1: "device_battery_low", 2: "sensor_type_incorrect",
    3: "sensor_malfunction", 4: "device_specific_alert", 5: "general_device_fault",
    8: "time_synchronization_required", 9: "calibration_not_allowed",
    10: "calibration_recommended", 11: "calibration_required", 12: "sensor_temperature_too_high",
    13: "sensor_temperature_too_low", 14: "calibration_pending",
    16: "result_below_patient_low", 17: "result_above_patient_high",
    18: "result_below_hypo", 19: "result_above_hyper", 20: "rate_of_decrease_exceeded",
    21: "rate_of_increase_exceeded", 22: "result_below_device_range",
    23: "result_above_device_range",
}
"""CGM Sensor Status Annunciation: Status (bits 0-7), Cal/Temp (8-15), Warning (16-23)."""
_CGM_QUESTIONABLE: Final = 1 << 2 | 1 << 3 | 1 << 5 | 1 << 12 | 1 << 13 | 1 << 22 | 1 << 23
_CGM_CALIBRATING: Final = 1 << 11 | 1 << 14

CGM_FEATURE: Final = {
    0: "calibration", 1: "patient_high_low_alerts", 2: "hypo_alerts", 3: "hyper_alerts",
    4: "rate_alerts", 5: "device_specific_alert", 6: "sensor_malfunction_detection",
    7: "sensor_temperature_high_low_detection", 8: "sensor_result_high_low_detection",
    9: "low_battery_detection", 10: "sensor_type_error_detection", 11: "general_device_fault",
    12: "e2e_crc", 13: "multiple_bond", 14: "multiple_sessions", 15: "cgm_trend_information",
    16: "cgm_quality",
}


def glucose_sequence(data: bytes) -> int | None:
    """The sequence number of a Glucose Measurement or Context, ``None`` if too short."""
    return data[1] | data[2] << 8 if len(data) >= 3 else None


def decode_glucose_measurement(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Glucose Measurement (0x2A18); control-solution results give no reading."""
    name = "Glucose Measurement"
    r = Reader(data, name)
    flags = r.u8("flags")
    seq = r.u16("sequence_number")
    base = r.date_time("base_time")
    fields: dict[str, object] = {
        "flags": flags,
        "sequence_number": seq,
        "base_time": base.to_json() if base.utc_us is not None else "unknown",
        "context_follows": bool(flags & 0x10),
    }
    offset = r.s16("time_offset") if flags & 0x01 else 0
    if flags & 0x01:
        fields["time_offset_min"] = offset
    time_us = None if base.utc_us is None else base.utc_us + offset * US_PER_MIN
    unit = "mol/L" if flags & 0x04 else "kg/L"
    concentration = None
    control = False
    if flags & 0x02:
        concentration = r.sfloat("concentration")
        type_location = r.u8("type_sample_location")
        kind, where = type_location & 0x0F, type_location >> 4
        control = kind == 10 or where == 4
        fields["concentration"] = concentration.to_json(unit)
        fields["type"] = GLUCOSE_TYPE.get(kind, f"reserved ({kind})")
        fields["sample_location"] = SAMPLE_LOCATION.get(where, f"reserved ({where})")
        fields["control_solution"] = control
    quality = 0
    if flags & 0x08:
        status = r.u16("sensor_status_annunciation")
        fields["sensor_status_annunciation"] = bit_names(status, GLUCOSE_ANNUNCIATION)
        quality = QUESTIONABLE if status & _GLUCOSE_QUESTIONABLE else 0
    r.finish()
    readings: tuple[BleReading, ...] = ()
    if concentration is not None and not control:
        readings = (BleReading("glucose", concentration, unit, time_us, seq, quality),)
    return Decoded(0x2A18, name, fields, readings)


def decode_glucose_context(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Glucose Measurement Context (0x2A34): meal, carbs, exercise, medication, HbA1c."""
    r = Reader(data, "Glucose Measurement Context")
    flags = r.u8("flags")
    fields: dict[str, object] = {"flags": flags, "sequence_number": r.u16("sequence_number")}
    if flags & 0x80:
        fields["extended_flags"] = r.u8("extended_flags")
    if flags & 0x01:
        carb_id = r.u8("carbohydrate_id")
        fields["carbohydrate"] = CARBOHYDRATE.get(carb_id, f"reserved ({carb_id})")
        fields["carbohydrate_amount"] = r.sfloat("carbohydrate_amount").to_json("kg")
    if flags & 0x02:
        meal = r.u8("meal")
        fields["meal"] = MEAL.get(meal, f"reserved ({meal})")
    if flags & 0x04:
        th = r.u8("tester_health")
        fields["tester"] = TESTER.get(th & 0x0F, f"reserved ({th & 0x0F})")
        fields["health"] = HEALTH.get(th >> 4, f"reserved ({th >> 4})")
    if flags & 0x08:
        duration = r.u16("exercise_duration")
        fields["exercise_duration_s"] = None if duration == 0xFFFF else duration
        fields["exercise_overrun"] = duration == 0xFFFF
        fields["exercise_intensity_pct"] = r.u8("exercise_intensity")
    if flags & 0x10:
        med_id = r.u8("medication_id")
        fields["medication"] = MEDICATION.get(med_id, f"reserved ({med_id})")
        fields["medication_amount"] = r.sfloat("medication_amount").to_json(
            "L" if flags & 0x20 else "kg"
        )
    if flags & 0x40:
        fields["hba1c"] = r.sfloat("hba1c").to_json("%")
    r.finish()
    return Decoded(0x2A34, "Glucose Measurement Context", fields)


def _cgm_record(record: bytes, index: int, ctx: BleContext
                ) -> tuple[dict[str, object], BleReading | None, Rejected | None]:
    where = f"records[{index}]"
    r = Reader(record, f"CGM Measurement {where}")
    size = r.u8("size")
    flags = r.u8("flags")
    glucose = r.sfloat("glucose")
    offset = r.u16("time_offset")
    octets = [(0x80, 0), (0x40, 8), (0x20, 16)]  # Status, Cal/Temp, Warning, in GSS order
    status = 0
    for bit, shift in octets:
        if flags & bit:
            status |= r.u8("sensor_status_annunciation") << shift
    expected = 6 + sum(1 for bit, _ in octets if flags & bit) + 2 * bool(flags & 1) + 2 * bool(
        flags & 2
    )
    if size not in (expected, expected + 2):
        raise DecodeError(
            "inconsistent",
            f"CGM Measurement: {where}.size: {size} does not match the flags 0x{flags:02X} "
            f"(expected {expected}, or {expected + 2} with E2E-CRC)",
            f"{where}.size",
        )
    fields: dict[str, object] = {
        "size": size, "flags": flags, "glucose": glucose.to_json("mg/dL"),
        "time_offset_min": offset,
    }
    if status or flags & 0xE0:
        fields["sensor_status_annunciation"] = bit_names(status, CGM_ANNUNCIATION)
    if flags & 0x01:
        fields["trend"] = r.sfloat("trend").to_json("mg/dL/min")
    if flags & 0x02:
        fields["quality"] = r.sfloat("quality").to_json("%")
    if size == expected + 2:
        crc = r.u16("e2e_crc")
        computed = crc16_mcrf4xx(record[: size - 2])
        fields["e2e_crc"] = f"0x{crc:04X}"
        if crc != computed:
            return fields, None, Rejected(
                "crc_mismatch",
                f"{where}.e2e_crc",
                f"CGM Measurement: {where}.e2e_crc: 0x{crc:04X} does not match the record "
                f"(computed 0x{computed:04X}); record dropped",
            )
    r.finish()
    quality = QUESTIONABLE if status & _CGM_QUESTIONABLE else 0
    quality |= CALIBRATING if status & _CGM_CALIBRATING else 0
    start = ctx.session_start_us
    time_us = None if start is None else start + offset * US_PER_MIN
    return fields, BleReading("cgm_glucose", glucose, "mg/dL", time_us, offset, quality), None


def decode_cgm_measurement(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """CGM Measurement (0x2AA7): one or more size-prefixed records.

    A record whose E2E-CRC does not match is dropped and reported in ``rejected``; a record
    whose size disagrees with its flags makes the whole payload undecodable.
    """
    if not data:
        raise DecodeError("truncated", "CGM Measurement: size: payload is empty", "records[0].size")
    records: list[dict[str, object]] = []
    readings: list[BleReading] = []
    rejected: list[Rejected] = []
    pos = 0
    while pos < len(data):
        size = data[pos]
        if size < 6 or pos + size > len(data):
            raise DecodeError(
                "truncated" if size >= 6 else "inconsistent",
                f"CGM Measurement: records[{len(records)}].size: {size} at offset {pos} "
                f"(a record takes 6 to 15 bytes; {len(data) - pos} byte(s) left)",
                f"records[{len(records)}].size",
            )
        fields, reading, reject = _cgm_record(data[pos : pos + size], len(records), ctx)
        records.append(fields)
        if reading is not None:
            readings.append(reading)
        if reject is not None:
            rejected.append(reject)
        pos += size
    out: dict[str, object] = {"records": records}
    if ctx.session_start_us is not None:
        out["session_start_us"] = ctx.session_start_us
    return Decoded(0x2AA7, "CGM Measurement", out, tuple(readings), tuple(rejected))


def session_start_utc_us(data: bytes) -> int | None:
    """UTC start of a CGM session from a Session Start Time value; ``None`` when unknown.

    Raises:
        DecodeError: Truncated or invalid value.
    """
    decoded = decode_cgm_session_start_time(data)
    value = decoded.fields["session_start_us"]
    return value if isinstance(value, int) else None


DST_OFFSET_MIN: Final = {0: 0, 2: 30, 4: 60, 8: 120}


def decode_cgm_session_start_time(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """CGM Session Start Time (0x2AAA): local Date Time, time zone (15 min), DST offset."""
    name = "CGM Session Start Time"
    r = Reader(data, name)
    local = parse_date_time(r.take(7, "session_start_time"), "session_start_time")
    tz = r.s8("time_zone")
    dst = r.u8("dst_offset")
    r.finish()
    if tz != -128 and not -48 <= tz <= 56:
        raise DecodeError("bad_value", f"{name}: time_zone: {tz} is outside -48..56 (15 min)",
                          "time_zone")
    if dst != 255 and dst not in DST_OFFSET_MIN:
        raise DecodeError("bad_value", f"{name}: dst_offset: {dst} is not 0, 2, 4, 8 or 255",
                          "dst_offset")
    utc = None
    if local.utc_us is not None:
        shift_min = (0 if tz == -128 else tz * 15) + DST_OFFSET_MIN.get(dst, 0)
        utc = local.utc_us - shift_min * US_PER_MIN
    fields: dict[str, object] = {
        "session_start_time": local.to_json() if local.utc_us is not None else "unknown",
        "time_zone_min": None if tz == -128 else tz * 15,
        "dst_offset_min": DST_OFFSET_MIN.get(dst),
        "session_start_us": utc,
    }
    return Decoded(0x2AAA, name, fields)


def decode_cgm_feature(data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """CGM Feature (0x2AA8): feature bits, type/sample location, E2E-CRC of the value."""
    r = Reader(data, "CGM Feature")
    features = r.u24("features")
    type_location = r.u8("type_sample_location")
    crc = r.u16("e2e_crc")
    r.finish()
    kind, where = type_location & 0x0F, type_location >> 4
    fields: dict[str, object] = {
        "features": bit_names(features, CGM_FEATURE),
        "type": GLUCOSE_TYPE.get(kind, f"reserved ({kind})"),
        "sample_location": SAMPLE_LOCATION.get(where, f"reserved ({where})"),
        "e2e_crc": None if crc == 0xFFFF else f"0x{crc:04X}",
    }
    if features & 1 << 12 and crc != crc16_mcrf4xx(data[:4]):
        raise DecodeError("crc_mismatch",
                          f"CGM Feature: e2e_crc: 0x{crc:04X} does not match the value", "e2e_crc")
    return Decoded(0x2AA8, "CGM Feature", fields)


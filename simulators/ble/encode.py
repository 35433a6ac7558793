"""Encoders of the health-profile characteristic values, for the virtual devices.

The mirror image of ``gateway.ble``'s decoders: values in, bytes exactly as the GATT
Specification Supplement lays them out. Numbers are given in the unit the characteristic
carries (mg/dL for CGM, kg/L or mol/L for glucose meters, mmHg or kPa...).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from gateway.ble.codec import FLOAT_SPECIAL, SFLOAT_SPECIAL, crc16_mcrf4xx

__all__ = [
    "CgmRecord",
    "battery_level",
    "blood_pressure",
    "cgm_feature",
    "cgm_measurement",
    "cgm_session_start_time",
    "current_time",
    "date_time",
    "float32",
    "glucose_context",
    "glucose_measurement",
    "heart_rate",
    "intermediate_cuff_pressure",
    "plx_continuous",
    "plx_spot_check",
    "sfloat",
    "temperature",
    "weight",
]

_SFLOAT_CODE = {reason: raw for raw, reason in SFLOAT_SPECIAL.items()}
_FLOAT_CODE = {reason: raw for raw, reason in FLOAT_SPECIAL.items()}

Number = float | int | Decimal


def _mantissa_exponent(value: Number, decimals: int, limit: int) -> tuple[int, int]:
    scaled = Decimal(str(value)).scaleb(decimals)
    mantissa, exponent = int(scaled.to_integral_value()), -decimals
    while abs(mantissa) > limit:
        mantissa, exponent = int((Decimal(mantissa) / 10).to_integral_value()), exponent + 1
    return mantissa, exponent


def sfloat(value: Number | None, decimals: int = 0, absent: str = "NaN") -> bytes:
    """SFLOAT of ``value`` with ``decimals`` digits (fewer when the mantissa would overflow).

    ``None`` encodes the special value named by ``absent`` (NaN, NRes, +INF, -INF, reserved).

    Raises:
        ValueError: The value does not fit an SFLOAT.
    """
    if value is None:
        raw = _SFLOAT_CODE[absent]
    else:
        m, e = _mantissa_exponent(value, decimals, 2045)
        if not -8 <= e <= 7:
            raise ValueError(f"{value} does not fit an SFLOAT")
        raw = (e & 0xF) << 12 | (m & 0xFFF)
    return raw.to_bytes(2, "little")


def float32(value: Number | None, decimals: int = 1, absent: str = "NaN") -> bytes:
    """FLOAT of ``value`` with ``decimals`` digits; ``None`` -> the special ``absent``."""
    if value is None:
        raw = _FLOAT_CODE[absent]
    else:
        m, e = _mantissa_exponent(value, decimals, 8_388_605)
        raw = (e & 0xFF) << 24 | (m & 0xFFFFFF)
    return raw.to_bytes(4, "little")


def date_time(utc_us: int | None) -> bytes:
    """7-byte Date Time of a UTC instant (seconds truncated); ``None`` -> unknown (zeros)."""
    if utc_us is None:
        return bytes(7)
    t = datetime.fromtimestamp(utc_us // 1_000_000, UTC)
    return struct.pack("<HBBBBB", t.year, t.month, t.day, t.hour, t.minute, t.second)


def heart_rate(
    bpm: int, *, contact: bool | None = True, energy_kj: int | None = None,
    rr_1024: Sequence[int] = (),
) -> bytes:
    """Heart Rate Measurement; ``contact`` None = not supported, False = not detected."""
    flags = 0x01 if bpm > 255 else 0
    flags |= {None: 0, False: 0x04, True: 0x06}[contact]
    body = struct.pack("<H", bpm) if bpm > 255 else bytes([bpm])
    if energy_kj is not None:
        flags |= 0x08
        body += struct.pack("<H", min(energy_kj, 0xFFFF))
    if rr_1024:
        flags |= 0x10
        body += b"".join(struct.pack("<H", v) for v in rr_1024)
    return bytes([flags]) + body


def glucose_measurement(
    seq: int, time_us: int | None, value: Number | None, *, molar: bool = False,
    offset_min: int | None = None, type_location: int = 0x11, status: int | None = None,
    context_follows: bool = False,
) -> bytes:
    """Glucose Measurement: ``value`` in kg/L (or mol/L with ``molar``)."""
    flags = 0x02 | (0x04 if molar else 0) | (0x10 if context_follows else 0)
    body = struct.pack("<H", seq) + date_time(time_us)
    if offset_min is not None:
        flags |= 0x01
        body += struct.pack("<h", offset_min)
    body += sfloat(value, 5 if not molar else 4) + bytes([type_location])
    if status is not None:
        flags |= 0x08
        body += struct.pack("<H", status)
    return bytes([flags]) + body


def glucose_context(seq: int, *, meal: int | None = None, carbs_kg: Number | None = None,
                    hba1c_pct: Number | None = None) -> bytes:
    """Glucose Measurement Context with meal, carbohydrates (breakfast) and HbA1c."""
    flags, body = 0, b""
    if carbs_kg is not None:
        flags |= 0x01
        body += bytes([1]) + sfloat(carbs_kg, 3)
    if meal is not None:
        flags |= 0x02
        body += bytes([meal])
    if hba1c_pct is not None:
        flags |= 0x40
        body += sfloat(hba1c_pct, 1)
    return bytes([flags]) + struct.pack("<H", seq) + body


class CgmRecord(NamedTuple):
    """One CGM record: glucose in mg/dL at ``offset_min`` after session start."""

    glucose: float | None
    offset_min: int
    trend: float | None = None
    quality: float | None = None
    status: int = 0


def cgm_measurement(records: Sequence[CgmRecord], *, crc: bool = True) -> bytes:
    """CGM Measurement with one or more records, each with its E2E-CRC when ``crc``."""
    out = b""
    for rec in records:
        flags = 0
        tail = b""
        for bit, shift in ((0x80, 0), (0x40, 8), (0x20, 16)):
            octet = rec.status >> shift & 0xFF
            if octet:
                flags |= bit
                tail += bytes([octet])
        if rec.trend is not None:
            flags |= 0x01
            tail += sfloat(rec.trend, 1)
        if rec.quality is not None:
            flags |= 0x02
            tail += sfloat(rec.quality, 0)
        body = bytes([flags]) + sfloat(rec.glucose, 0) + struct.pack("<H", rec.offset_min) + tail
        size = 1 + len(body) + (2 if crc else 0)
        record = bytes([size]) + body
        if crc:
            record += struct.pack("<H", crc16_mcrf4xx(record))
        out += record
    return out


def cgm_session_start_time(utc_us: int | None, tz_quarters: int = 0, dst: int = 0) -> bytes:
    """CGM Session Start Time: local time = UTC + time zone + DST."""
    shift_us = (tz_quarters * 15 + {0: 0, 2: 30, 4: 60, 8: 120}.get(dst, 0)) * 60_000_000
    local = None if utc_us is None else utc_us + shift_us
    return date_time(local) + struct.pack("<bB", tz_quarters, dst)


def cgm_feature(features: int = 1 << 12 | 1 << 15, type_location: int = 0x29) -> bytes:
    """CGM Feature; the E2E-CRC field is filled when feature bit 12 is set."""
    body = features.to_bytes(3, "little") + bytes([type_location])
    crc = crc16_mcrf4xx(body) if features & 1 << 12 else 0xFFFF
    return body + struct.pack("<H", crc)


def blood_pressure(
    systolic: Number | None, diastolic: Number | None, mean: Number | None, *,
    kpa: bool = False, time_us: int | None = None, pulse: Number | None = None,
    user: int | None = None, status: int | None = None,
) -> bytes:
    """Blood Pressure Measurement (or, with diastolic and mean None, a cuff pressure)."""
    d = 1 if kpa else 0
    flags = 0x01 if kpa else 0
    body = sfloat(systolic, d) + sfloat(diastolic, d) + sfloat(mean, d)
    if time_us is not None:
        flags |= 0x02
        body += date_time(time_us)
    if pulse is not None:
        flags |= 0x04
        body += sfloat(pulse, 0)
    if user is not None:
        flags |= 0x08
        body += bytes([user])
    if status is not None:
        flags |= 0x10
        body += struct.pack("<H", status)
    return bytes([flags]) + body


def intermediate_cuff_pressure(pressure: Number) -> bytes:
    """Intermediate Cuff Pressure in mmHg (diastolic and mean NaN)."""
    return blood_pressure(pressure, None, None)


def temperature(value: Number | None, *, fahrenheit: bool = False, time_us: int | None = None,
                kind: int | None = None) -> bytes:
    """Temperature Measurement."""
    flags = 0x01 if fahrenheit else 0
    body = float32(value, 1)
    if time_us is not None:
        flags |= 0x02
        body += date_time(time_us)
    if kind is not None:
        flags |= 0x04
        body += bytes([kind])
    return bytes([flags]) + body


def plx_spot_check(spo2: Number | None, pulse: Number | None, *,
                   time_us: int | None = None) -> bytes:
    """PLX Spot-Check Measurement."""
    flags = 0x01 if time_us is not None else 0
    body = sfloat(spo2, 0) + sfloat(pulse, 0)
    if time_us is not None:
        body += date_time(time_us)
    return bytes([flags]) + body


def plx_continuous(spo2: Number | None, pulse: Number | None) -> bytes:
    """PLX Continuous Measurement (normal SpO2/PR only)."""
    return bytes([0]) + sfloat(spo2, 0) + sfloat(pulse, 0)


def weight(value: Number | None, *, imperial: bool = False, time_us: int | None = None) -> bytes:
    """Weight Measurement in kg (0.005 steps) or lb (0.01 steps); None -> unsuccessful."""
    flags = 0x01 if imperial else 0
    raw = 0xFFFF if value is None else round(Decimal(str(value)) / Decimal(
        "0.01" if imperial else "0.005"))
    body = struct.pack("<H", raw)
    if time_us is not None:
        flags |= 0x02
        body += date_time(time_us)
    return bytes([flags]) + body


def battery_level(percent: int) -> bytes:
    """Battery Level."""
    return bytes([percent])


def current_time(utc_us: int) -> bytes:
    """Current Time (day of week, 1/256 s fractions, adjust reason 0)."""
    t = datetime.fromtimestamp(utc_us // 1_000_000, UTC)
    fractions = (utc_us % 1_000_000) * 256 // 1_000_000
    return date_time(utc_us) + bytes([t.isoweekday(), fractions, 0])

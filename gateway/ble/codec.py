"""Byte-level building blocks of the Bluetooth SIG health profiles.

Little-endian integers, IEEE 11073-20601 SFLOAT (16 bit) and FLOAT (32 bit) with their special
values, the 7-byte Date Time, and CRC-16/MCRF4XX (the CGM E2E-CRC). Every read goes through a
:class:`Reader` that raises :class:`~gateway.errors.DecodeError` naming the field when the
payload is too short, so no decoder can fail with anything else.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from gateway.errors import DecodeError

__all__ = [
    "FLOAT_SPECIAL",
    "SFLOAT_SPECIAL",
    "DeviceTime",
    "Quantity",
    "Reader",
    "crc16_mcrf4xx",
    "decode_float",
    "decode_sfloat",
    "json_number",
    "parse_date_time",
]

SFLOAT_SPECIAL: Final = {
    0x07FF: "NaN",
    0x0800: "NRes",
    0x07FE: "+INF",
    0x0802: "-INF",
    0x0801: "reserved",
}
"""Raw SFLOAT codes that are not numbers, and the reason each stands for."""

FLOAT_SPECIAL: Final = {
    0x007FFFFF: "NaN",
    0x00800000: "NRes",
    0x007FFFFE: "+INF",
    0x00800002: "-INF",
    0x00800001: "reserved",
}
"""Raw FLOAT codes that are not numbers, and the reason each stands for."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured number, or the reason the device sent none.

    Attributes:
        value: The exact decimal value, or ``None`` when absent.
        absent: ``None`` for a number, else why it is absent (``NaN``, ``NRes``, ``+INF``,
            ``-INF``, ``reserved``, or ``unsuccessful`` for a weight of 0xFFFF).
    """

    value: Decimal | None
    absent: str | None = None

    @classmethod
    def missing(cls, reason: str) -> Quantity:
        """An absent value with its reason."""
        return cls(None, reason)

    def as_float(self) -> float | None:
        """The value as a float, ``None`` when absent."""
        return None if self.value is None else float(self.value)

    def scaled(self, factor: Decimal) -> Quantity:
        """The value multiplied by ``factor`` (absent stays absent)."""
        return self if self.value is None else Quantity(self.value * factor)

    def to_json(self, unit: str) -> dict[str, object]:
        """``{"value": 72, "unit": "/min"}``, with ``"absent"`` when there is no value."""
        out: dict[str, object] = {"value": json_number(self.value), "unit": unit}
        if self.absent is not None:
            out["absent"] = self.absent
        return out


def json_number(value: Decimal | None) -> int | float | None:
    """An exact decimal as a JSON number (int when integral)."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _decode_11073(raw: int, mantissa_bits: int, special: dict[int, str]) -> Quantity:
    """``m * 10**e`` with a signed mantissa of ``mantissa_bits`` and a signed exponent above it."""
    reason = special.get(raw)
    if reason is not None:
        return Quantity.missing(reason)
    exponent_bits = 4 if mantissa_bits == 12 else 8
    mantissa = raw & ((1 << mantissa_bits) - 1)
    if mantissa >= 1 << (mantissa_bits - 1):
        mantissa -= 1 << mantissa_bits
    exponent = raw >> mantissa_bits
    if exponent >= 1 << (exponent_bits - 1):
        exponent -= 1 << exponent_bits
    return Quantity(Decimal(mantissa).scaleb(exponent))


def decode_sfloat(raw: int) -> Quantity:
    """SFLOAT: signed 4-bit exponent (bits 15-12), signed 12-bit mantissa; m * 10**e."""
    return _decode_11073(raw, 12, SFLOAT_SPECIAL)


def decode_float(raw: int) -> Quantity:
    """FLOAT: signed 8-bit exponent (byte 3), signed 24-bit mantissa; m * 10**e."""
    return _decode_11073(raw, 24, FLOAT_SPECIAL)


@dataclass(frozen=True, slots=True)
class DeviceTime:
    """A device Date Time: ``utc_us`` is ``None`` when the device marked it unknown.

    The profiles carry no time zone (CGM Session Start Time aside); the gateway reads device
    clocks as UTC.
    """

    utc_us: int | None
    text: str | None

    def to_json(self) -> str | None:
        """ISO text as the device sent it, or ``None`` when unknown."""
        return self.text


def parse_date_time(raw: bytes, field: str) -> DeviceTime:
    """Date Time (year u16, month, day, hours, minutes, seconds) -> UTC microseconds.

    A zero year, month or day means "unknown" and gives ``utc_us=None``.

    Raises:
        DecodeError: A field out of range (month 13, hour 24, 31 February...).
    """
    year = raw[0] | raw[1] << 8
    month, day, hours, minutes, seconds = raw[2], raw[3], raw[4], raw[5], raw[6]
    if year == 0 or month == 0 or day == 0:
        return DeviceTime(None, None)
    try:
        if year < 1582:
            raise ValueError(f"year {year} is before 1582")
        when = dt.datetime(year, month, day, hours, minutes, seconds)
    except ValueError as exc:
        raise DecodeError(
            "bad_timestamp",
            f"{field}: {year:04d}-{month:02d}-{day:02d} {hours:02d}:{minutes:02d}:{seconds:02d}"
            f" is not a valid date and time ({exc})",
            field,
        ) from None
    utc_us = calendar.timegm(when.timetuple()) * 1_000_000
    return DeviceTime(utc_us, when.isoformat())


def crc16_mcrf4xx(data: bytes) -> int:
    """CRC-16/MCRF4XX: polynomial 0x1021 reflected (0x8408), init 0xFFFF, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


class Reader:
    """A cursor over one payload; every read names its field.

    Args:
        data: The payload.
        what: The characteristic's name, used in error messages.
    """

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        """The next ``n`` bytes.

        Raises:
            DecodeError: ``truncated`` when fewer than ``n`` bytes are left.
        """
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(
                "truncated",
                f"{self.what}: {field}: needs {n} byte(s) at offset {self.pos}, "
                f"payload has {len(self.data)} byte(s)",
                field,
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, field: str) -> int:
        """Unsigned byte."""
        return self.take(1, field)[0]

    def s8(self, field: str) -> int:
        """Signed byte."""
        v = self.take(1, field)[0]
        return v - 0x100 if v >= 0x80 else v

    def u16(self, field: str) -> int:
        """Unsigned 16-bit little-endian."""
        b = self.take(2, field)
        return b[0] | b[1] << 8

    def s16(self, field: str) -> int:
        """Signed 16-bit little-endian."""
        v = self.u16(field)
        return v - 0x10000 if v >= 0x8000 else v

    def u24(self, field: str) -> int:
        """Unsigned 24-bit little-endian."""
        b = self.take(3, field)
        return b[0] | b[1] << 8 | b[2] << 16

    def sfloat(self, field: str) -> Quantity:
        """IEEE 11073 SFLOAT."""
        return decode_sfloat(self.u16(field))

    def float32(self, field: str) -> Quantity:
        """IEEE 11073 FLOAT."""
        b = self.take(4, field)
        return decode_float(b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24)

    def date_time(self, field: str) -> DeviceTime:
        """7-byte Date Time."""
        return parse_date_time(self.take(7, field), field)

    def finish(self) -> None:
        """Check that the flags accounted for every byte.

        Raises:
            DecodeError: ``trailing_bytes`` naming how many bytes the flags do not explain.
        """
        if self.pos != len(self.data):
            raise DecodeError(
                "trailing_bytes",
                f"{self.what}: {self.remaining} byte(s) after the last field the flags announce "
                f"(payload {len(self.data)} bytes, fields end at {self.pos})",
                "flags",
            )

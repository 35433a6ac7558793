"""SFLOAT, FLOAT, Date Time and CRC against the IEEE 11073-20601 and GSS tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.ble.codec import (
    Quantity,
    Reader,
    crc16_mcrf4xx,
    decode_float,
    decode_sfloat,
    parse_date_time,
)
from gateway.errors import DecodeError

T_2024_05_01_1230 = 1_714_566_600_000_000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0x0048, Decimal(72)),
        (0x0000, Decimal(0)),
        (0xF16C, Decimal("36.4")),  # mantissa 364, exponent -1
        (0x0FFB, Decimal(-5)),  # mantissa -5
        (0xEB2E, Decimal("-12.34")),  # mantissa -1234, exponent -2
        (0x2005, Decimal(500)),  # exponent +2
        (0x7001, Decimal("1E7")),  # largest exponent
        (0x8001, Decimal("1E-8")),  # smallest exponent
        (0x07FD, Decimal(2045)),  # just below the special codes
        (0x0803, Decimal(-2045)),  # just above them
        (0x17FF, Decimal(20470)),  # NaN's mantissa with exponent 1 is a number
        (0xF800, Decimal("-204.8")),  # NRes's mantissa with exponent -1 is a number
        (0xB05F, Decimal("0.00095")),  # 95 mg/dL as kg/L
    ],
)
def test_sfloat_numbers(raw: int, expected: Decimal) -> None:
    q = decode_sfloat(raw)
    assert q == Quantity(expected)
    assert q.value == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(0x07FF, "NaN"), (0x0800, "NRes"), (0x07FE, "+INF"), (0x0802, "-INF"), (0x0801, "reserved")],
)
def test_sfloat_special_values_are_absent(raw: int, reason: str) -> None:
    q = decode_sfloat(raw)
    assert q.value is None
    assert q.absent == reason
    assert q.as_float() is None
    assert q.to_json("%") == {"value": None, "unit": "%", "absent": reason}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0xFF00016C, Decimal("36.4")),
        (0xFFFFFE94, Decimal("-36.4")),  # mantissa -364
        (0x00000025, Decimal(37)),
        (0x02000001, Decimal(100)),
        (0x80000001, Decimal("1E-128")),
        (0x7F000001, Decimal("1E127")),
        (0xFF7FFFFF, Decimal("838860.7")),  # NaN's mantissa with exponent -1 is a number
        (0xFD0003CF, Decimal("0.975")),
    ],
)
def test_float_numbers(raw: int, expected: Decimal) -> None:
    assert decode_float(raw) == Quantity(expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (0x007FFFFF, "NaN"),
        (0x00800000, "NRes"),
        (0x007FFFFE, "+INF"),
        (0x00800002, "-INF"),
        (0x00800001, "reserved"),
    ],
)
def test_float_special_values_are_absent(raw: int, reason: str) -> None:
    assert decode_float(raw) == Quantity(None, reason)


def test_quantity_json_keeps_exact_decimal() -> None:
    assert Quantity(Decimal("36.4")).to_json("Cel") == {"value": 36.4, "unit": "Cel"}
    assert Quantity(Decimal("1E2")).to_json("/min") == {"value": 100, "unit": "/min"}


def test_date_time() -> None:
    t = parse_date_time(bytes.fromhex("e80705010c1e00"), "time_stamp")
    assert t.utc_us == T_2024_05_01_1230
    assert t.text == "2024-05-01T12:30:00"


@pytest.mark.parametrize("raw", ["00000501 0c1e00", "e8070001 0c1e00", "e8070500 0c1e00"])
def test_date_time_zero_year_month_or_day_is_unknown(raw: str) -> None:
    t = parse_date_time(bytes.fromhex(raw), "time_stamp")
    assert t.utc_us is None
    assert t.text is None


@pytest.mark.parametrize(
    "raw",
    ["e8070d010c1e00", "e807021e0c1e00", "e8070501181e00", "e80705010c3c00", "78050101000000"],
)
def test_date_time_out_of_range_is_a_decode_error(raw: str) -> None:
    with pytest.raises(DecodeError) as exc:
        parse_date_time(bytes.fromhex(raw), "base_time")
    assert exc.value.reason_code == "bad_timestamp"
    assert exc.value.field == "base_time"
    assert "base_time" in str(exc.value)


def test_crc16_mcrf4xx_check_value() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91
    assert crc16_mcrf4xx(b"") == 0xFFFF


def test_reader_names_the_truncated_field() -> None:
    r = Reader(b"\x01", "Heart Rate Measurement")
    assert r.u8("flags") == 1
    with pytest.raises(DecodeError) as exc:
        r.u16("heart_rate")
    assert exc.value.reason_code == "truncated"
    assert exc.value.field == "heart_rate"
    assert str(exc.value) == (
        "Heart Rate Measurement: heart_rate: needs 2 byte(s) at offset 1, payload has 1 byte(s)"
    )


def test_reader_signed_and_wide_integers() -> None:
    r = Reader(bytes.fromhex("f6ff 80 563412"), "x")
    assert r.s16("a") == -10
    assert r.s8("b") == -128
    assert r.u24("c") == 0x123456
    r.finish()


def test_reader_finish_rejects_trailing_bytes() -> None:
    r = Reader(b"\x00\x48\x00", "Heart Rate Measurement")
    r.u8("flags")
    r.u8("heart_rate")
    with pytest.raises(DecodeError) as exc:
        r.finish()
    assert exc.value.reason_code == "trailing_bytes"

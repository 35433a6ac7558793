"""The vitalwire reading JSON decoder."""

from __future__ import annotations

import pytest

from gateway.errors import DecodeError
from gateway.formats.base import DecodeContext, parse_epoch_ms, parse_epoch_s, parse_seq
from gateway.formats.vitalwire_json import decode_vitalwire
from gateway.records import RawReading, Rejection

TOPIC_CTX = DecodeContext("vitalwire/v1/devices/gm-1/readings", "gm-1", 0)
NO_CAPTURE = DecodeContext("custom/topic", None, 0)
T0_US = 1_740_816_000_000_000  # 2025-03-01T08:00:00Z


def test_single_object_with_rfc3339_time_and_seq() -> None:
    payload = (
        b'{"device_id": "gm-1", "metric": "glucose", "value": 5.4, "unit": "mmol/L",'
        b' "ts": "2025-03-01T09:00:00.25+01:00", "seq": 42}'
    )
    result = decode_vitalwire(payload, TOPIC_CTX)
    assert result.readings == [RawReading("gm-1", "glucose", 5.4, "mmol/L", T0_US + 250_000, 42)]
    assert result.rejections == []


def test_array_with_epoch_ms_time_and_device_from_topic() -> None:
    payload = (
        b'[{"metric": "heart_rate", "value": 61, "unit": "bpm", "ts": 1740816000000},'
        b' {"metric": "spo2", "value": 97.5, "unit": "%", "ts": 1740816000500, "seq": 0}]'
    )
    result = decode_vitalwire(payload, TOPIC_CTX)
    assert result.readings == [
        RawReading("gm-1", "heart_rate", 61.0, "bpm", T0_US, None),
        RawReading("gm-1", "spo2", 97.5, "%", T0_US + 500_000, 0),
    ]
    assert result.rejections == []


def test_empty_array_is_no_readings() -> None:
    assert decode_vitalwire(b"[]", TOPIC_CTX) == ([], [])


def test_metric_and_unit_pass_through_unchanged() -> None:
    payload = b'{"metric": "made_up", "value": 1, "unit": "furlong", "ts": 1740816000000}'
    (reading,) = decode_vitalwire(payload, TOPIC_CTX).readings
    assert (reading.metric, reading.unit) == ("made_up", "furlong")


def test_one_bad_reading_does_not_cost_the_others() -> None:
    payload = (
        b'[{"metric": "glucose", "value": 5.1, "unit": "mmol/L", "ts": 1740816000000},'
        b' {"metric": "glucose", "value": 5.2, "unit": "mmol/L", "ts": 1740816000000},'
        b' {"metric": "glucose", "value": "abc", "unit": "mmol/L", "ts": 1740816000000}]'
    )
    result = decode_vitalwire(payload, TOPIC_CTX)
    assert [r.value for r in result.readings] == [5.1, 5.2]
    assert result.rejections == [
        Rejection(
            "bad_value", "$[2].value", "$[2].value: expected a number, got string 'abc'", "gm-1"
        )
    ]


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ('{"value": 1, "unit": "%", "ts": 1}', "missing_field", "$[0].metric"),
        ('{"metric": "spo2", "unit": "%", "ts": 1}', "missing_field", "$[0].value"),
        ('{"metric": "spo2", "value": 1, "ts": 1}', "missing_field", "$[0].unit"),
        ('{"metric": "spo2", "value": 1, "unit": "%"}', "missing_field", "$[0].ts"),
        ('{"metric": 5, "value": 1, "unit": "%", "ts": 1}', "bad_value", "$[0].metric"),
        ('{"metric": "", "value": 1, "unit": "%", "ts": 1}', "bad_value", "$[0].metric"),
        ('{"metric": "spo2", "value": true, "unit": "%", "ts": 1}', "bad_value", "$[0].value"),
        ('{"metric": "spo2", "value": null, "unit": "%", "ts": 1}', "bad_value", "$[0].value"),
        ('{"metric": "spo2", "value": 1, "unit": ["%"], "ts": 1}', "bad_value", "$[0].unit"),
        (
            '{"metric": "spo2", "value": 1, "unit": "%", "ts": "yesterday"}',
            "bad_timestamp",
            "$[0].ts",
        ),
        (
            '{"metric": "spo2", "value": 1, "unit": "%", "ts": "2025-03-01T08:00:00"}',
            "bad_timestamp",
            "$[0].ts",
        ),
        ('{"metric": "spo2", "value": 1, "unit": "%", "ts": true}', "bad_timestamp", "$[0].ts"),
        ('{"metric": "spo2", "value": 1, "unit": "%", "ts": 1e300}', "bad_timestamp", "$[0].ts"),
        (
            '{"metric": "spo2", "value": 1, "unit": "%", "ts": 1, "seq": -1}',
            "bad_value",
            "$[0].seq",
        ),
        (
            '{"metric": "spo2", "value": 1, "unit": "%", "ts": 1, "seq": 1.5}',
            "bad_value",
            "$[0].seq",
        ),
        (
            '{"metric": "spo2", "value": 1, "unit": "%", "ts": 1, "seq": "7"}',
            "bad_value",
            "$[0].seq",
        ),
        (
            '{"device_id": 7, "metric": "spo2", "value": 1, "unit": "%", "ts": 1}',
            "bad_value",
            "$[0].device_id",
        ),
        (
            '{"device_id": "gm-2", "metric": "spo2", "value": 1, "unit": "%", "ts": 1}',
            "device_mismatch",
            "$[0].device_id",
        ),
        ("42", "bad_shape", "$[0]"),
    ],
)
def test_each_error_names_its_field(item: str, code: str, field: str) -> None:
    result = decode_vitalwire(f"[{item}]".encode(), TOPIC_CTX)
    assert result.readings == []
    (rejection,) = result.rejections
    assert (rejection.reason_code, rejection.field) == (code, field)
    assert rejection.reason.startswith(f"{field}: ")
    assert rejection.device_id == "gm-1"


def test_device_id_is_required_without_a_topic_capture() -> None:
    result = decode_vitalwire(b'{"metric": "spo2", "value": 1, "unit": "%", "ts": 1}', NO_CAPTURE)
    assert result.rejections == [
        Rejection("missing_field", "$.device_id", "$.device_id: required field is missing", "")
    ]


def test_device_id_from_payload_without_a_topic_capture() -> None:
    payload = b'{"device_id": "x-9", "metric": "spo2", "value": 1, "unit": "%", "ts": 1}'
    (reading,) = decode_vitalwire(payload, NO_CAPTURE).readings
    assert reading.device_id == "x-9"
    assert reading.observed_at_us == 1000


def test_rejection_takes_the_device_id_from_the_payload() -> None:
    payload = b'{"device_id": "x-9", "metric": "spo2", "unit": "%", "ts": 1}'
    (rejection,) = decode_vitalwire(payload, NO_CAPTURE).rejections
    assert rejection.device_id == "x-9"


def test_seq_accepts_the_full_unsigned_64_bit_range() -> None:
    payload = b'{"metric": "spo2", "value": 1, "unit": "%", "ts": 1, "seq": 18446744073709551615}'
    (reading,) = decode_vitalwire(payload, TOPIC_CTX).readings
    assert reading.seq == 2**64 - 1


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"metric": ', "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"", "malformed_json"),
        (b'"a string"', "bad_shape"),
        (b"12", "bad_shape"),
        (b"null", "bad_shape"),
    ],
)
def test_unusable_payload_raises(payload: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_vitalwire(payload, TOPIC_CTX)
    assert info.value.reason_code == code
    assert info.value.field == "$"


def test_parse_seq_and_epoch_s() -> None:
    assert parse_seq(0, "$.seq") == 0
    assert parse_epoch_s(1_740_816_000, "$.t") == T0_US
    assert parse_epoch_s(1.5, "$.t") == 1_500_000
    with pytest.raises(DecodeError, match=r"\$\.seq: expected an integer"):
        parse_seq(2**64, "$.seq")
    with pytest.raises(DecodeError, match=r"\$\.t: expected epoch seconds, got string '1'"):
        parse_epoch_s("1", "$.t")


def test_epoch_times_too_large_to_scale_are_bad_timestamps() -> None:
    for parse in (parse_epoch_ms, parse_epoch_s):
        with pytest.raises(DecodeError) as info:
            parse(1e306, "$.t")
        assert info.value.reason_code == "bad_timestamp"
        assert info.value.field == "$.t"
        assert str(info.value) == "$.t: 1e+306 is outside years 1-9999"


def test_huge_epoch_ms_time_is_one_rejection() -> None:
    payload = b'{"metric": "glucose", "value": 5.4, "unit": "mmol/L", "ts": 1e306}'
    result = decode_vitalwire(payload, TOPIC_CTX)
    assert result.readings == []
    assert result.rejections == [
        Rejection("bad_timestamp", "$.ts", "$.ts: 1e+306 is outside years 1-9999", "gm-1")
    ]

"""RACP encoding, the ``ble`` payload format, and agreement with the pipeline's tables."""

from __future__ import annotations

import pytest

from gateway.ble import racp
from gateway.ble.model import CALIBRATING, CLOCK_SKEW, CLOCK_UNSET, QUESTIONABLE, VALUE_ABSENT
from gateway.ble.registry import DECODERS, decode
from gateway.errors import DecodeError
from gateway.formats import router as router_module
from gateway.formats.base import DecodeContext
from gateway.formats.ble import FORMAT, decode_ble, parse_topic, topic_for
from gateway.formats.router import Route, Router
from gateway.records import RawMessage, RawReading
from pipeline.catalogue import catalogue
from pipeline.readings import Quality

T = 1_714_566_600_000_000
RX = 1_714_570_000_000_000
DATE = "e80705010c1e00"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# -- RACP ---------------------------------------------------------------------------------------


def test_racp_requests() -> None:
    assert racp.report_all() == h("0101")
    assert racp.report_from(43) == h("0103012b00")
    assert racp.report_count() == h("0401")
    assert racp.parse_request(h("0103012b00")) == racp.RacpRequest(1, 3, 1, (43,))
    assert racp.parse_request(h("010401 0a00 1400")) == racp.RacpRequest(1, 4, 1, (10, 20))
    assert racp.parse_request(h("0101")) == racp.RacpRequest(1, 1)


def test_racp_responses() -> None:
    assert racp.parse_response(h("05000700")) == racp.RacpResponse(5, records=7)
    assert racp.parse_response(h("06000101")) == racp.RacpResponse(6, request_op=1, code=1)
    assert racp.parse_response(h("06000106")).code == racp.ResponseCode.NO_RECORDS_FOUND


@pytest.mark.parametrize(("payload", "code"), [("0103", "truncated"), ("0101ff", "trailing_bytes")])
def test_racp_bad_requests(payload: str, code: str) -> None:
    with pytest.raises(DecodeError) as exc:
        racp.parse_request(h(payload))
    assert exc.value.reason_code == code


def test_racp_decode_for_people() -> None:
    assert decode(0x2A52, h("06000106")).fields == {
        "op_code": "response_code", "request_op_code": "report_records",
        "response_code": "no_records_found",
    }
    assert decode(0x2A52, h("0103012b00")).fields == {
        "op_code": "report_records", "operator": "greater_or_equal", "filter_type": 1,
        "operand": [43],
    }


# -- the ble payload format --------------------------------------------------------------------


def ctx(topic: str) -> DecodeContext:
    return DecodeContext(topic, None, RX)


def test_topics_round_trip() -> None:
    assert topic_for("GM-1", 0x2A18) == "ble/GM-1/2a18"
    topic = topic_for("CGM-1", 0x2AA7, session_start_us=T, clock_skew_s=-420)
    assert topic == f"ble/CGM-1/2aa7;sst={T};skew=-420"
    device, uuid16, bctx = parse_topic(topic)
    assert (device, uuid16, bctx.session_start_us, bctx.clock_skew_s) == ("CGM-1", 0x2AA7, T, -420)


@pytest.mark.parametrize(
    "topic", ["ble/GM-1", "mqtt/GM-1/2a18", "ble//2a18", "ble/GM-1/2a1", "ble/GM-1/2a18;x=1",
              "ble/GM-1/2a18;sst=abc", "ble/GM-1/2a18;sst=1;sst=2"]
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_ble(h("0048"), ctx(topic))
    assert exc.value.reason_code == "bad_topic"


def test_reading_without_device_time_gets_receive_time_and_clock_unset() -> None:
    result = decode_ble(h("0048"), ctx("ble/HR-1/2a37"))
    expected = RawReading("HR-1", "heart_rate", 72.0, "/min", RX, None, CLOCK_UNSET)
    assert result.readings == [expected]


def test_device_time_and_skew_flag() -> None:
    result = decode_ble(h("02" "7800" "5000" "5a00" + DATE), ctx("ble/BP-1/2a35;skew=-420"))
    assert [(r.observed_at_us, r.quality) for r in result.readings] == [(T, CLOCK_SKEW)] * 3


def test_absent_value_and_sequence() -> None:
    result = decode_ble(h("02" "0900" + DATE + "ff07" "11"), ctx("ble/GM-1/2a18"))
    assert result.readings == [RawReading("GM-1", "glucose", None, "kg/L", T, 9, VALUE_ABSENT)]


def test_cgm_session_start_from_topic_and_crc_rejection() -> None:
    payload = h("08" "00" "7800" "0500" "0000" "06" "00" "7a00" "0a00")
    result = decode_ble(payload, ctx(f"ble/CGM-1/2aa7;sst={T}"))
    assert result.readings == [
        RawReading("CGM-1", "cgm_glucose", 122.0, "mg/dL", T + 600_000_000, 10, 0)
    ]
    assert [(r.reason_code, r.device_id) for r in result.rejections] == [("crc_mismatch", "CGM-1")]


def test_router_sends_bad_bytes_to_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(router_module.BUILTIN_FORMATS, FORMAT, decode_ble)
    router = Router([Route("ble/{device_id}/{characteristic}", FORMAT)], {})
    good = router.decode(RawMessage("ble/HR-1/2a37", h("0048"), RX, "ble"))
    assert [r.value for r in good.readings] == [72.0]
    bad = router.decode(RawMessage("ble/HR-1/2a37", h("01"), RX, "ble"))
    assert bad.readings == []
    assert [(r.reason_code, r.field, r.device_id) for r in bad.rejections] == [
        ("truncated", "heart_rate", "HR-1")
    ]
    unknown = router.decode(RawMessage("ble/HR-1/2a00", h("00"), RX, "ble"))
    assert unknown.rejections[0].reason_code == "unknown_characteristic"


# -- agreement with the pipeline ---------------------------------------------------------------


def test_quality_bits_match_the_pipeline() -> None:
    assert (CLOCK_UNSET, QUESTIONABLE, CALIBRATING, VALUE_ABSENT, CLOCK_SKEW) == (
        Quality.CLOCK_UNSET, Quality.QUESTIONABLE, Quality.CALIBRATING, Quality.VALUE_ABSENT,
        Quality.CLOCK_SKEW,
    )
    assert CLOCK_SKEW < 256  # fits the UInt8 quality column


SAMPLES = {
    0x2A37: "0048",
    0x2A18: ["03" "0100" + DATE + "f6ff" "5fb0" "11", "06" "0100" + DATE + "35c0" "11"],
    0x2AA7: "06007800 0500",
    0x2A35: ["04" "7800" "5000" "5a00" "4800", "01" "a0f0" "6bf0" "7df0"],
    0x2A1C: ["00" "6c0100ff", "01" "cf0300ff"],
    0x2A5E: "00" "6200" "4800",
    0x2A5F: "00" "6200" "4800",
    0x2A9D: ["00" "703a", "01" "7440"],
}


def test_every_reading_uses_a_catalogue_metric_and_accepted_unit() -> None:
    cat = catalogue()
    seen = set()
    for uuid16, samples in SAMPLES.items():
        for sample in [samples] if isinstance(samples, str) else samples:
            for r in decode(uuid16, h(sample)).readings:
                assert r.unit in cat[r.metric].accepted_units(), (hex(uuid16), r)
                seen.add((r.metric, r.unit))
    assert ("glucose", "mol/L") in seen and ("body_weight", "[lb_av]") in seen
    assert set(DECODERS) >= set(SAMPLES)

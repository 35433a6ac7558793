"""Topic routing, decoder dispatch, and the promise that decode never raises."""

from __future__ import annotations

from typing import cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.formats.router as router_module
from gateway.errors import ConfigError, DecodeError
from gateway.formats.base import DecodeContext, DecodeResult
from gateway.formats.profiles import DeviceProfile
from gateway.formats.router import DEFAULT_ROUTES, Route, Router, load_default_profiles
from gateway.records import RawMessage, RawReading, Rejection
from pipeline.catalogue import catalogue

PROFILES = load_default_profiles(catalogue().names)
ROUTER = Router(DEFAULT_ROUTES, PROFILES)
T0_US = 1_740_816_000_000_000


def _msg(topic: str, payload: bytes, received_at_us: int = 5) -> RawMessage:
    return RawMessage(topic, payload, received_at_us, "mqtt")


def test_default_subscriptions() -> None:
    assert ROUTER.subscriptions() == [
        "pulsewear/+/telemetry",
        "medsys/bedside/+/vitals",
        "glucoflow/+/egv",
        "vitalwire/v1/devices/+/readings",
        "openmhealth/v1/devices/+",
        "ble/+/+",
    ]


def test_subscriptions_are_deduplicated_in_route_order() -> None:
    router = Router(
        [
            Route("a/{device_id}/x", "vitalwire"),
            Route("b", "vitalwire"),
            Route("a/{other}/x", "openmhealth"),
        ],
        {},
    )
    assert router.subscriptions() == ["a/+/x", "b"]


def test_capture_becomes_the_context_device_id() -> None:
    seen: list[DecodeContext] = []

    class Recorder:
        def decode(self, payload: bytes, ctx: DecodeContext) -> DecodeResult:
            seen.append(ctx)
            return DecodeResult([], [])

    router = Router(
        [Route("site/{site}/dev/{device_id}", "profile:rec"), Route("plain/topic", "profile:rec")],
        {"rec": cast(DeviceProfile, Recorder())},
    )
    router.decode(_msg("site/north/dev/d-7", b"{}", 11))
    router.decode(_msg("plain/topic", b"{}", 12))
    assert seen == [
        DecodeContext("site/north/dev/d-7", "d-7", 11),
        DecodeContext("plain/topic", None, 12),
    ]


def test_first_matching_route_wins() -> None:
    router = Router(
        [
            Route("dev/special/{device_id}", "openmhealth"),
            Route("dev/{site}/{device_id}", "vitalwire"),
        ],
        {},
    )
    payload = b'{"metric": "spo2", "value": 97, "unit": "%", "ts": 1740816000000}'
    # Both routes match: Open mHealth (first) cannot read a vitalwire object.
    (rejection,) = router.decode(_msg("dev/special/d1", payload)).rejections
    assert (rejection.reason_code, rejection.device_id) == ("bad_shape", "d1")
    assert router.decode(_msg("dev/other/d1", payload)).readings == [
        RawReading("d1", "spo2", 97.0, "%", T0_US, None)
    ]


@pytest.mark.parametrize(
    "topic",
    [
        "pulsewear/w1",
        "pulsewear/w1/telemetry/extra",
        "pulsewear//telemetry",
        "other/w1/telemetry",
        "",
        "openmhealth/v1/devices",
    ],
)
def test_unmatched_topic_is_an_unknown_topic_rejection(topic: str) -> None:
    assert ROUTER.decode(_msg(topic, b"{}")) == DecodeResult(
        [], [Rejection("unknown_topic", "", f"topic {topic!r} matches no route", "")]
    )


def test_decode_error_becomes_one_rejection_with_the_topic_device() -> None:
    result = ROUTER.decode(_msg("glucoflow/gf-9/egv", b"{not json"))
    assert result.readings == []
    (rejection,) = result.rejections
    assert (rejection.reason_code, rejection.field, rejection.device_id) == (
        "malformed_json",
        "$",
        "gf-9",
    )


def test_unexpected_decoder_exception_becomes_decoder_error() -> None:
    class Broken:
        def decode(self, payload: bytes, ctx: DecodeContext) -> DecodeResult:
            raise ZeroDivisionError("division by zero")

    router = Router(
        [Route("x/{device_id}", "profile:broken")], {"broken": cast(DeviceProfile, Broken())}
    )
    assert router.decode(_msg("x/d1", b"{}")) == DecodeResult(
        [],
        [
            Rejection(
                "decoder_error",
                "",
                "profile:broken decoder failed: ZeroDivisionError: division by zero",
                "d1",
            )
        ],
    )


def test_decode_error_raised_by_a_profile_keeps_its_code_and_field() -> None:
    class Strict:
        def decode(self, payload: bytes, ctx: DecodeContext) -> DecodeResult:
            raise DecodeError("bad_shape", "$.x: nope", "$.x")

    router = Router([Route("x/{device_id}", "profile:s")], {"s": cast(DeviceProfile, Strict())})
    assert router.decode(_msg("x/d1", b"{}")).rejections == [
        Rejection("bad_shape", "$.x", "$.x: nope", "d1")
    ]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            Route("a/{device_id}", "csv"),
            "routes[1] ('a/{device_id}'): format: unknown format 'csv'",
        ),
        (Route("a/{device_id}", "profile:nope"), "unknown format 'profile:nope'"),
        (Route("a/+/b", "vitalwire"), "topic: level '+' must be literal or one whole {name}"),
        (Route("a/#", "vitalwire"), "topic: level '#' must be literal"),
        (Route("a/x{device_id}", "vitalwire"), "level 'x{device_id}' must be literal"),
        (Route("a/{1x}", "vitalwire"), "level '{1x}' must be literal"),
        (Route("{id}/{id}", "vitalwire"), "topic: capture {id} appears twice"),
        (Route("", "vitalwire"), "topic: expected a topic template"),
    ],
)
def test_bad_routes_raise_config_error(route: Route, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Router([Route("ok/{device_id}", "vitalwire"), route], PROFILES)
    assert message in str(info.value)
    assert "routes[1]" in str(info.value)


def test_unknown_profile_error_lists_loaded_profiles() -> None:
    with pytest.raises(ConfigError, match="profile:glucoflow-cgm, profile:medsys-bedside"):
        Router([Route("a/{device_id}", "profile:acme")], PROFILES)


def test_topic_cache_is_bounded_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "TOPIC_CACHE_SIZE", 3)
    router = Router(DEFAULT_ROUTES, PROFILES)
    payload = b'{"metric": "spo2", "value": 97, "unit": "%", "ts": 1740816000000}'
    for i in range(10):
        topic = f"vitalwire/v1/devices/d{i % 5}/readings"
        (reading,) = router.decode(_msg(topic, payload)).readings
        assert reading.device_id == f"d{i % 5}"
        assert len(router._cache) <= 3


# --------------------------------------------------------------------------- never raises

TOPICS = [
    "pulsewear/w/telemetry",
    "medsys/bedside/m/vitals",
    "glucoflow/g/egv",
    "vitalwire/v1/devices/v/readings",
    "openmhealth/v1/devices/o",
    "unknown/topic",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "device_id",
                    "metric",
                    "value",
                    "unit",
                    "ts",
                    "seq",
                    "header",
                    "body",
                    "msg",
                    "time_ms",
                    "vitals",
                    "hr_bpm",
                    "observations",
                    "code",
                    "egvs",
                    "t",
                    "mgdl",
                    "time",
                    "monitor",
                    "serial",
                    "effective_time_frame",
                    "date_time",
                    "heart_rate",
                    "step_count",
                    "msg_type",
                    "sensor_id",
                ]
            )
            | st.text(max_size=6),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=200))
def test_random_bytes_never_raise(topic: str, payload: bytes) -> None:
    result = ROUTER.decode(_msg(topic, payload))
    assert isinstance(result, DecodeResult)


@settings(max_examples=500, deadline=None)
@given(topic=st.sampled_from(TOPICS), doc=json_values)
def test_random_json_never_raises(topic: str, doc: object) -> None:
    result = ROUTER.decode(_msg(topic, orjson.dumps(doc)))
    for reading in result.readings:
        assert isinstance(reading.value, float)
        assert isinstance(reading.observed_at_us, int)
    for rejection in result.rejections:
        assert rejection.reason_code != "decoder_error", rejection.reason

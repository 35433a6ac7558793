"""The simulated devices' native encoders, round-tripped through the default router."""

from __future__ import annotations

import random
from collections.abc import Mapping

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.formats.router import DEFAULT_ROUTES, Router, load_default_profiles
from gateway.records import RawMessage, RawReading
from pipeline.catalogue import catalogue
from simulators.native import (
    GARBAGE_FAULTS,
    KINDS,
    METRICS_BY_KIND,
    encode,
    encode_cgm_backfill,
    encode_garbage,
    native_unit,
    topic_for,
)

ROUTER = Router(DEFAULT_ROUTES, load_default_profiles(catalogue().names))
T0_US = 1_740_816_000_000_000  # 2025-03-01T08:00:00Z
TS_US = T0_US + 123_456  # sub-millisecond part, to show each device's time resolution


def _decode(message: tuple[str, bytes]) -> list[RawReading]:
    topic, payload = message
    result = ROUTER.decode(RawMessage(topic, payload, 0, "sim"))
    assert result.rejections == []
    return result.readings


@pytest.mark.parametrize(
    ("kind", "topic"),
    [
        ("smartwatch", "pulsewear/pw-1/telemetry"),
        ("bedside_monitor", "medsys/bedside/pw-1/vitals"),
        ("cgm", "glucoflow/pw-1/egv"),
        ("glucose_meter", "vitalwire/v1/devices/pw-1/readings"),
        ("scale", "openmhealth/v1/devices/pw-1"),
    ],
)
def test_topic_for(kind: str, topic: str) -> None:
    assert topic_for(kind, "pw-1") == topic


def test_kinds_and_metrics_cover_the_catalogue() -> None:
    assert set(KINDS) == set(METRICS_BY_KIND)
    reported = {m for metrics in METRICS_BY_KIND.values() for m in metrics}
    assert reported == set(catalogue().names)


def test_smartwatch_round_trip() -> None:
    values = {"heart_rate": 72.4, "spo2": 97.6, "steps": 5321.0, "hrv_sdnn": 42.46}
    readings = _decode(encode("smartwatch", "pw-1", 17, TS_US, values))
    at = T0_US + 123_000  # epoch milliseconds
    assert readings == [
        RawReading("pw-1", "heart_rate", 72.0, "bpm", at, 17),
        RawReading("pw-1", "spo2", 98.0, "%", at, 17),
        RawReading("pw-1", "hrv_sdnn", 42.5, "ms", at, 17),
        RawReading("pw-1", "steps", 5321.0, "{steps}", at, 17),
    ]


def test_smartwatch_sends_only_what_it_measured() -> None:
    readings = _decode(encode("smartwatch", "pw-1", 18, TS_US, {"steps": 10.0}))
    assert [(r.metric, r.value) for r in readings] == [("steps", 10.0)]


def test_bedside_monitor_in_fahrenheit_round_trip() -> None:
    assert native_unit("bedside_monitor", "bm-0004", "body_temperature") == "[degF]"
    values = {
        "heart_rate": 88.0,
        "respiratory_rate": 18.2,
        "spo2": 94.0,
        "systolic_bp": 132.0,
        "diastolic_bp": 84.0,
        "mean_bp": 100.3,
        "body_temperature": 37.0,
    }
    readings = _decode(encode("bedside_monitor", "bm-0004", 1042, TS_US, values))
    assert readings == [
        RawReading("bm-0004", "heart_rate", 88.0, "/min", TS_US, 1042),
        RawReading("bm-0004", "respiratory_rate", 18.0, "{breaths}/min", TS_US, 1042),
        RawReading("bm-0004", "spo2", 94.0, "%", TS_US, 1042),
        RawReading("bm-0004", "systolic_bp", 132.0, "mm[Hg]", TS_US, 1042),
        RawReading("bm-0004", "diastolic_bp", 84.0, "mm[Hg]", TS_US, 1042),
        RawReading("bm-0004", "mean_bp", 100.0, "mm[Hg]", TS_US, 1042),
        RawReading("bm-0004", "body_temperature", 98.6, "[degF]", TS_US, 1042),
    ]


def test_bedside_monitor_in_celsius_sends_local_time_with_offset() -> None:
    assert native_unit("bedside_monitor", "bm-0001", "body_temperature") == "Cel"
    topic, payload = encode("bedside_monitor", "bm-0001", 7, T0_US, {"body_temperature": 38.25})
    assert orjson.loads(payload)["time"] == "2025-03-01T09:00:00+01:00"
    assert _decode((topic, payload)) == [
        RawReading("bm-0001", "body_temperature", 38.2, "Cel", T0_US, 7)
    ]


def test_cgm_round_trip_in_whole_seconds() -> None:
    readings = _decode(encode("cgm", "gf-1", 1001, TS_US, {"cgm_glucose": 112.4}))
    assert readings == [RawReading("gf-1", "cgm_glucose", 112.0, "mg/dL", T0_US, 1001)]


def test_cgm_backfill_round_trip() -> None:
    points = [(1001, T0_US, 112.0), (1002, T0_US + 300_000_000, 118.6)]
    readings = _decode(encode_cgm_backfill("gf-1", points))
    assert readings == [
        RawReading("gf-1", "cgm_glucose", 112.0, "mg/dL", T0_US, 1001),
        RawReading("gf-1", "cgm_glucose", 119.0, "mg/dL", T0_US + 300_000_000, 1002),
    ]


def test_glucose_meter_converts_to_mmol_per_litre() -> None:
    readings = _decode(encode("glucose_meter", "gm-1", 3, TS_US, {"glucose": 100.0}))
    assert readings == [RawReading("gm-1", "glucose", 5.6, "mmol/L", TS_US, 3)]


def test_scale_sends_open_mhealth_in_pounds() -> None:
    readings = _decode(encode("scale", "sc-1", 9, TS_US, {"body_weight": 75.0}))
    assert readings == [RawReading("sc-1", "body_weight", 165.3, "[lb_av]", TS_US, None)]


@pytest.mark.parametrize(
    ("kind", "device_id", "values", "message"),
    [
        ("toaster", "d", {"heart_rate": 1.0}, "unknown device kind 'toaster'"),
        ("cgm", "d", {"glucose": 1.0}, "a cgm does not report 'glucose'"),
        ("smartwatch", "d", {}, "needs at least one value"),
        ("cgm", "d", {"cgm_glucose": 1.0, "glucose": 2.0}, "holds one value, got 2"),
        ("scale", "d/e", {"body_weight": 70.0}, "is not a single MQTT topic level"),
        ("scale", "", {"body_weight": 70.0}, "is not a single MQTT topic level"),
        ("scale", "d", {"body_weight": float("nan")}, "is not finite"),
    ],
)
def test_encode_rejects_bad_arguments(
    kind: str, device_id: str, values: Mapping[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(kind, device_id, 1, T0_US, values)


def test_encode_rejects_bad_seq_and_empty_backfill() -> None:
    with pytest.raises(ValueError, match="outside"):
        encode("glucose_meter", "gm-1", -1, T0_US, {"glucose": 100.0})
    with pytest.raises(ValueError, match="at least one point"):
        encode_cgm_backfill("gf-1", [])


def _caught_by_pipeline(reading: RawReading) -> bool:
    """Whether normalization would quarantine the reading (unit not accepted or implausible)."""
    spec = catalogue()[reading.metric]
    if reading.unit not in spec.accepted_units() or reading.value is None:
        return True
    value = spec.to_canonical(reading.value, reading.unit)
    return not spec.plausible_low <= value <= spec.plausible_high


@pytest.mark.parametrize("kind", KINDS)
def test_every_garbage_message_is_caught(kind: str) -> None:
    rng = random.Random(f"garbage-{kind}")
    for _ in range(200):
        topic, payload = encode_garbage(kind, "dev-1", rng)
        assert topic == topic_for(kind, "dev-1")
        result = ROUTER.decode(RawMessage(topic, payload, 0, "sim"))
        assert result.rejections or any(_caught_by_pipeline(r) for r in result.readings), payload
        assert all(r.reason_code != "decoder_error" for r in result.rejections)


def test_garbage_uses_every_fault() -> None:
    rng = random.Random(1)
    broken = 0
    for kind in KINDS * 40:
        _, payload = encode_garbage(kind, "d", rng)
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError:
            broken += 1
    # broken_json and random_bytes are 2 of 6 (or 2 of 5) faults: about a third.
    assert 40 < broken < 100
    assert GARBAGE_FAULTS[-1] == "wrong_unit"


def _slots(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Paths (key and index steps) to every nested value of a JSON document."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    out = []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_slots(child, (*prefix, key)))
    return out


JUNK: st.SearchStrategy[object] = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just([])
    | st.just({})
)


def _mutate(doc: object, path: tuple[object, ...], replacement: object, delete: bool) -> object:
    """A copy of ``doc`` with the value at ``path`` replaced (or its key deleted)."""
    copy = orjson.loads(orjson.dumps(doc))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return copy


VALID = {
    kind: encode(kind, "dev-1", 5, TS_US, {m: 80.0 for m in METRICS_BY_KIND[kind][:1]})
    for kind in KINDS
}


@settings(max_examples=400, deadline=None)
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_mutated_native_payloads_never_raise(data: st.DataObject, kind: str) -> None:
    topic, payload = VALID[kind]
    doc = orjson.loads(payload)
    path = data.draw(st.sampled_from(_slots(doc)))
    doc = _mutate(doc, path, data.draw(JUNK), data.draw(st.booleans()))
    result = ROUTER.decode(RawMessage(topic, orjson.dumps(doc), 0, "sim"))
    assert all(r.reason_code != "decoder_error" for r in result.rejections)
    for reading in result.readings:
        assert isinstance(reading.value, float)
        assert reading.seq is None or 0 <= reading.seq < 2**64

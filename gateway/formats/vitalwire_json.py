"""The vitalwire reading JSON format (format name ``vitalwire``).

One reading object, or an array of them, per message::

    {"device_id": "gm-0001", "metric": "glucose", "value": 5.4, "unit": "mmol/L",
     "ts": "2025-03-01T08:15:00Z", "seq": 42}

``device_id`` may be left out when the route captures ``{device_id}`` from the topic; when both
are present they must agree. ``ts`` is RFC 3339 with an offset or epoch milliseconds; ``seq`` is
optional. Each object is decoded on its own, so one bad reading never costs the others.
"""

from __future__ import annotations

from gateway.errors import DecodeError
from gateway.formats.base import (
    SEQ_LIMIT,
    DecodeContext,
    DecodeResult,
    describe,
    json_items,
    load_json,
    parse_epoch_ms,
    parse_rfc3339,
    parse_seq,
    parse_timestamp,
    require_number,
)
from gateway.records import RawReading, Rejection

__all__ = [
    "DEFAULT_TOPIC",
    "FORMAT",
    "decode_vitalwire",
    "decode_vitalwire_fast",
]

FORMAT = "vitalwire"
DEFAULT_TOPIC = "vitalwire/v1/devices/{device_id}/readings"


def _require(item: dict[str, object], key: str, prefix: str) -> object:
    """The value of a required field, else ``missing_field``."""
    if key not in item:
        field = f"{prefix}.{key}"
        raise DecodeError("missing_field", f"{field}: required field is missing", field)
    return item[key]


def _string(item: dict[str, object], key: str, prefix: str) -> str:
    """A required non-empty string field of a reading object."""
    value = _require(item, key, prefix)
    if type(value) is not str or not value:
        field = f"{prefix}.{key}"
        raise DecodeError(
            "bad_value", f"{field}: expected a non-empty string, got {describe(value)}", field
        )
    return value


def _device_id(item: dict[str, object], prefix: str, captured: str | None) -> str:
    if "device_id" not in item and captured is not None:
        return captured
    device_id = _string(item, "device_id", prefix)
    if captured is not None and device_id != captured:
        field = f"{prefix}.device_id"
        raise DecodeError(
            "device_mismatch",
            f"{field}: payload names device {device_id!r} but the topic names {captured!r}",
            field,
        )
    return device_id


def _reading(item: object, prefix: str, ctx: DecodeContext) -> RawReading:
    if type(item) is not dict:
        raise DecodeError(
            "bad_shape", f"{prefix}: expected a reading object, got {describe(item)}", prefix
        )
    device_id = _device_id(item, prefix, ctx.device_id)
    metric = _string(item, "metric", prefix)
    value = require_number(_require(item, "value", prefix), f"{prefix}.value")
    unit = _string(item, "unit", prefix)
    ts = _require(item, "ts", prefix)
    observed_at_us = parse_timestamp(ts, f"{prefix}.ts")
    seq = parse_seq(item["seq"], f"{prefix}.seq") if "seq" in item else None
    return RawReading(device_id, metric, value, unit, observed_at_us, seq)


def _rejection(exc: DecodeError, item: object, ctx: DecodeContext) -> Rejection:
    device_id = ctx.device_id
    if device_id is None and type(item) is dict:
        named = item.get("device_id")
        device_id = named if type(named) is str else None
    return Rejection(exc.reason_code, exc.field, str(exc), device_id or "")


def decode_vitalwire(payload: bytes, ctx: DecodeContext) -> DecodeResult:
    """Decode one vitalwire JSON message.

    Raises:
        DecodeError: ``malformed_json`` when the payload is not JSON, ``bad_shape`` when it is
            neither an object nor an array.
    """
    items, single = json_items(payload, "a reading object or an array of them")
    readings: list[RawReading] = []
    rejections: list[Rejection] = []
    for i, item in enumerate(items):
        prefix = "$" if single else f"$[{i}]"
        try:
            readings.append(_reading(item, prefix, ctx))
        except DecodeError as exc:
            rejections.append(_rejection(exc, item, ctx))
    return DecodeResult(readings, rejections)


def decode_vitalwire_fast(payload: bytes, captured: str | None) -> DecodeResult | None:
    """:func:`decode_vitalwire` for messages whose every reading is valid, else ``None``.

    A :data:`~gateway.formats.base.FastDecoder`: it may also raise, leaving the message to
    :func:`decode_vitalwire`.
    """
    doc = load_json(payload)
    if type(doc) is dict:
        items: list[object] = [doc]
    elif type(doc) is list:
        items = doc
    else:
        return None
    readings: list[RawReading] = []
    for item in items:
        if type(item) is not dict:
            return None
        device_id = item.get("device_id", captured)
        if type(device_id) is not str or not device_id:
            return None
        if captured is not None and device_id != captured:
            return None
        metric = item.get("metric")
        value = item.get("value")
        unit = item.get("unit")
        if type(metric) is not str or not metric or type(unit) is not str or not unit:
            return None
        if type(value) is not float and type(value) is not int:
            return None
        ts = item.get("ts")
        observed_at_us = parse_rfc3339(ts, "$") if type(ts) is str else parse_epoch_ms(ts, "$")
        seq = None
        if "seq" in item:
            seq = item["seq"]
            if type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
                return None
        readings.append(RawReading(device_id, metric, float(value), unit, observed_at_us, seq))
    return DecodeResult(readings, [])

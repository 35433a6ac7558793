"""The vitalwire reading JSON format (format name ``vitalwire``).

One reading object, or an array of them, per message::

    {"device_id": "gm-0001", "metric": "glucose", "value": 5.4, "unit": "mmol/L",
     "ts": "2025-03-01T08:15:00Z", "seq": 42}

``device_id`` may be left out when the route captures ``{device_id}`` from the topic; when both
are present they must agree. ``ts`` is RFC 3339 with an offset or epoch milliseconds; ``seq`` is
optional. Each object is decoded on its own, so one bad reading never costs the others.

This module also holds the field rules the other JSON formats share (:func:`load_json`,
:func:`parse_seq`, :func:`parse_epoch_s`, :func:`check_time`, :func:`describe`).
"""

from __future__ import annotations

import math

import orjson

from gateway.errors import DecodeError
from gateway.formats.base import DecodeContext, DecodeResult, parse_timestamp, require_number
from gateway.records import RawReading, Rejection

__all__ = [
    "DEFAULT_TOPIC",
    "FORMAT",
    "MAX_TIME_US",
    "MIN_TIME_US",
    "SEQ_LIMIT",
    "check_time",
    "decode_vitalwire",
    "describe",
    "load_json",
    "parse_epoch_s",
    "parse_seq",
]

FORMAT = "vitalwire"
DEFAULT_TOPIC = "vitalwire/v1/devices/{device_id}/readings"

SEQ_LIMIT = 2**64
"""Sequence numbers are unsigned 64-bit: ``0 <= seq < SEQ_LIMIT``."""

MIN_TIME_US = -62_135_596_800_000_000
"""0001-01-01T00:00:00Z in epoch microseconds: the earliest time a reading may carry."""
MAX_TIME_US = 253_402_300_799_999_999
"""9999-12-31T23:59:59.999999Z in epoch microseconds: the latest."""


def load_json(payload: bytes) -> object:
    """Parse a payload with ``orjson``; :class:`DecodeError` ``malformed_json`` when it is not."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", f"$: payload is not valid JSON: {exc}", "$") from None


def describe(value: object) -> str:
    """A JSON value's kind for error messages: ``string 'abc'``, ``number 5``, ``null``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_seq(value: object, field: str) -> int:
    """A sequence number: an integer with ``0 <= seq < 2**64``, else ``bad_value``."""
    if type(value) is not int or not 0 <= value < SEQ_LIMIT:
        raise DecodeError(
            "bad_value",
            f"{field}: expected an integer from 0 to 2**64-1, got {describe(value)}",
            field,
        )
    return value


def check_time(us: int, field: str) -> int:
    """``us`` when it lies in years 1 to 9999, else ``bad_timestamp``."""
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise DecodeError("bad_timestamp", f"{field}: {us} µs is outside years 1-9999", field)
    return us


def parse_epoch_s(value: object, field: str) -> int:
    """Epoch seconds (int or float) -> UTC microseconds since the epoch, range-checked."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            "bad_timestamp", f"{field}: expected epoch seconds, got {describe(value)}", field
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("bad_timestamp", f"{field}: {value!r} is not a finite time", field)
    us = value * 1_000_000 if isinstance(value, int) else round(value * 1_000_000)
    return check_time(us, field)


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
    observed_at_us = check_time(parse_timestamp(ts, f"{prefix}.ts"), f"{prefix}.ts")
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
    doc = load_json(payload)
    single = type(doc) is dict
    if single:
        items: list[object] = [doc]
    elif type(doc) is list:
        items = doc
    else:
        raise DecodeError(
            "bad_shape",
            f"$: expected a reading object or an array of them, got {describe(doc)}",
            "$",
        )
    readings: list[RawReading] = []
    rejections: list[Rejection] = []
    for i, item in enumerate(items):
        prefix = "$" if single else f"$[{i}]"
        try:
            readings.append(_reading(item, prefix, ctx))
        except DecodeError as exc:
            rejections.append(_rejection(exc, item, ctx))
    return DecodeResult(readings, rejections)

"""What every payload format shares: the decoder contract and the JSON field rules.

A decoder is a pure function ``(payload, context) -> DecodeResult``. It raises
:class:`~gateway.errors.DecodeError` when the whole payload is unusable (not JSON, wrong shape)
and returns a :class:`~gateway.records.Rejection` for each single reading it cannot use, so that
one bad reading never costs the good ones beside it.

The field rules here (:func:`load_json`, :func:`describe`, the timestamp parsers,
:func:`parse_seq`, :func:`require_number`) are shared by the JSON formats. Every timestamp parser
range-checks its result with :func:`check_time`, so no reading carries a time outside years
1 to 9999.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple

import orjson

from gateway.errors import DecodeError
from gateway.records import RawReading, Rejection

__all__ = [
    "MAX_TIME_US",
    "MIN_TIME_US",
    "SEQ_LIMIT",
    "DecodeContext",
    "DecodeResult",
    "Decoder",
    "FastDecoder",
    "check_time",
    "describe",
    "json_items",
    "load_json",
    "parse_epoch_ms",
    "parse_epoch_s",
    "parse_rfc3339",
    "parse_seq",
    "parse_timestamp",
    "require_number",
]

SEQ_LIMIT = 2**64
"""Sequence numbers are unsigned 64-bit: ``0 <= seq < SEQ_LIMIT``."""

MIN_TIME_US = -62_135_596_800_000_000
"""0001-01-01T00:00:00Z in epoch microseconds: the earliest time a reading may carry."""
MAX_TIME_US = 253_402_300_799_999_999
"""9999-12-31T23:59:59.999999Z in epoch microseconds: the latest."""


@dataclass(frozen=True, slots=True)
class DecodeContext:
    """What a decoder knows besides the payload.

    Attributes:
        topic: The topic the payload arrived on.
        device_id: Device id captured from the topic, or ``None`` when the route has none.
        received_at_us: Gateway receive time (UTC microseconds).
    """

    topic: str
    device_id: str | None
    received_at_us: int


class DecodeResult(NamedTuple):
    """Readings decoded from one payload, and the readings that could not be."""

    readings: list[RawReading]
    rejections: list[Rejection]


Decoder = Callable[[bytes, DecodeContext], DecodeResult]

FastDecoder = Callable[[bytes, str | None], DecodeResult | None]
"""An optional shortcut beside a :data:`Decoder`, for the common well-formed message.

Called with the payload and the topic's device id, it returns exactly what the decoder would,
or ``None`` (or raises anything) when the message needs the decoder's careful path: then the
decoder decides, and its readings, rejections and messages are the ones that count.
"""


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


def check_time(us: int, field: str) -> int:
    """``us`` when it lies in years 1 to 9999, else ``bad_timestamp``."""
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise DecodeError("bad_timestamp", f"{field}: {us} µs is outside years 1-9999", field)
    return us


def _scaled_time(value: int | float, scale: int, field: str) -> int:
    """``value * scale`` as whole UTC microseconds, range-checked."""
    if isinstance(value, int):
        return check_time(value * scale, field)
    us = value * scale
    if not math.isfinite(us):  # a finite float so large that scaling overflows
        raise DecodeError("bad_timestamp", f"{field}: {value!r} is outside years 1-9999", field)
    return check_time(round(us), field)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)
_OFFSET_US: dict[tzinfo, int] = {}
"""Microseconds east of UTC of the fixed-offset zones parsed so far (a few dozen at most)."""


def parse_rfc3339(text: str, field: str) -> int:
    """RFC 3339 timestamp with an explicit offset -> UTC microseconds, range-checked."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(
            "bad_timestamp", f"{field}: {text!r} is not an RFC 3339 timestamp", field
        ) from None
    zone = dt.tzinfo
    offset_us = _OFFSET_US.get(zone) if zone is not None else None
    if offset_us is None:
        offset = dt.utcoffset()
        if offset is None:
            raise DecodeError(
                "bad_timestamp", f"{field}: {text!r} has no UTC offset (add Z or +hh:mm)", field
            )
        offset_us = offset // _ONE_US
        if type(zone) is timezone and len(_OFFSET_US) < 64:
            _OFFSET_US[zone] = offset_us
    # Integer arithmetic keeps microsecond precision exactly.
    seconds = ((dt.toordinal() - _EPOCH_ORDINAL) * 24 + dt.hour) * 3600 + dt.minute * 60
    us = (seconds + dt.second) * 1_000_000 + dt.microsecond - offset_us
    # An offset can push a time at either end of years 1-9999 just outside them.
    return check_time(us, field)


def parse_epoch_ms(value: object, field: str) -> int:
    """Epoch milliseconds (int or float) -> UTC microseconds, range-checked."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            "bad_timestamp", f"{field}: expected epoch milliseconds, got {value!r}", field
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("bad_timestamp", f"{field}: {value!r} is not a finite time", field)
    return _scaled_time(value, 1000, field)


def parse_epoch_s(value: object, field: str) -> int:
    """Epoch seconds (int or float) -> UTC microseconds, range-checked."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            "bad_timestamp", f"{field}: expected epoch seconds, got {describe(value)}", field
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("bad_timestamp", f"{field}: {value!r} is not a finite time", field)
    return _scaled_time(value, 1_000_000, field)


def parse_timestamp(value: object, field: str) -> int:
    """RFC 3339 string with offset, or epoch milliseconds number, range-checked."""
    if isinstance(value, str):
        return parse_rfc3339(value, field)
    if value is None:
        raise DecodeError("missing_field", f"{field}: timestamp is missing", field)
    return parse_epoch_ms(value, field)


def parse_seq(value: object, field: str) -> int:
    """A sequence number: an integer with ``0 <= seq < 2**64``, else ``bad_value``."""
    if type(value) is not int or not 0 <= value < SEQ_LIMIT:
        raise DecodeError(
            "bad_value",
            f"{field}: expected an integer from 0 to 2**64-1, got {describe(value)}",
            field,
        )
    return value


def require_number(value: object, field: str) -> float:
    """A finite JSON number as float, else :class:`DecodeError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "null" if value is None else type(value).__name__
        if isinstance(value, str):
            kind = f"string {value!r}"
        raise DecodeError("bad_value", f"{field}: expected a number, got {kind}", field)
    v = float(value)
    if not math.isfinite(v):
        raise DecodeError("bad_value", f"{field}: {value!r} is not a finite number", field)
    return v


def json_items(payload: bytes, expected: str) -> tuple[list[object], bool]:
    """A JSON payload holding one object or an array of them, as a list.

    Returns:
        The items, and whether the payload was a single object (not an array).

    Raises:
        DecodeError: ``malformed_json``, or ``bad_shape`` naming ``expected``.
    """
    doc = load_json(payload)
    if type(doc) is dict:
        return [doc], True
    if type(doc) is list:
        return doc, False
    raise DecodeError("bad_shape", f"$: expected {expected}, got {describe(doc)}", "$")

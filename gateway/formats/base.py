"""What every payload format shares: the decoder contract and timestamp parsing.

A decoder is a pure function ``(payload, context) -> DecodeResult``. It raises
:class:`~gateway.errors.DecodeError` when the whole payload is unusable (not JSON, wrong shape)
and returns a :class:`~gateway.records.Rejection` for each single reading it cannot use, so that
one bad reading never costs the good ones beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from gateway.errors import DecodeError
from gateway.records import RawReading, Rejection

__all__ = [
    "DecodeContext",
    "DecodeResult",
    "Decoder",
    "parse_epoch_ms",
    "parse_rfc3339",
    "parse_timestamp",
    "require_number",
]


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



def parse_rfc3339(text: str, field: str) -> int:
    """RFC 3339 timestamp with an explicit offset -> UTC microseconds since the epoch."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(
            "bad_timestamp", f"{field}: {text!r} is not an RFC 3339 timestamp", field
        ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise DecodeError(
            "bad_timestamp", f"{field}: {text!r} has no UTC offset (add Z or +hh:mm)", field
        )
    # Integer arithmetic keeps microsecond precision exactly.
    delta = dt - datetime.fromisoformat("1970-01-01T00:00:00+00:00")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_epoch_ms(value: object, field: str) -> int:
    """Epoch milliseconds (int or float) -> UTC microseconds since the epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            "bad_timestamp", f"{field}: expected epoch milliseconds, got {value!r}", field
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("bad_timestamp", f"{field}: {value!r} is not a finite time", field)
    return round(value * 1000)


def parse_timestamp(value: object, field: str) -> int:
    """RFC 3339 string with offset, or epoch milliseconds number."""
    if isinstance(value, str):
        return parse_rfc3339(value, field)
    if value is None:
        raise DecodeError("missing_field", f"{field}: timestamp is missing", field)
    return parse_epoch_ms(value, field)


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

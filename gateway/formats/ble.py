"""The ``ble`` payload format: raw characteristic bytes on ``ble/<device_id>/<characteristic>``.

The BLE receiver publishes each notification as a raw message whose payload is the exact bytes
and whose topic names the device and the characteristic::

    ble/GM-P001/2a18                    a glucose measurement
    ble/CGM-P002/2aa7;sst=1718000000000000    a CGM measurement, session start in UTC us
    ble/BP-P003/2a35;skew=-420           a device whose clock is 420 s behind the gateway

Parameters after ``;`` carry what the receiver learnt on the connection and the bytes alone do
not say. Readings without a device time get the receive time and ``CLOCK_UNSET``; special
values become ``None`` with ``VALUE_ABSENT``; readings with a device time from a skewed clock
get ``CLOCK_SKEW``. A decode error rejects the whole payload, which lands in quarantine.
"""

from __future__ import annotations

from typing import Final

from gateway.ble.model import CLOCK_SKEW, CLOCK_UNSET, VALUE_ABSENT, BleContext
from gateway.ble.registry import decode
from gateway.errors import DecodeError
from gateway.formats.base import DecodeContext, DecodeResult
from gateway.records import RawReading, Rejection

__all__ = ["DEFAULT_TOPIC", "FORMAT", "decode_ble", "parse_topic", "topic_for"]

FORMAT: Final = "ble"
DEFAULT_TOPIC: Final = "ble/{device_id}/{characteristic}"


def topic_for(
    device_id: str,
    uuid16: int,
    *,
    session_start_us: int | None = None,
    clock_skew_s: int | None = None,
) -> str:
    """The topic of one notification."""
    level = f"{uuid16:04x}"
    if session_start_us is not None:
        level += f";sst={session_start_us}"
    if clock_skew_s is not None:
        level += f";skew={clock_skew_s}"
    return f"ble/{device_id}/{level}"


def parse_topic(topic: str) -> tuple[str, int, BleContext]:
    """``ble/<device_id>/<uuid16>[;key=value...]`` -> (device id, UUID, context).

    Raises:
        DecodeError: ``bad_topic`` naming what is wrong.
    """
    levels = topic.split("/")
    if len(levels) != 3 or levels[0] != "ble" or not levels[1]:
        raise DecodeError(
            "bad_topic", f"topic {topic!r}: expected ble/<device_id>/<characteristic>", "topic"
        )
    head, *params = levels[2].split(";")
    try:
        if len(head) != 4:
            raise ValueError(head)
        uuid16 = int(head, 16)
        values: dict[str, int] = {}
        for param in params:
            key, _, value = param.partition("=")
            if key not in ("sst", "skew") or key in values:
                raise ValueError(param)
            values[key] = int(value)
    except ValueError:
        raise DecodeError(
            "bad_topic",
            f"topic {topic!r}: characteristic level must be 4 hex digits, optionally followed "
            f"by ;sst=<us> and ;skew=<s>",
            "topic",
        ) from None
    return levels[1], uuid16, BleContext(values.get("sst"), values.get("skew"))


def decode_ble(payload: bytes, ctx: DecodeContext) -> DecodeResult:
    """Decode one BLE notification into raw readings (the Router's decoder contract)."""
    device_id, uuid16, ble_ctx = parse_topic(ctx.topic)
    decoded = decode(uuid16, payload, ble_ctx)
    skew = CLOCK_SKEW if ble_ctx.clock_skew_s is not None else 0
    readings = []
    for r in decoded.readings:
        quality = r.quality
        if r.time_us is None:
            observed = ctx.received_at_us
            quality |= CLOCK_UNSET
        else:
            observed = r.time_us
            quality |= skew
        value = r.quantity.as_float()
        if value is None:
            quality |= VALUE_ABSENT
        readings.append(RawReading(device_id, r.metric, value, r.unit, observed, r.seq, quality))
    rejections = [Rejection(x.reason_code, x.field, x.reason, device_id) for x in decoded.rejected]
    return DecodeResult(readings, rejections)

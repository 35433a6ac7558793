"""The small records the gateway makes: raw messages, raw readings and rejections.

Receivers produce :class:`RawMessage`; decoders turn one message into :class:`RawReading`
records and :class:`Rejection` records. Only the pipeline's batcher turns them into frames.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["RawMessage", "RawReading", "Rejection", "Source"]


class Source:
    """Values of the ``source`` column."""

    MQTT = "mqtt"
    BLE = "ble"
    SIM = "sim"


class RawMessage(NamedTuple):
    """One message as it arrived.

    Attributes:
        topic: MQTT topic, or ``ble/<address>/<characteristic>`` for BLE.
        payload: The bytes exactly as received.
        received_at_us: Gateway receive time, microseconds since the Unix epoch (UTC).
        source: ``mqtt``, ``ble`` or ``sim``.
        ack: Opaque delivery token handed back to the receiver once the message is committed
            (the MQTT message id), or ``None`` when nothing needs acknowledging.
    """

    topic: str
    payload: bytes
    received_at_us: int
    source: str
    ack: object = None


class RawReading(NamedTuple):
    """One decoded reading, value and unit as the device sent them.

    Attributes:
        device_id: Device identifier.
        metric: Metric identifier (may be unknown; the pipeline checks it).
        value: Numeric value in ``unit``, or ``None`` when the device sent an absent value.
        unit: Unit as sent, mapped to UCUM where the format defines it.
        observed_at_us: Device time, microseconds since the Unix epoch (UTC).
        seq: Device sequence number, or ``None``.
        quality: Quality flag bits (see ``pipeline.readings.Quality``).
    """

    device_id: str
    metric: str
    value: float | None
    unit: str
    observed_at_us: int
    seq: int | None
    quality: int = 0


class Rejection(NamedTuple):
    """A payload, or one reading of it, that could not be decoded.

    Attributes:
        reason_code: Stable short code (``malformed_json``, ``missing_field``, ``bad_value``...).
        field: The payload field at fault (JSON path), or ``""``.
        reason: Human-readable explanation naming the field.
        device_id: Device id when it could be read, else ``""``.
    """

    reason_code: str
    field: str
    reason: str
    device_id: str = ""

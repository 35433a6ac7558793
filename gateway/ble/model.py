"""What a BLE decoder returns: decoded fields for people, readings for the pipeline.

A decoder is a pure function ``(payload, BleContext) -> Decoded``. ``Decoded.fields`` holds
every field of the characteristic, flags and status bits included, ready for JSON (this is what
``vitalwire ble decode`` prints); ``Decoded.readings`` holds the values that map onto catalogue
metrics, in units the catalogue accepts, each with its device time and quality bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gateway.ble.codec import Quantity

__all__ = [
    "CALIBRATING",
    "CLOCK_SKEW",
    "CLOCK_UNSET",
    "NO_CONTEXT",
    "QUALITY_NAMES",
    "QUESTIONABLE",
    "VALUE_ABSENT",
    "BleContext",
    "BleReading",
    "Decoded",
    "Rejected",
    "bit_names",
    "quality_names",
]

# Quality bits, equal to pipeline.readings.Quality (the gateway may not import the pipeline;
# tests check they agree).
CLOCK_UNSET: Final = 1
"""Device time unknown; the gateway receive time is used."""
QUESTIONABLE: Final = 2
"""The device's status bits say the measurement may be wrong."""
CALIBRATING: Final = 4
"""Calibration required or ongoing, or an early estimate."""
VALUE_ABSENT: Final = 8
"""The device sent a special value (NaN, NRes, INF...); the value is null."""
CLOCK_SKEW: Final = 64
"""The device clock differs from the gateway clock by more than the configured limit."""

QUALITY_NAMES: Final = {
    CLOCK_UNSET: "clock_unset",
    QUESTIONABLE: "questionable",
    CALIBRATING: "calibrating",
    VALUE_ABSENT: "value_absent",
    CLOCK_SKEW: "clock_skew",
}


def quality_names(quality: int) -> list[str]:
    """Names of the quality bits set in ``quality``."""
    return [name for bit, name in QUALITY_NAMES.items() if quality & bit]


def bit_names(value: int, names: Mapping[int, str]) -> list[str]:
    """Names of the bits of ``value`` listed in ``names`` (bit number -> name), in bit order."""
    return [name for bit, name in sorted(names.items()) if value >> bit & 1]


@dataclass(frozen=True, slots=True)
class BleContext:
    """What a decoder knows besides the bytes.

    Attributes:
        session_start_us: CGM Session Start Time in UTC microseconds, read by the receiver
            after connecting; ``None`` when unknown.
        clock_skew_s: Device clock minus gateway clock in seconds when it exceeds the
            receiver's limit, else ``None``. Readings with a device time get ``CLOCK_SKEW``.
    """

    session_start_us: int | None = None
    clock_skew_s: int | None = None


NO_CONTEXT: Final = BleContext()
"""The context of a value decoded on its own (no session start, no skew)."""


@dataclass(frozen=True, slots=True)
class BleReading:
    """One value for the pipeline.

    Attributes:
        metric: Catalogue metric id.
        quantity: The value, or why it is absent.
        unit: UCUM unit the catalogue accepts for ``metric``.
        time_us: Device time (UTC microseconds), ``None`` when the device gave none.
        seq: Device sequence number (glucose record number, CGM time offset), or ``None``.
        quality: Quality bits from the device's status (absent value and clock bits are added
            when the reading is built).
    """

    metric: str
    quantity: Quantity
    unit: str
    time_us: int | None
    seq: int | None = None
    quality: int = 0

    def to_json(self) -> dict[str, object]:
        """The reading for ``vitalwire ble decode``."""
        out = self.quantity.to_json(self.unit)
        out = {"metric": self.metric, **out}
        out["device_time_us"] = self.time_us
        out["seq"] = self.seq
        q = self.quality | (VALUE_ABSENT if self.quantity.value is None else 0)
        out["quality"] = quality_names(q)
        return out


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record of a payload that could not be used (a CGM record failing its E2E-CRC)."""

    reason_code: str
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded characteristic value.

    Attributes:
        uuid16: The characteristic's 16-bit UUID.
        name: Its name in the GATT specification.
        fields: Every field, JSON-ready.
        readings: The values that become readings.
        rejected: Records dropped while decoding.
    """

    uuid16: int
    name: str
    fields: Mapping[str, object]
    readings: tuple[BleReading, ...] = ()
    rejected: tuple[Rejected, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        """Everything, for ``vitalwire ble decode``."""
        return {
            "uuid": f"0x{self.uuid16:04X}",
            "characteristic": self.name,
            "fields": dict(self.fields),
            "readings": [r.to_json() for r in self.readings],
            "rejected": [
                {"reason_code": r.reason_code, "field": r.field, "reason": r.reason}
                for r in self.rejected
            ],
        }

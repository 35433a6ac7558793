"""Bluetooth UUIDs of the health services and their characteristics, and UUID parsing."""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "BASE_UUID_SUFFIX",
    "CHARACTERISTIC_NAMES",
    "HEALTH_SERVICES",
    "SERVICE_NAMES",
    "full_uuid",
    "parse_uuid16",
]

BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
"""16-bit UUIDs expand to ``0000xxxx`` + this suffix."""

SERVICE_NAMES: Final = {
    0x180D: "Heart Rate",
    0x1808: "Glucose",
    0x181F: "Continuous Glucose Monitoring",
    0x1810: "Blood Pressure",
    0x1809: "Health Thermometer",
    0x1822: "Pulse Oximeter",
    0x181D: "Weight Scale",
    0x180F: "Battery",
    0x180A: "Device Information",
    0x1805: "Current Time",
}

HEALTH_SERVICES: Final = (0x180D, 0x1808, 0x181F, 0x1810, 0x1809, 0x1822, 0x181D)
"""The services the receiver scans for."""

CHARACTERISTIC_NAMES: Final = {
    0x2A37: "Heart Rate Measurement",
    0x2A38: "Body Sensor Location",
    0x2A18: "Glucose Measurement",
    0x2A34: "Glucose Measurement Context",
    0x2A51: "Glucose Feature",
    0x2A52: "Record Access Control Point",
    0x2AA7: "CGM Measurement",
    0x2AA8: "CGM Feature",
    0x2AAA: "CGM Session Start Time",
    0x2A35: "Blood Pressure Measurement",
    0x2A36: "Intermediate Cuff Pressure",
    0x2A1C: "Temperature Measurement",
    0x2A1E: "Intermediate Temperature",
    0x2A5E: "PLX Spot-Check Measurement",
    0x2A5F: "PLX Continuous Measurement",
    0x2A9D: "Weight Measurement",
    0x2A19: "Battery Level",
    0x2A2B: "Current Time",
}

_SHORT = re.compile(r"\A(?:0x)?([0-9a-f]{4})\Z")
_FULL = re.compile(r"\A0000([0-9a-f]{4})-0000-1000-8000-00805f9b34fb\Z")


def parse_uuid16(text: str) -> int:
    """``2a37``, ``0x2A37`` or ``00002a37-0000-1000-8000-00805f9b34fb`` -> ``0x2A37``.

    Raises:
        ValueError: Not a 16-bit SIG UUID in one of those forms.
    """
    t = text.strip().lower()
    m = _SHORT.match(t) or _FULL.match(t)
    if m is None:
        raise ValueError(
            f"UUID {text!r}: expected a 16-bit UUID (2a37, 0x2A37) or its 128-bit form "
            f"(00002a37{BASE_UUID_SUFFIX})"
        )
    return int(m.group(1), 16)


def full_uuid(uuid16: int) -> str:
    """``0x2A37`` -> ``00002a37-0000-1000-8000-00805f9b34fb`` (bleak's form)."""
    return f"0000{uuid16:04x}{BASE_UUID_SUFFIX}"

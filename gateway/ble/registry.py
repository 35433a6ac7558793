"""The registry: characteristic UUID -> decoder, and which characteristics carry readings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from gateway.ble import glucose, racp, vitals
from gateway.ble.model import NO_CONTEXT, BleContext, Decoded
from gateway.ble.uuids import CHARACTERISTIC_NAMES
from gateway.errors import DecodeError

__all__ = ["DECODERS", "MEASUREMENT_CHARACTERISTICS", "BleDecoder", "decode"]

BleDecoder = Callable[[bytes, BleContext], Decoded]

DECODERS: Final[Mapping[int, BleDecoder]] = MappingProxyType(
    {
        0x2A37: vitals.decode_heart_rate,
        0x2A18: glucose.decode_glucose_measurement,
        0x2A34: glucose.decode_glucose_context,
        0x2AA7: glucose.decode_cgm_measurement,
        0x2AA8: glucose.decode_cgm_feature,
        0x2AAA: glucose.decode_cgm_session_start_time,
        0x2A35: vitals.decode_blood_pressure,
        0x2A36: vitals.decode_intermediate_cuff_pressure,
        0x2A1C: vitals.decode_temperature,
        0x2A1E: vitals.decode_intermediate_temperature,
        0x2A5E: vitals.decode_plx_spot_check,
        0x2A5F: vitals.decode_plx_continuous,
        0x2A9D: vitals.decode_weight,
        0x2A19: vitals.decode_battery_level,
        0x2A2B: vitals.decode_current_time,
        0x2A52: racp.decode_racp,
    }
)
"""Every characteristic the gateway decodes."""

MEASUREMENT_CHARACTERISTICS: Final = (
    0x2A37, 0x2A18, 0x2A34, 0x2AA7, 0x2A35, 0x2A36, 0x2A1C, 0x2A1E, 0x2A5E, 0x2A5F, 0x2A9D,
)
"""Characteristics that carry measurements (notified or indicated)."""


def decode(uuid16: int, data: bytes, ctx: BleContext = NO_CONTEXT) -> Decoded:
    """Decode one value of characteristic ``uuid16``.

    Raises:
        DecodeError: ``unknown_characteristic``, or the decoder's error for bad bytes.
    """
    decoder = DECODERS.get(uuid16)
    if decoder is None:
        known = ", ".join(f"0x{u:04X}" for u in sorted(DECODERS))
        raise DecodeError(
            "unknown_characteristic",
            f"characteristic 0x{uuid16:04X} ({CHARACTERISTIC_NAMES.get(uuid16, 'unknown')}) "
            f"has no decoder (known: {known})",
            "characteristic",
        )
    return decoder(data, ctx)

"""BLE gateway: decoders of the Bluetooth SIG health profiles, and the bleak receiver.

Decoders (:mod:`gateway.ble.vitals`, :mod:`gateway.ble.glucose`) are pure functions from the
bytes of one characteristic value to :class:`~gateway.ble.model.Decoded`; the registry
(:mod:`gateway.ble.registry`) maps characteristic UUIDs to them. The receiver
(:mod:`gateway.ble.receiver`) turns notifications into raw messages on topics
``ble/<device_id>/<uuid16>``, which the ``ble`` payload format decodes. See ``docs/ble.md``.
"""

from gateway.ble.codec import Quantity, decode_float, decode_sfloat
from gateway.ble.model import BleContext, BleReading, Decoded
from gateway.ble.registry import DECODERS, decode
from gateway.ble.uuids import parse_uuid16

__all__ = [
    "DECODERS",
    "BleContext",
    "BleReading",
    "Decoded",
    "Quantity",
    "decode",
    "decode_float",
    "decode_sfloat",
    "parse_uuid16",
]

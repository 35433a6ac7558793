"""Payload formats: decoders, device profiles and topic routing.

Every decoder follows the contract of :mod:`gateway.formats.base`. The :class:`Router` picks one
per message from its topic; see ``docs/payload-formats.md`` for the formats and profiles.
"""

from gateway.formats.base import DecodeContext, Decoder, DecodeResult
from gateway.formats.openmhealth import decode_openmhealth
from gateway.formats.profiles import DeviceProfile, load_profile, load_profiles
from gateway.formats.router import DEFAULT_ROUTES, Route, Router, load_default_profiles
from gateway.formats.vitalwire_json import decode_vitalwire

__all__ = [
    "DEFAULT_ROUTES",
    "DecodeContext",
    "DecodeResult",
    "Decoder",
    "DeviceProfile",
    "Route",
    "Router",
    "decode_openmhealth",
    "decode_vitalwire",
    "load_default_profiles",
    "load_profile",
    "load_profiles",
]

"""Transaction Bundles: Devices and Observations, every entry a conditional create.

Each Bundle carries one Device entry per sensor it references and one for the gateway, then the
Observations. Every entry is ``POST`` with ``ifNoneExist`` on its identifier, and every
``fullUrl`` is a ``urn:uuid`` derived from that identifier, so the same readings always make the
same Bundle: sending it again (after a timeout, a crash, a 503) creates nothing twice. The
server rewrites the ``urn:uuid`` references to the Devices it created or found.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from pipeline.fhir.config import FhirConfig
from pipeline.fhir.mapping import URN_NAMESPACE, MappedObservation, device_urn

__all__ = ["EUI64_SYSTEM", "build_bundle", "device_resource", "observation_urn"]

EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
"""PHD system of IEEE EUI-64 device system ids (BLE System ID)."""
_EUI64 = re.compile(r"^[0-9A-Fa-f]{2}([-:]?[0-9A-Fa-f]{2}){7}$")


def observation_urn(system: str, identifier: str) -> str:
    """The ``urn:uuid`` fullUrl of an Observation entry (stable for one identifier)."""
    return f"urn:uuid:{uuid.uuid5(URN_NAMESPACE, f'obs|{system}|{identifier}')}"


def device_resource(config: FhirConfig, device_id: str, *, gateway: bool = False) -> dict[str, Any]:
    """A Device identified by our device id (and its EUI-64 system id when it is one)."""
    identifiers: list[dict[str, Any]] = [{"system": config.device_system, "value": device_id}]
    if _EUI64.match(device_id):
        hexits = re.sub(r"[^0-9A-Fa-f]", "", device_id).upper()
        identifiers.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaDeviceIdentifiers",
                            "code": "SYSID",
                        }
                    ]
                },
                "system": EUI64_SYSTEM,
                "value": "-".join(hexits[i : i + 2] for i in range(0, 16, 2)),
            }
        )
    resource: dict[str, Any] = {"resourceType": "Device", "identifier": identifiers}
    if gateway:
        resource["deviceName"] = [
            {"name": f"vitalwire gateway {device_id}", "type": "user-friendly-name"}
        ]
    return resource


def _device_entry(config: FhirConfig, device_id: str, gateway: bool) -> dict[str, Any]:
    return {
        "fullUrl": device_urn(config.device_system, device_id),
        "resource": device_resource(config, device_id, gateway=gateway),
        "request": {
            "method": "POST",
            "url": "Device",
            "ifNoneExist": f"identifier={config.device_system}|{device_id}",
        },
    }


def build_bundle(observations: Sequence[MappedObservation], config: FhirConfig) -> dict[str, Any]:
    """A ``transaction`` Bundle of the Devices and Observations, all conditional creates."""
    entries = [_device_entry(config, config.gateway_id, True)]
    seen = {config.gateway_id}
    for obs in observations:
        if obs.device_id not in seen:
            seen.add(obs.device_id)
            entries.append(_device_entry(config, obs.device_id, False))
    for obs in observations:
        entries.append(
            {
                "fullUrl": observation_urn(config.identifier_system, obs.identifier),
                "resource": obs.resource,
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": f"identifier={config.identifier_system}|{obs.identifier}",
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

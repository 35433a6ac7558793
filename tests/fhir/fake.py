"""A fake FHIR server for httpx.MockTransport: enough of the protocol for the exporter."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

CAPABILITIES: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [{
        "mode": "server",
        "interaction": [{"code": "transaction"}, {"code": "batch"}],
        "resource": [
            {"type": t, "interaction": [{"code": "create"}, {"code": "read"}],
             "conditionalCreate": True, "searchParam": [{"name": "identifier", "type": "token"}]}
            for t in ("Observation", "Device")
        ],
    }],
}  # fmt: skip


def outcome(code: str, text: str, expression: str = "") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@dataclass
class FakeFhir:
    """Stores Observations by identifier; ``faults`` answer the next POSTs instead."""

    capabilities: dict[str, Any] = field(default_factory=lambda: CAPABILITIES)
    faults: list[httpx.Response] = field(default_factory=list)
    reject_values: set[float] = field(default_factory=set)
    observations: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: int = 0
    requests: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json=self.capabilities)
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
        self.posts += 1
        if self.faults:
            return self.faults.pop(0)
        bundle = json.loads(request.content)
        for i, e in enumerate(bundle["entry"]):
            value = e["resource"].get("valueQuantity", {}).get("value")
            if value in self.reject_values:
                return httpx.Response(
                    400,
                    json=outcome(
                        "value", f"Entry {i}: value {value} refused", "Observation.valueQuantity"
                    ),
                )
        out = []
        for e in bundle["entry"]:
            res = e["resource"]
            key = e["request"]["ifNoneExist"]
            if res["resourceType"] == "Observation":
                status = "200 OK" if key in self.observations else "201 Created"
                self.observations.setdefault(key, res)
            else:
                status = "201 Created"
            out.append({"response": {"status": status, "location": f"{res['resourceType']}/x"}})
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": out}
        )

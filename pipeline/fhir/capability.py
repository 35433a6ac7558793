"""What the exporter needs from the server's CapabilityStatement, and what is missing."""

from __future__ import annotations

from typing import Any

__all__ = ["NEEDED_TYPES", "missing_capabilities"]

NEEDED_TYPES = ("Observation", "Device")
"""Resource types the exporter creates."""


def missing_capabilities(statement: dict[str, Any]) -> list[str]:
    """Everything the exporter relies on that ``statement`` does not announce.

    Needs: FHIR 4.0.x, a server ``rest`` entry with the ``transaction`` interaction, and for
    Observation and Device the ``create`` interaction, ``conditionalCreate`` and (when search
    parameters are listed) the ``identifier`` search parameter used by ``ifNoneExist``.
    """
    problems: list[str] = []
    version = str(statement.get("fhirVersion", ""))
    if not version.startswith("4.0"):
        problems.append(f"fhirVersion 4.0.x (R4) (the server says {version or 'nothing'})")
    rest = [r for r in statement.get("rest", []) if r.get("mode") == "server"]
    if not rest:
        return [*problems, "a rest entry with mode 'server'"]
    server = rest[0]
    interactions = {i.get("code") for i in server.get("interaction", [])}
    if "transaction" not in interactions:
        problems.append("the 'transaction' interaction (rest.interaction)")
    resources = {r.get("type"): r for r in server.get("resource", [])}
    for rtype in NEEDED_TYPES:
        res = resources.get(rtype)
        if res is None:
            problems.append(f"resource {rtype}")
            continue
        codes = {i.get("code") for i in res.get("interaction", [])}
        if "create" not in codes:
            problems.append(f"{rtype}: the 'create' interaction")
        if res.get("conditionalCreate") is not True:
            problems.append(f"{rtype}: conditionalCreate (needed for ifNoneExist)")
        params = res.get("searchParam")
        if params and "identifier" not in {p.get("name") for p in params}:
            problems.append(f"{rtype}: the 'identifier' search parameter (used by ifNoneExist)")
    return problems

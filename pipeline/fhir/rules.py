"""Our own rule layer: profile rules ``fhir.resources`` does not enforce.

``fhir.resources.R4B`` checks structure only; it accepts ``status "done"``, a missing category,
unit ``bpm``, obs-3/obs-6 violations, low > high, zone-less datetimes coerced from integers and
more (``docs/fhir.md``). Every resource the exporter sends passes :func:`check_bundle` first; a
resource that fails is dead-lettered with the problems, never sent.

Each check returns a list of problems (empty = conforming), each naming the element at fault.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from pipeline.catalogue import Catalogue, MetricSpec, catalogue
from pipeline.fhir import codes

__all__ = ["ALLOWED_STATUS", "check_bundle", "check_observation"]

ALLOWED_STATUS = frozenset({"final", "preliminary", "amended", "corrected", "entered-in-error"})
_R5_ONLY = ("triggeredBy", "bodyStructure", "instantiatesCanonical", "instantiatesReference")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_PATIENT = re.compile(r"^(Patient/[A-Za-z0-9\-.]{1,64}|urn:uuid:[0-9a-f\-]{36})$")
_URN = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
_SYS, _DIA = "8480-6", "8462-4"


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


def _by_loinc(cat: Catalogue) -> dict[str, MetricSpec]:
    return {code: m for m in cat.metrics for code in (*m.loinc, *m.loinc_molar)}


def _check_code(path: str, concept: Any, cat: Catalogue, out: list[str]) -> MetricSpec | None:
    coding = _codings(concept)
    if not coding:
        out.append(f"{path}: no coding")
        return None
    systems = [c.get("system") for c in coding]
    if codes.LOINC in systems and systems[0] != codes.LOINC:
        out.append(f"{path}.coding: LOINC must come first")
    for i, c in enumerate(coding):
        if not c.get("system") or not c.get("code"):
            out.append(f"{path}.coding[{i}]: system and code are required")
        if c.get("system") == codes.MDC and not str(c.get("code", "")).isdigit():
            out.append(f"{path}.coding[{i}]: MDC code {c.get('code')!r} is not decimal")
    loinc = [c["code"] for c in coding if c.get("system") == codes.LOINC and c.get("code")]
    mdc = [c["code"] for c in coding if c.get("system") == codes.MDC and c.get("code")]
    if loinc and loinc[0] == codes.BP_PANEL_LOINC:
        if any(m != str(codes.BP_PANEL_MDC) for m in mdc):
            out.append(f"{path}: MDC {mdc} does not match LOINC {codes.BP_PANEL_LOINC}")
        return None
    spec = _by_loinc(cat).get(loinc[0]) if loinc else None
    if spec is not None and spec.mdc_code and any(m != str(spec.mdc_code) for m in mdc):
        out.append(f"{path}: MDC {mdc} does not match LOINC {loinc[0]} (expected {spec.mdc_code})")
    return spec


def _quantity(path: str, q: Any, unit: str | None, out: list[str]) -> float | None:
    if not isinstance(q, dict):
        out.append(f"{path}: expected a Quantity")
        return None
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        out.append(f"{path}.value: {value!r} is not a finite number")
        value = None
    if q.get("system") != codes.UCUM:
        out.append(f"{path}.system: expected {codes.UCUM}, got {q.get('system')!r}")
    if q.get("code") != q.get("unit"):
        out.append(f"{path}: unit {q.get('unit')!r} differs from code {q.get('code')!r}")
    if unit is not None and q.get("code") != unit:
        out.append(f"{path}.code: expected canonical unit {unit!r}, got {q.get('code')!r}")
    return None if value is None else float(value)


def _check_value(
    path: str, el: dict[str, Any], spec: MetricSpec | None, unit: str | None, out: list[str]
) -> float | None:
    has_value = [k for k in el if k.startswith("value")]
    absent = "dataAbsentReason" in el
    if len(has_value) + int(absent) != 1:
        out.append(
            f"{path}: exactly one of value[x] and dataAbsentReason is required"
            f" (got {', '.join(has_value + (['dataAbsentReason'] if absent else [])) or 'none'})"
        )
    if "valueQuantity" not in el:
        if has_value:
            out.append(f"{path}: expected valueQuantity, got {has_value[0]}")
        return None
    v = _quantity(f"{path}.valueQuantity", el["valueQuantity"], unit, out)
    if v is not None and spec is not None and not spec.plausible_low <= v <= spec.plausible_high:
        out.append(
            f"{path}.valueQuantity.value: {v} outside the plausible range"
            f" {spec.plausible_low}-{spec.plausible_high} {spec.canonical_unit}"
        )
    return v


def _check_limits(path: str, el: dict[str, Any], value: float | None, out: list[str]) -> None:
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for i, rr in enumerate(el.get("referenceRange", [])):
        p = f"{path}.referenceRange[{i}]"
        if not any(k in rr for k in ("low", "high", "text")):
            out.append(f"{p}: obs-3 needs low, high or text")
        low = rr["low"].get("value") if isinstance(rr.get("low"), dict) else None
        high = rr["high"].get("value") if isinstance(rr.get("high"), dict) else None
        if low is not None and high is not None and low > high:
            out.append(f"{p}: low {low} > high {high}")
        for end in ("low", "high"):
            if end in rr:
                _quantity(f"{p}.{end}", rr[end], None, out)
        meaning = [str(c.get("code")) for c in _codings(rr.get("type"))]
        ranges[meaning[0] if meaning else "normal"] = (low, high)
    v3 = [
        c.get("code")
        for i in el.get("interpretation", [])
        for c in _codings(i)
        if c.get("system") == codes.INTERPRETATION
    ]
    for code in v3:
        if code not in codes.INTERPRETATION_CODES:
            allowed = sorted(codes.INTERPRETATION_CODES)
            out.append(f"{path}.interpretation: {code!r} is not one of {allowed}")
    if len(v3) > 1:
        out.append(f"{path}.interpretation: more than one v3 code {v3}")
    if not v3 or value is None or "component" in el:
        return
    lo, hi = ranges.get("normal", (None, None))
    clo, chi = ranges.get("treatment", (None, None))
    expected = "N"
    if clo is not None and value < clo:
        expected = "LL"
    elif chi is not None and value > chi:
        expected = "HH"
    elif lo is not None and value < lo:
        expected = "L"
    elif hi is not None and value > hi:
        expected = "H"
    if not ranges:
        out.append(f"{path}.interpretation: {v3[0]} without a referenceRange")
    elif v3[0] != expected:
        out.append(
            f"{path}.interpretation: {v3[0]} is inconsistent with value {value} and"
            f" referenceRange (expected {expected})"
        )


def _check_components(obs: dict[str, Any], cat: Catalogue, out: list[str]) -> None:
    own = {(c.get("system"), c.get("code")) for c in _codings(obs.get("code"))}
    values: dict[str, float | None] = {}
    seen: list[str] = []
    for i, comp in enumerate(obs["component"]):
        p = f"Observation.component[{i}]"
        spec = _check_code(f"{p}.code", comp.get("code"), cat, out)
        if own & {(c.get("system"), c.get("code")) for c in _codings(comp.get("code"))}:
            out.append(f"{p}: obs-7 a component's code equals Observation.code")
        unit = spec.canonical_unit if spec else None
        v = _check_value(p, comp, spec, unit, out)
        _check_limits(p, comp, v, out)
        loinc = next(
            (
                str(c.get("code"))
                for c in _codings(comp.get("code"))
                if c.get("system") == codes.LOINC
            ),
            "",
        )
        seen.append(loinc)
        values[loinc] = v
    if _first_loinc(obs) == codes.BP_PANEL_LOINC:
        for need in (_SYS, _DIA):
            if seen.count(need) != 1:
                out.append(f"Observation.component: a BP panel needs exactly one {need}")
        s, d = values.get(_SYS), values.get(_DIA)
        if s is not None and d is not None and not s > d:
            out.append(f"Observation.component: systolic {s} must exceed diastolic {d}")


def _first_loinc(obs: dict[str, Any]) -> str | None:
    return next(
        (c.get("code") for c in _codings(obs.get("code")) if c.get("system") == codes.LOINC), None
    )


def check_observation(
    obs: dict[str, Any],
    *,
    now: datetime | None = None,
    max_future_s: float = 300.0,
    identifier_system: str | None = None,
    cat: Catalogue | None = None,
) -> list[str]:
    """Problems of one Observation against our export rules (``docs/fhir.md`` §8)."""
    cat = cat or catalogue()
    out: list[str] = []
    if obs.get("resourceType") != "Observation":
        return [f"resourceType: expected Observation, got {obs.get('resourceType')!r}"]
    out.extend(f"Observation.{k}: R5-only element" for k in _R5_ONLY if k in obs)
    if obs.get("status") not in ALLOWED_STATUS:
        out.append(f"Observation.status: {obs.get('status')!r} not in {sorted(ALLOWED_STATUS)}")
    categories = {
        c.get("code")
        for cat_ in obs.get("category", [])
        for c in _codings(cat_)
        if c.get("system") == codes.CATEGORY
    }
    if not categories:
        out.append("Observation.category: an observation-category coding is required")
    spec = _check_code("Observation.code", obs.get("code"), cat, out)
    loinc = _first_loinc(obs)
    profiles = (obs.get("meta") or {}).get("profile", [])
    vital = (spec is not None and spec.fhir_profile) or loinc == codes.BP_PANEL_LOINC
    if vital:
        profile = "bp" if loinc == codes.BP_PANEL_LOINC else spec.fhir_profile if spec else ""
        if "vital-signs" not in categories:
            out.append("Observation.category: a vital sign needs vital-signs")
        for need in (codes.VITALSIGNS_PROFILE, codes.profile_url(profile)):
            if need not in profiles:
                out.append(f"Observation.meta.profile: missing {need}")
        if spec is not None and loinc != spec.loinc[0]:
            out.append(f"Observation.code: vital sign must use LOINC {spec.loinc[0]}")
    elif codes.VITALSIGNS_PROFILE in profiles or "vital-signs" in categories:
        out.append(
            "Observation: a non-vital-sign must not claim the vital-signs profile or category"
        )
    subject = (obs.get("subject") or {}).get("reference", "")
    if not _PATIENT.match(subject):
        out.append(f"Observation.subject: {subject!r} is not Patient/<id> or a urn:uuid")
    eff = obs.get("effectiveDateTime")
    if not isinstance(eff, str) or not _DATETIME.match(eff):
        out.append(f"Observation.effectiveDateTime: {eff!r} needs seconds and a time zone")
    elif now is not None:
        ahead = (datetime.fromisoformat(eff.replace("Z", "+00:00")) - now).total_seconds()
        if ahead > max_future_s:
            out.append(f"Observation.effectiveDateTime: {eff} is {ahead:.0f} s in the future")
    if "component" in obs:
        if any(k.startswith("value") for k in obs) or "dataAbsentReason" in obs:
            out.append("Observation: a panel with components carries no value")
        _check_components(obs, cat, out)
        _check_limits("Observation", obs, None, out)
    else:
        unit = spec.canonical_unit if spec else None
        value = _check_value("Observation", obs, spec, unit, out)
        _check_limits("Observation", obs, value, out)
    idents = [i for i in obs.get("identifier", []) if i.get("value")]
    if identifier_system is not None and not any(
        i.get("system") == identifier_system for i in idents
    ):
        out.append(f"Observation.identifier: none under {identifier_system}")
    elif not idents:
        out.append("Observation.identifier: required")
    if not (obs.get("device") or {}).get("reference"):
        out.append("Observation.device: a reference to the Device is required")
    gateways = [e for e in obs.get("extension", []) if e.get("url") == codes.GATEWAY_EXT]
    if gateways and not (gateways[0].get("valueReference") or {}).get("reference"):
        out.append("Observation.extension(gatewayDevice): valueReference is required")
    return out


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        for v in node.values():
            found.extend(_references(v))
        return found
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    return []


def check_bundle(
    bundle: dict[str, Any],
    *,
    now: datetime | None = None,
    max_future_s: float = 300.0,
    identifier_system: str | None = None,
) -> list[str]:
    """Problems of a Bundle and every Observation in it."""
    out: list[str] = []
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
        out.append(f"Bundle.type: expected transaction or batch, got {bundle.get('type')!r}")
    entries = bundle.get("entry", [])
    urls = [e.get("fullUrl") for e in entries]
    for i, e in enumerate(entries):
        p = f"Bundle.entry[{i}]"
        req = e.get("request") or {}
        if req.get("method") not in _METHODS or not req.get("url"):
            out.append(f"{p}.request: method and url required (got {req.get('method')!r})")
        if not isinstance(urls[i], str) or not _URN.match(urls[i]):
            out.append(f"{p}.fullUrl: {urls[i]!r} is not a urn:uuid")
        res = e.get("resource") or {}
        idents = res.get("identifier", [])
        if req.get("method") == "POST":
            wanted = {f"identifier={i.get('system')}|{i.get('value')}" for i in idents}
            if req.get("ifNoneExist") not in wanted:
                out.append(
                    f"{p}.request.ifNoneExist: {req.get('ifNoneExist')!r} is not the"
                    " resource's identifier"
                )
        if res.get("resourceType") == "Device" and not idents:
            out.append(f"{p}: a Device needs an identifier")
        if res.get("resourceType") == "Observation":
            out.extend(
                f"{p}: {problem}"
                for problem in check_observation(
                    res, now=now, max_future_s=max_future_s, identifier_system=identifier_system
                )
            )
    if len(set(urls)) != len(urls):
        out.append("Bundle.entry.fullUrl: not unique")
    known = set(urls)
    for ref in _references(bundle):
        if ref.startswith("urn:uuid:") and ref not in known:
            out.append(f"Bundle: reference {ref} resolves to no entry")
    return out

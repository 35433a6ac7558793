"""Code systems, profile URLs and value sets of the FHIR export (facts: docs/fhir.md).

Per-metric codes (LOINC, MDC, UCUM, category, profile) are not here: they come from the metric
catalogue (``pipeline/metrics.toml``). This module holds only what is about FHIR itself.
"""

from __future__ import annotations

__all__ = [
    "BP_METRICS",
    "BP_PANEL_LOINC",
    "BP_PANEL_MDC",
    "CATEGORY",
    "DATA_ABSENT",
    "GATEWAY_EXT",
    "HTEST",
    "INTERPRETATION",
    "INTERPRETATION_CODES",
    "LOINC",
    "MDC",
    "MEASUREMENT_STATUS",
    "PHD_CATEGORY",
    "PHD_OBSERVATION_PROFILE",
    "REFERENCE_RANGE_MEANING",
    "UCUM",
    "VITALSIGNS_PROFILE",
    "profile_url",
]

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PHD_CATEGORY = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MEASUREMENT_STATUS = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
REFERENCE_RANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"
GATEWAY_EXT = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
VITALSIGNS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
PHD_OBSERVATION_PROFILE = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
HTEST = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "code": "HTEST",
    "display": "test health data",
}

BP_PANEL_LOINC = "85354-9"
"""The R4 ``bp`` profile's panel code; systolic and diastolic are its components."""
BP_PANEL_MDC = 150020
"""``MDC_PRESS_BLD_NONINV``, the panel's MDC code."""
BP_METRICS = ("systolic_bp", "diastolic_bp", "mean_bp")
"""Catalogue metrics that become components of one BP panel (in component order)."""

INTERPRETATION_CODES = frozenset({"N", "A", "AA", "H", "HH", "L", "LL"})
"""The interpretation codes we emit."""


def profile_url(name: str) -> str:
    """Canonical URL of an R4 vital-signs profile by name (``heartrate`` -> its URL)."""
    return f"http://hl7.org/fhir/StructureDefinition/{name}"

"""The rule layer catches what fhir.resources R4B accepts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from pipeline.fhir import codes
from pipeline.fhir.bundle import build_bundle
from pipeline.fhir.config import FhirConfig
from pipeline.fhir.mapping import to_fhir_observations
from pipeline.fhir.rules import check_bundle, check_observation
from tests.fhir.support import NOW, frame

CFG = FhirConfig()
HR = to_fhir_observations(frame(("heart_rate", "HR-1", 72.0, "/min")), CFG).observations[0]
BP = to_fhir_observations(
    frame(("systolic_bp", "BP-1", 121.0, "mm[Hg]"), ("diastolic_bp", "BP-1", 79.0, "mm[Hg]")), CFG
).observations[0]

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(obs: dict[str, Any]) -> None:
        node: Any = obs
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return edit


RANGE = {
    "low": {"value": 80.0, "unit": "/min", "system": codes.UCUM, "code": "/min"},
    "high": {"value": 60.0, "unit": "/min", "system": codes.UCUM, "code": "/min"},
}
CASES: list[tuple[str, Edit, str]] = [
    ("status done", _set("status", "done"), "Observation.status: 'done'"),
    ("no category", _set("category", KeyError), "Observation.category: an observation-category"),
    ("unit bpm", _set("valueQuantity.code", "bpm"), "expected canonical unit '/min'"),
    ("obs-3", _set("referenceRange", [{"type": {"text": "x"}}]), "obs-3 needs low, high or text"),
    ("low > high", _set("referenceRange", [RANGE]), "low 80.0 > high 60.0"),
    ("obs-6", _set("dataAbsentReason", {"text": "x"}), "exactly one of value[x] and"),
    ("no zone", _set("effectiveDateTime", "2026-03-01T08:30:15"), "needs seconds and a time"),
    ("future", _set("effectiveDateTime", "2026-03-02T08:30:15Z"), "s in the future"),
    ("bare Patient/", _set("subject.reference", "Patient/"), "is not Patient/<id>"),
    ("code HHH", _set("interpretation", [{"coding": [{"system": codes.INTERPRETATION,
                                                      "code": "HHH"}]}]), "'HHH' is not one of"),
    ("H without range", _set("interpretation", [{"coding": [{"system": codes.INTERPRETATION,
                                                             "code": "H"}]}]), "H without a"),
    ("wrong LOINC order", _set("code.coding", [{"system": codes.MDC, "code": "147842"},
                                               {"system": codes.LOINC, "code": "8867-4"}]),
     "LOINC must come first"),
    ("MDC mismatch", _set("code.coding.1.code", "150456"), "MDC ['150456'] does not match"),
    ("no profile", _set("meta", KeyError), "meta.profile: missing"),
    ("implausible", _set("valueQuantity.value", 900.0), "outside the plausible range"),
    ("no identifier", _set("identifier", KeyError), "Observation.identifier"),
    ("no device", _set("device", KeyError), "Observation.device"),
    ("R5 element", _set("triggeredBy", []), "R5-only element"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "edit", "problem"), CASES, ids=[c[0] for c in CASES])
def test_rule_catches_what_r4b_may_accept(name: str, edit: Edit, problem: str) -> None:
    obs = copy.deepcopy(HR.resource)
    assert check_observation(obs, now=NOW) == []
    edit(obs)
    problems = check_observation(obs, now=NOW, identifier_system=CFG.identifier_system)
    assert any(problem in p for p in problems), problems


def test_r4b_accepts_some_of_what_the_rules_reject() -> None:
    for edit in (_set("status", "final"), _set("category", KeyError)):
        obs = copy.deepcopy(HR.resource)
        edit(obs)
        Observation.model_validate(obs)
    obs = copy.deepcopy(HR.resource)
    _set("valueQuantity.code", "bpm")(obs)
    Observation.model_validate(obs)
    assert check_observation(obs, now=NOW)


def test_bp_rules() -> None:
    obs = copy.deepcopy(BP.resource)
    assert check_observation(obs, now=NOW) == []
    obs["component"][0]["valueQuantity"]["value"] = 70.0
    assert "Observation.component: systolic 70.0 must exceed diastolic 79.0" in check_observation(
        obs, now=NOW
    )
    obs = copy.deepcopy(BP.resource)
    obs["valueQuantity"] = obs["component"][0]["valueQuantity"]
    assert "Observation: a panel with components carries no value" in check_observation(
        obs, now=NOW
    )
    obs = copy.deepcopy(BP.resource)
    del obs["component"][1]
    assert "Observation.component: a BP panel needs exactly one 8462-4" in check_observation(
        obs, now=NOW
    )


def test_glucose_must_not_claim_vital_signs() -> None:
    obs = to_fhir_observations(frame(("glucose", "GM-1", 99.0, "mg/dL")), CFG).observations[0]
    res = copy.deepcopy(obs.resource)
    res["meta"] = {"profile": [codes.VITALSIGNS_PROFILE]}
    assert check_observation(res, now=NOW) == [
        "Observation: a non-vital-sign must not claim the vital-signs profile or category"
    ]


def test_bundle_rules() -> None:
    bundle = build_bundle([HR, BP], CFG)
    assert check_bundle(bundle, now=NOW) == []
    bad = copy.deepcopy(bundle)
    bad["type"] = "transactional"
    bad["entry"][0]["request"]["method"] = "UPSERT"
    bad["entry"][-1]["request"]["ifNoneExist"] = "identifier=x|y"
    bad["entry"][-2]["fullUrl"] = bad["entry"][-1]["fullUrl"]
    del bad["entry"][1]
    problems = check_bundle(bad, now=NOW)
    assert "Bundle.type: expected transaction or batch, got 'transactional'" in problems
    assert "Bundle.entry[0].request: method and url required (got 'UPSERT')" in problems
    assert any(
        "ifNoneExist: 'identifier=x|y' is not the resource's identifier" in p for p in problems
    )
    assert "Bundle.entry.fullUrl: not unique" in problems
    assert any(
        p.startswith("Bundle: reference urn:uuid:") and p.endswith("resolves to no entry")
        for p in problems
    )

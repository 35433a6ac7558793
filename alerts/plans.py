"""Care plans: per-patient, versioned rule sets, and the templates they are made from.

A plan document (a TOML file for ``vitalwire careplan set``, or a template) has an optional
``[plan]`` table and ``[[rule]]`` tables (see :mod:`alerts.rules`)::

    [plan]
    spo2_scale = 2                  # NEWS2 SpO2 scale (2: prescribed 88-92 % target)
    timezone = "Europe/London"      # for the day/night schedule (IANA name; default UTC)
    night = ["22:00", "07:00"]      # local night window; a rule's [rule.night] limits apply

    [[rule]]
    id = "spo2_low"
    kind = "threshold"
    metric = "spo2"
    low = 90
    critical_low = 85
    priority = "high"

A template adds a ``[template]`` table (``description``). Every stored version keeps who made it,
when and why; a new version never overwrites an old one (:mod:`alerts.plan_store`).
"""

from __future__ import annotations

import json
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alerts.errors import CarePlanError, PlanNotFound
from alerts.rules import Rule
from alerts.validate import parse_rule
from pipeline.catalogue import Catalogue, catalogue

__all__ = [
    "DEFAULT_NIGHT",
    "TEMPLATE_DIR",
    "CarePlan",
    "PlanSettings",
    "Template",
    "check_patient_id",
    "iso_utc",
    "list_templates",
    "load_template",
    "merge_templates",
    "parse_plan_document",
    "parse_plan_text",
    "to_toml",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "care_plans" / "templates"
"""The shipped templates: ``alerts/care_plans/templates/<name>.toml``."""

DEFAULT_NIGHT = ("22:00", "07:00")
_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_PATIENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_PLAN_KEYS = {"spo2_scale", "timezone", "night"}


def iso_utc(t_us: int) -> str:
    """UTC microseconds as RFC 3339 (``2025-03-03T08:00:00Z``)."""
    dt = datetime.fromtimestamp(t_us // 1_000_000, UTC).replace(microsecond=t_us % 1_000_000)
    return dt.isoformat().replace("+00:00", "Z")


def check_patient_id(patient_id: object) -> str:
    """The id when it is a plausible patient identifier, else :class:`CarePlanError`."""
    if not isinstance(patient_id, str) or not _PATIENT_RE.fullmatch(patient_id):
        raise CarePlanError(f"patient: expected an id such as 'P003' (letters, digits, _ . : -), "
                            f"got {patient_id!r}")
    return patient_id


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """Plan-wide settings.

    Attributes:
        spo2_scale: NEWS2 SpO2 scale, 1 or 2.
        timezone: IANA time zone of the night window.
        night_start_min: Start of the night, minutes after local midnight.
        night_end_min: End of the night (exclusive), minutes after local midnight.
    """

    spo2_scale: int = 1
    timezone: str = "UTC"
    night_start_min: int = 22 * 60
    night_end_min: int = 7 * 60

    def to_doc(self) -> dict[str, Any]:
        """The ``[plan]`` table."""
        def hhmm(m: int) -> str:
            return f"{m // 60:02d}:{m % 60:02d}"

        return {"spo2_scale": self.spo2_scale, "timezone": self.timezone,
                "night": [hhmm(self.night_start_min), hhmm(self.night_end_min)]}


@dataclass(frozen=True, slots=True)
class CarePlan:
    """One version of one patient's plan.

    Attributes:
        patient_id: Patient.
        version: 1, 2, ... per patient.
        created_at_us: When this version was made (UTC microseconds).
        author: Who made it.
        reason: Why.
        template: Template it was made from, or ``""``.
        settings: Plan-wide settings.
        rules: The rules, in document order.
    """

    patient_id: str
    version: int
    created_at_us: int
    author: str
    reason: str
    template: str
    settings: PlanSettings
    rules: tuple[Rule, ...]

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise PlanNotFound(f"care plan v{self.version} of {self.patient_id} has no rule "
                           f"{rule_id!r} (rules: {', '.join(r.id for r in self.rules)})")

    def document(self) -> dict[str, Any]:
        """The plan as a document: ``{"plan": {...}, "rule": [...]}`` (rules as written)."""
        return {"plan": self.settings.to_doc(), "rule": [dict(r.doc) for r in self.rules]}

    def to_json(self) -> dict[str, Any]:
        """Version metadata and the document, JSON-friendly."""
        return {
            "patient_id": self.patient_id, "version": self.version,
            "created_at": iso_utc(self.created_at_us), "author": self.author,
            "reason": self.reason, "template": self.template, **self.document(),
        }  # fmt: skip


def _settings(doc: object, source: str) -> PlanSettings:
    if doc is None:
        return PlanSettings()
    where = f"{source}: [plan]"
    if not isinstance(doc, Mapping):
        raise CarePlanError(f"{where}: expected a table")
    unknown = sorted(set(doc) - _PLAN_KEYS)
    if unknown:
        raise CarePlanError(f"{where}: {unknown[0]}: unknown key (allowed: "
                            f"{', '.join(sorted(_PLAN_KEYS))})")
    scale = doc.get("spo2_scale", 1)
    if scale not in (1, 2) or isinstance(scale, bool):
        raise CarePlanError(f"{where}: spo2_scale: expected 1 or 2, got {scale!r}")
    tz = doc.get("timezone", "UTC")
    try:
        if not isinstance(tz, str):
            raise ValueError
        zoneinfo.ZoneInfo(tz)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise CarePlanError(f"{where}: timezone: unknown IANA time zone {tz!r}") from None
    night = doc.get("night", list(DEFAULT_NIGHT))
    minutes = []
    if isinstance(night, list) and len(night) == 2:
        for t in night:
            m = _TIME_RE.fullmatch(t) if isinstance(t, str) else None
            if m:
                minutes.append(int(m.group(1)) * 60 + int(m.group(2)))
    if len(minutes) != 2 or minutes[0] == minutes[1]:
        raise CarePlanError(f'{where}: night: expected ["HH:MM", "HH:MM"] (start, end), '
                            f"got {night!r}")
    return PlanSettings(int(scale), tz, minutes[0], minutes[1])


def parse_plan_document(
    doc: Mapping[str, Any], source: str = "care plan", cat: Catalogue | None = None,
    *, allow_template: bool = True,
) -> tuple[PlanSettings, tuple[Rule, ...]]:
    """Validate a plan document (parsed TOML or stored JSON).

    Raises:
        CarePlanError: Naming the table, rule and field at fault.
    """
    cat = cat or catalogue()
    allowed = {"plan", "rule"} | ({"template"} if allow_template else set())
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise CarePlanError(f"{source}: {unknown[0]}: unknown table (expected [plan] and "
                            "[[rule]])")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise CarePlanError(f"{source}: rule: expected [[rule]] tables")
    rules = tuple(parse_rule(t, i, cat, source) for i, t in enumerate(raw_rules))
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise CarePlanError(f"{source}: rule {r.id!r}: id: used by two rules")
        seen.add(r.id)
    if sum(r.kind == "news2" for r in rules) > 1:
        raise CarePlanError(f"{source}: rule: at most one news2 rule per plan")
    return _settings(doc.get("plan"), source), rules


def parse_plan_text(text: str, source: str = "care plan",
                    cat: Catalogue | None = None) -> tuple[PlanSettings, tuple[Rule, ...]]:
    """Validate a plan given as TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CarePlanError(f"{source}: not valid TOML: {exc}") from exc
    return parse_plan_document(doc, source, cat)


@dataclass(frozen=True, slots=True)
class Template:
    """A named starting point for plans (per unit or condition)."""

    name: str
    description: str
    settings: PlanSettings
    rules: tuple[Rule, ...]
    document: Mapping[str, Any]


def list_templates(folder: Path = TEMPLATE_DIR) -> list[str]:
    """Names of the templates in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.toml"))


def load_template(name: str, folder: Path = TEMPLATE_DIR,
                  cat: Catalogue | None = None) -> Template:
    """Load and validate one template.

    Raises:
        PlanNotFound: No such template.
        CarePlanError: The template is invalid.
    """
    path = folder / f"{name}.toml"
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or not path.is_file():
        raise PlanNotFound(f"template: no template {name!r} (available: "
                           f"{', '.join(list_templates(folder)) or 'none'})")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CarePlanError(f"{path}: cannot read template: {exc}") from exc
    settings, rules = parse_plan_document(doc, str(path), cat)
    head = doc.get("template", {})
    description = head.get("description", "") if isinstance(head, Mapping) else ""
    body = {"plan": settings.to_doc(), "rule": [dict(r.doc) for r in rules]}
    return Template(name, str(description), settings, rules, body)


def merge_templates(names: Sequence[str], folder: Path = TEMPLATE_DIR) -> Template:
    """Several templates as one (an adult-ward patient with type 1 diabetes).

    Plan settings come from the first template, except that SpO2 scale 2 wins. A rule whose id
    an earlier template already has is left out (``payload_errors`` appears once).
    """
    if not names:
        raise PlanNotFound("template: name at least one template")
    templates = [load_template(n, folder) for n in names]
    if len(templates) == 1:
        return templates[0]
    settings = templates[0].settings
    if any(t.settings.spo2_scale == 2 for t in templates):
        settings = PlanSettings(2, settings.timezone, settings.night_start_min,
                                settings.night_end_min)
    rules: list[Rule] = []
    for t in templates:
        rules += [r for r in t.rules if all(r.id != x.id for x in rules)]
    if sum(r.kind == "news2" for r in rules) > 1:
        raise CarePlanError(f"template: {' + '.join(names)} would have two news2 rules")
    body = {"plan": settings.to_doc(), "rule": [dict(r.doc) for r in rules]}
    return Template("+".join(names), "; ".join(t.description for t in templates), settings,
                    tuple(rules), body)


# -- TOML output ---------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(doc: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """A plan document as TOML (readable back with :func:`parse_plan_text`)."""
    lines = [f"# {h}" for h in header]
    if lines:
        lines.append("")
    plan = doc.get("plan")
    if plan:
        lines.append("[plan]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in plan.items()]
    for rule in doc.get("rule", []):
        lines += ["", "[[rule]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"

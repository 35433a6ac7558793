"""Scripted clinical events: the scenario file and the ground-truth event log.

A scenario is a TOML file: an optional ``[scenario]`` table (``name``, ``description``,
``duration``), optional ``[patient.P003]`` overrides (``diabetic``, ``kinds``) and ``[[event]]``
tables. A physiological event (``kind`` in :data:`EVENT_KINDS`, e.g. ``hypoglycaemia``) names a
``patient`` and ramps one variable to ``target`` from ``at`` over ``ramp``, holds it for
``plateau`` and recovers over ``recovery``. A device event (``dropout``, ``garbage``) names the
patient's ``device`` kind, ``at`` and ``duration``. Durations are seconds or strings such as
``"90s"``, ``"10m"``, ``"1h30m"``. The format is described in ``docs/simulators.md``; the shipped
files are ``simulators/scenarios/*.toml``. Every error names the file, table and key.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.errors import ConfigError
from pipeline.catalogue import catalogue
from simulators.native import KINDS
from simulators.physiology import DERIVED_METRICS, METRICS_OF

__all__ = [
    "DEVICE_EVENTS",
    "EVENT_KINDS",
    "EventKind",
    "EventRecord",
    "PatientOverride",
    "Scenario",
    "ScenarioEvent",
    "load_scenario",
    "parse_duration",
    "read_event_log",
    "write_event_log",
]

US = 1_000_000


@dataclass(frozen=True, slots=True)
class EventKind:
    """What one kind of scripted event does.

    Attributes:
        variable: Physiological variable moved to the target; ``None`` for device events.
        default_target: Target when the file gives none (canonical unit).
        description: One line for documentation and the event log.
    """

    variable: str | None
    default_target: float | None
    description: str


EVENT_KINDS: Mapping[str, EventKind] = MappingProxyType(
    {
        "hypoglycaemia": EventKind("glucose", 48.0, "glucose falls to the target"),
        "hyperglycaemia": EventKind("glucose", 320.0, "glucose rises to the target"),
        "desaturation": EventKind("spo2", 84.0, "SpO2 falls to the target"),
        "tachycardia": EventKind("heart_rate", 145.0, "heart rate rises to the target"),
        "bradycardia": EventKind("heart_rate", 38.0, "heart rate falls to the target"),
        "tachypnoea": EventKind("respiratory_rate", 30.0, "respiratory rate rises"),
        "fever": EventKind("body_temperature", 39.5, "body temperature rises to the target"),
        "hypotension": EventKind("systolic_bp", 78.0, "blood pressure falls (systolic target)"),
        "hypertension": EventKind("systolic_bp", 195.0, "blood pressure rises (systolic target)"),
        "dropout": EventKind(None, None, "the device stops sending; a CGM backfills afterwards"),
        "garbage": EventKind(None, None, "the device sends undecodable payloads"),
    }
)

DEVICE_EVENTS = ("dropout", "garbage")
DEFAULT_RAMP_S = 300.0
DEFAULT_PLATEAU_S = 600.0
DEFAULT_RECOVERY_S = 600.0

_PHYSIO_KEYS = {"kind", "patient", "at", "ramp", "plateau", "recovery", "target", "note"}
_DEVICE_KEYS = {"kind", "patient", "device", "at", "duration", "note"}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATIENT_RE = re.compile(r"P\d{3,4}")


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    """One scripted event.

    Attributes:
        index: Position in the file (0-based), used in messages and the event log.
        kind: Key of :data:`EVENT_KINDS`.
        patient_id: ``P003``...
        at_s: Onset, seconds after the start of the simulated timeline.
        ramp_s: Onset to target (0 for device events).
        plateau_s: Time held at target; for device events, the whole duration.
        recovery_s: Back to normal (0 for device events).
        target: Target value in the canonical unit (``None`` for device events).
        device_kind: Device kind a device event applies to (``None`` otherwise).
        note: Free text from the file.
    """

    index: int
    kind: str
    patient_id: str
    at_s: float
    ramp_s: float
    plateau_s: float
    recovery_s: float
    target: float | None
    device_kind: str | None = None
    note: str = ""

    @property
    def variable(self) -> str | None:
        """The physiological variable moved, or ``None`` for a device event."""
        return EVENT_KINDS[self.kind].variable

    def times_us(self, timeline_start_us: int) -> tuple[int, int, int, int]:
        """``(start, peak, plateau_end, end)`` in device time for a timeline start."""
        start = timeline_start_us + round(self.at_s * US)
        peak = start + round(self.ramp_s * US)
        plateau_end = peak + round(self.plateau_s * US)
        return start, peak, plateau_end, plateau_end + round(self.recovery_s * US)


@dataclass(frozen=True, slots=True)
class PatientOverride:
    """Scenario settings of one patient.

    Attributes:
        diabetic: Force diabetic (``True``) or not; ``None`` keeps the seeded draw.
        kinds: Exact device kinds of the patient; ``None`` keeps the fleet's mix.
    """

    diabetic: bool | None = None
    kinds: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A loaded scenario file.

    Attributes:
        name: Short name (the file stem when not given).
        description: Free text.
        duration_s: Suggested run length in simulated seconds, or ``None``.
        patients: Per-patient overrides by patient id.
        events: Scripted events in file order.
        source: The file it came from (for messages).
    """

    name: str
    description: str
    duration_s: float | None
    patients: Mapping[str, PatientOverride]
    events: tuple[ScenarioEvent, ...]
    source: str


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or a string such as ``"1h30m"``; ``where`` names the key."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip().lstrip("+")
        parts = _DURATION_RE.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_S[u] for n, u in parts)
    raise ConfigError(
        f'{where}: expected a duration such as 90, "90s", "10m" or "1h30m", got {value!r}'
    )


def _patient_id(value: object, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return f"P{value:03d}"
    if isinstance(value, str) and _PATIENT_RE.fullmatch(value):
        return value
    raise ConfigError(f'{where}: expected a patient id such as "P003" or a number, got {value!r}')


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )


def _require(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    return table[key]


def _target(value: object, variable: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.target: expected a number, got {value!r}")
    cat = catalogue()
    metrics = METRICS_OF[variable]
    low = max(cat[m].plausible_low for m in metrics)
    high = min(cat[m].plausible_high for m in metrics)
    unit = cat[metrics[0]].canonical_unit
    if not low <= value <= high:
        raise ConfigError(
            f"{where}.target: {value} {unit} is outside the plausible range {low}..{high} {unit}"
        )
    return float(value)


def _parse_event(index: int, table: object, where_file: str) -> ScenarioEvent:
    where = f"{where_file}: [[event]] #{index + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    kind = _require(table, "kind", where)
    if kind not in EVENT_KINDS:
        raise ConfigError(
            f"{where}.kind: unknown event kind {kind!r}; known: {', '.join(EVENT_KINDS)}"
        )
    where = f"{where} ({kind})"
    patient = _patient_id(_require(table, "patient", where), f"{where}.patient")
    at_s = parse_duration(_require(table, "at", where), f"{where}.at")
    note = table.get("note", "")
    if not isinstance(note, str):
        raise ConfigError(f"{where}.note: expected a string, got {note!r}")
    if kind in DEVICE_EVENTS:
        _check_keys(table, _DEVICE_KEYS, where)
        device = _require(table, "device", where)
        if device not in KINDS:
            raise ConfigError(f"{where}.device: expected one of {', '.join(KINDS)}, got {device!r}")
        duration = parse_duration(_require(table, "duration", where), f"{where}.duration")
        if duration <= 0:
            raise ConfigError(f"{where}.duration: expected a positive duration, got {duration}")
        return ScenarioEvent(index, kind, patient, at_s, 0.0, duration, 0.0, None, device, note)
    _check_keys(table, _PHYSIO_KEYS, where)
    spec = EVENT_KINDS[kind]
    assert spec.variable is not None and spec.default_target is not None
    ramp = parse_duration(table.get("ramp", DEFAULT_RAMP_S), f"{where}.ramp")
    plateau = parse_duration(table.get("plateau", DEFAULT_PLATEAU_S), f"{where}.plateau")
    recovery = parse_duration(table.get("recovery", DEFAULT_RECOVERY_S), f"{where}.recovery")
    if ramp <= 0 or recovery <= 0:
        raise ConfigError(f"{where}: ramp and recovery must be positive durations")
    target = _target(table.get("target", spec.default_target), spec.variable, where)
    return ScenarioEvent(index, kind, patient, at_s, ramp, plateau, recovery, target, None, note)


def _parse_patient(pid: str, table: object, where_file: str) -> PatientOverride:
    where = f"{where_file}: [patient.{pid}]"
    _patient_id(pid, where)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    _check_keys(table, {"diabetic", "kinds"}, where)
    diabetic = table.get("diabetic")
    if diabetic is not None and not isinstance(diabetic, bool):
        raise ConfigError(f"{where}.diabetic: expected true or false, got {diabetic!r}")
    kinds = table.get("kinds")
    if kinds is not None:
        if not (isinstance(kinds, list) and kinds and all(k in KINDS for k in kinds)):
            raise ConfigError(
                f"{where}.kinds: expected a non-empty list of {', '.join(KINDS)}, got {kinds!r}"
            )
        kinds = tuple(k for k in KINDS if k in kinds)
    return PatientOverride(diabetic, kinds)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; :class:`ConfigError` names file, key and expectation."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    src = str(path)
    _check_keys(data, {"scenario", "patient", "event"}, src)
    head = data.get("scenario", {})
    if not isinstance(head, dict):
        raise ConfigError(f"{src}: [scenario] must be a table")
    _check_keys(head, {"name", "description", "duration"}, f"{src}: [scenario]")
    duration = head.get("duration")
    patients = data.get("patient", {})
    if not isinstance(patients, dict):
        raise ConfigError(f"{src}: [patient.<id>] must be tables")
    events = data.get("event", [])
    if not isinstance(events, list):
        raise ConfigError(f"{src}: events must be an array of tables ([[event]])")
    return Scenario(
        name=str(head.get("name", Path(path).stem)),
        description=str(head.get("description", "")),
        duration_s=None
        if duration is None
        else parse_duration(duration, f"{src}: [scenario].duration"),
        patients=MappingProxyType(
            {pid: _parse_patient(pid, t, src) for pid, t in patients.items()}
        ),
        events=tuple(_parse_event(i, t, src) for i, t in enumerate(events)),
        source=src,
    )


def _iso(t_us: int) -> str:
    return datetime.fromtimestamp(t_us // US, UTC).replace(microsecond=t_us % US).isoformat()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One line of the ground-truth event log.

    Attributes:
        event: Index of the event in the scenario file.
        kind: Event kind.
        patient_id: Patient affected.
        device_ids: Devices that show the event (report an affected metric, or the device of a
            device event).
        metrics: Metrics whose value reaches ``target`` on the plateau (for device events: the
            device's metrics).
        derived_metrics: Metrics that move along without taking the target (diastolic, mean).
        target: Target value in ``unit``; ``None`` for device events.
        unit: Canonical unit of ``target``.
        start_us: Onset (device time, UTC microseconds).
        peak_us: Target reached (device events: same as start).
        plateau_end_us: Recovery begins (device events: the device is back).
        end_us: Event over.
        note: Free text from the scenario.
    """

    event: int
    kind: str
    patient_id: str
    device_ids: tuple[str, ...]
    metrics: tuple[str, ...]
    derived_metrics: tuple[str, ...]
    target: float | None
    unit: str | None
    start_us: int
    peak_us: int
    plateau_end_us: int
    end_us: int
    note: str = ""

    @classmethod
    def of(
        cls,
        event: ScenarioEvent,
        timeline_start_us: int,
        device_ids: Iterable[str],
        metrics: Iterable[str],
    ) -> EventRecord:
        """The record of ``event`` for a timeline, given the devices and metrics it shows in."""
        start, peak, plateau_end, end = event.times_us(timeline_start_us)
        variable = event.variable
        derived = DERIVED_METRICS.get(variable, ()) if variable else ()
        unit = None
        if variable is not None:
            unit = catalogue()[METRICS_OF[variable][0]].canonical_unit
        return cls(
            event=event.index,
            kind=event.kind,
            patient_id=event.patient_id,
            device_ids=tuple(device_ids),
            metrics=tuple(metrics),
            derived_metrics=derived,
            target=event.target,
            unit=unit,
            start_us=start,
            peak_us=peak,
            plateau_end_us=plateau_end,
            end_us=end,
            note=event.note,
        )

    def to_json(self) -> dict[str, object]:
        """A JSON object in field order, times also as RFC 3339 strings."""
        obj: dict[str, object] = {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }
        for name in _TIME_FIELDS:
            obj[name.removesuffix("_us")] = _iso(getattr(self, name))
        return obj


_TIME_FIELDS = ("start_us", "peak_us", "plateau_end_us", "end_us")


def write_event_log(path: Path, records: Iterable[EventRecord]) -> None:
    """Write the records as JSON lines (byte-identical for identical records)."""
    lines = [json.dumps(r.to_json(), ensure_ascii=False, separators=(",", ":")) for r in records]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_event_log(path: Path) -> list[EventRecord]:
    """Read an event log written by :func:`write_event_log`."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        try:
            obj = json.loads(line)
            values: dict[str, Any] = {
                f.name: tuple(v) if isinstance(v := obj[f.name], list) else v
                for f in fields(EventRecord)
            }
            out.append(EventRecord(**values))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: not an event log line: {exc}") from exc
    return out

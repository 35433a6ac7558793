"""Declarative device profiles: a vendor JSON format described in TOML (format ``profile:<name>``).

A profile lists templates; the first whose ``match`` conditions hold decodes the message. A
template reads device id, time, sequence number and values through compiled paths
(:mod:`gateway.formats.paths`), optionally once per item of an ``each`` array. Every key is
validated at load, and errors name the file, the key and what was expected. The file format is
documented in ``docs/payload-formats.md``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, DecodeError
from gateway.formats.base import (
    DecodeContext,
    DecodeResult,
    parse_epoch_ms,
    parse_rfc3339,
)
from gateway.formats.paths import (
    MISSING,
    IterationPath,
    JsonPath,
    PathSyntaxError,
    compile_iteration,
    compile_path,
)
from gateway.formats.vitalwire_json import (
    check_time,
    describe,
    load_json,
    parse_epoch_s,
    parse_seq,
)
from gateway.records import RawReading, Rejection

__all__ = [
    "TIMESTAMP_FORMATS",
    "DeviceProfile",
    "Template",
    "ValueSpec",
    "load_profile",
    "load_profiles",
]


def _rfc3339(value: object, field: str) -> int:
    if type(value) is not str:
        raise DecodeError(
            "bad_timestamp", f"{field}: expected an RFC 3339 string, got {describe(value)}", field
        )
    return check_time(parse_rfc3339(value, field), field)


def _epoch_ms(value: object, field: str) -> int:
    return check_time(parse_epoch_ms(value, field), field)


TIMESTAMP_FORMATS: dict[str, Callable[[object, str], int]] = {
    "rfc3339": _rfc3339,
    "epoch_ms": _epoch_ms,
    "epoch_s": parse_epoch_s,
}
"""``timestamp_format`` value -> parser of the raw JSON value into UTC microseconds."""

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")


def _absent(value: object) -> bool:
    return value is MISSING or value is None


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """One value a template reads.

    Attributes:
        value: Path to the number.
        metric: Fixed metric identifier, or ``None`` when ``metric_from`` names it.
        metric_from: Path to a vendor code, looked up in ``metric_map``.
        metric_map: Vendor code -> metric identifier.
        unmapped: ``reject`` or ``skip`` an item whose code is not in ``metric_map``.
        unit: Fixed UCUM unit, or ``None`` when ``unit_from`` names it.
        unit_from: Path to the unit as sent, mapped through ``unit_map`` (others pass through).
        unit_map: Vendor unit spelling -> UCUM.
        required: Whether an absent value is a rejection (else it is skipped).
    """

    value: JsonPath
    metric: str | None = None
    metric_from: JsonPath | None = None
    metric_map: dict[str, str] = field(default_factory=dict)
    unmapped: str = "reject"
    unit: str | None = None
    unit_from: JsonPath | None = None
    unit_map: dict[str, str] = field(default_factory=dict)
    required: bool = True

    def _metric(self, item: object, root: object) -> str | None:
        if self.metric_from is None:
            return self.metric
        code = self.metric_from.get(item, root)
        if code is MISSING or code is None:
            raise _Fault("missing_field", self.metric_from, "metric code is missing")
        key = str(code) if type(code) is int else code
        metric = self.metric_map.get(key) if type(key) is str else None
        if metric is None and self.unmapped != "skip":
            known = ", ".join(self.metric_map)
            problem = f"{describe(code)} is not a code of metric_map ({known})"
            raise _Fault("bad_value", self.metric_from, problem)
        return metric

    def _unit(self, item: object, root: object) -> str:
        if self.unit_from is None:
            return self.unit or ""
        unit = self.unit_from.get(item, root)
        if type(unit) is not str or not unit:
            if unit is MISSING or unit is None:
                raise _Fault("missing_field", self.unit_from, "unit is missing")
            raise _Fault(
                "bad_value", self.unit_from, f"expected a unit string, got {describe(unit)}"
            )
        return self.unit_map.get(unit, unit)

    def read(
        self, raw: object, item: object, root: object, head: tuple[str, int, int | None]
    ) -> RawReading | None:
        """The reading for a present ``raw`` value; ``None`` for a skipped unmapped code.

        Raises:
            _Fault: Naming the path at fault (formatted by the template, only on this path).
        """
        metric = self._metric(item, root)
        if metric is None:
            return None
        # orjson yields only finite numbers, so a type check is all a value needs.
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _Fault("bad_value", self.value, f"expected a number, got {describe(raw)}")
        device_id, observed_at_us, seq = head
        unit = self._unit(item, root)
        return RawReading(device_id, metric, float(raw), unit, observed_at_us, seq)


class _Fault(Exception):
    """A value that cannot be read; the template turns it into a rejection naming the field."""

    def __init__(self, code: str, path: JsonPath, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Template:
    """One way a profile's messages can look.

    Attributes:
        name: Name used in messages (``templates[i]`` unless set).
        match: ``(path, expected)`` pairs that must all hold on the message root.
        each: Iterate the items of this array; paths then start at the item (``$$`` = root).
        device_id: Path to the device id, or ``None`` to take it from the topic.
        timestamp: Path to the device time.
        timestamp_format: A key of :data:`TIMESTAMP_FORMATS`.
        seq: Path to the sequence number, or ``None``.
        values: The values read from each message (or item).
        shares_head: Derived: device id, time and seq all come from the topic or message root,
            so they are read once per message.
    """

    name: str
    match: tuple[tuple[JsonPath, object], ...]
    each: IterationPath | None
    device_id: JsonPath | None
    timestamp: JsonPath
    timestamp_format: str
    seq: JsonPath | None
    values: tuple[ValueSpec, ...]
    shares_head: bool = field(init=False)

    def __post_init__(self) -> None:
        paths = (self.device_id, self.timestamp, self.seq)
        shared = self.each is None or all(p is None or p.from_root for p in paths)
        object.__setattr__(self, "shares_head", shared)

    def matches(self, doc: object) -> bool:
        """Whether every ``match`` condition holds on ``doc``."""
        for path, expected in self.match:
            got = path.get(doc)
            if got != expected or isinstance(got, bool) != isinstance(expected, bool):
                return False
        return True

    def _device(self, item: object, root: object, at: str, captured: str | None) -> str:
        raw = self.device_id.get(item, root) if self.device_id is not None else MISSING
        if _absent(raw):
            if captured is not None:
                return captured
            where = self.device_id.field(at) if self.device_id is not None else ""
            raise DecodeError(
                "missing_field", f"{where or '$'}: no device id in the payload or topic", where
            )
        assert self.device_id is not None
        where = self.device_id.field(at)
        if not (type(raw) is str and raw) and type(raw) is not int:
            raise DecodeError(
                "bad_value", f"{where}: expected a device id string, got {describe(raw)}", where
            )
        device_id = str(raw)
        if captured is not None and device_id != captured:
            raise DecodeError(
                "device_mismatch",
                f"{where}: payload names device {device_id!r} but the topic names {captured!r}",
                where,
            )
        return device_id

    def _head(
        self, item: object, root: object, at: str, captured: str | None
    ) -> tuple[str, int, int | None]:
        """Device id, time and sequence number of one message or item."""
        device_id = self._device(item, root, at, captured)
        ts = self.timestamp.get(item, root)
        where = self.timestamp.field(at)
        if _absent(ts):
            raise DecodeError("missing_field", f"{where}: timestamp is missing", where)
        observed_at_us = TIMESTAMP_FORMATS[self.timestamp_format](ts, where)
        seq = None
        if self.seq is not None:
            raw_seq = self.seq.get(item, root)
            seq = None if _absent(raw_seq) else parse_seq(raw_seq, self.seq.field(at))
        return device_id, observed_at_us, seq

    def _at(self, index: int) -> str:
        """JSON path of the message (``$``) or of ``each`` item ``index``."""
        return "$" if self.each is None else self.each.item_field(index)

    def _values(
        self,
        item: object,
        root: object,
        index: int,
        head: tuple[str, int, int | None],
        out: DecodeResult,
    ) -> None:
        """The values of one message (or ``each`` item) into ``out``."""
        present = False
        for spec in self.values:
            raw = spec.value.get(item, root)
            try:
                if raw is MISSING or raw is None:
                    if not spec.required:
                        continue
                    raise _Fault("missing_field", spec.value, "required value is missing")
                present = True
                reading = spec.read(raw, item, root, head)
            except _Fault as fault:
                present = True
                where = fault.path.field(self._at(index))
                reason = f"{where}: {fault.problem}"
                out.rejections.append(Rejection(fault.code, where, reason, head[0]))
                continue
            if reading is not None:
                out.readings.append(reading)
        if not present:
            at = self._at(index)
            paths = ", ".join(spec.value.field(at) for spec in self.values)
            reason = f"{at}: none of the values is present ({paths})"
            out.rejections.append(Rejection("missing_field", at, reason, head[0]))

    def decode(self, doc: object, ctx: DecodeContext) -> DecodeResult:
        """Readings and rejections of a parsed message this template matched.

        Raises:
            DecodeError: When the message's shared device id, time or seq is unusable, or the
                ``each`` array is absent or not an array.
        """
        out = DecodeResult([], [])
        if self.each is None:
            items: list[object] = [doc]
        else:
            found = self.each.items(doc)
            if found is None:
                container = self.each.container.get(doc)
                where = self.each.container.field()
                if _absent(container):
                    raise DecodeError(
                        "missing_field", f"{where}: array to iterate is missing", where
                    )
                reason = f"{where}: expected an array, got {describe(container)}"
                raise DecodeError("bad_shape", reason, where)
            items = found
        # Shared parts are read once, so one bad root time costs one rejection, not one per item.
        shared = self._head(doc, doc, "$", ctx.device_id) if self.shares_head and items else None
        for i, item in enumerate(items):
            if shared is not None:
                head = shared
            else:
                try:
                    head = self._head(item, doc, self._at(i), ctx.device_id)
                except DecodeError as exc:
                    named = self.device_id.get(item, doc) if self.device_id else None
                    device_id = ctx.device_id or (named if type(named) is str else "")
                    out.rejections.append(
                        Rejection(exc.reason_code, exc.field, str(exc), device_id)
                    )
                    continue
            self._values(item, doc, i, head, out)
        return out


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A loaded device profile.

    Attributes:
        name: Profile name; routes refer to it as ``profile:<name>``.
        description: One line on the device and format.
        templates: Tried in order; the first that matches decodes the message.
        source: The file it was loaded from.
    """

    name: str
    description: str
    templates: tuple[Template, ...]
    source: Path | None = None

    def decode(self, payload: bytes, ctx: DecodeContext) -> DecodeResult:
        """Decode one message (the :data:`~gateway.formats.base.Decoder` contract).

        Raises:
            DecodeError: ``malformed_json``; ``no_template`` when no template matches;
                ``missing_field``/``bad_shape`` when an ``each`` array is absent or not an array.
        """
        doc = load_json(payload)
        for template in self.templates:
            if template.matches(doc):
                return template.decode(doc, ctx)
        names = ", ".join(t.name for t in self.templates)
        raise DecodeError(
            "no_template", f"$: message matches no template of profile {self.name!r} ({names})"
        )


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class _Table:
    """A TOML table being validated, with where it sits (for error messages)."""

    data: dict[str, Any]
    file: Path
    where: str

    def error(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where}{key}: {what}")

    def check_keys(self, allowed: Collection[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.error(key, f"unknown key (expected one of {', '.join(allowed)})")

    def get(self, key: str, kind: type, what: str, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise self.error(key, f"missing key: expected {what}")
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (kind is str and not value):
            raise self.error(key, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def path(self, key: str, required: bool = False) -> JsonPath | None:
        text = self.get(key, str, "a path such as '$.a.b'", required)
        try:
            return compile_path(text) if text is not None else None
        except PathSyntaxError as exc:
            raise self.error(key, str(exc)) from None

    def mapping(self, key: str, what: str, known: Collection[str] | None = None) -> dict[str, str]:
        table = self.get(key, dict, f"a table of {what}") or {}
        for k, v in table.items():
            if not isinstance(v, str) or not v:
                raise self.error(f"{key}.{k}", f"expected {what}, got {v!r}")
            if known is not None and v not in known:
                raise self.error(f"{key}.{k}", _unknown_metric(v, known))
        return dict(table)

    def sub(self, key: str, index: int) -> _Table:
        value = self.data[key][index]
        if not isinstance(value, dict):
            raise self.error(f"{key}[{index}]", f"expected a table, got {value!r}")
        return _Table(value, self.file, f"{self.where}{key}[{index}].")


def _unknown_metric(name: str, known: Collection[str]) -> str:
    return f"unknown metric {name!r} (known: {', '.join(sorted(known))})"


# The TOML keys are the dataclass fields.
_VALUE_KEYS = tuple(f.name for f in fields(ValueSpec))
_TEMPLATE_KEYS = tuple(f.name for f in fields(Template) if f.init)


def _value_spec(t: _Table, known: Collection[str]) -> ValueSpec:
    t.check_keys(_VALUE_KEYS)
    metric = t.get("metric", str, "a metric identifier")
    metric_from = t.path("metric_from")
    if (metric is None) == (metric_from is None):
        raise t.error("metric", "expected exactly one of 'metric' or 'metric_from'")
    if metric is not None and metric not in known:
        raise t.error("metric", _unknown_metric(metric, known))
    metric_map = t.mapping("metric_map", "metric identifiers", known)
    if (metric_from is None) != (not metric_map):
        raise t.error(
            "metric_map", "expected a non-empty metric_map exactly when metric_from is set"
        )
    unmapped = t.get("unmapped", str, "'reject' or 'skip'") or "reject"
    if unmapped not in ("reject", "skip") or (metric_from is None and "unmapped" in t.data):
        raise t.error("unmapped", "expected 'reject' or 'skip', and only with metric_from")
    unit = t.get("unit", str, "a UCUM unit string")
    unit_from = t.path("unit_from")
    if (unit is None) == (unit_from is None):
        raise t.error("unit", "expected exactly one of 'unit' (fixed UCUM) or 'unit_from' (a path)")
    unit_map = t.mapping("unit_map", "UCUM unit strings")
    if unit_map and unit_from is None:
        raise t.error("unit_map", "only allowed with unit_from")
    value = t.path("value", required=True)
    assert value is not None
    return ValueSpec(
        value=value,
        metric=metric,
        metric_from=metric_from,
        metric_map=metric_map,
        unmapped=unmapped,
        unit=unit,
        unit_from=unit_from,
        unit_map=unit_map,
        required=t.get("required", bool, "true or false") in (None, True),
    )


def _match(t: _Table) -> tuple[tuple[JsonPath, object], ...]:
    table = t.get("match", dict, "a table of path = value") or {}
    out = []
    for text, expected in table.items():
        key = f'match."{text}"'
        if not isinstance(expected, str | int | float | bool):
            raise t.error(key, f"expected a string, number or boolean, got {expected!r}")
        try:
            out.append((compile_path(text), expected))
        except PathSyntaxError as exc:
            raise t.error(key, str(exc)) from None
    return tuple(out)


def _template(t: _Table, index: int, known: Collection[str]) -> Template:
    t.check_keys(_TEMPLATE_KEYS)
    each_text = t.get("each", str, "a path ending in '[*]'")
    try:
        each = compile_iteration(each_text) if each_text is not None else None
    except PathSyntaxError as exc:
        raise t.error("each", str(exc)) from None
    fmt = t.get("timestamp_format", str, f"one of {', '.join(TIMESTAMP_FORMATS)}", required=True)
    if fmt not in TIMESTAMP_FORMATS:
        raise t.error(
            "timestamp_format",
            f"unknown format {fmt!r} (expected one of {', '.join(TIMESTAMP_FORMATS)})",
        )
    values = t.get("values", list, "an array of value tables", required=True)
    if not values:
        raise t.error("values", "expected at least one value table")
    timestamp = t.path("timestamp", required=True)
    assert timestamp is not None
    return Template(
        name=t.get("name", str, "a template name") or f"templates[{index}]",
        match=_match(t),
        each=each,
        device_id=t.path("device_id"),
        timestamp=timestamp,
        timestamp_format=fmt,
        seq=t.path("seq"),
        values=tuple(_value_spec(t.sub("values", i), known) for i in range(len(values))),
    )


def load_profile(path: Path, known_metrics: Collection[str]) -> DeviceProfile:
    """Load and validate one profile file.

    Args:
        path: The TOML file.
        known_metrics: Metric identifiers a profile may name (the catalogue's).

    Raises:
        ConfigError: Naming the file, the key and what was expected.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read device profile: {exc}") from exc
    top = _Table(data, path, "")
    top.check_keys(("name", "description", "templates"))
    name = top.get("name", str, "a profile name such as 'acme-watch'", required=True)
    if not _NAME.match(name):
        raise top.error(
            "name", f"expected lowercase letters, digits, '-', '_' or '.', got {name!r}"
        )
    templates = top.get("templates", list, "an array of [[templates]] tables", required=True)
    if not templates:
        raise top.error("templates", "expected at least one [[templates]] table")
    return DeviceProfile(
        name=name,
        description=top.get("description", str, "a one-line description") or "",
        templates=tuple(
            _template(top.sub("templates", i), i, known_metrics) for i in range(len(templates))
        ),
        source=path,
    )


def load_profiles(directory: Path, known_metrics: Collection[str]) -> dict[str, DeviceProfile]:
    """Load every ``*.toml`` profile in ``directory``, keyed by profile name.

    Raises:
        ConfigError: On a bad file, or two files declaring the same name.
    """
    if not directory.is_dir():
        raise ConfigError(f"{directory}: expected a directory of device profiles")
    profiles: dict[str, DeviceProfile] = {}
    for path in sorted(directory.glob("*.toml")):
        profile = load_profile(path, known_metrics)
        if profile.name in profiles:
            raise ConfigError(
                f"{path}: name: profile {profile.name!r} is already defined in "
                f"{profiles[profile.name].source}"
            )
        profiles[profile.name] = profile
    return profiles

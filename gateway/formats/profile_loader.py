"""Loading and validating device profile files (TOML) into :class:`DeviceProfile` objects.

Every key is validated at load, and errors name the file, the key and what was expected. The
file format is documented in ``docs/payload-formats.md``; the profile model and its decoding are
in :mod:`gateway.formats.profiles`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.formats.paths import JsonPath, PathSyntaxError, compile_iteration, compile_path
from gateway.formats.profiles import TIMESTAMP_FORMATS, DeviceProfile, Template, ValueSpec

__all__ = ["load_profile", "load_profiles"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")


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

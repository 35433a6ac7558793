"""Parsing and validating ``[[rule]]`` tables into :class:`~alerts.rules.Rule` values.

Every error is a :class:`~alerts.errors.CarePlanError` that names the rule (its id, or its
position when the id itself is bad) and the field, and says what was expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from alerts.errors import CarePlanError
from alerts.rules import (
    DEFAULT_CRITICAL_MISSED,
    DEFAULT_HORIZON_S,
    DEFAULT_NEWS2_FRESHNESS_S,
    DEFAULT_RATE_WINDOW_S,
    DEFAULT_WARNING_MISSED,
    HIGH_SUSTAIN_CAP_S,
    KINDS,
    PRIORITIES,
    PRIORITY_RANK,
    QUALITY_FLAGS,
    TECHNICAL_SIGNALS,
    Bands,
    Rule,
    parse_duration,
)
from pipeline.catalogue import Catalogue, MetricSpec

__all__ = ["parse_rule"]

_BAND_KEYS = ("low", "high", "critical_low", "critical_high")
_COMMON = {"id", "kind", "label", "priority", "warning_priority", "for", "consecutive",
           "hysteresis", "inclusive", "clear_for"}
_ALLOWED: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "threshold": frozenset(_COMMON | {"metric", "unit", "night", *_BAND_KEYS}),
        "rate": frozenset(
            _COMMON | {"metric", "unit", "window", "when_below", "when_above", *_BAND_KEYS}
        ),
        "predicted": frozenset(_COMMON | {"metric", "unit", "window", "horizon", *_BAND_KEYS}),
        "staleness": frozenset(
            {"id", "kind", "label", "priority", "warning_priority", "metric", "cadence",
             "warning_missed", "critical_missed", "clear_for"}
        ),
        "technical": frozenset(_COMMON | {"signal", "metric", "unit", "quality", *_BAND_KEYS}),
        "news2": frozenset({"id", "kind", "label", "freshness", "clear_for"}),
    }
)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _number(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CarePlanError(f"{where}: {key}: expected a number, got {value!r}")
    return float(value)


def _priority(table: Mapping[str, Any], key: str, default: str, where: str) -> str:
    value = table.get(key, default)
    if value not in PRIORITY_RANK:
        raise CarePlanError(f"{where}: {key}: expected one of {', '.join(PRIORITIES)}, "
                            f"got {value!r}")
    return str(value)


def _metric(table: Mapping[str, Any], cat: Catalogue, where: str,
            required: bool) -> MetricSpec | None:
    name = table.get("metric")
    if name is None:
        if required:
            raise CarePlanError(f"{where}: metric: missing (expected one of "
                                f"{', '.join(cat.names)})")
        return None
    if not isinstance(name, str) or name not in cat:
        raise CarePlanError(f"{where}: metric: unknown metric {name!r} "
                            f"(known: {', '.join(cat.names)})")
    return cat[name]


def _unit(table: Mapping[str, Any], spec: MetricSpec, where: str) -> str:
    unit = table.get("unit", spec.canonical_unit)
    if unit not in spec.accepted_units():
        raise CarePlanError(
            f"{where}: unit: {unit!r} is not convertible to {spec.canonical_unit} for "
            f"{spec.name} (accepted: {', '.join(spec.accepted_units())})"
        )
    return str(unit)


def _bands(table: Mapping[str, Any], where: str) -> Bands:
    return Bands(*(_number(table, k, where) for k in _BAND_KEYS))


def _check_bands(b: Bands, h: float, unit: str, where: str, prefix: str = "") -> None:
    p = prefix
    if not b.limits():
        raise CarePlanError(f"{where}: {p}low/high: at least one of low, high, critical_low, "
                            "critical_high is needed")
    pairs = (("low", b.low, "high", b.high), ("critical_low", b.critical_low, "low", b.low),
             ("high", b.high, "critical_high", b.critical_high),
             ("critical_low", b.critical_low, "critical_high", b.critical_high),
             ("critical_low", b.critical_low, "high", b.high),
             ("low", b.low, "critical_high", b.critical_high))  # fmt: skip
    for lo_key, lo, hi_key, hi in pairs:
        if lo is not None and hi is not None and not lo < hi:
            raise CarePlanError(f"{where}: {p}{lo_key}: {lo:g} {unit} must be below "
                                f"{p}{hi_key} {hi:g} {unit}")
    lows = [v for _, side, v in b.limits() if side]
    highs = [v for _, side, v in b.limits() if not side]
    if lows and highs and not max(lows) + h < min(highs) - h:
        raise CarePlanError(
            f"{where}: hysteresis: {h:g} {unit} makes the clear thresholds cross ({p}low side "
            f"clears above {max(lows) + h:g}, {p}high side below {min(highs) - h:g} {unit})"
        )


def _check_keys(table: Mapping[str, Any], kind: str, where: str) -> None:
    unknown = sorted(set(table) - _ALLOWED[kind])
    if unknown:
        raise CarePlanError(f"{where}: {unknown[0]}: unknown key for a {kind} rule "
                            f"(allowed: {', '.join(sorted(_ALLOWED[kind]))})")


def _sustain(table: Mapping[str, Any], priority: str,
             where: str) -> tuple[float | None, int | None]:
    for_s = parse_duration(table["for"], f"{where}: for") if "for" in table else None
    if for_s is not None and priority == "high" and for_s > HIGH_SUSTAIN_CAP_S:
        raise CarePlanError(f"{where}: for: {for_s:g} s exceeds the {HIGH_SUSTAIN_CAP_S:g} s "
                            "cap for high-priority rules")
    count = table.get("consecutive")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise CarePlanError(f"{where}: consecutive: expected a whole number >= 1, got {count!r}")
    return for_s, count


def parse_rule(table: object, index: int, cat: Catalogue, source: str = "care plan") -> Rule:
    """Validate one ``[[rule]]`` table (``index`` is its 0-based position, for messages).

    Raises:
        CarePlanError: Naming the rule (id, or #position) and the field at fault.
    """
    where = f"{source}: rule #{index + 1}"
    if not isinstance(table, Mapping):
        raise CarePlanError(f"{where}: expected a table, got {type(table).__name__}")
    rid = table.get("id")
    if not isinstance(rid, str) or not _ID_RE.fullmatch(rid):
        raise CarePlanError(f"{where}: id: expected a short name such as 'hr_high' "
                            f"(letters, digits, _ . -), got {rid!r}")
    where = f"{source}: rule {rid!r}"
    kind = table.get("kind")
    if kind not in KINDS:
        raise CarePlanError(f"{where}: kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    _check_keys(table, kind, where)
    label = table.get("label", "")
    if not isinstance(label, str):
        raise CarePlanError(f"{where}: label: expected a string, got {label!r}")
    doc = MappingProxyType(dict(table))
    clear_for = parse_duration(table.get("clear_for", 0), f"{where}: clear_for")
    base = Rule(id=rid, kind=kind, label=label, doc=doc, clear_for_s=clear_for)
    if kind == "news2":
        fresh = parse_duration(table.get("freshness", DEFAULT_NEWS2_FRESHNESS_S),
                               f"{where}: freshness")
        if fresh <= 0:
            raise CarePlanError(f"{where}: freshness: expected a positive duration")
        return replace(base, freshness_s=fresh, priority="high", warning_priority="low")
    priority = _priority(table, "priority", "medium", where)
    below = PRIORITIES[max(PRIORITY_RANK[priority] - 1, 0)]
    warning_priority = _priority(table, "warning_priority", below, where)
    if PRIORITY_RANK[warning_priority] > PRIORITY_RANK[priority]:
        raise CarePlanError(f"{where}: warning_priority: {warning_priority} must not be above "
                            f"priority {priority}")
    base = replace(base, priority=priority, warning_priority=warning_priority)
    if kind == "staleness":
        return _parse_staleness(table, base, cat, where)
    inclusive = table.get("inclusive", True)
    if not isinstance(inclusive, bool):
        raise CarePlanError(f"{where}: inclusive: expected true or false, got {inclusive!r}")
    h = _number(table, "hysteresis", where) or 0.0
    if h < 0:
        raise CarePlanError(f"{where}: hysteresis: expected a number >= 0, got {h:g}")
    for_s, count = _sustain(table, priority, where)
    base = replace(base, inclusive=inclusive, hysteresis=h, for_s=for_s, consecutive=count)
    if kind == "technical":
        return _parse_technical(table, base, cat, where)
    return _parse_valued(table, base, cat, where)


def _parse_staleness(table: Mapping[str, Any], base: Rule, cat: Catalogue, where: str) -> Rule:
    spec = _metric(table, cat, where, required=True)
    assert spec is not None
    if "cadence" not in table:
        raise CarePlanError(f"{where}: cadence: missing (the device's reporting interval, "
                            'e.g. "5m")')
    cadence = parse_duration(table["cadence"], f"{where}: cadence")
    if cadence <= 0:
        raise CarePlanError(f"{where}: cadence: expected a positive duration")
    warn = _number(table, "warning_missed", where)
    crit = _number(table, "critical_missed", where)
    warn = DEFAULT_WARNING_MISSED if warn is None else warn
    crit = DEFAULT_CRITICAL_MISSED if crit is None else crit
    if not 0 < warn < crit:
        raise CarePlanError(f"{where}: warning_missed: expected 0 < warning_missed ({warn:g}) "
                            f"< critical_missed ({crit:g})")
    return replace(base, metric=spec.name, cadence_s=cadence, warning_missed=warn,
                   critical_missed=crit)


def _parse_technical(table: Mapping[str, Any], base: Rule, cat: Catalogue, where: str) -> Rule:
    signal = table.get("signal")
    if signal not in TECHNICAL_SIGNALS:
        raise CarePlanError(f"{where}: signal: expected one of {', '.join(TECHNICAL_SIGNALS)}, "
                            f"got {signal!r}")
    base = replace(base, signal=signal)
    if signal == "threshold":
        return _parse_valued(table, base, cat, where)
    extra = sorted(k for k in (*_BAND_KEYS, "unit") if k in table)
    if extra:
        raise CarePlanError(f"{where}: {extra[0]}: a {signal} rule has no limits "
                            "(it fires on flagged readings or rejected payloads)")
    spec = _metric(table, cat, where, required=False)
    mask = 0
    if signal == "sensor_error":
        names = table.get("quality", list(QUALITY_FLAGS))
        if not (isinstance(names, list) and names and all(n in QUALITY_FLAGS for n in names)):
            raise CarePlanError(f"{where}: quality: expected a list of {', '.join(QUALITY_FLAGS)}, "
                                f"got {names!r}")
        mask = sum(QUALITY_FLAGS[n] for n in set(names))
    elif "quality" in table or spec is not None:
        raise CarePlanError(f"{where}: {'quality' if 'quality' in table else 'metric'}: "
                            "a decode_errors rule watches every payload of the patient's devices")
    return replace(base, metric=spec.name if spec else None, quality_mask=mask)


def _parse_valued(table: Mapping[str, Any], base: Rule, cat: Catalogue, where: str) -> Rule:
    spec = _metric(table, cat, where, required=True)
    assert spec is not None
    unit = _unit(table, spec, where)
    kind = base.kind
    shown = f"{unit}/min" if kind == "rate" else unit
    bands = _bands(table, where)
    _check_bands(bands, base.hysteresis, shown, where)
    rule = replace(base, metric=spec.name, unit=unit, bands=bands)
    if kind == "threshold" and "night" in table:
        night_doc = table["night"]
        if not isinstance(night_doc, Mapping) or set(night_doc) - set(_BAND_KEYS):
            raise CarePlanError(f"{where}: night: expected a table of {', '.join(_BAND_KEYS)}, "
                                f"got {night_doc!r}")
        merged = replace(bands, **{k: _number(night_doc, k, f"{where}: night")
                                   for k in night_doc})
        _check_bands(merged, base.hysteresis, unit, where, "night.")
        rule = replace(rule, night=merged)
    if kind == "rate":
        for key in _BAND_KEYS:
            v = getattr(bands, key)
            if v is not None and (v >= 0 if "low" in key else v <= 0):
                sign = "negative (falling)" if "low" in key else "positive (rising)"
                raise CarePlanError(f"{where}: {key}: a rate limit here must be {sign}, "
                                    f"got {v:g} {shown}")
        rule = replace(rule, when_below=_number(table, "when_below", where),
                       when_above=_number(table, "when_above", where))
    if kind in ("rate", "predicted"):
        window = parse_duration(table.get("window", DEFAULT_RATE_WINDOW_S), f"{where}: window")
        if window <= 0:
            raise CarePlanError(f"{where}: window: expected a positive duration")
        rule = replace(rule, window_s=window)
    if kind == "predicted":
        horizon = parse_duration(table.get("horizon", DEFAULT_HORIZON_S), f"{where}: horizon")
        if horizon <= 0:
            raise CarePlanError(f"{where}: horizon: expected a positive duration")
        rule = replace(rule, horizon_s=horizon)
    return rule

"""Care-plan rules: what each kind means, how a TOML table becomes a validated :class:`Rule`.

A rule watches one signal of one patient and raises one alert per episode. Kinds:

==========  ====================================================  =============================
kind        signal                                                limits (canonical units)
==========  ====================================================  =============================
threshold   the metric's value                                    low/high, critical_*
rate        change of the metric per minute over ``window``,      low (< 0, falling),
            only while the value is below ``when_below``          high (> 0, rising)
            (falling) or above ``when_above`` (rising)
predicted   the value extrapolated ``horizon`` ahead              low/high (tagged predicted)
staleness   missed reporting intervals (``cadence``)              warning_missed, critical_missed
technical   ``sensor_error`` (quality flags), ``decode_errors``   one level; low/high for
            (rejected payloads) or ``threshold`` (a device        ``threshold``
            metric such as a battery level)
news2       NEWS2 risk band from the latest fresh vitals          fixed (see ``news2.py``)
==========  ====================================================  =============================

Boundaries are **inclusive** by default (``low = 70`` fires at 70); ``inclusive = false``
makes them strict. ``hysteresis`` moves the clear threshold inwards (low 70, hysteresis 5: the
condition ends above 75); ``clear_for`` keeps the alert open until the condition has stayed
away that long, so a return within it is the same episode. ``for`` (seconds or ``"15s"``) or
``consecutive`` (readings) delay the alert until the condition has held; high-priority
conditions fire at the latest :data:`HIGH_SUSTAIN_CAP_S` after onset. Parsing and validation:
:mod:`alerts.validate` (every error names the rule and the field).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from alerts.errors import CarePlanError
from pipeline.catalogue import Catalogue
from pipeline.readings import Quality

__all__ = [
    "DEFAULT_CRITICAL_MISSED",
    "DEFAULT_HORIZON_S",
    "DEFAULT_NEWS2_FRESHNESS_S",
    "DEFAULT_RATE_WINDOW_S",
    "DEFAULT_TECHNICAL_CONSECUTIVE",
    "DEFAULT_WARNING_MISSED",
    "HIGH_SUSTAIN_CAP_S",
    "KINDS",
    "PRIORITIES",
    "PRIORITY_RANK",
    "QUALITY_FLAGS",
    "TECHNICAL_SIGNALS",
    "Bands",
    "Condition",
    "Rule",
    "parse_duration",
]

KINDS = ("threshold", "rate", "predicted", "staleness", "technical", "news2")
TECHNICAL_SIGNALS = ("sensor_error", "decode_errors", "threshold")
PRIORITIES = ("info", "low", "medium", "high")
PRIORITY_RANK: Mapping[str, int] = MappingProxyType({p: i for i, p in enumerate(PRIORITIES)})
QUALITY_FLAGS: Mapping[str, int] = MappingProxyType(
    {
        "questionable": int(Quality.QUESTIONABLE),
        "calibrating": int(Quality.CALIBRATING),
        "value_absent": int(Quality.VALUE_ABSENT),
    }
)

HIGH_SUSTAIN_CAP_S = 60.0
"""A high-priority condition fires at most this long after onset, whatever ``for`` or
``consecutive`` say (``for`` above it is rejected)."""
DEFAULT_WARNING_MISSED = 3.0
DEFAULT_CRITICAL_MISSED = 6.0
DEFAULT_RATE_WINDOW_S = 900.0
DEFAULT_HORIZON_S = 1200.0
DEFAULT_NEWS2_FRESHNESS_S = 3600.0
DEFAULT_TECHNICAL_CONSECUTIVE = 3

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"15m"``, ``"1h30m"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        parts = _DURATION_RE.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_S[u] for n, u in parts)
    raise CarePlanError(f'{where}: expected a duration such as 90, "90s", "15m" or "1h30m", '
                        f"got {value!r}")


@dataclass(frozen=True, slots=True)
class Bands:
    """Warning (``low``/``high``) and critical limits, in the rule's unit; ``None`` = unused."""

    low: float | None = None
    high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None

    def limits(self) -> list[tuple[int, bool, float]]:
        """``(level, low_side, limit)`` of the limits in use (level 1 warning, 2 critical)."""
        out = []
        for level, low_side, value in (
            (1, True, self.low), (2, True, self.critical_low),
            (1, False, self.high), (2, False, self.critical_high),
        ):  # fmt: skip
            if value is not None:
                out.append((level, low_side, value))
        return out


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled condition: a side and level of a rule, canonical units.

    Attributes:
        level: 1 warning, 2 critical (NEWS2: 1 low-medium, 2 medium, 3 high).
        low_side: True when the condition is "at or below" ``trigger``.
        trigger: Limit that starts the condition.
        clear: Limit past which it ends (``trigger`` moved inwards by the hysteresis).
        night_trigger: Trigger at night, or ``None`` for the day value.
        night_clear: Clear threshold at night, or ``None``.
        priority: Priority of an alert at this level.
        for_us: Sustain time, or ``None``.
        count: Sustain count, or ``None``.
        cap_us: Latest firing time after onset (high priority), or ``None``.
        gate_below: Only while the rule's value is below this (rate, falling side).
        gate_above: Only while the rule's value is above this (rate, rising side).
    """

    level: int
    low_side: bool
    trigger: float
    clear: float
    night_trigger: float | None
    night_clear: float | None
    priority: str
    for_us: int | None
    count: int | None
    cap_us: int | None
    gate_below: float | None = None
    gate_above: float | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule of a care plan, as written (units as given); see module docs."""

    id: str
    kind: str
    label: str = ""
    metric: str | None = None
    unit: str | None = None
    bands: Bands = Bands()
    night: Bands | None = None
    inclusive: bool = True
    hysteresis: float = 0.0
    for_s: float | None = None
    consecutive: int | None = None
    priority: str = "medium"
    warning_priority: str = "low"
    window_s: float | None = None
    horizon_s: float | None = None
    when_below: float | None = None
    when_above: float | None = None
    cadence_s: float | None = None
    warning_missed: float = DEFAULT_WARNING_MISSED
    critical_missed: float = DEFAULT_CRITICAL_MISSED
    signal: str | None = None
    quality_mask: int = 0
    freshness_s: float | None = None
    clear_for_s: float = 0.0
    doc: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    @property
    def category(self) -> str:
        """``technical`` (device, link, data) or ``physiological`` (patient values)."""
        return "technical" if self.kind in ("staleness", "technical") else "physiological"

    @property
    def predicted(self) -> bool:
        """Alerts of this rule are forecasts, kept apart from observed ones."""
        return self.kind == "predicted"

    def conditions(self, cat: Catalogue) -> list[Condition]:
        """The rule's conditions in canonical units (empty for ``news2``: fixed bands)."""
        if self.kind == "news2":
            return [
                Condition(level, False, float(level), float(level), None, None, prio,
                          None, None, None)
                for level, prio in ((1, "low"), (2, "medium"), (3, "high"))
            ]  # fmt: skip
        if self.kind == "staleness":
            return [
                Condition(1, False, self.warning_missed, self.warning_missed, None, None,
                          self.warning_priority, None, None, None),
                Condition(2, False, self.critical_missed, self.critical_missed, None, None,
                          self.priority, None, None, None),
            ]  # fmt: skip
        count = self.consecutive
        if self.kind == "technical" and self.signal != "threshold":
            count = count or DEFAULT_TECHNICAL_CONSECUTIVE
            return [Condition(1, False, 1.0, 1.0, None, None, self.priority,
                              _us(self.for_s), count, _cap(self.priority))]  # fmt: skip
        value_conv = _conversion(cat, self)
        per_min = self.kind == "rate"

        def canon(v: float | None) -> float | None:
            if v is None:
                return None
            return v * value_conv[0] if per_min else v * value_conv[0] + value_conv[1]

        h = self.hysteresis * value_conv[0]
        night = dict(_limit_map(self.night)) if self.night is not None else {}
        out = []
        for level, low_side, limit in self.bands.limits():
            trig = canon(limit)
            assert trig is not None
            n_trig = canon(night.get((level, low_side)))
            step = h if low_side else -h
            out.append(Condition(
                level, low_side, trig, trig + step, n_trig,
                None if n_trig is None else n_trig + step,
                self.priority if level == 2 else self.warning_priority,
                _us(self.for_s), count, _cap(self.priority if level == 2 else
                                             self.warning_priority),
                value_conv[0] * self.when_below + value_conv[1]
                if low_side and self.when_below is not None else None,
                value_conv[0] * self.when_above + value_conv[1]
                if not low_side and self.when_above is not None else None,
            ))  # fmt: skip
        return out


def _limit_map(b: Bands) -> list[tuple[tuple[int, bool], float]]:
    return [((level, side), v) for level, side, v in b.limits()]


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def _cap(priority: str) -> int | None:
    return _us(HIGH_SUSTAIN_CAP_S) if priority == "high" else None


def _conversion(cat: Catalogue, rule: Rule) -> tuple[float, float]:
    assert rule.metric is not None
    spec = cat[rule.metric]
    unit = rule.unit or spec.canonical_unit
    for conv in spec.units:
        if conv.unit == unit:
            return conv.factor, conv.offset
    raise CarePlanError(f"rule {rule.id!r}: unit: {unit!r} is not accepted for {rule.metric}")

"""Alert lifecycle: the records, and the transition table every change goes through.

One episode of a rule's side (low or high) is one :class:`Alert`. States::

    active ──ack──> acknowledged ──clear──> resolved
      │  ╲
      │   latch (condition gone; high-priority, observed, physiological) ──> latched
      │                                               latched ──ack──> resolved
      │                                               latched ──reopen (back before ack)──> active
      └─clear──> resolved

When the condition goes away the alert first *eases* (state kept, level 0); it resolves once
the condition has stayed away for the rule's ``clear_for``, and a return before that *recurs*
within the same alert: a value flapping around a limit never fires twice. ``worsen`` (a level
above the episode's peak) notifies and makes an acknowledged alert active again; ``change``
(a level within the peak) is silent. ``retire`` closes an alert whose rule left the care
plan. ``renotify`` and ``escalate`` keep the state and are allowed only while nobody has
acknowledged (active, latched). Any move not in :data:`TRANSITIONS` raises
:class:`~alerts.errors.LifecycleError`. Each move becomes an :class:`AlertEvent` for the
append-only log, with who, when and the value and limit behind it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

from alerts.errors import LifecycleError

__all__ = [
    "ALERT_FIELDS",
    "EVENT_FIELDS",
    "EVENT_KIND",
    "OPEN_STATES",
    "STATES",
    "SYSTEM",
    "TRANSITIONS",
    "Alert",
    "AlertEvent",
    "Snooze",
    "next_state",
]

STATES = ("active", "acknowledged", "latched", "resolved")
OPEN_STATES = frozenset({"active", "acknowledged", "latched"})
SYSTEM = "system"
"""The actor of transitions made by the engine."""

TRANSITIONS: Mapping[tuple[str | None, str], str] = MappingProxyType(
    {
        (None, "open"): "active",
        ("active", "worsen"): "active",
        ("acknowledged", "worsen"): "active",
        ("active", "change"): "active",
        ("acknowledged", "change"): "acknowledged",
        ("active", "ease"): "active",
        ("acknowledged", "ease"): "acknowledged",
        ("active", "recur"): "active",
        ("acknowledged", "recur"): "acknowledged",
        ("active", "clear"): "resolved",
        ("acknowledged", "clear"): "resolved",
        ("active", "latch"): "latched",
        ("latched", "reopen"): "active",
        ("active", "acknowledge"): "acknowledged",
        ("latched", "acknowledge"): "resolved",
        ("active", "renotify"): "active",
        ("latched", "renotify"): "latched",
        ("active", "escalate"): "active",
        ("latched", "escalate"): "latched",
        ("active", "snooze"): "active",
        ("acknowledged", "snooze"): "acknowledged",
        ("latched", "snooze"): "latched",
        ("active", "retire"): "resolved",
        ("acknowledged", "retire"): "resolved",
        ("latched", "retire"): "resolved",
    }
)
"""``(state, action) -> new state``; ``None`` is "no alert yet"."""

EVENT_KIND: Mapping[str, str] = MappingProxyType(
    {
        "open": "opened", "worsen": "worsened", "change": "level_changed",
        "ease": "condition_cleared", "recur": "recurred", "clear": "resolved",
        "latch": "latched", "reopen": "reopened", "acknowledge": "acknowledged",
        "renotify": "renotified", "escalate": "escalated", "snooze": "snoozed",
        "retire": "retired",
    }
)  # fmt: skip
"""The event kind logged for each action."""


def next_state(state: str | None, action: str, alert_id: str = "") -> str:
    """The state after ``action``, or :class:`LifecycleError` when the move is not allowed."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        allowed = sorted(a for (s, a) in TRANSITIONS if s == state)
        raise LifecycleError(
            f"alert {alert_id or '(new)'}: cannot {action} an alert that is "
            f"{state or 'not open'} (allowed: {', '.join(allowed) or 'nothing'})"
        ) from None


@dataclass(slots=True)
class Alert:
    """One episode of one side of one rule (mutable while open; the engine owns it).

    Attributes:
        alert_id: ``<patient>/<rule>/<side>/<trigger time µs>``: the same reading opens the same
            alert again after a restart.
        patient_id: Patient.
        rule_id: Rule of the care plan.
        rule_kind: ``threshold``, ``rate``...
        category: ``physiological`` or ``technical``.
        predicted: A forecast, kept apart from observed alerts.
        side: ``low`` or ``high``.
        metric: Metric watched (``None`` for NEWS2 and payload errors).
        unit: Unit of ``trigger_value`` and ``trigger_limit`` (canonical).
        priority: Priority of the current level.
        level: Current level (0 after the condition cleared).
        peak_level: Highest level of the episode.
        state: One of :data:`STATES`.
        opened_at_us: When the alert opened (engine clock).
        updated_at_us: Last change.
        trigger_value: The signal value that opened (or last worsened) it.
        trigger_limit: The limit crossed.
        trigger_t_us: Time of that reading (device time; engine time for time-based kinds).
        device_id: Device of that reading, if any.
        plan_version: Care-plan version the rule came from.
        sustain: How long the condition had to hold ("for 20 s", "2 readings", "").
        message: One line for people (``heart_rate 134 /min >= 120``).
        acknowledged_by: Who acknowledged.
        acknowledged_at_us: When.
        resolved_at_us: When it resolved.
        escalation_level: Position in the escalation chain (0 = first role).
        last_notified_us: Last notification (open, renotify, escalate).
        escalated_at_us: Last escalation (or opening).
        clear_for_us: How long the condition must stay away before the alert resolves.
        cleared_at_us: When the condition went away (``None`` while present).
    """

    alert_id: str
    patient_id: str
    rule_id: str
    rule_kind: str
    category: str
    predicted: bool
    side: str
    metric: str | None
    unit: str
    priority: str
    level: int
    peak_level: int
    state: str
    opened_at_us: int
    updated_at_us: int
    trigger_value: float | None
    trigger_limit: float | None
    trigger_t_us: int
    device_id: str | None
    plan_version: int
    sustain: str = ""
    message: str = ""
    acknowledged_by: str | None = None
    acknowledged_at_us: int | None = None
    resolved_at_us: int | None = None
    escalation_level: int = 0
    last_notified_us: int | None = None
    escalated_at_us: int | None = None
    clear_for_us: int = 0
    cleared_at_us: int | None = None

    @property
    def is_open(self) -> bool:
        """Not resolved."""
        return self.state in OPEN_STATES

    def values(self) -> tuple[Any, ...]:
        """Every field's value, in declaration order (all fields are flat scalars)."""
        return _ALERT_VALUES(self)

    def copy(self) -> Alert:
        """An independent copy (all fields are immutable values)."""
        return Alert(*_ALERT_VALUES(self))

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return dict(zip(ALERT_FIELDS, _ALERT_VALUES(self), strict=True))


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One line of the append-only alert log.

    Attributes:
        seq: Engine-wide sequence number (stored as ``event_id``).
        kind: One of :data:`EVENT_KIND`'s values, or ``snooze_broken``, ``snooze_expired``.
        alert_id: The alert, or ``""`` for a snooze set while no alert was open.
        patient_id: Patient.
        rule_id: Rule.
        side: ``low`` or ``high``.
        category: ``physiological`` or ``technical``.
        predicted: Forecast alert.
        from_state: State before (``None`` when opening).
        to_state: State after.
        at_us: When (engine clock).
        actor: ``system`` or the person who acted.
        role: Who is to be told (escalation chain), or ``""``.
        priority: Priority after the move.
        level: Level after the move.
        value: Value behind the move (trigger, clear), if any.
        limit: Limit crossed, if any.
        notify: People should be told now (opened, worsened to a new peak, renotified,
            escalated, snooze broken), and no snooze covers it.
        plan_version: Care-plan version.
        detail: Free text (reason, message).
        observed_at_us: Time of the reading behind a level change (device time; engine time for
            clock-driven rules), ``None`` for people's actions and timers.
    """

    seq: int
    kind: str
    alert_id: str
    patient_id: str
    rule_id: str
    side: str
    category: str
    predicted: bool
    from_state: str | None
    to_state: str | None
    at_us: int
    actor: str
    role: str
    priority: str
    level: int
    value: float | None
    limit: float | None
    notify: bool
    plan_version: int
    detail: str = ""
    observed_at_us: int | None = None

    def values(self) -> tuple[Any, ...]:
        """Every field's value, in declaration order (all fields are flat scalars)."""
        return _EVENT_VALUES(self)

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return dict(zip(EVENT_FIELDS, _EVENT_VALUES(self), strict=True))


ALERT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Alert))
""":class:`Alert`'s field names, in declaration order."""
EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AlertEvent))
""":class:`AlertEvent`'s field names, in declaration order."""
_ALERT_VALUES = operator.attrgetter(*ALERT_FIELDS)
_EVENT_VALUES = operator.attrgetter(*EVENT_FIELDS)


@dataclass(frozen=True, slots=True)
class Snooze:
    """No notifications for one patient + rule + side until ``until_us``, unless the condition
    rises above ``max_level``.

    Attributes:
        patient_id: Patient.
        rule_id: Rule.
        side: ``low`` or ``high`` (a high snooze never silences a low).
        until_us: End of the snooze.
        max_level: Highest level it silences; a higher level breaks it.
        by: Who snoozed.
        reason: Why.
        created_at_us: When.
    """

    patient_id: str
    rule_id: str
    side: str
    until_us: int
    max_level: int
    by: str
    reason: str
    created_at_us: int

"""Alert engine settings: notification policy per priority and the periodic sweep.

Defaults follow ``docs/alerts.md``: unacknowledged high-priority alerts are re-notified every
2 minutes and escalated to the next role after 5 minutes; medium every 15 / 30 minutes; low and
info are never re-notified. Snoozes are capped per priority (high 30 min, medium 60, low 120,
info 240).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from alerts.errors import CarePlanError
from alerts.rules import PRIORITIES

__all__ = [
    "DEFAULT_CHECK_INTERVAL_S",
    "DEFAULT_POLICIES",
    "AlertConfig",
    "PriorityPolicy",
]

DEFAULT_CHECK_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class PriorityPolicy:
    """How alerts of one priority reach people.

    Attributes:
        notify: Whether alerts of this priority notify at all (info: no).
        renotify_s: Re-notify an unacknowledged alert this often; ``None`` = never.
        escalate_after_s: Escalate to the next role of ``chain`` after this long without
            acknowledgement (and again after each further period); ``None`` = never.
        snooze_cap_s: Longest snooze allowed.
        chain: Roles told in turn: the first on opening, the next on each escalation.
    """

    notify: bool
    renotify_s: float | None
    escalate_after_s: float | None
    snooze_cap_s: float
    chain: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("renotify_s", "escalate_after_s"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise CarePlanError(f"PriorityPolicy.{name}: expected seconds > 0 or None, "
                                    f"got {v!r}")
        if not (math.isfinite(self.snooze_cap_s) and self.snooze_cap_s > 0):
            raise CarePlanError(f"PriorityPolicy.snooze_cap_s: expected seconds > 0, got "
                                f"{self.snooze_cap_s!r}")
        if self.notify and not self.chain:
            raise CarePlanError("PriorityPolicy.chain: a notifying priority needs at least "
                                "one role")

    def role(self, escalation_level: int) -> str:
        """The role told at this escalation level (the last one once the chain ends)."""
        if not self.chain:
            return ""
        return self.chain[min(escalation_level, len(self.chain) - 1)]


DEFAULT_POLICIES: Mapping[str, PriorityPolicy] = MappingProxyType(
    {
        "high": PriorityPolicy(True, 120.0, 300.0, 1800.0,
                               ("bedside_nurse", "charge_nurse", "rapid_response_team")),
        "medium": PriorityPolicy(True, 900.0, 1800.0, 3600.0, ("bedside_nurse", "charge_nurse")),
        "low": PriorityPolicy(True, None, None, 7200.0, ("bedside_nurse",)),
        "info": PriorityPolicy(False, None, None, 14400.0, ()),
    }
)


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Engine settings.

    Attributes:
        policies: One :class:`PriorityPolicy` per priority.
        check_interval_s: Staleness and NEWS2 of every patient are re-evaluated at most this
            often (engine clock) by :meth:`AlertEngine.tick`; patients with new readings are
            evaluated with every batch.
    """

    policies: Mapping[str, PriorityPolicy] = field(default_factory=lambda: DEFAULT_POLICIES)
    check_interval_s: float = DEFAULT_CHECK_INTERVAL_S

    def __post_init__(self) -> None:
        missing = [p for p in PRIORITIES if p not in self.policies]
        if missing:
            raise CarePlanError(f"AlertConfig.policies: missing priority {missing[0]!r}")
        if not (math.isfinite(self.check_interval_s) and self.check_interval_s > 0):
            raise CarePlanError(f"AlertConfig.check_interval_s: expected seconds > 0, got "
                                f"{self.check_interval_s!r}")

"""The episode book: open alerts, snoozes and the event log, driven by level changes and by
people.

:class:`EpisodeBook` applies episode level changes from :func:`alerts.evaluate.evaluate`
through the lifecycle table, decides who is told (policy, snooze, escalation chain), and runs
the timers (re-notification, escalation, snooze expiry). It works on one change at a time:
changes are rare (a handful per batch), so this is the only Python loop of the engine, and it
never sees a reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from alerts.config import AlertConfig
from alerts.errors import AlertActionError
from alerts.lifecycle import EVENT_KIND, SYSTEM, Alert, AlertEvent, Snooze, next_state
from alerts.rules import PRIORITY_RANK, Rule

__all__ = ["EpisodeBook", "EpisodeKey", "describe", "priority_of", "sustain_text"]

EpisodeKey = tuple[str, str, str]
"""``(patient_id, rule_id, side)``."""


def priority_of(rule: Rule, level: int) -> str:
    """The priority of ``rule`` at ``level`` (0 = none: ``info``)."""
    if level <= 0:
        return "info"
    if rule.kind == "news2":
        return ("low", "medium", "high")[min(level, 3) - 1]
    if rule.kind == "technical" and rule.signal != "threshold":
        return rule.priority
    return rule.priority if level >= 2 else rule.warning_priority


def sustain_text(rule: Rule) -> str:
    """How long the condition must hold, for people ("for 20 s", "2 readings")."""
    parts = []
    if rule.for_s:
        parts.append(f"for {rule.for_s:g} s")
    count = rule.consecutive
    if rule.kind == "technical" and rule.signal != "threshold" and count is None:
        count = 3
    if count and count > 1:
        parts.append(f"{count} readings")
    return " or ".join(parts)


def describe(rule: Rule, side: str, value: float | None, limit: float | None, unit: str) -> str:
    """One line naming the value and the limit crossed (``heart_rate 134 /min >= 120``)."""
    op = ("<=" if side == "low" else ">=") if rule.inclusive else ("<" if side == "low" else ">")
    v = "?" if value is None or not math.isfinite(value) else f"{value:.4g}"
    lim = "?" if limit is None else f"{limit:.4g}"
    if rule.kind == "news2":
        return f"NEWS2 aggregate {v}"
    if rule.kind == "staleness":
        return f"{rule.metric}: no reading for {v} reporting intervals (limit {lim})"
    if rule.kind == "technical" and rule.signal == "decode_errors":
        return "device payloads rejected in a row"
    if rule.kind == "technical" and rule.signal == "sensor_error":
        return f"{rule.metric or 'readings'} flagged by the device"
    if rule.kind == "rate":
        return f"{rule.metric} {'falling' if side == 'low' else 'rising'} {v} {unit} {op} {lim}"
    if rule.kind == "predicted":
        horizon = (rule.horizon_s or 0) / 60
        return f"{rule.metric} forecast {v} {unit} within {horizon:g} min {op} {lim} (predicted)"
    return f"{rule.metric} {v} {unit} {op} {lim}"


class EpisodeBook:
    """Open alerts, snoozes, and the events not yet persisted.

    Args:
        config: Notification policies.
        seq: Last event sequence number used (restored from the store).
    """

    def __init__(self, config: AlertConfig, seq: int = 0) -> None:
        self.config = config
        self.seq = seq
        self.alerts: dict[str, Alert] = {}
        self.by_key: dict[EpisodeKey, str] = {}
        self.snoozes: dict[EpisodeKey, Snooze] = {}
        self.pending: list[AlertEvent] = []
        self.dirty: dict[str, Alert] = {}
        self.snoozes_dirty = False
        self._next_due: int | None = None  # no timer before this; None: look at every alert

    # -- bookkeeping ---------------------------------------------------------------------------

    def restore(self, alerts: Iterable[Alert], snoozes: Iterable[Snooze]) -> None:
        """Load open alerts and snoozes (after a restart)."""
        for a in alerts:
            if a.is_open:
                self.alerts[a.alert_id] = a
                self.by_key[(a.patient_id, a.rule_id, a.side)] = a.alert_id
        self.snoozes = {(s.patient_id, s.rule_id, s.side): s for s in snoozes}
        self._next_due = None

    def _event(self, alert: Alert | None, kind: str, now_us: int, *, key: EpisodeKey | None = None,
               from_state: str | None = None, actor: str = SYSTEM, notify: bool = False,
               role: str = "", detail: str = "", value: float | None = None,
               limit: float | None = None, observed_us: int | None = None) -> AlertEvent:
        self.seq += 1
        if alert is not None:
            ev = AlertEvent(
                self.seq, kind, alert.alert_id, alert.patient_id, alert.rule_id, alert.side,
                alert.category, alert.predicted, from_state, alert.state, now_us, actor, role,
                alert.priority, alert.level, value, limit, notify, alert.plan_version, detail,
                observed_us,
            )
            alert.updated_at_us = now_us
            self.dirty[alert.alert_id] = alert
        else:
            assert key is not None
            ev = AlertEvent(self.seq, kind, "", key[0], key[1], key[2], "", False, None, None,
                            now_us, actor, role, "info", 0, None, None, notify, 0, detail)
        self.pending.append(ev)
        self._next_due = None
        return ev

    def _move(self, alert: Alert, action: str, now_us: int, **kw: object) -> AlertEvent:
        before = alert.state
        alert.state = next_state(before, action, alert.alert_id)
        if alert.state == "resolved":
            alert.resolved_at_us = now_us
            self.alerts.pop(alert.alert_id, None)
            key = (alert.patient_id, alert.rule_id, alert.side)
            if self.by_key.get(key) == alert.alert_id:
                del self.by_key[key]
        return self._event(alert, EVENT_KIND[action], now_us, from_state=before, **kw)  # type: ignore[arg-type]

    def _snoozed(self, key: EpisodeKey, level: int, now_us: int) -> bool:
        s = self.snoozes.get(key)
        return s is not None and s.until_us > now_us and level <= s.max_level

    def _notify_role(self, alert: Alert, now_us: int) -> tuple[bool, str]:
        """Whether to tell people now, and whom; records the notification time."""
        policy = self.config.policies[alert.priority]
        key = (alert.patient_id, alert.rule_id, alert.side)
        if not policy.notify or self._snoozed(key, alert.level, now_us):
            return False, ""
        alert.last_notified_us = now_us
        return True, policy.role(alert.escalation_level)

    # -- level changes -------------------------------------------------------------------------

    def change(self, key: EpisodeKey, rule: Rule, plan_version: int, unit: str, *, level: int,
               prev: int, t_us: int, value: float | None, limit: float | None,
               clear: float | None, device_id: str | None, now_us: int) -> list[AlertEvent]:
        """Apply one episode level change (``prev`` -> ``level``); ``value`` is the signal that
        crossed ``limit`` (or, when the level falls to 0, the one back past ``clear``)."""
        out: list[AlertEvent] = []
        alert_id = self.by_key.get(key)
        alert = self.alerts.get(alert_id) if alert_id else None
        if level > 0 and alert is None:
            alert = self._open(key, rule, plan_version, unit, level, t_us, value, limit,
                               device_id, now_us)
            ok, role = self._notify_role(alert, now_us)
            out.append(self._event(alert, "opened", now_us, notify=ok, role=role, value=value,
                                   limit=limit, detail=alert.message, observed_us=t_us))
            return out
        if alert is None:
            return out
        if level > 0:
            new_peak = level > alert.peak_level
            broke = self._break_snooze(key, alert, level, now_us, out)
            if alert.state == "latched":
                action = "reopen"
            elif new_peak:
                action = "worsen"
            elif alert.cleared_at_us is not None:
                action = "recur"
            else:
                action = "change"
            if action == "change":
                alert.level, alert.priority = level, priority_of(rule, level)
            else:
                self._raise(alert, rule, level, t_us, value, limit, device_id, unit)
            alert.cleared_at_us = None
            ok, role = self._notify_role(alert, now_us) if new_peak or broke else (False, "")
            out.append(self._move(alert, action, now_us, notify=ok, role=role, value=value,
                                  limit=limit, observed_us=t_us,
                                  detail=alert.message if action != "change" else ""))
            return out
        alert.level = 0
        peak = priority_of(rule, alert.peak_level)
        latching = (peak == "high" and alert.category == "physiological"
                    and not alert.predicted and alert.state == "active")
        if latching:
            action = "latch"
        elif alert.clear_for_us > 0:
            action = "ease"
            alert.cleared_at_us = now_us
        else:
            action = "clear"
        out.append(self._move(alert, action, now_us, value=value, limit=clear, observed_us=t_us))
        return out

    def _break_snooze(self, key: EpisodeKey, alert: Alert, level: int, now_us: int,
                      out: list[AlertEvent]) -> bool:
        snooze = self.snoozes.get(key)
        if snooze is None or snooze.until_us <= now_us or level <= snooze.max_level:
            return False
        del self.snoozes[key]
        self.snoozes_dirty = True
        out.append(self._event(alert, "snooze_broken", now_us, from_state=alert.state,
                               detail=f"level {level} above the snoozed level "
                                      f"{snooze.max_level}"))
        return True

    def _open(self, key: EpisodeKey, rule: Rule, plan_version: int, unit: str, level: int,
              t_us: int, value: float | None, limit: float | None, device_id: str | None,
              now_us: int) -> Alert:
        patient, rule_id, side = key
        alert_id = f"{patient}/{rule_id}/{side}/{t_us}"
        n = 1
        while alert_id in self.alerts:
            n += 1
            alert_id = f"{patient}/{rule_id}/{side}/{t_us}.{n}"
        alert = Alert(
            alert_id, patient, rule_id, rule.kind, rule.category, rule.predicted, side,
            rule.metric, unit, priority_of(rule, level), level, level,
            next_state(None, "open"), now_us, now_us, value, limit, t_us, device_id,
            plan_version, sustain_text(rule), describe(rule, side, value, limit, unit),
            escalated_at_us=now_us, clear_for_us=round(rule.clear_for_s * 1e6),
        )
        self.alerts[alert_id] = alert
        self.by_key[key] = alert_id
        return alert

    def _raise(self, alert: Alert, rule: Rule, level: int, t_us: int, value: float | None,
               limit: float | None, device_id: str | None, unit: str) -> None:
        alert.level = level
        alert.peak_level = max(alert.peak_level, level)
        alert.priority = priority_of(rule, level)
        alert.trigger_value, alert.trigger_limit, alert.trigger_t_us = value, limit, t_us
        alert.device_id = device_id
        alert.message = describe(rule, alert.side, value, limit, unit)

    def retire(self, key: EpisodeKey, now_us: int, detail: str) -> list[AlertEvent]:
        """Close the open alert of ``key`` (its rule left the care plan)."""
        alert_id = self.by_key.get(key)
        if alert_id is None:
            return []
        return [self._move(self.alerts[alert_id], "retire", now_us, detail=detail)]

    # -- people --------------------------------------------------------------------------------

    def acknowledge(self, alert_id: str, by: str, now_us: int, note: str = "") -> AlertEvent:
        """``by`` has seen the alert (a latched one resolves)."""
        if not by:
            raise AlertActionError("acknowledge: by: expected who acknowledges")
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise AlertActionError(f"acknowledge: no open alert {alert_id!r}")
        alert.acknowledged_by, alert.acknowledged_at_us = by, now_us
        return self._move(alert, "acknowledge", now_us, actor=by, detail=note)

    def snooze(self, key: EpisodeKey, rule: Rule, duration_s: float, by: str, now_us: int,
               reason: str = "") -> AlertEvent:
        """No notifications for ``key`` for ``duration_s``, up to the priority's cap.

        The cap is that of the alert's priority, or of the rule's top priority when no alert
        is open; the snooze covers the current level (level 1 when none is open)."""
        if not by:
            raise AlertActionError("snooze: by: expected who snoozes")
        alert_id = self.by_key.get(key)
        alert = self.alerts.get(alert_id) if alert_id else None
        top = max((priority_of(rule, lv) for lv in (1, 2, 3)), key=PRIORITY_RANK.__getitem__)
        priority = alert.priority if alert is not None else top
        cap = self.config.policies[priority].snooze_cap_s
        if not (math.isfinite(duration_s) and 0 < duration_s <= cap):
            raise AlertActionError(
                f"snooze: duration: {duration_s:g} s is outside (0, {cap:g}] s, the cap for "
                f"{priority}-priority alerts of rule {key[1]!r}"
            )
        level = alert.level if alert is not None and alert.level > 0 else 1
        self.snoozes[key] = Snooze(*key, now_us + round(duration_s * 1e6), level, by, reason,
                                   now_us)
        self.snoozes_dirty = True
        detail = f"for {duration_s:g} s" + (f": {reason}" if reason else "")
        if alert is not None:
            return self._move(alert, "snooze", now_us, actor=by, detail=detail)
        return self._event(None, "snoozed", now_us, key=key, actor=by, detail=detail)

    # -- timers --------------------------------------------------------------------------------

    def timers(self, now_us: int) -> list[AlertEvent]:
        """Snooze expiry, re-notification, escalation and resolution after ``clear_for``, due
        at ``now_us`` (nothing is looked at before the earliest known due time)."""
        if self._next_due is not None and now_us < self._next_due:
            return []
        out: list[AlertEvent] = []
        for key, snooze in list(self.snoozes.items()):
            if snooze.until_us <= now_us:
                del self.snoozes[key]
                self.snoozes_dirty = True
                alert_id = self.by_key.get(key)
                alert = self.alerts.get(alert_id) if alert_id else None
                if alert is None:
                    out.append(self._event(None, "snooze_expired", now_us, key=key))
                    continue
                if alert.state in ("active", "latched"):
                    alert.last_notified_us = None  # tell people again now (below)
                    alert.escalated_at_us = now_us  # escalation counts from the snooze's end
                out.append(self._event(alert, "snooze_expired", now_us, from_state=alert.state))
        for alert in list(self.alerts.values()):
            event = self._due(alert, now_us)
            if event is not None:
                out.append(event)
        self._next_due = self._earliest(now_us)
        return out

    def _due(self, alert: Alert, now_us: int) -> AlertEvent | None:
        if alert.cleared_at_us is not None and alert.state in ("active", "acknowledged"):
            if now_us - alert.cleared_at_us >= alert.clear_for_us:
                return self._move(alert, "clear", now_us, detail=(
                    f"condition away for {alert.clear_for_us / 1e6:g} s"))
            return None
        if alert.state not in ("active", "latched"):
            return None
        key = (alert.patient_id, alert.rule_id, alert.side)
        if self._snoozed(key, alert.level or alert.peak_level, now_us):
            return None
        policy = self.config.policies[alert.priority]
        if not policy.notify:
            return None
        esc = policy.escalate_after_s
        since_esc = now_us - (alert.escalated_at_us or alert.opened_at_us)
        if esc is not None and since_esc >= esc * 1e6:
            if alert.escalation_level < len(policy.chain) - 1:
                alert.escalation_level += 1
            alert.escalated_at_us = alert.last_notified_us = now_us
            return self._move(alert, "escalate", now_us, notify=True,
                              role=policy.role(alert.escalation_level),
                              detail=f"not acknowledged for {since_esc / 1e6:.0f} s")
        renotify = policy.renotify_s
        last = alert.last_notified_us
        if last is None or (renotify is not None and now_us - last >= renotify * 1e6):
            alert.last_notified_us = now_us
            return self._move(alert, "renotify", now_us, notify=True,
                              role=policy.role(alert.escalation_level))
        return None

    def _earliest(self, now_us: int) -> int:
        """When the next timer can fire (a conservative lower bound)."""
        due = [s.until_us for s in self.snoozes.values()]
        for a in self.alerts.values():
            if a.cleared_at_us is not None and a.state in ("active", "acknowledged"):
                due.append(a.cleared_at_us + a.clear_for_us)
                continue
            if a.state not in ("active", "latched"):
                continue
            policy = self.config.policies[a.priority]
            if not policy.notify:
                continue
            if policy.escalate_after_s is not None:
                due.append((a.escalated_at_us or a.opened_at_us)
                           + round(policy.escalate_after_s * 1e6))
            if a.last_notified_us is None:
                due.append(now_us)
            elif policy.renotify_s is not None:
                due.append(a.last_notified_us + round(policy.renotify_s * 1e6))
        return min(due, default=now_us + 3_600_000_000)

    # -- queries and persistence ---------------------------------------------------------------

    def open_alerts(self, patient_id: str | None = None) -> list[Alert]:
        """Open alerts (of one patient), highest priority first, then oldest."""
        found = [a for a in self.alerts.values() if patient_id in (None, a.patient_id)]
        return sorted(found, key=lambda a: (-PRIORITY_RANK[a.priority], a.opened_at_us))

    def take(self) -> tuple[list[AlertEvent], list[Alert], list[Snooze] | None]:
        """Events and changed alerts since the last call (copies), and the snoozes when they
        changed, for persistence."""
        events, self.pending = self.pending, []
        alerts = [a.copy() for a in self.dirty.values()]
        self.dirty = {}
        snoozes = list(self.snoozes.values()) if self.snoozes_dirty else None
        self.snoozes_dirty = False
        return events, alerts, snoozes


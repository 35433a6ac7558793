"""What people do from the dashboard, each action audited and pushed to the live feed.

:class:`AlertDesk` wraps the alert engine's person-facing API (acknowledge, snooze, resolve,
care plans, manual NEWS2 observations) so that every action

1. goes through the engine (its lifecycle table refuses illegal moves),
2. is written to the audit log with the user and role,
3. reaches every live client as an ``alerts`` or ``plans`` delta at once, and
4. is persisted by an engine sync (the alert event log).

"Resolve" by a person is the acknowledgement of a latched alert (its condition has cleared); an
alert whose condition still holds cannot be resolved by hand, only acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alerts.engine import AlertEngine
from alerts.errors import AlertActionError, LifecycleError
from alerts.lifecycle import Alert
from alerts.plan_store import CarePlans
from alerts.plans import CarePlan
from dashboard.audit import AuditEntry, record
from dashboard.errors import DashboardError
from dashboard.feed import LiveFeed, alert_json
from dashboard.users import User
from pipeline.store import DuckDbStore

__all__ = ["AlertDesk", "EngineUnavailable", "UnknownAlert"]


class EngineUnavailable(DashboardError):
    """No alert engine runs in this process (HTTP 503)."""


class UnknownAlert(DashboardError):
    """No open alert has this id (HTTP 404)."""


class AlertDesk:
    """Alert and care-plan actions for the API.

    Args:
        store: The open store.
        engine: The alert engine, or ``None`` (alert actions then answer 503).
        feed: The live feed hub.
        clock_us: Wall clock, UTC microseconds (injectable).
    """

    def __init__(self, store: DuckDbStore, engine: AlertEngine | None, feed: LiveFeed,
                 clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.store = store
        self.engine = engine
        self.feed = feed
        self.clock_us = clock_us
        self.plans = CarePlans(store, clock_us)
        self._lock = asyncio.Lock()

    def _engine(self) -> AlertEngine:
        if self.engine is None:
            raise EngineUnavailable("alerts: no alert engine runs in this service")
        return self.engine

    def _open(self, alert_id: str) -> Alert:
        for alert in self._engine().open_alerts():
            if alert.alert_id == alert_id:
                return alert
        raise UnknownAlert(f"alert_id: no open alert {alert_id!r}")

    async def audit(self, user: User, action: str, target: str, patient_id: str | None = None,
                    detail: str = "") -> int:
        """Append one audit entry now."""
        entry = AuditEntry(self.clock_us(), user.username, user.role, action, patient_id, target,
                           detail)
        return await self.store.call(record, entry)

    async def sync(self) -> None:
        """Persist the engine's changes and put stored plan versions in force (serialized)."""
        if self.engine is None:
            return
        async with self._lock:
            events = await self.engine.sync(self.store, self.clock_us())
        self.feed.on_alert_events(events)

    # -- alerts ------------------------------------------------------------------------------

    async def acknowledge(self, user: User, alert_id: str, note: str = "") -> dict[str, Any]:
        """Acknowledge an open alert; returns the event."""
        alert = self._open(alert_id)
        ev = self._engine().acknowledge(alert_id, user.username, self.clock_us(), note)
        self.feed.on_alert_events([ev])
        await self.audit(user, "acknowledge", alert_id, alert.patient_id,
                         f"{alert.message}" + (f"; note: {note}" if note else ""))
        await self.sync()
        return ev.to_json()

    async def resolve(self, user: User, alert_id: str, note: str = "") -> dict[str, Any]:
        """Resolve a latched alert (condition cleared, waiting for a person).

        Raises:
            LifecycleError: The alert's condition still holds.
        """
        alert = self._open(alert_id)
        if alert.state != "latched":
            raise LifecycleError(
                f"resolve: alert {alert_id!r} is {alert.state}: its condition has not cleared, so "
                "it cannot be resolved by hand (acknowledge it; it resolves when it clears)")
        ev = self._engine().acknowledge(alert_id, user.username, self.clock_us(),
                                        note or "resolved")
        self.feed.on_alert_events([ev])
        await self.audit(user, "resolve", alert_id, alert.patient_id, note)
        await self.sync()
        return ev.to_json()

    async def snooze(self, user: User, *, alert_id: str | None, patient_id: str | None,
                     rule_id: str | None, side: str | None, duration_s: float,
                     reason: str) -> dict[str, Any]:
        """Snooze one patient + rule + side (taken from ``alert_id`` when given)."""
        engine = self._engine()
        if alert_id is not None:
            alert = self._open(alert_id)
            patient_id, rule_id, side = alert.patient_id, alert.rule_id, alert.side
        if patient_id is None or rule_id is None or side is None:
            raise AlertActionError("snooze: give alert_id, or patient_id, rule_id and side")
        ev = engine.snooze(patient_id, rule_id, side, duration_s, user.username,
                           self.clock_us(), reason)
        self.feed.on_alert_events([ev])
        await self.audit(user, "snooze", ev.alert_id or f"{patient_id}/{rule_id}/{side}",
                         patient_id, f"{duration_s:g} s" + (f": {reason}" if reason else ""))
        await self.sync()
        return ev.to_json()

    async def observation(self, user: User, patient_id: str, consciousness: str | None,
                          supplemental_oxygen: bool | None) -> list[dict[str, Any]]:
        """A manual NEWS2 entry (ACVPU and/or supplemental oxygen)."""
        events = self._engine().record_observation(
            patient_id, by=user.username, now_us=self.clock_us(), consciousness=consciousness,
            supplemental_oxygen=supplemental_oxygen)
        self.feed.on_alert_events(events)
        detail = ", ".join(f"{k}={v}" for k, v in (("consciousness", consciousness),
                                                  ("supplemental_oxygen", supplemental_oxygen))
                           if v is not None)
        await self.audit(user, "observation", patient_id, patient_id, detail)
        await self.sync()
        return [e.to_json() for e in events]

    def open_alerts(self, patient_id: str | None = None) -> list[dict[str, Any]]:
        """Open alerts, highest priority first (empty without an engine)."""
        if self.engine is None:
            return []
        return [alert_json(a) for a in self.engine.open_alerts(patient_id)]

    # -- care plans --------------------------------------------------------------------------

    async def _put_in_force(self, user: User, plan: CarePlan, action: str) -> CarePlan:
        if self.engine is not None:
            self.feed.on_alert_events(self.engine.set_plans([plan], self.clock_us()))
        self.feed.set_plan_version(plan.patient_id, plan.version)
        await self.audit(user, action, f"{plan.patient_id} v{plan.version}", plan.patient_id,
                         plan.reason + (f" (template {plan.template})" if plan.template else ""))
        await self.sync()
        return plan

    async def set_plan(self, user: User, patient_id: str, document: Mapping[str, Any],
                       reason: str) -> CarePlan:
        """Store and put in force a new plan version (validated; errors name the field)."""
        plan = await self.plans.set(patient_id, document, author=user.username, reason=reason)
        return await self._put_in_force(user, plan, "care_plan.set")

    async def apply_template(self, user: User, patient_id: str, templates: Sequence[str],
                             reason: str) -> CarePlan:
        """A new plan version made from shipped templates."""
        plan = await self.plans.apply_template(patient_id, list(templates), author=user.username,
                                               reason=reason)
        return await self._put_in_force(user, plan, "care_plan.template")

"""The alert engine and the dashboard, attached to a running service.

The engine scores every normalized batch before it is stored and hands its alert events to the
live feed; after the commit the readings go to the feed too. A driver task ticks the engine
(staleness, NEWS2 freshness, escalation, re-notification) and syncs its state and events to the
store, so episodes survive a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from alerts.engine import AlertEngine
from alerts.errors import PlanNotFound
from alerts.plan_store import CarePlans
from dashboard.config import DashboardConfig
from dashboard.demo import create_demo_users
from dashboard.driver import EngineDriver
from dashboard.feed import LiveFeed
from dashboard.server import DashboardServer
from vitalwire.service import Service

__all__ = ["alerts_and_dashboard", "apply_demo_plans"]


@asynccontextmanager
async def alerts_and_dashboard(
    svc: Service, http: str | None = None, *, demo_users: bool = False
) -> AsyncIterator[DashboardServer]:
    """Start the engine, the feed and the web server for ``svc``; stop them on exit."""
    engine = await AlertEngine.from_store(svc.store)
    svc.add_assignment_listener(engine.set_assignments)
    config = DashboardConfig().with_http(http) if http else DashboardConfig()
    feed = LiveFeed(config)
    async with DashboardServer(
        config, store=svc.store, engine=engine, feed=feed, registry_changed=svc.refresh_assignments
    ) as server, EngineDriver(server.context.desk) as driver:
        svc.add_pre_commit(driver.before_commit)
        svc.add_batch_listener(driver.after_commit)
        if demo_users:
            await create_demo_users(svc.store)
        yield server


async def apply_demo_plans(svc: Service, server: DashboardServer, plan: Any) -> int:
    """Give every simulated patient without a care plan one from the shipped templates:
    adult ward, plus type 1 diabetes on CGM for the diabetic ones. Returns plans created."""
    plans = CarePlans(svc.store, svc.clock_us)
    made = 0
    for patient in plan.patients:
        try:
            await plans.current(patient.patient_id)
            continue
        except PlanNotFound:
            pass
        templates = ["adult-ward", *(["t1d-cgm"] if patient.diabetic else [])]
        await plans.apply_template(patient.patient_id, templates, author="demo",
                                   reason="demo set-up")
        made += 1
    await server.context.desk.sync()
    return made

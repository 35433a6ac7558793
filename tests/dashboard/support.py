"""Helpers for the dashboard tests: a store + engine + feed + server stack, readings, logins."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl

from alerts.engine import AlertEngine
from alerts.plan_store import CarePlans
from dashboard.config import DashboardConfig
from dashboard.desk import AlertDesk
from dashboard.driver import EngineDriver
from dashboard.feed import LiveFeed
from dashboard.server import DashboardServer
from dashboard.users import add_user, hash_password
from pipeline import registry
from pipeline.readings import (
    MESSAGE_SCHEMA,
    QUARANTINE_SCHEMA,
    READING_SCHEMA,
    ReadingBatch,
    empty_frame,
)
from pipeline.store import DuckDbStore, StoreConfig

USERS = {
    "nurse": ("clinician", "nurse-password"),
    "coord": ("coordinator", "coord-password"),
    "boss": ("admin", "boss-password"),
}
PATIENTS = ("P001", "P002", "P003")
UNITS = {"heart_rate": "/min", "spo2": "%", "respiratory_rate": "/min", "systolic_bp": "mm[Hg]",
         "diastolic_bp": "mm[Hg]", "body_temperature": "Cel"}


@functools.cache
def _hash(password: str) -> str:
    return hash_password(password)


def iso(t_us: int) -> datetime:
    return datetime.fromtimestamp(t_us / 1e6, UTC)


def batch(rows: Sequence[tuple[str, str, float, int]]) -> ReadingBatch:
    """Readings ``(patient_id, metric, value, t_us)`` (device ``D-<patient>``, canonical unit)."""
    frame = pl.DataFrame(
        [(p, f"D-{p}", "mqtt", m, float(v), UNITS[m], iso(t), iso(t), i, 0, 0)
         for i, (p, m, v, t) in enumerate(rows)],
        schema=READING_SCHEMA, orient="row",
    )
    return ReadingBatch(frame, empty_frame(MESSAGE_SCHEMA), empty_frame(QUARANTINE_SCHEMA))


@dataclass
class Stack:
    """A running dashboard over a real store and alert engine (no MQTT)."""

    store: DuckDbStore
    engine: AlertEngine
    feed: LiveFeed
    desk: AlertDesk
    server: DashboardServer
    driver: EngineDriver

    @property
    def url(self) -> str:
        return self.server.url

    async def push(self, rows: Sequence[tuple[str, str, float, int]]) -> None:
        """Store readings and hand them to the feed and engine, as the service does."""
        b = batch(rows)
        await self.store.write(b)
        self.driver.on_batch(b)


@contextlib.asynccontextmanager
async def running_stack(tmp_path: Path, config: DashboardConfig | None = None,
                        clock_us: object = None) -> AsyncIterator[Stack]:
    """Store (file), engine with adult-ward plans for P001-P003, users, feed, server, driver."""
    config = config or DashboardConfig(port=0, heartbeat_s=1.0)
    store = DuckDbStore(StoreConfig(path=tmp_path / "dash.duckdb", idle_checkpoint_s=0))
    async with store:
        engine = await AlertEngine.from_store(store)
        plans = CarePlans(store)
        for pid in PATIENTS:
            await plans.apply_template(pid, "adult-ward", author="setup", reason="admitted")
            await store.call(registry.assign, f"D-{pid}", pid, iso(0))
        from dashboard import schema

        await store.call(schema.migrate)
        for name, (role, password) in USERS.items():
            await store.call(add_user, name, role, _hash(password))
        await engine.sync(store, 0)
        feed = LiveFeed(config) if clock_us is None else LiveFeed(config, clock_us=clock_us)  # type: ignore[arg-type]
        async with DashboardServer(config, store=store, engine=engine, feed=feed) as server:
            desk = server.context.desk
            async with EngineDriver(desk, tick_s=0.2) as driver:
                yield Stack(store, engine, feed, desk, server, driver)


@contextlib.asynccontextmanager
async def logged_in(base: str, user: str, *,
                    token: bool = False) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client logged in as ``user`` (cookie session, or bearer with ``token``) and its CSRF
    token."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post("/api/auth/login", json={"username": user,
                                                        "password": USERS[user][1],
                                                        "issue_token": token})
        assert r.status_code == 200, r.text
        body = r.json()
        if token:
            client.headers["Authorization"] = f"Bearer {body['token']}"
            client.cookies.clear()
        yield client, body["csrf_token"]

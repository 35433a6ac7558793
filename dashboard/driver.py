"""Runs the alert engine beside a :class:`vitalwire.service.Service` and feeds the dashboard.

Until the service drives the engine itself, :class:`EngineDriver` does it from the outside::

    async with Service(config) as svc, EngineDriver(desk) as driver:
        svc.add_batch_listener(driver.on_batch)

After each commit the batch goes to the live feed and through the engine; the engine's events go
to the feed; a task ticks the engine (staleness, NEWS2, escalation) every ``tick_s`` and syncs
it to the store (events, alert state, care-plan versions stored by others).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dashboard.desk import AlertDesk
from pipeline.errors import StoreError
from pipeline.readings import ReadingBatch

__all__ = ["EngineDriver"]

log = logging.getLogger(__name__)


class EngineDriver:
    """Engine processing, ticks and syncs for one service.

    Args:
        desk: The dashboard's desk (store, engine, feed, clock).
        tick_s: Seconds between ticks and syncs.
    """

    def __init__(self, desk: AlertDesk, tick_s: float = 1.0) -> None:
        self.desk = desk
        self.tick_s = tick_s
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()

    def on_batch(self, batch: ReadingBatch, result: object = None) -> None:
        """A service batch listener: feed, engine, feed again. Never blocks."""
        self.after_commit(batch, result)
        self.before_commit(batch)

    def before_commit(self, batch: ReadingBatch) -> None:
        """Score a normalized batch and hand its alerts on, before the storage write."""
        desk = self.desk
        if desk.engine is not None:
            desk.feed.on_alert_events(desk.engine.process(batch, desk.clock_us()))
            self._dirty.set()

    def after_commit(self, batch: ReadingBatch, result: object = None) -> None:
        """Send the committed readings to the live feed."""
        self.desk.feed.on_batch(batch)

    async def __aenter__(self) -> EngineDriver:
        self._task = asyncio.create_task(self._loop(), name="dashboard-engine-driver")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError):
            await self.desk.sync()

    async def _loop(self) -> None:
        desk = self.desk
        while True:
            # A fixed cadence: syncing after every batch would double publish->alert latency.
            await asyncio.sleep(self.tick_s)
            self._dirty.clear()
            if desk.engine is None:
                continue
            desk.feed.on_alert_events(desk.engine.tick(desk.clock_us()))
            try:
                await desk.sync()
            except StoreError as exc:
                log.warning("alert engine sync failed (retried on the next tick): %s", exc)

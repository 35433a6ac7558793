"""The service: one function wires the graph, top to bottom.

::

    MqttReceiver ──> Batcher (decode via Router) ──> [queue of batches] ──> writer task:
        normalize -> DuckDbStore.write (one transaction) -> PUBACK the batch's messages
        -> batch listeners (alerts, dashboard, benchmarks)

Start order is sinks first (store, then receiver); stop order is sources first: the batcher
flushes what it holds, the writer commits and acknowledges it, then the receiver disconnects
and the store checkpoints and closes. Nothing received is acknowledged before it is committed,
so a crash at any point loses nothing: the broker redelivers, and the store de-duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from gateway.ble.receiver import BleReceiver
from gateway.formats.profiles import load_profiles
from gateway.formats.router import Router, load_default_profiles
from gateway.mqtt_receiver import MqttReceiver
from gateway.sources import MergedSource, Receiver
from pipeline.batcher import Batcher, MessageSource
from pipeline.catalogue import catalogue
from pipeline.errors import StoreLocked
from pipeline.fhir.exporter import FhirExporter
from pipeline.normalize import Normalizer
from pipeline.readings import ReadingBatch
from pipeline.store import DuckDbStore, WriteResult
from vitalwire.config import ServiceConfig

__all__ = ["Service", "ServiceStats", "build_router"]

log = logging.getLogger(__name__)

BatchListener = Callable[[ReadingBatch, WriteResult], None]


def build_router(config: ServiceConfig) -> Router:
    """Routes and device profiles (shipped plus configured folders), validated."""
    known = catalogue().names
    profiles = dict(load_default_profiles(known))
    for folder in config.profile_dirs:
        profiles.update(load_profiles(folder, known))
    return Router(config.routes, profiles)


@dataclass(slots=True)
class ServiceStats:
    """Running totals, for the progress line and tests."""

    messages: int = 0
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    started: float = field(default_factory=time.monotonic)
    by_reason: dict[str, int] = field(default_factory=dict)

    def rate(self) -> float:
        """Stored readings per second since start."""
        return self.stored / max(time.monotonic() - self.started, 1e-9)


class Service:
    """Gateway + pipeline + store as one async context manager.

    Args:
        config: The service configuration.
        source: A message source to use instead of the MQTT receiver (tests, replays).
        clock_us: Gateway clock, UTC microseconds (injectable).
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        source: MessageSource | None = None,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.config = config
        self.router = build_router(config)
        self.normalizer = Normalizer.from_catalogue(config=config.normalize)
        self.clock_us = clock_us
        self.stats = ServiceStats()
        self.store = DuckDbStore(config.store)
        self.receiver: MqttReceiver | None = None
        self.fhir: FhirExporter | None = None
        self.ble: BleReceiver | None = None
        self._source = source
        self._listeners: list[BatchListener] = []
        self._pre_commit: list[Callable[[ReadingBatch], None]] = []
        self._assignment_listeners: list[Callable[[pl.DataFrame], None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._batcher: Batcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[tuple[ReadingBatch, list[object]] | None] = asyncio.Queue(2)
        self._assignments: pl.DataFrame | None = None
        self._stopped = False
        self._writing = False
        self.failed: BaseException | None = None

    def add_pre_commit(self, fn: Callable[[ReadingBatch], None]) -> None:
        """Call ``fn(batch)`` with each normalized batch before it is stored (alerts go out
        without waiting for storage). Must not block; an exception fails the batch."""
        self._pre_commit.append(fn)

    def add_batch_listener(self, fn: BatchListener) -> None:
        """Call ``fn(batch, result)`` after each commit (on the event loop; keep it quick)."""
        self._listeners.append(fn)

    async def refresh_assignments(self) -> None:
        """Reload device assignments from the store (after the registry changed)."""
        self._assignments = await self.store.assignments()
        for fn in self._assignment_listeners:
            fn(self._assignments)

    def add_assignment_listener(self, fn: Callable[[pl.DataFrame], None]) -> None:
        """Call ``fn(assignments)`` whenever the assignments are reloaded."""
        self._assignment_listeners.append(fn)
        if self._assignments is not None:
            fn(self._assignments)

    # -- lifecycle ---------------------------------------------------------------------------

    async def _open_store(self) -> None:
        """Open the store, waiting out a short-lived holder of the file (a CLI command)."""
        deadline = time.monotonic() + self.config.store_lock_wait_s
        while True:
            try:
                await self._stack.enter_async_context(self.store)
                return
            except StoreLocked:
                if time.monotonic() >= deadline:
                    raise
                log.warning(
                    "database %s is locked by another process; waiting", self.config.store.path
                )
                self.store = DuckDbStore(self.config.store)
                await asyncio.sleep(0.2)

    async def _open_receivers(self) -> MessageSource:
        """The MQTT receiver, plus the BLE receiver when BLE devices are configured."""
        self.receiver = MqttReceiver(self.config.mqtt, self.router.subscriptions())
        receivers: list[Receiver] = [await self._stack.enter_async_context(self.receiver)]
        if self.config.ble.devices:
            from simulators.ble.backend import open_backends

            central, scanner, client = await open_backends(self.config.ble.backend)
            if central is not None:
                self._stack.push_async_exit(central)
            self.ble = BleReceiver(self.config.ble, scanner_backend=scanner, client_backend=client)
            receivers.append(await self._stack.enter_async_context(self.ble))
        if len(receivers) == 1:
            return receivers[0]
        return await self._stack.enter_async_context(MergedSource(receivers))

    async def __aenter__(self) -> Service:
        await self._open_store()
        # The exporter's outbox is written in the store's transaction; it stops after the
        # receiver (it finishes the Bundle in flight) and before the store closes.
        self.fhir = await self._stack.enter_async_context(
            FhirExporter(self.config.fhir, self.store)
        )
        await self.refresh_assignments()
        if self._source is None:
            self._source = await self._open_receivers()
        self._batcher = Batcher(
            self._source, self.router.decode, self.config.batch, ready=self._writer_idle
        )
        self._tasks = [
            asyncio.create_task(self._batch_loop(), name="batcher"),
            asyncio.create_task(self._write_loop(), name="writer"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Flush, commit and acknowledge what was received, then close. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._batcher is not None:
            self._batcher.stop()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stack.aclose()

    async def wait(self) -> None:
        """Return when the service failed (re-raising the failure) or was stopped."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        if self.failed is not None:
            raise self.failed

    # -- the graph ---------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        assert self._batcher is not None
        try:
            async for item in self._batcher.batches():
                await self._queue.put(item)
        except BaseException as exc:
            self.failed = exc
            raise
        finally:
            await self._queue.put(None)

    def _writer_idle(self) -> bool:
        return not self._writing and self._queue.empty()

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            batch, tokens = item
            self._writing = True
            try:
                await self.process(batch, tokens)
            except BaseException as exc:
                self.failed = exc
                if self._batcher is not None:
                    self._batcher.stop()
                raise
            finally:
                self._writing = False

    async def process(self, batch: ReadingBatch, tokens: list[object]) -> WriteResult:
        """Normalize, commit, acknowledge and notify for one batch."""
        assert self._assignments is not None
        out = self.normalizer(batch, self._assignments, self.clock_us())
        for before in self._pre_commit:
            before(out)
        result = await self.store.write(out)
        ack = getattr(self._source, "ack", None)
        if ack is not None:
            ack(tokens)
        s = self.stats
        s.messages += batch.messages.height
        s.batches += 1
        s.stored += result.stored
        s.duplicates += result.duplicates
        s.quarantined += result.quarantined
        if out.quarantine.height:
            for code, n in out.quarantine.group_by("reason_code").len().iter_rows():
                s.by_reason[code] = s.by_reason.get(code, 0) + n
        for fn in self._listeners:
            fn(out, result)
        return result

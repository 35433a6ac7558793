"""The service: one function wires the graph, top to bottom.

::

    MqttReceiver ──> Batcher (decode via Router) ──> [1 batch] ──> prepare task:
        normalize -> pre-commit hooks (the alert engine: alerts go out here)
    ──> [COMMIT_QUEUE batches] ──> writer task: the batches waiting, merged ->
        DuckDbStore.write (one transaction) -> PUBACK their messages -> batch listeners

The two tasks overlap: while the store writes one transaction on its own thread, the next batch
is normalized and scored, so alerts never wait for storage, and batches that arrive during a
write are committed together in the next one. Start order is sinks first (store, then
receiver); stop order is sources first: the batcher flushes what it holds, the writer commits
and acknowledges it, then the receiver disconnects and the store checkpoints and closes.
Nothing received is acknowledged before it is committed, so a crash at any point loses
nothing: the broker redelivers, and the store de-duplicates.

With ``intake = "process"`` (the default when no BLE device is configured) the receiver and the
batcher run in a child process (:mod:`vitalwire.intake`), which hands over finished batches and
sends their PUBACKs when told they are committed; the rest of the graph is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from gateway.ble.receiver import BleReceiver
from gateway.mqtt_receiver import MqttReceiver
from gateway.sources import MergedSource, Receiver
from pipeline.batcher import Batcher, MessageSource
from pipeline.errors import StoreLocked
from pipeline.fhir.exporter import FhirExporter
from pipeline.normalize import Normalizer
from pipeline.readings import ReadingBatch
from pipeline.store import DuckDbStore, WriteResult
from vitalwire.config import ServiceConfig
from vitalwire.intake import IntakeProcess
from vitalwire.routing import build_router

__all__ = ["Service", "ServiceStats", "build_router", "freeze_startup_objects"]

log = logging.getLogger(__name__)

BatchListener = Callable[[ReadingBatch, WriteResult], None]

COMMIT_QUEUE = 8
"""Prepared batches waiting for the writer; they are merged into its next transaction."""


def freeze_startup_objects() -> None:
    """Move every object alive now to the collector's permanent generation (``gc.freeze``).

    For a long-running process, once it has started (``vitalwire run`` and ``demo`` call it):
    modules, the catalogue, device profiles and compiled care plans are then never scanned
    again, so a full collection looks only at what was allocated since. At 10k readings/s a
    full collection otherwise stopped the event loop for about 45 ms a few times a minute.
    """
    gc.collect()
    gc.freeze()


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
        self.receiver: MqttReceiver | IntakeProcess | None = None
        self.fhir: FhirExporter | None = None
        self.ble: BleReceiver | None = None
        self._source = source
        self._ack: Callable[[Sequence[object]], None] | None = None
        self._listeners: list[BatchListener] = []
        self._pre_commit: list[Callable[[ReadingBatch], None]] = []
        self._assignment_listeners: list[Callable[[pl.DataFrame], None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._batcher: Batcher | IntakeProcess | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._raw: asyncio.Queue[tuple[ReadingBatch, list[object]] | None] = asyncio.Queue(1)
        self._prepared: asyncio.Queue[_Prepared | None] = asyncio.Queue(COMMIT_QUEUE)
        self._assignments: pl.DataFrame | None = None
        self._stopped = False
        self._preparing = False
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
        if self._source is None and self.config.intake == "process" and not self.config.ble.devices:
            intake = await self._stack.enter_async_context(IntakeProcess(self.config))
            self.receiver = self._batcher = intake
            self._ack = intake.ack
        else:
            if self._source is None:
                self._source = await self._open_receivers()
            self._batcher = Batcher(
                self._source, self.router.decode, self.config.batch, ready=self._prepare_idle
            )
            self._ack = getattr(self._source, "ack", None)
        self._tasks = [
            asyncio.create_task(self._batch_loop(), name="batcher"),
            asyncio.create_task(self._prepare_loop(), name="prepare"),
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
        failures: list[BaseException] = []
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # re-raised once everything is closed
                failures.append(exc)
        await self._stack.aclose()
        if failures:
            raise failures[0]

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
                await self._raw.put(item)
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            await self._raw.put(None)

    def _prepare_idle(self) -> bool:
        return not self._preparing and self._raw.empty()

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = exc
        if self._batcher is not None:
            self._batcher.stop()

    async def _prepare_loop(self) -> None:
        try:
            while (item := await self._raw.get()) is not None:
                if self.failed is not None:  # the writer failed: drain, score nothing more
                    continue
                batch, tokens = item
                self._preparing = True
                try:
                    prepared = _Prepared(self.prepare(batch), tokens, batch.messages.height)
                finally:
                    self._preparing = False
                await self._prepared.put(prepared)
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            await self._prepared.put(None)

    async def _write_loop(self) -> None:
        done = False
        while not done:
            item = await self._prepared.get()
            if item is None:
                return
            items = [item]
            while not self._prepared.empty():  # what arrived during the last write
                more = self._prepared.get_nowait()
                if more is None:
                    done = True
                    break
                items.append(more)
            try:
                await self.commit(items)
            except BaseException as exc:
                self._fail(exc)
                # Unblock the prepare task (it may wait on a full queue) and let it finish.
                while (await self._prepared.get()) is not None:
                    pass
                raise

    def prepare(self, batch: ReadingBatch) -> ReadingBatch:
        """Normalize one batch and hand it to the pre-commit hooks (the alert engine)."""
        assert self._assignments is not None
        out = self.normalizer(batch, self._assignments, self.clock_us())
        for before in self._pre_commit:
            before(out)
        return out

    async def commit(self, items: list[_Prepared]) -> WriteResult:
        """Store prepared batches in one transaction, acknowledge their messages, notify."""
        out = ReadingBatch.concat([i.batch for i in items])
        result = await self.store.write(out)
        if self._ack is not None:
            self._ack([t for i in items for t in i.tokens])
        s = self.stats
        s.messages += sum(i.messages for i in items)
        s.batches += len(items)
        s.stored += result.stored
        s.duplicates += result.duplicates
        s.quarantined += result.quarantined
        if out.quarantine.height:
            for code, n in out.quarantine.group_by("reason_code").len().iter_rows():
                s.by_reason[code] = s.by_reason.get(code, 0) + n
        for fn in self._listeners:
            fn(out, result)
        return result


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A normalized, scored batch waiting for the writer."""

    batch: ReadingBatch
    tokens: list[object]
    messages: int

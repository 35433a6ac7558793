"""The BLE receiver: scan, connect, subscribe, sync glucose records; notifications in.

It has the source interface of the MQTT receiver (``async receive(max_items, timeout)``,
``ack(tokens)``, async context manager), so the service runs it in the same place. One scanner
watches for the health services; each allowed device (:class:`~gateway.ble.config.BleConfig`)
has its own task that connects with ``bleak-retry-connector`` when the device advertises, runs
a :mod:`session <gateway.ble.session>`, and reconnects with backoff after a drop.

Notification callbacks only append a :class:`~gateway.records.RawMessage` (topic
``ble/<device_id>/<uuid16>``, the exact bytes) to a bounded buffer; decoding happens in the
batcher through the ``ble`` payload format. Glucose records carry an acknowledgement token:
once the service has committed them, :meth:`BleReceiver.ack` raises the device's persisted
sequence number (:class:`~gateway.ble.state.SyncState`), the start of the next RACP sync.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from gateway.ble.config import AllowedDevice, BleConfig
from gateway.ble.session import Session
from gateway.ble.state import SyncState
from gateway.ble.uuids import full_uuid
from gateway.records import RawMessage

__all__ = ["BleReceiver", "BleReceiverStats", "DeviceStatus", "SeqToken"]

log = logging.getLogger(__name__)


class SeqToken(NamedTuple):
    """Acknowledgement token of a glucose record: committed -> persist the sequence number."""

    device_id: str
    seq: int


@dataclass(slots=True)
class DeviceStatus:
    """What the receiver knows of one allowed device (read it; the receiver writes it)."""

    device_id: str
    address: str
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    notifications: int = 0
    racp_syncs: int = 0
    racp_requested_from: int | None = None
    clock_skew_s: int | None = None
    skew_flagged: bool = False
    session_start_us: int | None = None
    battery: int | None = None
    last_error: str = ""


@dataclass(slots=True)
class BleReceiverStats:
    """Counters of the receiver."""

    received: int = 0
    dropped: int = 0
    acked: int = 0
    devices: dict[str, DeviceStatus] = field(default_factory=dict)


class BleReceiver:
    """Receive BLE notifications into the gateway.

    Args:
        config: Allowed devices and policy.
        scanner_backend: bleak scanner backend class (``None``: the platform's).
        client_backend: bleak client backend class (``None``: the platform's).
        clock_us: Gateway clock, UTC microseconds.
        state: Sync state (default: one on ``config.state_path``).
    """

    def __init__(
        self,
        config: BleConfig,
        *,
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        state: SyncState | None = None,
    ) -> None:
        self.config = config
        self.scanner_backend = scanner_backend
        self.client_backend = client_backend
        self.clock_us = clock_us
        self.state = state if state is not None else SyncState(config.state_path)
        self.stats = BleReceiverStats(
            devices={d.device_id: DeviceStatus(d.device_id, d.address) for d in config.devices}
        )
        self.received_max: dict[str, int] = {}
        self._buf: collections.deque[RawMessage] = collections.deque()
        self._wakeup = asyncio.Event()
        self._seen: dict[str, BLEDevice] = {}
        self._seen_events = {d.address: asyncio.Event() for d in config.devices}
        self._scanner: BleakScanner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: dict[str, BleakClient] = {}
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> BleReceiver:
        kwargs: dict[str, Any] = {}
        if self.scanner_backend is not None:
            kwargs["backend"] = self.scanner_backend
        self._scanner = BleakScanner(
            self._on_advertisement,
            service_uuids=[full_uuid(s) for s in self.config.scan_services],
            **kwargs,
        )
        await self._scanner.start()
        self._tasks = [
            asyncio.create_task(self._run_device(d), name=f"ble-{d.device_id}")
            for d in self.config.devices
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop scanning, disconnect every device and save the sync state. Idempotent."""
        if self._closing:
            return
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in list(self._clients.values()):
            with contextlib.suppress(Exception):
                await client.disconnect()
        if self._scanner is not None:
            with contextlib.suppress(Exception):
                await self._scanner.stop()
        self.state.save()
        self._wakeup.set()

    # -- the source interface ------------------------------------------------------------------

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        """Up to ``max_items`` messages; waits up to ``timeout`` seconds when none is queued."""
        if not self._buf and not self._closing:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
        n = min(max_items, len(self._buf))
        return [self._buf.popleft() for _ in range(n)]

    def ack(self, tokens: Sequence[object]) -> None:
        """Tokens of committed messages: persist the glucose sequence numbers they carry."""
        committed = [(t.device_id, t.seq) for t in tokens if isinstance(t, SeqToken)]
        if committed:
            self.state.commit(committed)
            self.stats.acked += len(committed)

    def seq_token(self, device_id: str, seq: int) -> SeqToken:
        """The token of a received glucose record (and remember the highest received)."""
        if seq > self.received_max.get(device_id, -1):
            self.received_max[device_id] = seq
        return SeqToken(device_id, seq)

    def enqueue(self, msg: RawMessage) -> bool:
        """Queue one message (called from notification callbacks; never blocks)."""
        if len(self._buf) >= self.config.queue_size:
            self.stats.dropped += 1
            return False
        self._buf.append(msg)
        self.stats.received += 1
        self._wakeup.set()
        return True

    # -- scanning and connections -----------------------------------------------------------

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        address = device.address.upper()
        event = self._seen_events.get(address)
        if event is not None:
            self._seen[address] = device
            event.set()

    async def _wait_seen(self, address: str) -> BLEDevice | None:
        event = self._seen_events[address]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.config.find_timeout_s)
        return self._seen.get(address) if event.is_set() else None

    def _forget(self, address: str) -> None:
        self._seen.pop(address, None)
        self._seen_events[address].clear()

    async def _connect(
        self, dev: AllowedDevice, ble_device: BLEDevice, disconnected: asyncio.Event
    ) -> BleakClient:
        kwargs: dict[str, Any] = {}
        if self.client_backend is not None:
            kwargs["backend"] = self.client_backend
        client: BleakClient = await establish_connection(
            BleakClient,
            ble_device,
            dev.device_id,
            disconnected_callback=lambda _c: disconnected.set(),
            max_attempts=self.config.connect_attempts,
            ble_device_callback=lambda: self._seen.get(dev.address) or ble_device,
            pair=dev.require_bond,
            timeout=self.config.connect_timeout_s,
            **kwargs,
        )
        return client

    async def _run_device(self, dev: AllowedDevice) -> None:
        status = self.stats.devices[dev.device_id]
        delay = self.config.reconnect_min_s
        while not self._closing:
            ble_device = await self._wait_seen(dev.address)
            if ble_device is None:
                continue
            disconnected = asyncio.Event()
            try:
                client = await self._connect(dev, ble_device, disconnected)
            except (BleakError, TimeoutError) as exc:
                status.connect_failures += 1
                status.last_error = f"connect: {exc}"
                log.warning("%s (%s): cannot connect: %s", dev.device_id, dev.address, exc)
                self._forget(dev.address)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            delay = self.config.reconnect_min_s
            self._clients[dev.device_id] = client
            try:
                await Session(self, dev, client, disconnected).run()
            except (BleakError, TimeoutError) as exc:
                status.last_error = f"session: {exc}"
                log.warning("%s: session ended: %s", dev.device_id, exc)
            finally:
                self._clients.pop(dev.device_id, None)
                if client.is_connected:
                    with contextlib.suppress(Exception):
                        await client.disconnect()
                status.connected = False
                status.disconnects += 1
                self._forget(dev.address)

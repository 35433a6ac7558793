"""One connection to one device: clock check, session start, subscriptions, glucose sync.

A :class:`Session` runs while the link is up. On connect it reads the device's Current Time
(0x2A2B, when present) to measure clock skew, and a CGM's Session Start Time (0x2AAA), which
both travel in the topic of every message of the connection; then it subscribes to every
measurement characteristic the device has. For a glucose meter it syncs stored records through
the Record Access Control Point: "report records with sequence >= last + 1", where ``last`` is
the highest record received on an earlier connection or committed in an earlier run, so a
transfer cut by a disconnect resumes where it stopped. Subscriptions die with the link; the
receiver starts a new session after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

from gateway.ble import racp
from gateway.ble.config import AllowedDevice
from gateway.ble.glucose import glucose_sequence, session_start_utc_us
from gateway.ble.uuids import BASE_UUID_SUFFIX
from gateway.ble.vitals import decode_battery_level, decode_current_time
from gateway.errors import DecodeError
from gateway.formats.ble import topic_for
from gateway.records import RawMessage, Source

if TYPE_CHECKING:
    from gateway.ble.receiver import BleReceiver

__all__ = ["SUBSCRIBED", "Session"]

log = logging.getLogger(__name__)

SUBSCRIBED: Final = (0x2A37, 0x2A18, 0x2A34, 0x2AA7, 0x2A35, 0x2A1C, 0x2A5E, 0x2A5F, 0x2A9D)
"""Characteristics whose values go to the pipeline (intermediate values are not subscribed)."""

_RACP: Final = 0x2A52


def _uuid16(char: BleakGATTCharacteristic) -> int | None:
    u = char.uuid.lower()
    if u.startswith("0000") and u.endswith(BASE_UUID_SUFFIX):
        return int(u[4:8], 16)
    return None


class Session:
    """The life of one connection (see the module docstring)."""

    def __init__(self, rx: BleReceiver, dev: AllowedDevice, client: BleakClient,
                 disconnected: asyncio.Event) -> None:
        self.rx = rx
        self.dev = dev
        self.client = client
        self.disconnected = disconnected
        self.status = rx.stats.devices[dev.device_id]
        self.chars: dict[int, BleakGATTCharacteristic] = {}
        for char in client.services.characteristics.values():
            uuid16 = _uuid16(char)
            if uuid16 is not None:
                self.chars.setdefault(uuid16, char)
        self._racp_response: asyncio.Future[bytes] | None = None

    async def run(self) -> None:
        """Set up the connection, sync, and return when the link drops."""
        self.status.connected = True
        self.status.connects += 1
        skew = await self._clock_skew()
        sst = await self._session_start()
        await self._battery()
        for uuid16 in SUBSCRIBED:
            char = self.chars.get(uuid16)
            if char is not None and {"notify", "indicate"} & set(char.properties):
                topic = topic_for(
                    self.dev.device_id, uuid16,
                    session_start_us=sst if uuid16 == 0x2AA7 else None,
                    clock_skew_s=skew,
                )
                await self.client.start_notify(char, self._callback(uuid16, topic))
        if _RACP in self.chars and 0x2A18 in self.chars:
            await self.client.start_notify(self.chars[_RACP], self._on_racp)
            while not self.disconnected.is_set():
                await self.sync()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.disconnected.wait(), self.rx.config.resync_s)
        else:
            await self.disconnected.wait()

    # -- reads on connect --------------------------------------------------------------------

    async def _read(self, uuid16: int) -> bytes | None:
        char = self.chars.get(uuid16)
        if char is None or "read" not in char.properties:
            return None
        return bytes(await self.client.read_gatt_char(char))

    async def _clock_skew(self) -> int | None:
        """Device clock minus gateway clock (s), returned only when beyond the limit."""
        data = await self._read(0x2A2B)
        if data is None:
            return None
        try:
            device_us = decode_current_time(data).fields["device_time_us"]
        except DecodeError as exc:
            log.warning("%s: unreadable Current Time %s: %s", self.dev.device_id, data.hex(), exc)
            return None
        if not isinstance(device_us, int):
            return None
        skew = round((device_us - self.rx.clock_us()) / 1_000_000)
        self.status.clock_skew_s = skew
        self.status.skew_flagged = abs(skew) > self.rx.config.max_clock_skew_s
        if self.status.skew_flagged:
            log.warning("%s: device clock is %+d s off the gateway's (limit %g s); readings "
                        "flagged", self.dev.device_id, skew, self.rx.config.max_clock_skew_s)
            return skew
        return None

    async def _session_start(self) -> int | None:
        data = await self._read(0x2AAA)
        if data is None:
            return None
        try:
            start = session_start_utc_us(data)
        except DecodeError as exc:
            log.warning("%s: unreadable Session Start Time %s: %s", self.dev.device_id,
                        data.hex(), exc)
            return None
        self.status.session_start_us = start
        return start

    async def _battery(self) -> None:
        data = await self._read(0x2A19)
        if data is not None:
            with contextlib.suppress(DecodeError):
                level = decode_battery_level(data).fields["battery_level"]
                self.status.battery = level["value"] if isinstance(level, dict) else None

    # -- notifications -------------------------------------------------------------------------

    def _callback(self, uuid16: int, topic: str) -> Callable[[BleakGATTCharacteristic,
                                                              bytearray], None]:
        rx, status, device_id = self.rx, self.status, self.dev.device_id
        glucose = uuid16 == 0x2A18

        def on_value(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            payload = bytes(data)
            token = None
            if glucose:
                seq = glucose_sequence(payload)
                if seq is not None:
                    token = rx.seq_token(device_id, seq)
            status.notifications += 1
            rx.enqueue(RawMessage(topic, payload, rx.clock_us(), Source.BLE, token))

        return on_value

    def _on_racp(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        fut = self._racp_response
        if fut is not None and not fut.done():
            fut.set_result(bytes(data))

    # -- glucose sync ----------------------------------------------------------------------------

    def _sync_from(self) -> int | None:
        known = [v for v in (self.rx.state.last(self.dev.device_id),
                             self.rx.received_max.get(self.dev.device_id)) if v is not None]
        return max(known) + 1 if known else None

    async def sync(self) -> bool:
        """One RACP transfer of the records not received yet; False if it did not finish."""
        start = self._sync_from()
        request = racp.report_all() if start is None else racp.report_from(start)
        self.status.racp_requested_from = start
        loop = asyncio.get_running_loop()
        self._racp_response = fut = loop.create_future()
        try:
            await self.client.write_gatt_char(self.chars[_RACP], request, response=True)
        except BleakError as exc:
            log.warning("%s: RACP request refused: %s", self.dev.device_id, exc)
            return False
        gone = asyncio.ensure_future(self.disconnected.wait())
        try:
            done, _ = await asyncio.wait(
                {fut, gone}, timeout=self.rx.config.racp_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
        if fut not in done:
            if not self.disconnected.is_set():
                log.warning("%s: RACP transfer timed out; aborting", self.dev.device_id)
                with contextlib.suppress(BleakError, TimeoutError):
                    await self.client.write_gatt_char(
                        self.chars[_RACP], bytes([racp.Op.ABORT, 0]), response=True)
            return False
        try:
            resp = racp.parse_response(fut.result())
        except DecodeError as exc:
            log.warning("%s: bad RACP response: %s", self.dev.device_id, exc)
            return False
        if resp.code not in (racp.ResponseCode.SUCCESS, racp.ResponseCode.NO_RECORDS_FOUND):
            log.warning("%s: RACP response code %s", self.dev.device_id, resp.code)
            return False
        self.status.racp_syncs += 1
        return True

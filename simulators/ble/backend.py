"""A bleak backend on a Bumble central: unchanged bleak code talks to virtual devices.

:class:`BumbleCentral` is the gateway's radio, a Bumble device on a
:class:`~simulators.ble.link.VirtualLink` (in-process) or on an HCI transport
(``tcp-client:HOST:PORT`` towards a process running the virtual devices). Its
:meth:`~BumbleCentral.backends` are a ``BaseBleakScanner`` and a ``BaseBleakClient`` subclass
bound to it, passed to bleak with ``backend=``: ``BleakScanner``, ``BleakClient`` and
``bleak_retry_connector.establish_connection`` then run unmodified.

Selection by configuration: :func:`open_backends` takes a spec string, ``bumble:<transport>``
(``bumble:tcp-client:127.0.0.1:9100``), or ``system`` for bleak's own platform backend; the
``VITALWIRE_BLE_BACKEND`` environment variable holds it by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, ClassVar

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import att, core, hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy, DescriptorProxy, ServiceProxy
from bumble.transport.common import Transport

from simulators.ble.link import VirtualLink, open_hci_device

__all__ = [
    "ATT_MTU",
    "BACKEND_ENV",
    "BumbleCentral",
    "BumbleClientBackend",
    "BumbleScannerBackend",
    "open_backends",
]

log = logging.getLogger(__name__)

BACKEND_ENV = "VITALWIRE_BLE_BACKEND"
"""Environment variable holding the backend spec (``system`` or ``bumble:<transport>``)."""
ATT_MTU = 247
"""MTU requested after connecting (without it notifications are cut to 20 bytes)."""
CENTRAL_ADDRESS = "F0:00:00:00:00:01"

_PROPS = {
    0x01: "broadcast", 0x02: "read", 0x04: "write-without-response", 0x08: "write",
    0x10: "notify", 0x20: "indicate", 0x40: "authenticated-signed-writes",
    0x80: "extended-properties",
}


def _uuid(u: core.UUID) -> str:
    return normalize_uuid_str(u.to_hex_str())


class BumbleCentral:
    """The gateway's side of a virtual radio: one Bumble device acting as central.

    Use :meth:`on_link` or :meth:`on_transport`, then ``async with central``.
    """

    def __init__(self, device: Device, transport: Transport | None = None) -> None:
        self.device = device
        self._transport = transport
        self._scanners: set[BumbleScannerBackend] = set()
        self._scan_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self.connects = 0

    @classmethod
    def on_link(cls, link: VirtualLink, address: str = CENTRAL_ADDRESS) -> BumbleCentral:
        """A central with its own controller on an in-process link."""
        return cls(link.device("vitalwire-gateway", address))

    @classmethod
    async def on_transport(cls, spec: str, address: str = CENTRAL_ADDRESS) -> BumbleCentral:
        """A central on an HCI transport such as ``tcp-client:127.0.0.1:9100``."""
        device, transport = await open_hci_device(spec, "vitalwire-gateway", address)
        return cls(device, transport)

    async def __aenter__(self) -> BumbleCentral:
        self.device.on("advertisement", self._on_advertisement)
        await self.device.power_on()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Drop connections, stop scanning and close the transport."""
        for conn in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await conn.disconnect()
        if self.device.scanning:
            with contextlib.suppress(Exception):
                await self.device.stop_scanning()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()

    def backends(self) -> tuple[type[BumbleScannerBackend], type[BumbleClientBackend]]:
        """Scanner and client backend classes bound to this central, for ``backend=``."""
        scanner = type("BumbleScanner", (BumbleScannerBackend,), {"central": self})
        client = type("BumbleClient", (BumbleClientBackend,), {"central": self})
        return scanner, client

    async def _scan(self, scanner: BumbleScannerBackend, on: bool) -> None:
        async with self._scan_lock:
            if on:
                self._scanners.add(scanner)
            else:
                self._scanners.discard(scanner)
            if self._scanners and not self.device.scanning:
                await self.device.start_scanning(filter_duplicates=False)
            elif not self._scanners and self.device.scanning:
                await self.device.stop_scanning()

    def _on_advertisement(self, adv: Advertisement) -> None:
        for scanner in list(self._scanners):
            scanner.on_advertisement(adv)


class BumbleScannerBackend(BaseBleakScanner):
    """``BaseBleakScanner`` on a :class:`BumbleCentral` (bound by ``central.backends()``)."""

    central: ClassVar[BumbleCentral]

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        self.seen_devices = {}
        await self.central._scan(self, True)

    async def stop(self) -> None:
        await self.central._scan(self, False)

    def on_advertisement(self, adv: Advertisement) -> None:
        """Turn one Bumble advertisement into bleak's device and advertisement data."""
        data = adv.data
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
            AdvertisingData.SHORTENED_LOCAL_NAME
        )
        uuids: list[str] = []
        for kind in (
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        ):
            uuids += [_uuid(u) for u in data.get(kind) or []]
        manufacturer: dict[int, bytes] = {}
        raw_mfr = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, raw=True)
        if isinstance(raw_mfr, bytes) and len(raw_mfr) >= 2:
            manufacturer[int.from_bytes(raw_mfr[:2], "little")] = raw_mfr[2:]
        local_name = name if isinstance(name, str) else None
        ad = AdvertisementData(local_name, manufacturer, {}, uuids, None, adv.rssi, (adv,))
        if not self.is_allowed_uuid(uuids):
            return
        address = str(adv.address).split("/")[0]
        device = self.create_or_update_device(address, address, local_name, adv.address, ad)
        self.call_detection_callbacks(device, ad)


class BumbleClientBackend(BaseBleakClient):
    """``BaseBleakClient`` on a :class:`BumbleCentral` (bound by ``central.backends()``)."""

    central: ClassVar[BumbleCentral]

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        details = getattr(address_or_ble_device, "details", None)
        self._peer_address = (
            details if isinstance(details, hci.Address)
            else hci.Address(str(self.address), hci.Address.RANDOM_DEVICE_ADDRESS)
        )
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._mtu = 23
        self._subscribers: dict[int, Callable[[bytes], None]] = {}
        self._name = ""

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return self._mtu

    @property
    def is_connected(self) -> bool:
        conn = self._connection
        return conn is not None and conn.handle in self.central.device.connections

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        # bleak-retry-connector always asks for 20 s; the client's own timeout caps it.
        timeout = min(float(kwargs.get("timeout", self._timeout)), self._timeout)
        async with self.central.connect_lock:
            try:
                conn = await self.central.device.connect(self._peer_address, timeout=timeout)
            except core.TimeoutError as exc:  # not asyncio's: bleak's retries key on asyncio's
                raise TimeoutError(f"{self.address}: connection timed out") from exc
            except (core.BaseBumbleError, hci.HCI_Error) as exc:
                raise BleakError(f"{self.address}: connection failed: {exc}") from exc
        self.central.connects += 1
        self._connection = conn
        conn.on("disconnection", self._on_disconnection)
        peer = Peer(conn)
        self._peer = peer
        try:
            self._mtu = await peer.request_mtu(ATT_MTU)
            if pair:
                await self.pair()
            self.services = await self._discover(peer)
        except BaseException:
            await self.disconnect()
            raise

    def _on_disconnection(self, _reason: int) -> None:
        self._connection = None
        self._peer = None
        self._subscribers.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        services: list[ServiceProxy] = await peer.discover_services()
        for sp in services:
            service = BleakGATTService(sp, sp.handle, _uuid(sp.uuid))
            collection.add_service(service)
            chars: list[CharacteristicProxy[bytes]] = await peer.discover_characteristics(
                service=sp
            )
            for cp in chars:
                props = [name for bit, name in _PROPS.items() if cp.properties & bit]
                char = BleakGATTCharacteristic(
                    cp, cp.handle, _uuid(cp.uuid), props,  # type: ignore[arg-type]
                    lambda: self._mtu - 3, service,
                )
                collection.add_characteristic(char)
                descriptors: list[DescriptorProxy] = await peer.discover_descriptors(cp)
                for dp in descriptors:
                    collection.add_descriptor(
                        BleakGATTDescriptor(dp, dp.handle, _uuid(dp.type), char)
                    )
        return collection

    async def disconnect(self) -> None:
        conn = self._connection
        if conn is not None:
            with contextlib.suppress(core.BaseBumbleError, hci.HCI_Error, asyncio.TimeoutError):
                await conn.disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        conn = self._require()
        try:
            await conn.pair()
        except (core.BaseBumbleError, hci.HCI_Error) as exc:
            raise BleakError(f"{self.address}: pairing failed: {exc}") from exc

    async def unpair(self) -> None:
        """Nothing is persisted by the virtual central; unpairing is a no-op."""

    def _require(self) -> Connection:
        if self._connection is None:
            raise BleakError(f"{self.address}: not connected")
        return self._connection

    async def _gatt(self, op: Any) -> Any:
        self._require()
        try:
            return await op
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc
        except core.TimeoutError as exc:
            raise TimeoutError(f"{self.address}: GATT operation timed out") from exc
        except (core.BaseBumbleError, hci.HCI_Error) as exc:
            raise BleakError(f"{self.address}: GATT operation failed: {exc}") from exc

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kw: Any
    ) -> bytearray:
        return bytearray(await self._gatt(characteristic.obj.read_value()))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kw: Any
    ) -> bytearray:
        return bytearray(await self._gatt(descriptor.obj.read_value()))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        await self._gatt(characteristic.obj.write_value(bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        await self._gatt(descriptor.obj.write_value(bytes(data), with_response=True))

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kw: Any
    ) -> None:
        peer = self._peer
        if peer is None:
            raise BleakError(f"{self.address}: not connected")

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = deliver
        await self._gatt(peer.subscribe(characteristic.obj, deliver, prefer_notify=True))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._peer
        deliver = self._subscribers.pop(characteristic.handle, None)
        if peer is not None and deliver is not None:
            await self._gatt(peer.unsubscribe(characteristic.obj, deliver))


async def open_backends(
    spec: str | None = None, *, link: VirtualLink | None = None
) -> tuple[BumbleCentral | None, type[BaseBleakScanner] | None, type[BaseBleakClient] | None]:
    """Backends for a spec: ``system`` (bleak's own, returns Nones), ``bumble:local`` (on
    ``link``) or ``bumble:<transport>``. ``None`` reads :data:`BACKEND_ENV` (default system).

    The returned central is already entered; close it when done.

    Raises:
        ValueError: An unknown spec, or ``bumble:local`` without a link.
    """
    spec = spec if spec is not None else os.environ.get(BACKEND_ENV, "system")
    if spec == "system":
        return None, None, None
    if not spec.startswith("bumble:"):
        raise ValueError(
            f"BLE backend {spec!r}: expected 'system', 'bumble:local' or 'bumble:<transport>' "
            "such as 'bumble:tcp-client:127.0.0.1:9100'"
        )
    transport = spec.removeprefix("bumble:")
    if transport == "local":
        if link is None:
            raise ValueError("BLE backend 'bumble:local' needs an in-process VirtualLink")
        central = BumbleCentral.on_link(link)
    else:
        central = await BumbleCentral.on_transport(transport)
    await central.__aenter__()
    scanner, client = central.backends()
    return central, scanner, client

"""The bleak backend on a Bumble central: scanning, connecting, GATT, errors, TCP link."""

from __future__ import annotations

import asyncio
import time

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakGATTProtocolError
from bleak_retry_connector import BleakNotFoundError, establish_connection

from gateway.ble import racp
from gateway.ble.uuids import full_uuid
from gateway.ble.vitals import decode_heart_rate
from simulators.ble.backend import BumbleCentral, open_backends
from simulators.ble.link import VirtualLink
from simulators.ble.meter import GlucoseMeter
from simulators.ble.peripherals import HeartRateSensor
from tests.ble.support import until

pytestmark = pytest.mark.integration

HRM = full_uuid(0x2A37)
RACP = full_uuid(0x2A52)


async def test_scan_filters_on_service_uuid_and_reports_name() -> None:
    async with VirtualLink() as link:
        hr = HeartRateSensor(link.device("HR-7", "F1:00:00:00:00:07"))
        gm = GlucoseMeter(link.device("GM-8", "F1:00:00:00:00:08"))
        await hr.start()
        await gm.start()
        async with BumbleCentral.on_link(link) as central:
            scanner, _ = central.backends()
            found = await BleakScanner.discover(
                timeout=0.3, return_adv=True, backend=scanner, service_uuids=[full_uuid(0x180D)]
            )
    assert list(found) == ["F1:00:00:00:00:07"]
    _device, adv = found["F1:00:00:00:00:07"]
    assert adv.local_name == "HR-7"
    assert adv.service_uuids == [full_uuid(0x180D)]
    assert adv.rssi == -50


async def test_long_notification_survives_thanks_to_mtu_exchange() -> None:
    async with VirtualLink() as link:
        hr = HeartRateSensor(link.device("HR-1", "F1:00:00:00:00:01"))
        await hr.start()
        async with BumbleCentral.on_link(link) as central:
            scanner, backend = central.backends()
            device = await BleakScanner.find_device_by_address(hr.address, 5, backend=scanner)
            assert device is not None
            got: list[bytes] = []
            async with BleakClient(device, backend=backend) as client:
                assert client.mtu_size == 247
                await client.start_notify(HRM, lambda _c, d: got.append(bytes(d)))
                await until(lambda: hr.subscribed(0x2A37).is_set(), what="subscription")
                rr = tuple(range(800, 820))  # 20 RR intervals: a 42-byte notification
                assert await hr.measure(61, rr_1024=rr)
                await until(lambda: bool(got), what="notification")
    assert len(got[0]) == 42
    assert decode_heart_rate(got[0]).fields["rr_intervals_1024"] == list(rr)


async def test_att_errors_become_bleak_protocol_errors() -> None:
    async with VirtualLink() as link:
        gm = GlucoseMeter(link.device("GM-1", "F1:00:00:00:00:02"))
        await gm.start()
        async with BumbleCentral.on_link(link) as central:
            scanner, backend = central.backends()
            device = await BleakScanner.find_device_by_address(gm.address, 5, backend=scanner)
            assert device is not None
            async with BleakClient(device, backend=backend) as client:
                with pytest.raises(BleakGATTProtocolError) as exc:  # RACP not indicated yet
                    await client.write_gatt_char(RACP, racp.report_all(), response=True)
                assert exc.value.code == 0xFD
                responses: list[bytes] = []
                await client.start_notify(RACP, lambda _c, d: responses.append(bytes(d)))
                await client.write_gatt_char(RACP, racp.report_count(), response=True)
                await until(lambda: bool(responses), what="count response")
    assert responses == [bytes.fromhex("05000000")]


async def test_absent_device_fails_fast_and_the_central_recovers() -> None:
    """A connect to a silent address is cancelled, and the next connect still works."""
    async with VirtualLink() as link:
        hr = HeartRateSensor(link.device("HR-1", "F1:00:00:00:00:01"))
        await hr.start()
        async with BumbleCentral.on_link(link) as central:
            scanner, backend = central.backends()
            ghost = BleakClient("F1:00:00:00:00:42", backend=backend, timeout=0.3)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await ghost.connect()
            assert time.monotonic() - started < 5
            device = await BleakScanner.find_device_by_address(hr.address, 5, backend=scanner)
            assert device is not None
            client = await establish_connection(BleakClient, device, "HR-1", backend=backend)
            assert client.is_connected
            await client.disconnect()


async def test_establish_connection_gives_up_on_an_absent_device() -> None:
    async with VirtualLink() as link, BumbleCentral.on_link(link) as central:
        _, backend = central.backends()
        from bleak.backends.device import BLEDevice

        ghost = BLEDevice("F1:00:00:00:00:43", "ghost", None)
        with pytest.raises(BleakNotFoundError):
            await establish_connection(BleakClient, ghost, "ghost", max_attempts=2,
                                       backend=backend, timeout=0.2)


async def test_devices_and_gateway_over_the_tcp_link() -> None:
    async with VirtualLink() as link:
        hr = HeartRateSensor(link.device("HR-1", "F1:00:00:00:00:01"))
        await hr.start()
        port = await link.serve_tcp("127.0.0.1", 0)
        central, scanner, backend = await open_backends(f"bumble:tcp-client:127.0.0.1:{port}")
        assert central is not None and scanner is not None and backend is not None
        try:
            device = await BleakScanner.find_device_by_address(hr.address, 5, backend=scanner)
            assert device is not None
            got: list[bytes] = []
            async with BleakClient(device, backend=backend) as client:
                await client.start_notify(HRM, lambda _c, d: got.append(bytes(d)))
                await until(lambda: hr.subscribed(0x2A37).is_set(), what="subscription")
                assert await hr.measure(58)
                await until(lambda: bool(got), what="notification over TCP")
        finally:
            await central.close()
    assert got == [bytes([0x06, 58])]


async def test_backend_spec_errors() -> None:
    assert await open_backends("system") == (None, None, None)
    with pytest.raises(ValueError, match="expected 'system'"):
        await open_backends("bluez")
    with pytest.raises(ValueError, match="needs an in-process VirtualLink"):
        await open_backends("bumble:local")
    await asyncio.sleep(0)

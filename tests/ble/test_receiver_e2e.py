"""End to end: virtual devices on Bumble -> bleak API -> BleReceiver -> Service -> DuckDB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from gateway.ble import racp
from gateway.ble.config import AllowedDevice, BleConfig
from gateway.ble.receiver import BleReceiver
from gateway.records import RawMessage
from pipeline import registry
from pipeline.store import StoreConfig
from simulators.ble.backend import BumbleCentral
from simulators.ble.link import VirtualLink
from simulators.ble.meter import GlucoseMeter
from simulators.ble.peripherals import (
    BloodPressureMonitor,
    CgmSensor,
    HeartRateSensor,
    PulseOximeter,
    Thermometer,
    VirtualDevice,
    WeightScale,
)
from tests.ble.support import BLE_ROUTES, enable_ble_format, until
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

pytestmark = pytest.mark.integration

NOW = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, the injected clock of devices and gateway
MIN = 60_000_000


@pytest.fixture(autouse=True)
def _ble_format() -> Iterator[None]:
    enable_ble_format()
    yield


class Clock:
    """Gateway and device clock: starts at ``NOW`` and ticks 1 ms per reading of it."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> int:
        self.ticks += 1
        return NOW + self.ticks * 1000


clock = Clock()


def ble_config(devices: list[VirtualDevice], state: Path, **kw: object) -> BleConfig:
    allowed = tuple(
        AllowedDevice(d.address, d.name, require_bond=isinstance(d, GlucoseMeter))
        for d in devices
    )
    return BleConfig(devices=allowed, state_path=state, reconnect_min_s=0.05,
                     find_timeout_s=2.0, **kw)  # type: ignore[arg-type]


async def assign_all(db: Path, device_ids: list[str]) -> None:
    with_store = StoreConfig(path=db)
    svc = Service(ServiceConfig(store=with_store, routes=BLE_ROUTES), source=_Idle())
    async with svc:
        for device_id in device_ids:
            await asyncio.to_thread(registry.assign, svc.store, device_id, f"P-{device_id}",
                                    datetime.fromtimestamp(0, UTC))


class _Idle:
    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        await asyncio.sleep(timeout or 0)
        return []


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


async def test_ward_to_duckdb_with_forced_disconnect_mid_racp(tmp_path: Path) -> None:
    db, state = tmp_path / "ward.duckdb", tmp_path / "ble-sync.json"
    async with VirtualLink() as link:
        hr = HeartRateSensor(link.device("HR-1", "F1:00:00:00:00:01"), clock_us=clock)
        gm = GlucoseMeter(link.device("GM-1", "F1:00:00:00:00:02"), clock_us=clock)
        bp = BloodPressureMonitor(link.device("BP-1", "F1:00:00:00:00:03"), clock_us=clock,
                                  clock_offset_s=-600)
        cgm = CgmSensor(link.device("CGM-1", "F1:00:00:00:00:04"), clock_us=clock,
                        session_start_us=NOW - 60 * MIN)
        th = Thermometer(link.device("TH-1", "F1:00:00:00:00:05"), clock_us=clock)
        sc = WeightScale(link.device("SC-1", "F1:00:00:00:00:06"), clock_us=clock)
        ox = PulseOximeter(link.device("OX-1", "F1:00:00:00:00:07"), clock_us=clock)
        stranger = HeartRateSensor(link.device("XX-1", "F1:00:00:00:00:99"), clock_us=clock)
        devices: list[VirtualDevice] = [hr, gm, bp, cgm, th, sc, ox]
        for i in range(20):
            gm.add_record(NOW - (40 - i) * MIN, 100 + i, meal=1 if i % 3 == 0 else None)
        gm.drop_during_next_transfer(after_records=7)
        # Indicated measurements taken before the gateway connects wait in the device.
        await bp.measure(120, 80, 93, 70, t_us=NOW - 5 * MIN)
        await th.measure(36.6, t_us=NOW - 4 * MIN)
        await sc.measure(74.8, t_us=NOW - 3 * MIN)
        for d in [*devices, stranger]:
            await d.start()
        await assign_all(db, [d.name for d in devices])

        config = ServiceConfig(store=StoreConfig(path=db), routes=BLE_ROUTES)
        async with BumbleCentral.on_link(link) as central:
            scanner, client = central.backends()
            rx = BleReceiver(ble_config(devices, state), scanner_backend=scanner,
                             client_backend=client, clock_us=clock)
            async with Service(config, source=rx, clock_us=clock) as svc:
                await svc.refresh_assignments()
                async with rx:
                    await until(lambda: all(s.connected for s in rx.stats.devices.values()),
                                what="every allowed device connected")
                    await until(lambda: rx.stats.devices["GM-1"].racp_syncs >= 1,
                                what="glucose sync after the forced disconnect")
                    await until(lambda: hr.subscribed(0x2A37).is_set()
                                and cgm.subscribed(0x2AA7).is_set()
                                and ox.subscribed(0x2A5F).is_set(), what="subscriptions")
                    for i in range(3):
                        assert await hr.measure(70 + i, rr_1024=tuple(range(800, 815)))
                        assert await cgm.measure(110 + i, NOW - (2 - i) * 5 * MIN)
                    assert await ox.measure(97, 71)
                    await until(lambda: svc.stats.stored >= 20 + 3 + 3 + 4 + 1 + 1 + 2,
                                what="every reading stored")
                gm_status = rx.stats.devices["GM-1"]
            assert stranger.connections == 0

    assert gm_status.connects == 2
    assert gm_status.disconnects >= 1
    assert gm_status.racp_requested_from == 8  # resumed after the 7 records received
    assert [r.values for r in gm.requests] == [(), (8,)]
    assert svc.stats.duplicates == 0
    assert svc.stats.quarantined == 0
    glucose = rows(db, "SELECT seq, round(value, 6), patient_id, observed_at FROM readings "
                       "WHERE device_id = 'GM-1' ORDER BY seq")
    assert [(s, v, p) for s, v, p, _ in glucose] == [
        (i + 1, 100.0 + i, "P-GM-1") for i in range(20)
    ]
    assert glucose[0][3] == datetime.fromtimestamp((NOW - 40 * MIN) / 1e6, UTC)
    assert json.loads(state.read_text()) == {"GM-1": 20}

    stored = rows(db, "SELECT device_id, metric, round(value, 3), unit, quality, "
                      "CASE WHEN quality & 1 = 1 THEN NULL ELSE epoch_us(observed_at) END "
                      "FROM readings WHERE device_id <> 'GM-1' "
                      "ORDER BY device_id, metric, observed_at, value")
    skewed = NOW - 5 * MIN - 600 * 1_000_000
    assert stored == [
        ("BP-1", "diastolic_bp", 80.0, "mm[Hg]", 64, skewed),
        ("BP-1", "heart_rate", 70.0, "/min", 64, skewed),
        ("BP-1", "mean_bp", 93.0, "mm[Hg]", 64, skewed),
        ("BP-1", "systolic_bp", 120.0, "mm[Hg]", 64, skewed),
        ("CGM-1", "cgm_glucose", 110.0, "mg/dL", 0, NOW - 10 * MIN),
        ("CGM-1", "cgm_glucose", 111.0, "mg/dL", 0, NOW - 5 * MIN),
        ("CGM-1", "cgm_glucose", 112.0, "mg/dL", 0, NOW),
        ("HR-1", "heart_rate", 70.0, "/min", 1, None),  # no device time: receive time
        ("HR-1", "heart_rate", 71.0, "/min", 1, None),
        ("HR-1", "heart_rate", 72.0, "/min", 1, None),
        ("OX-1", "heart_rate", 71.0, "/min", 1, None),
        ("OX-1", "spo2", 97.0, "%", 1, None),
        ("SC-1", "body_weight", 74.8, "kg", 0, NOW - 3 * MIN),
        ("TH-1", "body_temperature", 36.6, "Cel", 0, NOW - 4 * MIN),
    ]
    assert rx.stats.devices["BP-1"].clock_skew_s == -600
    assert rx.stats.devices["CGM-1"].session_start_us == NOW - 60 * MIN


async def test_restart_asks_only_for_newer_records(tmp_path: Path) -> None:
    db, state = tmp_path / "gm.duckdb", tmp_path / "ble-sync.json"
    state.write_text(json.dumps({"GM-1": 5}))
    async with VirtualLink() as link:
        gm = GlucoseMeter(link.device("GM-1", "F1:00:00:00:00:02"), clock_us=clock)
        for i in range(8):
            gm.add_record(NOW - (10 - i) * MIN, 90 + i)
        await gm.start()
        await assign_all(db, ["GM-1"])
        config = ServiceConfig(store=StoreConfig(path=db), routes=BLE_ROUTES)
        async with BumbleCentral.on_link(link) as central:
            scanner, client = central.backends()
            rx = BleReceiver(ble_config([gm], state), scanner_backend=scanner,
                             client_backend=client, clock_us=clock)
            async with Service(config, source=rx, clock_us=clock) as svc:
                await svc.refresh_assignments()
                async with rx:
                    await until(lambda: svc.stats.stored >= 3, what="records 6-8 stored")
                    await until(lambda: rx.stats.devices["GM-1"].racp_syncs >= 1, what="sync")
    assert gm.requests == [racp.RacpRequest(racp.Op.REPORT_RECORDS,
                                            racp.Operator.GREATER_OR_EQUAL, 1, (6,))]
    assert rows(db, "SELECT seq FROM readings ORDER BY seq") == [(6,), (7,), (8,)]
    assert json.loads(state.read_text()) == {"GM-1": 8}


async def test_undecodable_notification_lands_in_quarantine_with_its_bytes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "q.duckdb"
    async with VirtualLink() as link:
        hr = HeartRateSensor(link.device("HR-1", "F1:00:00:00:00:01"), clock_us=clock)
        await hr.start()
        await assign_all(db, ["HR-1"])
        config = ServiceConfig(store=StoreConfig(path=db), routes=BLE_ROUTES)
        async with BumbleCentral.on_link(link) as central:
            scanner, client = central.backends()
            rx = BleReceiver(ble_config([hr], tmp_path / "s.json"), scanner_backend=scanner,
                             client_backend=client, clock_us=clock)
            async with Service(config, source=rx, clock_us=clock) as svc, rx:
                await svc.refresh_assignments()
                await until(lambda: hr.subscribed(0x2A37).is_set(), what="subscription")
                assert await hr.notify(hr.measurement, bytes.fromhex("1148"))
                assert await hr.measure(64)
                await until(lambda: svc.stats.stored + svc.stats.quarantined >= 2,
                            what="both messages handled")
    assert rows(db, "SELECT topic, payload, reason_code, field, device_id FROM quarantine") == [
        ("ble/HR-1/2a37", bytes.fromhex("1148"), "truncated", "heart_rate", "HR-1")
    ]
    assert rows(db, "SELECT value FROM readings") == [(64.0,)]

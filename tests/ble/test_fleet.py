"""The physiology-driven BLE ward, end to end over the TCP virtual link."""

from __future__ import annotations

import dataclasses
import io
import random
import tomllib
from pathlib import Path

import pytest

from gateway.ble.config import load_ble_config
from gateway.ble.receiver import BleReceiver
from pipeline.store import StoreConfig
from simulators.ble.backend import open_backends
from simulators.ble.cli import devices_toml, serve_ward
from simulators.ble.fleet import BleFleet
from simulators.ble.link import VirtualLink
from simulators.ble.meter import GlucoseMeter
from simulators.config import FleetConfig
from tests.ble.support import BLE_ROUTES, enable_ble_format, until
from tests.ble.test_receiver_e2e import assign_all, rows
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

pytestmark = pytest.mark.integration

ALL_KINDS = ("smartwatch", "bedside_monitor", "cgm", "glucose_meter", "scale")
NOW = 1_767_225_600_000_000


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> int:
        self.t += 1000
        return self.t


async def test_fleet_plan_ids_addresses_and_deterministic_backlog() -> None:
    config = FleetConfig(patients=2, seed=3, kinds=ALL_KINDS)
    async with VirtualLink() as link_a, VirtualLink() as link_b:
        a = BleFleet(config, link_a, clock_us=Clock())
        b = BleFleet(config, link_b, clock_us=Clock())
    assert [d.device_id for d in a.devices[:7]] == [
        "BLE-HR-P001", "BLE-BP-P001", "BLE-OX-P001", "BLE-TH-P001", "BLE-CGM-P001",
        "BLE-GM-P001", "BLE-SC-P001",
    ]
    assert a.devices[5].address == "F1:06:00:00:00:01"
    assert len({d.address for d in a.devices}) == 14
    meters = [d.device for d in (*a.devices, *b.devices) if isinstance(d.device, GlucoseMeter)]
    assert [r.seq for r in meters[0].records] == [1, 2, 3, 4, 5, 6]
    assert meters[0].records == meters[2].records  # same seed, same records


async def test_ward_over_tcp_link_to_duckdb(tmp_path: Path) -> None:
    enable_ble_format()
    db = tmp_path / "ward.duckdb"
    clock = Clock()
    async with VirtualLink() as link:
        fleet = BleFleet(FleetConfig(patients=2, seed=3, kinds=ALL_KINDS), link, clock_us=clock)
        for d in fleet.devices:
            await d.device.start()
        port = await link.serve_tcp("127.0.0.1", 0)
        ble = dataclasses.replace(
            load_ble_config(tomllib.loads(devices_toml(fleet, "127.0.0.1", port))["ble"]),
            state_path=tmp_path / "s.json", reconnect_min_s=0.05,
        )
        await assign_all(db, [d.device_id for d in fleet.devices])
        central, scanner, client = await open_backends(ble.backend)
        assert central is not None
        try:
            rx = BleReceiver(ble, scanner_backend=scanner, client_backend=client, clock_us=clock)
            config = ServiceConfig(store=StoreConfig(path=db), routes=BLE_ROUTES)
            async with Service(config, source=rx, clock_us=clock) as svc:
                await svc.refresh_assignments()
                async with rx:
                    await until(lambda: all(s.connected for s in rx.stats.devices.values()),
                                what="ward connected")
                    await until(lambda: all(s.racp_syncs for s in rx.stats.devices.values()
                                            if "-GM-" in s.device_id), what="meters synced")
                    live = {"HR": 0x2A37, "OX": 0x2A5F, "CGM": 0x2AA7}
                    await until(lambda: all(
                        d.device.subscribed(live[d.prefix]).is_set()
                        for d in fleet.devices if d.prefix in live), what="subscriptions")
                    rng = random.Random(1)
                    for d in fleet.devices:
                        await fleet.measure_once(d, rng)
                    await until(lambda: svc.stats.stored >= 2 * (1 + 4 + 2 + 1 + 1 + 6 + 1),
                                what="ward readings stored")
        finally:
            await central.close()
    counts = rows(db, "SELECT split_part(device_id, '-', 2), metric, count(*) FROM readings "
                      "GROUP BY ALL ORDER BY ALL")
    assert counts == [
        ("BP", "diastolic_bp", 2), ("BP", "heart_rate", 2), ("BP", "mean_bp", 2),
        ("BP", "systolic_bp", 2), ("CGM", "cgm_glucose", 2), ("GM", "glucose", 12),
        ("HR", "heart_rate", 2), ("OX", "heart_rate", 2), ("OX", "spo2", 2),
        ("SC", "body_weight", 2), ("TH", "body_temperature", 2),
    ]
    assert rows(db, "SELECT count(*) FROM quarantine") == [(0,)]


async def test_serve_ward_prints_the_gateway_config(tmp_path: Path) -> None:
    out = io.StringIO()
    config = FleetConfig(patients=1, seed=2, kinds=("smartwatch", "glucose_meter"))
    assert await serve_ward(config, "127.0.0.1", 0, 0.05, tmp_path / "ble.toml", out) == 0
    ble = load_ble_config(tomllib.loads(out.getvalue())["ble"])
    assert [(d.device_id, d.require_bond) for d in ble.devices] == [
        ("BLE-HR-P001", False), ("BLE-GM-P001", True)
    ]
    assert ble.backend.startswith("bumble:tcp-client:127.0.0.1:")
    assert (tmp_path / "ble.toml").read_text() + "\n" == out.getvalue()

"""One service, two kinds of devices: MQTT through mosquitto and BLE through a virtual link."""

from __future__ import annotations

import dataclasses
import random
import time
import tomllib
from pathlib import Path

import orjson
import pytest

from gateway.ble.config import load_ble_config
from gateway.config import MqttConfig
from pipeline.store import StoreConfig
from simulators.ble.cli import devices_toml
from simulators.ble.fleet import BleFleet
from simulators.ble.link import VirtualLink
from simulators.config import FleetConfig
from tests.ble.support import until
from tests.ble.test_receiver_e2e import assign_all, rows
from tests.support.mqtt import Publisher
from vitalwire.broker import MosquittoBroker
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

pytestmark = pytest.mark.integration


async def test_mqtt_and_ble_devices_in_one_service(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    db = tmp_path / "both.duckdb"
    async with VirtualLink() as link:
        fleet = BleFleet(FleetConfig(patients=1, seed=5, kinds=("smartwatch",)), link)
        for d in fleet.devices:
            await d.device.start()
        port = await link.serve_tcp("127.0.0.1", 0)
        ble = dataclasses.replace(
            load_ble_config(tomllib.loads(devices_toml(fleet, "127.0.0.1", port))["ble"]),
            reconnect_min_s=0.05,
        )
        await assign_all(db, [*(d.device_id for d in fleet.devices), "GM-9"])
        config = ServiceConfig(
            mqtt=MqttConfig(port=mosquitto.port, client_id="vw-both"),
            store=StoreConfig(path=db),
            ble=ble,
        )
        async with Service(config) as svc:
            assert svc.ble is not None and svc.receiver is not None
            await svc.refresh_assignments()
            assert await svc.receiver.wait_connected(10)
            await until(
                lambda: all(s.connected for s in svc.ble.stats.devices.values()),
                what="BLE devices connected",
            )
            await until(
                lambda: all(d.device.subscribed(0x2A37).is_set() for d in fleet.devices),
                what="heart-rate notifications subscribed",
            )
            for d in fleet.devices:
                await fleet.measure_once(d, random.Random(2))
            body = {
                "metric": "glucose",
                "value": 6.1,
                "unit": "mmol/L",
                "ts": time.time_ns() // 1_000_000 - 1000,
                "seq": 1,
            }
            with Publisher(mosquitto.port) as pub:
                pub.publish([("vitalwire/v1/devices/GM-9/readings", orjson.dumps(body))])
            await until(lambda: svc.stats.stored >= 2, what="one BLE and one MQTT reading")
    stored = rows(db, "SELECT device_id, metric FROM readings ORDER BY device_id")
    assert ("GM-9", "glucose") in stored
    assert any(dev.startswith("BLE-") and metric == "heart_rate" for dev, metric in stored)

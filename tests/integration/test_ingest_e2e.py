"""End to end through a real mosquitto: a known mix of good and bad messages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pytest

from gateway.config import MqttConfig
from pipeline import registry
from pipeline.store import StoreConfig
from simulators import native
from tests.support.mqtt import Publisher
from vitalwire.broker import MosquittoBroker
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

pytestmark = pytest.mark.integration

NOW_US = time.time_ns() // 1000
TS_US = NOW_US - 60_000_000
TS = datetime.fromtimestamp(TS_US / 1e6, UTC).isoformat()


def vw(device: str, body: object) -> tuple[str, bytes]:
    return f"vitalwire/v1/devices/{device}/readings", orjson.dumps(body)


def reading(metric: str, value: object, unit: str, seq: int, **extra: object) -> dict[str, object]:
    return {
        "device_id": "GM-1",
        "metric": metric,
        "value": value,
        "unit": unit,
        "ts": TS,
        "seq": seq,
        **extra,
    }


GOOD = [
    vw("GM-1", reading("glucose", 5.5, "mmol/L", 1)),
    vw(
        "GM-1",
        [
            reading("heart_rate", 72, "/min", 2),
            reading("spo2", 0.97, "1", 3),
            reading("body_temperature", 98.6, "[degF]", 4),
        ],
    ),
    native.encode("scale", "SC-1", 1, TS_US, {"body_weight": 150 * 0.45359237}),  # 150.0 lb
    native.encode(
        "bedside_monitor",
        "BM-1",
        1,
        TS_US,
        {
            "heart_rate": 88,
            "respiratory_rate": 18,
            "spo2": 95,
            "systolic_bp": 121,
            "diastolic_bp": 79,
            "mean_bp": 93,
            "body_temperature": 37.0,
        },
    ),
    native.encode("smartwatch", "PW-1", 1, TS_US, {"heart_rate": 64, "spo2": 98, "steps": 5123}),
]
GOOD_COUNT = 1 + 3 + 1 + 7 + 3

BAD = {
    "malformed_json": ("vitalwire/v1/devices/GM-1/readings", b'{"device_id": "GM-1", "metric": '),
    "missing_field": vw(
        "GM-1", {k: v for k, v in reading("heart_rate", 1, "/min", 10).items() if k != "value"}
    ),
    "unit_not_accepted": vw("GM-1", reading("heart_rate", 72, "Hz", 11)),
    "bad_value": vw("GM-1", reading("heart_rate", "abc", "/min", 12)),
    "implausible_value": vw("GM-1", reading("heart_rate", 400, "/min", 13)),
    "unassigned_device": vw("XX-9", reading("heart_rate", 70, "/min", 14, device_id="XX-9")),
    "unknown_metric": vw("GM-1", reading("blood_ph", 7.4, "1", 15)),
    "garbage": ("medsys/bedside/BM-1/vitals", b"\xff\xfe\x00garbage"),
}


def service_config(broker: MosquittoBroker, db: Path, intake: str = "process") -> ServiceConfig:
    return ServiceConfig(
        mqtt=MqttConfig(port=broker.port, client_id="vw-e2e"),
        store=StoreConfig(path=db),
        intake=intake,
    )


@pytest.mark.parametrize("intake", ["process", "inline"])
async def test_known_mix_lands_exactly(
    mosquitto: MosquittoBroker, tmp_path: Path, intake: str
) -> None:
    db = tmp_path / "e2e.duckdb"
    config = service_config(mosquitto, db, intake)
    async with Service(config) as svc:
        for device, patient in [("GM-1", "P1"), ("SC-1", "P2"), ("BM-1", "P3"), ("PW-1", "P4")]:
            await asyncio.to_thread(
                registry.assign, svc.store, device, patient, datetime.fromtimestamp(0, UTC)
            )
        await svc.refresh_assignments()
        assert svc.receiver is not None and await svc.receiver.wait_connected(10)
        with Publisher(mosquitto.port) as pub:
            await asyncio.to_thread(pub.publish, GOOD + list(BAD.values()))
        deadline = time.monotonic() + 20
        while svc.stats.messages < len(GOOD) + len(BAD) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert svc.stats.stored == GOOD_COUNT

    con = duckdb.connect(str(db), read_only=True)
    stored = con.sql(
        "SELECT patient_id, device_id, metric, round(value, 4), unit FROM readings"
        " ORDER BY device_id, metric"
    ).fetchall()
    con_q = con.sql(
        "SELECT reason_code, topic, payload, reason, field FROM quarantine ORDER BY id"
    ).fetchall()
    con.close()

    assert stored == [
        ("P3", "BM-1", "body_temperature", 37.0, "Cel"),
        ("P3", "BM-1", "diastolic_bp", 79.0, "mm[Hg]"),
        ("P3", "BM-1", "heart_rate", 88.0, "/min"),
        ("P3", "BM-1", "mean_bp", 93.0, "mm[Hg]"),
        ("P3", "BM-1", "respiratory_rate", 18.0, "/min"),
        ("P3", "BM-1", "spo2", 95.0, "%"),
        ("P3", "BM-1", "systolic_bp", 121.0, "mm[Hg]"),
        ("P1", "GM-1", "body_temperature", 37.0, "Cel"),
        ("P1", "GM-1", "glucose", round(5.5 * 18.0156, 4), "mg/dL"),
        ("P1", "GM-1", "heart_rate", 72.0, "/min"),
        ("P1", "GM-1", "spo2", 97.0, "%"),
        ("P4", "PW-1", "heart_rate", 64.0, "/min"),
        ("P4", "PW-1", "spo2", 98.0, "%"),
        ("P4", "PW-1", "steps", 5123.0, "{steps}"),
        ("P2", "SC-1", "body_weight", round(150 * 0.45359237, 4), "kg"),
    ]
    assert len(con_q) == len(BAD)
    by_payload = {row[2]: row for row in con_q}
    for expected_code, (topic, payload) in BAD.items():
        code, got_topic, _, reason, _field = by_payload[payload]
        assert got_topic == topic
        if expected_code == "garbage":
            assert code == "malformed_json"
        else:
            assert code == expected_code, reason
        assert reason
    assert by_payload[BAD["missing_field"][1]][4].endswith("value")
    assert by_payload[BAD["unit_not_accepted"][1]][4] == "unit"

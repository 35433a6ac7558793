"""A real FHIR server (sekmet-fhir on loopback): MQTT to Observations, outage, 429, SMART."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fhir.resources.R4B.observation import Observation

from gateway.config import MqttConfig
from pipeline import registry
from pipeline.fhir.config import AuthConfig, FhirConfig, RetryPolicy
from pipeline.fhir.errors import FhirConfigError
from pipeline.fhir.exporter import FhirExporter
from pipeline.fhir.rules import check_observation
from pipeline.store import StoreConfig
from simulators import native
from tests.fhir.server import FaultProxy, SekmetServer
from tests.support.mqtt import Publisher
from vitalwire.broker import MosquittoBroker
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

pytestmark = pytest.mark.integration

FAST = RetryPolicy(initial_s=0.05, max_s=0.5)
START_US = time.time_ns() // 1000 - 3_600_000_000  # an hour ago, second-aligned below
START_US -= START_US % 1_000_000


def monitor_messages(first: int, count: int) -> list[tuple[str, bytes]]:
    """Bedside-monitor messages one minute apart: HR, RR, SpO2, BP pair, temperature."""
    return [
        native.encode("bedside_monitor", "BM-1", i + 1, START_US + i * 60_000_000, {
            "heart_rate": 60 + i % 40, "respiratory_rate": 16, "spo2": 95,
            "systolic_bp": 120 + i % 10, "diastolic_bp": 80, "body_temperature": 37.0})
        for i in range(first, first + count)
    ]  # fmt: skip


OBS_PER_MESSAGE = 5  # HR, RR, SpO2, BP panel, temperature


async def until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def assert_exactly_once(server: SekmetServer, expected: int) -> list[dict[str, Any]]:
    observations = server.search("Observation")
    counts = Counter(o["identifier"][0]["value"] for o in observations)
    assert len(observations) == expected
    assert set(counts.values()) == {1}
    now = datetime.now(UTC)
    for obs in observations:
        Observation.model_validate(obs)
        assert (
            check_observation(obs, now=now, identifier_system=FhirConfig().identifier_system) == []
        )
    return observations


async def test_mqtt_to_observations_through_a_server_outage(
    mosquitto: MosquittoBroker, sekmet: SekmetServer, tmp_path: Path
) -> None:
    fhir = FhirConfig(url=sekmet.base_url, bundle_size=5, poll_s=0.05, retry=FAST)
    config = ServiceConfig(
        mqtt=MqttConfig(port=mosquitto.port, client_id="vw-fhir"),
        store=StoreConfig(path=tmp_path / "vw.duckdb"),
        fhir=fhir,
    )
    async with Service(config) as svc:
        exporter = svc.fhir
        assert exporter is not None
        await asyncio.to_thread(
            registry.assign, svc.store, "BM-1", "P1", datetime.fromtimestamp(0, UTC)
        )
        await svc.refresh_assignments()
        assert svc.receiver is not None and await svc.receiver.wait_connected(10)
        with Publisher(mosquitto.port) as pub:
            await asyncio.to_thread(pub.publish, monitor_messages(0, 40))
            await until(lambda: exporter.stats.delivered >= 10, "first deliveries")
            sekmet.stop()  # mid-export: bundles of 5, 200 Observations queued
            await asyncio.to_thread(pub.publish, monitor_messages(40, 20))
            await until(lambda: exporter.stats.failures >= 3, "failed sends while down")
            assert await exporter.outbox_size() > 0
            await asyncio.to_thread(sekmet.start)
            await until(lambda: svc.stats.messages >= 60, "all messages ingested")
        await until(lambda: exporter.stats.delivered >= 60 * OBS_PER_MESSAGE, "every Observation")
        assert await exporter.outbox_size() == 0
        status = svc.store.query("SELECT count(*) AS n, sum(readings) AS r FROM fhir_delivered")
    assert status.row(0) == (60 * OBS_PER_MESSAGE, 60 * 6)
    observations = assert_exactly_once(sekmet, 60 * OBS_PER_MESSAGE)
    panels = [o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]
    assert len(panels) == 60
    devices = sekmet.search("Device")
    assert sorted(d["identifier"][0]["value"] for d in devices) == ["BM-1", "vitalwire-gateway"]


async def test_429_retry_after_is_honoured(sekmet: SekmetServer, tmp_path: Path) -> None:
    from pipeline.store import DuckDbStore
    from tests.fhir.support import batch, frame

    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    async with FaultProxy(
        sekmet.base_url,
        faults=[
            (
                429,
                {"Retry-After": "3", "Content-Type": "application/fhir+json"},
                b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled"}]}',
            ),
            (503, {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, b""),
        ],
    ) as proxy:
        fhir = FhirConfig(url=proxy.base_url, poll_s=0.05, retry=FAST)
        store_cfg = StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0)
        async with DuckDbStore(store_cfg) as store, FhirExporter(fhir, store, sleep=sleep) as exp:
            when = datetime.fromtimestamp(START_US / 1e6, UTC)
            await store.write(
                batch(
                    frame(
                        ("heart_rate", "HR-1", 70.0, "/min"), ("spo2", "HR-1", 97.0, "%"), when=when
                    )
                )
            )
            await until(lambda: exp.stats.delivered == 2, "delivery after throttling")
    assert delays == [3.0, 0.0]
    assert [(m, s) for m, _, s in proxy.log if m == "POST"] == [
        ("POST", 429),
        ("POST", 503),
        ("POST", 200),
    ]
    assert_exactly_once(sekmet, 2)


def _rsa(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(65537, 2048)
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


async def test_smart_backend_services_against_the_server(tmp_path: Path) -> None:
    from pipeline.store import DuckDbStore
    from tests.fhir.support import batch, frame

    private, public = _rsa(tmp_path, "vw")
    other, _ = _rsa(tmp_path, "other")
    server = SekmetServer(
        tmp_path / "smart",
        server_auth={
            "types": ["smart"],
            "smart_clients": [
                {"client_id": "vitalwire", "public_key_path": str(public), "scopes": "system/*.cs"}
            ],
        },
    )
    server.start()
    try:
        auth = AuthConfig(
            kind="smart",
            client_id="vitalwire",
            private_key=private,
            alg="RS384",
            kid="vw-1",
            scope="system/*.cs",
        )
        fhir = FhirConfig(url=server.base_url, poll_s=0.05, retry=FAST, auth=auth)
        store_cfg = StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0)
        async with DuckDbStore(store_cfg) as store, FhirExporter(fhir, store) as exp:
            when = datetime.fromtimestamp(START_US / 1e6, UTC)
            await store.write(batch(frame(("heart_rate", "HR-1", 70.0, "/min"), when=when)))
            await until(lambda: exp.stats.delivered == 1, "delivery with a SMART token")
            assert exp.client is not None
            assert getattr(exp.client.auth, "tokens_issued", 0) == 1
            assert getattr(exp.client.auth, "token_url", "") == server.base_url.replace(
                "/fhir", "/auth/token"
            )
        wrong = FhirConfig(
            url=server.base_url,
            auth=AuthConfig(
                kind="smart", client_id="vitalwire", private_key=other, scope="system/*.cs"
            ),
        )
        store_cfg2 = StoreConfig(path=tmp_path / "vw2.duckdb", idle_checkpoint_s=0)
        with pytest.raises(FhirConfigError, match=r"credentials refused .*verification failed"):
            async with DuckDbStore(store_cfg2) as store2, FhirExporter(wrong, store2):
                pass
    finally:
        server.stop()

"""The intake process against a real mosquitto: batches, acknowledgement after commit only,
backpressure, failures surfacing in the service, and signals left to the service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import MqttConfig
from gateway.errors import PermanentError, RetryableError
from pipeline.batcher import BatchConfig
from pipeline.errors import PermanentStoreError
from pipeline.readings import ReadingBatch
from pipeline.store import StoreConfig
from tests.support.mqtt import Publisher
from vitalwire.broker import MosquittoBroker
from vitalwire.config import ServiceConfig
from vitalwire.intake import IntakeProcess
from vitalwire.service import Service

TS_MS = int(time.time() * 1000) - 600_000


def message(i: int, device: str = "GM-1") -> tuple[str, bytes]:
    body = {"device_id": device, "metric": "heart_rate", "value": 60 + i % 40, "unit": "/min",
            "ts": TS_MS + i * 1000, "seq": i}
    return f"vitalwire/v1/devices/{device}/readings", json.dumps(body).encode()


def config(port: int, client_id: str, tmp_path: Path, **mqtt: object) -> ServiceConfig:
    return ServiceConfig(
        mqtt=MqttConfig(port=port, client_id=client_id, **mqtt),  # type: ignore[arg-type]
        store=StoreConfig(path=tmp_path / "intake.duckdb"),
        batch=BatchConfig(max_age_ms=20),
    )


async def take(batches: AsyncIterator[tuple[ReadingBatch, list[object]]], n_messages: int,
               timeout: float = 15.0) -> tuple[list[bytes], list[object]]:
    """Payloads and tokens of the next batches, until ``n_messages`` messages came."""
    payloads: list[bytes] = []
    tokens: list[object] = []
    async with asyncio.timeout(timeout):
        while len(payloads) < n_messages:
            batch, numbers = await anext(batches)
            payloads += batch.messages["payload"].to_list()
            tokens += numbers
    return payloads, tokens


async def finish(intake: IntakeProcess,
                 batches: AsyncIterator[tuple[ReadingBatch, list[object]]]) -> int:
    """Stop the intake and count the messages of the batches it still flushes."""
    intake.stop()
    return sum([b.messages.height async for b, _ in batches])


async def test_only_acknowledged_batches_stay_acknowledged(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Closed without acks, the next intake on the same session gets every message again."""
    cfg = config(mosquitto.port, "intake-redeliver", tmp_path)
    sent = [message(i) for i in range(6)]
    async with IntakeProcess(cfg) as intake:
        assert await intake.wait_connected(10)
        batches = intake.batches()
        await asyncio.to_thread(Publisher(mosquitto.port).publish, sent)
        first, _ = await take(batches, len(sent))
        assert await finish(intake, batches) == 0
    assert sorted(first) == sorted(p for _, p in sent)

    async with IntakeProcess(cfg) as intake:
        assert await intake.wait_connected(10)
        batches = intake.batches()
        again, tokens = await take(batches, len(sent))
        intake.ack(tokens)
        assert await finish(intake, batches) == 0
    assert sorted(again) == sorted(first)

    async with IntakeProcess(cfg) as intake:
        assert await intake.wait_connected(10)
        await asyncio.sleep(1.0)  # time for a redelivery, if there were one
        assert await finish(intake, intake.batches()) == 0


async def test_a_busy_service_gets_one_larger_batch(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Until the service asks again the child keeps collecting, well past the flush age."""
    cfg = config(mosquitto.port, "intake-busy", tmp_path)
    async with IntakeProcess(cfg) as intake:
        assert await intake.wait_connected(10)
        batches = intake.batches()
        with Publisher(mosquitto.port) as pub:
            await asyncio.to_thread(pub.publish, [message(0)])
            _, tokens = await take(batches, 1)
            # The service holds on to that batch: 40 messages arrive meanwhile, one by one.
            for i in range(1, 41):
                await asyncio.to_thread(pub.publish, [message(i)])
            await asyncio.sleep(1.5)
        batch, numbers = await anext(batches)
        assert batch.messages.height == 40
        assert batch.readings.height == 40
        intake.ack(tokens + numbers)
        assert await finish(intake, batches) == 0
    assert intake.batches_out == 2 and intake.messages_in == 41


async def test_a_killed_intake_fails_the_service(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    cfg = config(mosquitto.port, "intake-killed", tmp_path)
    exited = r"the intake process exited \(code -9\)"
    with pytest.raises(RetryableError, match=exited):  # again when the service stops
        async with Service(cfg) as svc:
            assert isinstance(svc.receiver, IntakeProcess) and svc.receiver.pid is not None
            assert await svc.receiver.wait_connected(10)
            os.kill(svc.receiver.pid, signal.SIGKILL)
            with pytest.raises(RetryableError, match=exited):
                await asyncio.wait_for(svc.wait(), 10)
    with pytest.raises(PermanentStoreError, match="the store is closed, not open"):
        await svc.store.assignments()  # the failed service still closed its store


async def test_the_intake_leaves_signals_to_the_service(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """SIGINT and SIGTERM sent to the child (a Ctrl-C, a group kill) do not stop intake."""
    cfg = config(mosquitto.port, "intake-signals", tmp_path)
    async with Service(cfg) as svc:
        assert isinstance(svc.receiver, IntakeProcess) and svc.receiver.pid is not None
        assert await svc.receiver.wait_connected(10)
        os.kill(svc.receiver.pid, signal.SIGINT)
        os.kill(svc.receiver.pid, signal.SIGTERM)
        await asyncio.to_thread(Publisher(mosquitto.port).publish, [message(i) for i in range(3)])
        async with asyncio.timeout(15):
            while svc.stats.messages < 3:
                await asyncio.sleep(0.02)
    # The readings' device is unassigned, so they wait in quarantine: all three got through.
    assert svc.stats.quarantined == 3 and svc.stats.by_reason == {"unassigned_device": 3}


async def test_bad_credentials_surface_as_permanent(
    password_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg = config(password_broker.port, "intake-bad", tmp_path, username="gateway",
                 password="wrong")
    refused = "refused the connection: not authorized"
    with pytest.raises(PermanentError, match=refused):
        async with Service(cfg) as svc:
            assert isinstance(svc.receiver, IntakeProcess)
            with pytest.raises(PermanentError, match=refused):
                await svc.receiver.wait_connected(10)
            with pytest.raises(PermanentError, match=refused):
                await asyncio.wait_for(svc.wait(), 10)


def test_intake_mode_is_validated() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="intake: 'thread' is not one of process, inline"):
        ServiceConfig(intake="thread")

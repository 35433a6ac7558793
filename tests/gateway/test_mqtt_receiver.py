"""The MQTT receiver against a real mosquitto: manual acks, persistent session, reconnects, auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import MqttConfig
from gateway.errors import PermanentError
from gateway.mqtt_receiver import MqttReceiver
from gateway.records import RawMessage
from tests.support.mqtt import Publisher
from vitalwire.broker import MosquittoBroker

pytestmark = pytest.mark.integration


async def take(rx: MqttReceiver, n: int, timeout: float = 10.0) -> list[RawMessage]:
    got: list[RawMessage] = []
    while len(got) < n:
        batch = await rx.receive(n - len(got), timeout)
        if not batch:
            break
        got.extend(batch)
    return got


async def test_unacknowledged_messages_come_back_after_reconnect(
    mosquitto: MosquittoBroker,
) -> None:
    cfg = MqttConfig(port=mosquitto.port, client_id="rx-ack")
    async with MqttReceiver(cfg, ["dev/+/x"]) as rx:
        assert await rx.wait_connected(10)
    # the session exists; publish while the receiver is away
    with Publisher(mosquitto.port) as pub:
        pub.publish((f"dev/{i}/x", b"m%d" % i) for i in range(10))
    async with MqttReceiver(cfg, ["dev/+/x"]) as rx:
        first = await take(rx, 10)
        assert [m.payload for m in first] == [b"m%d" % i for i in range(10)]
        assert rx.stats.session_present
        assert all(m.source == "mqtt" and m.topic.startswith("dev/") for m in first)
        rx.ack([m.ack for m in first[:6]])  # commit only the first six
    async with MqttReceiver(cfg, ["dev/+/x"]) as rx:
        again = await take(rx, 4, timeout=5)
        assert [m.payload for m in again] == [b"m6", b"m7", b"m8", b"m9"]
        rx.ack([m.ack for m in again])
        assert await rx.receive(10, 0.5) == []
    async with MqttReceiver(cfg, ["dev/+/x"]) as rx:
        assert await rx.wait_connected(10)
        assert await rx.receive(10, 0.5) == []  # everything acknowledged stays acknowledged


async def test_receive_maximum_bounds_unacknowledged_intake(mosquitto: MosquittoBroker) -> None:
    cfg = MqttConfig(port=mosquitto.port, client_id="rx-max", receive_maximum=50)
    async with MqttReceiver(cfg, ["flood/#"]) as rx:
        assert await rx.wait_connected(10)
        with Publisher(mosquitto.port) as pub:
            pub.publish((f"flood/{i}", b"x") for i in range(300))
        first = await take(rx, 300, timeout=1.0)
        assert len(first) == 50  # the broker holds the rest until we acknowledge
        rx.ack([m.ack for m in first])
        rest = await take(rx, 250, timeout=10)
        while rest and len(rest) < 250:
            rx.ack([m.ack for m in rest])
            rest += await take(rx, 250 - len(rest), timeout=10)
        assert len(first) + len(rest) == 300


async def test_reconnects_after_broker_restart(tmp_path: Path) -> None:
    broker = MosquittoBroker(persistence=True, workdir=tmp_path / "b")
    broker.start()
    try:
        cfg = MqttConfig(
            port=broker.port, client_id="rx-restart", reconnect_min_s=0.1, reconnect_max_s=0.5
        )
        async with MqttReceiver(cfg, ["r/#"]) as rx:
            assert await rx.wait_connected(10)
            broker.stop()
            broker.start()
            with Publisher(broker.port) as pub:
                pub.publish([("r/1", b"after-restart")])
            got = await take(rx, 1, timeout=15)
            assert [m.payload for m in got] == [b"after-restart"]
            assert rx.stats.connects >= 2
    finally:
        broker.cleanup()


async def test_bad_credentials_are_permanent(password_broker: MosquittoBroker) -> None:
    port = password_broker.port
    good = MqttConfig(port=port, client_id="rx-good", username="gateway", password="right")
    async with MqttReceiver(good, ["a/#"]) as rx:
        assert await rx.wait_connected(10)
    bad = MqttConfig(port=port, client_id="rx-bad", username="gateway", password="wrong")
    async with MqttReceiver(bad, ["a/#"]) as rx:
        with pytest.raises(PermanentError, match="refused the connection"):
            await rx.wait_connected(10)
        with pytest.raises(PermanentError):
            await rx.receive(1, 0.1)

"""The live fleet against a real mosquitto: what arrives is exactly what ``generate`` yields."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.errors import RetryableError
from simulators.config import FleetConfig
from simulators.fleet import generate
from simulators.publisher import Fleet, MqttPublisher
from tests.simulators.conftest import US, FakeClock
from tests.support.mqtt import wait_until
from vitalwire.broker import AmqttBroker, MosquittoBroker, free_port

pytestmark = pytest.mark.integration


class Subscriber:
    """Subscribes to everything at QoS 1 (again after each reconnect) and records what arrives."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[int, str, bytes]] = []
        self.subscriptions = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="sim-test-sub",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        # A persistent session: what arrives while this client reconnects waits for it.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        wait_until(lambda: self.subscriptions == 1, 10.0, "the SUBACK")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe("#", qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        self.subscriptions += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.received.append((time.time_ns() // 1000, msg.topic, bytes(msg.payload)))

    def distinct(self) -> int:
        """How many different messages arrived (a QoS 1 redelivery counts once)."""
        return len({(t, p) for _, t, p in self.received})

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_fleet_publishes_exactly_the_generated_messages(mosquitto: MosquittoBroker) -> None:
    sub = Subscriber(mosquitto.port)
    cfg = FleetConfig(patients=4, duration_s=300.0, acceleration=300.0, port=mosquitto.port)
    try:
        async with Fleet(cfg) as fleet:
            await fleet.run_until()
            assert fleet.timeline is not None
            wall_start = fleet.timeline.wall_start_us
        expected = list(generate(cfg, wall_start))
        await asyncio.to_thread(
            wait_until, lambda: len(sub.received) >= len(expected), 30.0, "every message"
        )
    finally:
        sub.close()
    assert len(expected) > 200
    assert isinstance(fleet.publisher, MqttPublisher)
    assert (fleet.publisher.sent, fleet.publisher.acked, fleet.publisher.errors) == (
        len(expected),
        len(expected),
        0,
    )
    assert [(t, p) for _, t, p in sub.received] == [(m.topic, m.payload) for m in expected]
    # Device time is never in the future of the moment the message arrives.
    assert all(m.ts_us <= at for (at, _, _), m in zip(sub.received, expected, strict=True))


class ScriptedClock(FakeClock):
    """A fake clock that runs an action when time passes its instant."""

    def __init__(self, now_us: int, actions: list[tuple[int, Callable[[], None]]]) -> None:
        super().__init__(now_us)
        self.actions = actions

    async def sleep_until(self, t_us: int) -> None:
        while self.actions and self.actions[0][0] <= t_us:
            self.actions.pop(0)[1]()
        await super().sleep_until(t_us)


async def test_fleet_waits_out_a_broker_restart(mosquitto: MosquittoBroker) -> None:
    """While the broker is down publishing waits; afterwards every message arrives, in order."""
    sub = Subscriber(mosquitto.port)
    cfg = FleetConfig(patients=2, duration_s=600.0, acceleration=60.0, port=mosquitto.port)
    restart = threading.Timer(0.5, mosquitto.start)

    def broker_down() -> None:
        assert isinstance(fleet.publisher, MqttPublisher)
        pub = fleet.publisher
        wait_until(lambda: len(sub.received) == pub.acked == pub.sent, 10.0, "delivery so far")
        mosquitto.stop()
        restart.start()

    wall_start = time.time_ns() // 1000 - 60 * US
    fleet = Fleet(cfg, clock=ScriptedClock(wall_start, [(wall_start + 3 * US, broker_down)]))
    try:
        async with fleet:
            await fleet.run_until()
        expected = [(m.topic, m.payload) for m in generate(cfg, wall_start)]
        await asyncio.to_thread(
            wait_until, lambda: sub.distinct() >= len(expected), 30.0, "every message"
        )
    finally:
        restart.join()
        sub.close()
    assert isinstance(fleet.publisher, MqttPublisher)
    assert fleet.publisher.connects == 2 and fleet.publisher.disconnects == 1
    assert fleet.publisher.acked == len(expected) == fleet.published
    # A message caught in flight by the outage is sent again (QoS 1), so it may arrive twice.
    assert list(dict.fromkeys((t, p) for _, t, p in sub.received)) == expected


async def test_unreachable_broker_is_a_retryable_error() -> None:
    port = free_port()
    cfg = FleetConfig(port=port, connect_timeout_s=0.5)
    with pytest.raises(RetryableError, match=f"cannot connect to MQTT broker 127.0.0.1:{port}"):
        async with MqttPublisher(cfg):
            pass


# amqtt leaves a client's StreamWriter unclosed when the client disconnects (its bug, not ours).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_mqtt_3_1_1_broker_with_the_version_setting() -> None:
    broker = AmqttBroker().start()  # amqtt speaks MQTT 3.1.1 only
    try:
        cfg = FleetConfig(port=broker.port, connect_timeout_s=5.0, mqtt_version="3.1.1")
        async with MqttPublisher(cfg) as pub:
            assert await pub.publish("sim/test", b"payload")
            assert await pub.drain(5.0)
        assert (pub.sent, pub.acked, pub.errors) == (1, 1, 0)
    finally:
        broker.stop()
        gc.collect()  # collect amqtt's leaked writer here, where its warning is filtered

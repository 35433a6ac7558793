"""The benchmarks' lean publisher against a real mosquitto: every message arrives once, in
order; the broker's Receive Maximum bounds the window; refusals are errors."""

from __future__ import annotations

import importlib.util
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from vitalwire.broker import MosquittoBroker


def _load_bench_wire() -> ModuleType:
    """benchmarks/bench_wire.py by path (that folder holds a file named like the alerts
    package, so it stays off the import path)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_wire.py"
    spec = importlib.util.spec_from_file_location("bench_wire", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_wire = _load_bench_wire()
MqttWireError, TickPublisher, _receive_maximum, publish_paced = (
    _wire.MqttWireError, _wire.TickPublisher, _wire._receive_maximum, _wire.publish_paced)


class _Subscriber:
    """A paho subscriber at QoS 1 collecting payloads."""

    def __init__(self, port: int, topic: str) -> None:
        self.payloads: list[bytes] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wire-sub",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.payloads.append(m.payload)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(10)

    def wait_for(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.payloads) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # anything beyond n would show up now

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mosquitto: MosquittoBroker) -> Iterator[_Subscriber]:
    sub = _Subscriber(mosquitto.port, "wire/#")
    yield sub
    sub.close()


def test_every_message_arrives_once_in_order(mosquitto: MosquittoBroker,
                                             subscriber: _Subscriber) -> None:
    sent = [(f"wire/d{i % 7}", b"payload-%05d" % i + b"x" * (i % 300)) for i in range(2000)]
    with TickPublisher(mosquitto.port, "wire-pub") as pub:
        for start in range(0, len(sent), 130):  # ticks of different sizes
            assert pub.publish(sent[start:start + 130]) == len(sent[start:start + 130])
        pub.drain()
        assert (pub.sent, pub.acked) == (2000, 2000)
    subscriber.wait_for(2000)
    assert subscriber.payloads == [p for _, p in sent]


def test_paced_publishing_sends_what_is_due_and_waits_for_every_ack(
        mosquitto: MosquittoBroker, subscriber: _Subscriber) -> None:
    made: list[int] = []

    def next_message() -> tuple[str, bytes, int]:
        made.append(time.time_ns())
        return f"wire/p{len(made) % 5}", b"%d" % len(made), 3

    with TickPublisher(mosquitto.port, "wire-paced") as pub:
        messages, readings, seconds = publish_paced(pub, 3000.0, 0.5, next_message)
        assert pub.acked == pub.sent == messages == len(made)
    assert readings == 3 * messages
    assert 1500 <= readings < 1500 + 3  # rate x duration, completed by the last send
    assert seconds >= 0.5
    # made along the way, not in one burst
    assert made[-1] - made[0] >= 0.3e9
    assert made[len(made) // 2] - made[0] <= 0.45e9
    subscriber.wait_for(messages)
    assert subscriber.payloads == [b"%d" % (i + 1) for i in range(messages)]


class _SmallWindowBroker(MosquittoBroker):
    def config_text(self) -> str:
        return super().config_text().replace("max_inflight_messages 0", "max_inflight_messages 4")


def test_the_broker_receive_maximum_bounds_the_window(tmp_path: Path) -> None:
    broker = _SmallWindowBroker(workdir=tmp_path / "small")
    broker.start()
    try:
        sub = _Subscriber(broker.port, "wire/#")
        try:
            with TickPublisher(broker.port, "wire-pub", window=1000) as pub:
                assert pub.window == 4
                pub.publish((f"wire/{i}", b"%d" % i) for i in range(300))
                pub.drain()
                assert pub.acked == 300
            sub.wait_for(300)
            assert sub.payloads == [b"%d" % i for i in range(300)]
        finally:
            sub.close()
    finally:
        broker.cleanup()


def test_a_refused_connection_is_an_error(password_broker: MosquittoBroker) -> None:
    with pytest.raises(MqttWireError, match="refused the connection"):
        TickPublisher(password_broker.port, "anonymous")


def _prop_string(pid: int, text: bytes) -> bytes:
    return bytes([pid]) + struct.pack("!H", len(text)) + text


def test_receive_maximum_is_found_among_other_properties() -> None:
    props = (_prop_string(0x12, b"assigned-id") + bytes([0x24, 1])
             + bytes([0x26]) + struct.pack("!H", 1) + b"k" + struct.pack("!H", 2) + b"vv"
             + bytes([0x27]) + struct.pack("!I", 1 << 20)
             + bytes([0x21]) + struct.pack("!H", 33))
    assert _receive_maximum(props) == 33
    assert _receive_maximum(bytes([0x24, 1])) == 65_535
    with pytest.raises(MqttWireError, match="0x7f"):
        _receive_maximum(bytes([0x7F, 0]))

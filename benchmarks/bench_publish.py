"""Publishers of the benchmark (each runs in a process of its own) and session set-up.

All publishing is MQTT 5 at QoS 1 with a sliding window of unacknowledged messages (the
backlog through paho, the paced load through :class:`bench_wire.TickPublisher`): a publisher
returns only once the broker acknowledged every message, so a backlog is fully queued at the
broker before a subscriber is started.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from bench_wire import TickPublisher
from bench_wire import publish_paced as paced
from bench_workload import Workload, backlog_messages, live_messages, sample_values
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulators import native

__all__ = [
    "PUBLISH_WINDOW",
    "PublishResult",
    "connect_client",
    "create_session",
    "end_session",
    "publish_backlog",
    "publish_paced",
]

PUBLISH_WINDOW = 1000
"""Unacknowledged QoS 1 messages a publisher keeps in flight."""

SESSION_EXPIRY_S = 3600
"""Expiry of the subscriber sessions created before a backlog is published."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one publisher sent.

    Attributes:
        messages: Messages acknowledged by the broker.
        readings: Readings in them.
        seconds: From the first publish to the last acknowledgement.
    """

    messages: int
    readings: int
    seconds: float


def connect_client(port: int, client_id: str, *, clean_start: bool = True,
                   session_expiry_s: int = 0, receive_maximum: int = 0,
                   inflight: int = 20, protocol: str = "5",
                   client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A connected paho client (VERSION2 callbacks); its loop is not started.

    Args:
        port: Broker port on 127.0.0.1.
        client_id: Client id (names the session).
        clean_start: MQTT 5 clean start.
        session_expiry_s: MQTT 5 session expiry; with ``protocol="3.1.1"`` any value > 0
            means a persistent session (clean session off), 0 a clean one.
        receive_maximum: MQTT 5 Receive Maximum (0: the broker's default).
        inflight: The client's own window of unacknowledged outgoing QoS 1 messages.
        protocol: ``"5"`` or ``"3.1.1"``, as in :class:`gateway.config.MqttConfig`.
        client_class: paho's ``Client`` or a subclass of it.
    """
    if protocol == "3.1.1":
        client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id,
                              protocol=mqtt.MQTTv311, clean_session=session_expiry_s == 0)
        client.max_inflight_messages_set(inflight)
        client.connect("127.0.0.1", port, keepalive=60)
        return client
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id,
                          protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(inflight)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    client.connect("127.0.0.1", port, keepalive=60, clean_start=clean_start, properties=props)
    return client


def create_session(port: int, client_id: str, filters: Sequence[str],
                   protocol: str = "5") -> None:
    """Create a fresh persistent session subscribed to ``filters`` at QoS 1, then leave.

    The broker queues everything published on ``filters`` from now on until ``client_id``
    connects again (with clean start off).
    """
    acked = threading.Event()
    client = connect_client(port, client_id, clean_start=True,
                            session_expiry_s=SESSION_EXPIRY_S, protocol=protocol)
    client.on_subscribe = lambda c, u, mid, reasons, props: acked.set()
    client.loop_start()
    try:
        client.subscribe([(f, 1) for f in filters])
        if not acked.wait(10):
            raise RuntimeError(f"{client_id}: no SUBACK from 127.0.0.1:{port} within 10 s")
    finally:
        client.disconnect()
        client.loop_stop()


def end_session(port: int, client_id: str, protocol: str = "5") -> None:
    """Discard ``client_id``'s session at the broker (so that it stops queueing for it)."""
    client = connect_client(port, client_id, clean_start=True, session_expiry_s=0,
                            protocol=protocol)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not client.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{client_id}: no CONNACK from 127.0.0.1:{port} within 10 s")
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()


def _settle(info: mqtt.MQTTMessageInfo) -> None:
    """Wait for the broker's PUBACK of one message."""
    info.wait_for_publish(60)
    if not info.is_published():
        raise RuntimeError(f"message {info.mid} was not acknowledged within 60 s")


def _publish_all(client: mqtt.Client, items: Iterable[tuple[str, bytes, int]]) -> tuple[int, int]:
    window: collections.deque[mqtt.MQTTMessageInfo] = collections.deque()
    messages = readings = 0
    for topic, payload, n in items:
        if len(window) >= PUBLISH_WINDOW:
            _settle(window.popleft())
        window.append(client.publish(topic, payload, qos=1))
        messages += 1
        readings += n
    for info in window:
        _settle(info)
    return messages, readings


def publish_backlog(port: int, workload: Workload, n_messages: int, end_us: int,
                    part: int, parts: int) -> PublishResult:
    """Publish this process's share of a backlog (encoded before the clock starts)."""
    items = list(backlog_messages(workload, n_messages, end_us, part, parts))
    client = connect_client(port, f"bench-pub-{part}-of-{parts}", inflight=PUBLISH_WINDOW)
    client.loop_start()
    try:
        t0 = time.monotonic()
        messages, readings = _publish_all(client, items)
        return PublishResult(messages, readings, time.monotonic() - t0)
    finally:
        client.disconnect()
        client.loop_stop()


def publish_paced(port: int, workload: Workload, rate: float, duration_s: float) -> PublishResult:
    """Publish ``rate`` readings per second for ``duration_s``, each stamped when published.

    Each message is encoded right before its send with the current wall clock as its device
    time, so ``commit time - observed_at`` is the publish -> commit latency. The messages due
    go out every :data:`bench_wire.TICK_S` in one send (:class:`bench_wire.TickPublisher`):
    the load generator shares the machine with the broker and the service, and paho's
    per-message cost would take CPU from them.
    """
    mean_readings = sum(len(d.metrics) for d, _ in live_messages(workload, 2000)) / 2000
    n_max = int(rate * duration_s / mean_readings * 1.5) + 100
    plan = live_messages(workload, n_max)
    rng = random.Random(workload.seed)

    def next_message() -> tuple[str, bytes, int]:
        device, seq = next(plan)
        values = sample_values(device, rng)
        topic, payload = native.encode(device.kind, device.device_id, seq,
                                       time.time_ns() // 1000, values)
        return topic, payload, len(values)

    with TickPublisher(port, "bench-pub-paced", window=PUBLISH_WINDOW) as pub:
        return PublishResult(*paced(pub, rate, duration_s, next_message))

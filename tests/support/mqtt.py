"""Test helpers: publish to a real broker and wait for conditions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt


class Publisher:
    """A blocking QoS 1 publisher (waits for every PUBACK)."""

    def __init__(self, port: int, client_id: str = "") -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(500)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, items: Iterable[tuple[str, bytes]], qos: int = 1) -> int:
        infos = [self.client.publish(topic, payload, qos=qos) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

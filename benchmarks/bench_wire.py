"""A lean MQTT 5 publisher for paced load (QoS 1), so the load generator takes little CPU.

The benchmarks run the broker, the service and the load generator on the same machine, while
in production the devices publish from elsewhere. paho costs about 100 µs of CPU per publish
here (packet objects, a wake-up of its network thread, one ``send`` per message); at the paced
rates that was a quarter to a half of one of the two CPUs, taken from the service under test.
:class:`TickPublisher` writes every message due in a tick with one ``send`` and counts the
broker's PUBACKs, keeping at most the broker's Receive Maximum unacknowledged.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Iterable

__all__ = ["TICK_S", "MqttWireError", "TickPublisher", "publish_paced"]

_CONNECT, _CONNACK, _PUBLISH_QOS1, _PUBACK, _DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0
_RECEIVE_MAXIMUM = 0x21
# CONNACK property id -> value size in bytes; -1: UTF-8 string or binary data, -2: string pair.
_PROPERTY_SIZES = {
    0x11: 4, 0x12: -1, 0x13: 2, 0x15: -1, 0x16: -1, 0x1A: -1, 0x1C: -1, 0x1F: -1,
    0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip


TICK_S = 0.002
"""A paced publisher sends what is due every this many seconds."""

Message = tuple[str, bytes, int]
"""``(topic, payload, readings in it)``."""


class MqttWireError(RuntimeError):
    """The broker refused the connection or a message, or the connection broke."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """``(value, next position)``, or ``None`` when ``buf`` ends inside the number."""
    value = shift = 0
    while at < len(buf):
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 21:
            raise MqttWireError("malformed remaining length")
    return None


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _receive_maximum(props: bytes) -> int:
    """The Receive Maximum in CONNACK properties (65,535 when absent, as MQTT 5 says)."""
    at = 0
    while at < len(props):
        pid = props[at]
        at += 1
        size = _PROPERTY_SIZES.get(pid)
        if size is None:
            raise MqttWireError(f"unexpected CONNACK property 0x{pid:02x}")
        if pid == _RECEIVE_MAXIMUM:
            return int(struct.unpack_from("!H", props, at)[0])
        if size >= 0:
            at += size
        else:
            for _ in range(-size):
                at += 2 + struct.unpack_from("!H", props, at)[0]
    return 65_535


class TickPublisher:
    """QoS 1 publishes written in groups; PUBACKs counted, not parsed into objects.

    Args:
        port: Broker port on 127.0.0.1.
        client_id: MQTT client id.
        window: Most unacknowledged messages (capped by the broker's Receive Maximum).
        timeout_s: How long to wait for the broker before giving up.
    """

    def __init__(self, port: int, client_id: str, window: int = 1000,
                 timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.sent = 0
        self.acked = 0
        self._buf = bytearray()
        self._next_id = 0
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        try:
            self._handshake(client_id, window)
        except BaseException:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def __enter__(self) -> TickPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(self, items: Iterable[tuple[str, bytes]]) -> int:
        """Send ``(topic, payload)`` pairs at QoS 1, as few ``send`` calls as the window
        allows; returns how many were sent."""
        packets: list[bytes] = []
        count = 0
        for topic, payload in items:
            if self.sent + len(packets) - self.acked >= self.window:
                self._send(packets)
                packets = []
                self._wait_acks(lambda: self.sent - self.acked < self.window)
            self._next_id = self._next_id % 65_535 + 1
            topic_bytes = topic.encode()
            rest = 2 + len(topic_bytes) + 2 + 1 + len(payload)
            packets.append(b"".join((
                bytes([_PUBLISH_QOS1]), _varint(rest), struct.pack("!H", len(topic_bytes)),
                topic_bytes, struct.pack("!HB", self._next_id, 0), payload,
            )))  # fmt: skip
            count += 1
        self._send(packets)
        self.poll()
        return count

    def poll(self) -> None:
        """Count the PUBACKs that have arrived (does not wait)."""
        while True:
            try:
                data = self._sock.recv(65_536)
            except BlockingIOError:
                return
            if not data:
                raise MqttWireError("the broker closed the connection")
            self._buf += data
            self._count_acks()

    def drain(self) -> None:
        """Wait until the broker acknowledged every message sent."""
        self._wait_acks(lambda: self.acked >= self.sent)

    def close(self) -> None:
        """Disconnect (after :meth:`drain`, nothing is lost)."""
        try:
            self._sock.setblocking(True)
            self._sock.sendall(bytes([_DISCONNECT, 0]))
        except OSError:
            pass
        finally:
            self._sock.close()

    # -- internals ---------------------------------------------------------------------------

    def _handshake(self, client_id: str, window: int) -> None:
        """CONNECT, then the CONNACK's verdict and Receive Maximum."""
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (_string("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00"
                + _string(client_id))
        self._sock.sendall(bytes([_CONNECT]) + _varint(len(body)) + body)
        kind, reply = self._read_packet()
        if kind != _CONNACK or len(reply) < 3:
            raise MqttWireError(f"expected CONNACK, got packet type 0x{kind:02x}")
        if reply[1] != 0:
            raise MqttWireError(f"broker refused the connection: reason 0x{reply[1]:02x}")
        props = _read_varint(reply, 2)
        if props is None:
            raise MqttWireError("malformed CONNACK")
        n, at = props
        self.window = max(1, min(window, _receive_maximum(reply[at:at + n])))

    def _send(self, packets: list[bytes]) -> None:
        if not packets:
            return
        data = memoryview(b"".join(packets))
        deadline = time.monotonic() + self.timeout_s
        while data:
            try:
                data = data[self._sock.send(data):]
            except BlockingIOError:
                self.poll()  # the broker may wait for us to read before it reads more
                if time.monotonic() > deadline:
                    raise MqttWireError("the broker stopped reading") from None
                select.select([self._sock], [self._sock], [], 0.05)
        self.sent += len(packets)

    def _wait_acks(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise MqttWireError(f"{self.sent - self.acked} messages not acknowledged")
            select.select([self._sock], [], [], 0.05)
            self.poll()

    def _count_acks(self) -> None:
        buf, at = self._buf, 0
        while at < len(buf):
            length = _read_varint(buf, at + 1)
            if length is None or length[1] + length[0] > len(buf):
                break
            n, start = length
            kind = buf[at] & 0xF0
            if kind == _PUBACK:
                if n >= 3 and buf[start + 2] >= 0x80:
                    raise MqttWireError(f"broker refused a message: reason 0x{buf[start + 2]:02x}")
                self.acked += 1
            elif kind == _DISCONNECT:
                raise MqttWireError("the broker disconnected us")
            at = start + n
        del buf[:at]

    def _read_packet(self) -> tuple[int, bytes]:
        """One whole packet's type and body, blocking (used before the socket goes
        non-blocking)."""
        while True:
            length = _read_varint(self._buf, 1) if self._buf else None
            if length is not None and length[1] + length[0] <= len(self._buf):
                n, start = length
                kind = self._buf[0] & 0xF0
                body = bytes(self._buf[start:start + n])
                del self._buf[: start + n]
                return kind, body
            data = self._sock.recv(65_536)
            if not data:
                raise MqttWireError("the broker closed the connection")
            self._buf += data


def publish_paced(pub: TickPublisher, rate: float, duration_s: float,
                  next_message: Callable[[], Message], tick_s: float = TICK_S
                  ) -> tuple[int, int, float]:
    """Publish ``rate`` readings per second for ``duration_s`` through ``pub``.

    Every ``tick_s`` the messages due are made by ``next_message`` right then (so a payload
    stamped with the wall clock carries its send time) and go out in one send; the last send
    completes ``rate * duration_s`` readings; then every PUBACK is awaited. Returns
    ``(messages, readings, seconds until the last PUBACK)``.
    """
    t0 = time.monotonic()
    messages = readings = 0
    while True:
        now = min(time.monotonic() - t0, duration_s)
        due: list[tuple[str, bytes]] = []
        while readings < rate * now:
            topic, payload, n = next_message()
            due.append((topic, payload))
            messages += 1
            readings += n
        pub.publish(due)
        if now >= duration_s:
            break
        time.sleep(tick_s)
    pub.drain()
    return messages, readings, time.monotonic() - t0

"""A paho-mqtt client that reads the socket in blocks and writes small packets together.

:class:`BufferedClient` is a drop-in subclass of :class:`paho.mqtt.client.Client`. It changes
how bytes move between paho and the socket, and how the common PUBLISH is parsed (the same
result, less work):

* Reading: ``_sock_recv`` reads up to ``READ_SIZE`` bytes per ``recv()`` into a private buffer
  and serves paho's per-packet reads (1 byte, 1 byte, N bytes) from it. The buffer belongs to
  one socket object; a new socket (reconnect) discards it.
* ``loop_read`` runs paho's ``_packet_read`` until the socket would block, so that no complete
  packet waits in the private buffer while ``select()`` (which cannot see it) sleeps. It stops
  after ``MAX_REFILLS`` reads so that writes and keepalive get their turn, and returns with the
  private buffer empty (except while disconnecting, when the socket is closed anyway).
* Packets the network thread queues while inside ``loop_read`` (automatic acks, PUBRECs,
  subscriptions or publishes from callbacks) are appended without a wake-up byte and written by
  one ``loop_write`` when ``loop_read`` ends. Packets queued by other threads take paho's path.
* ``_packet_write`` joins consecutive queued packets (up to ``WRITE_SIZE`` bytes) into one
  ``send()``. A QoS 0 PUBLISH or a DISCONNECT needs paho's completion handling (``on_publish``,
  closing the socket); from the first one on, paho's own ``_packet_write`` writes the queue.
* :meth:`BufferedClient.ack_many` queues many manual acknowledgements and wakes the network
  thread once (``ack`` wakes it once per message).

* ``_handle_publish`` takes the common PUBLISH (QoS 0 or 1, no MQTT 5 properties, no log
  callback or logger set) without rebuilding paho's property tables for every message: an empty
  ``Properties`` shares them with a prototype. Any other PUBLISH takes paho's own path.

It relies on these private parts of paho-mqtt (checked at import; tested with 2.1 and 2.2):
``_ConnectionState``, ``time_func``, and the ``Client`` members ``_sock``, ``_sock_recv``,
``_sock_send``, ``_packet_read``, ``_packet_write``, ``_packet_queue``, ``_loop_rc_handle``,
``_out_packet`` (deque of packet dicts), ``_state``, ``_manual_ack``, ``_msgtime_mutex``,
``_last_msg_out``, ``_easy_log``, ``_handle_publish``, ``_handle_on_message``, ``_send_puback``,
``_in_packet``, ``_protocol``, ``_logger``, and the instance attributes of ``Properties``.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt import enums
from paho.mqtt.client import DISCONNECT, PUBACK, PUBCOMP, PUBLISH
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["BufferedClient"]

_METHODS = ("_sock_recv", "_sock_send", "_packet_read", "_packet_write", "_packet_queue",
            "_loop_rc_handle", "_easy_log", "_handle_publish", "_handle_on_message",
            "_send_puback")  # fmt: skip
_ATTRIBUTES = ("_sock", "_out_packet", "_state", "_manual_ack", "_msgtime_mutex", "_last_msg_out",
               "_in_packet", "_protocol", "_logger")  # fmt: skip
_PROPERTY_TABLES = ("packetType", "types", "names", "properties")


def _check_paho() -> None:
    """Raise ImportError when this paho-mqtt lacks a private name the client relies on."""
    missing = [n for n in ("_ConnectionState",) if not hasattr(enums, n)]
    missing += [n for n in ("time_func",) if not hasattr(mqtt, n)]
    missing += [f"Client.{n}" for n in _METHODS if not callable(getattr(mqtt.Client, n, None))]
    probe = mqtt.Client(CallbackAPIVersion.VERSION2)
    missing += [f"Client.{n}" for n in _ATTRIBUTES if not hasattr(probe, n)]
    if "Client._out_packet" not in missing and not hasattr(probe._out_packet, "appendleft"):
        missing.append("Client._out_packet (a deque)")
    tables = vars(Properties(PacketTypes.PUBLISH))  # type: ignore[no-untyped-call]
    missing += [f"Properties.{n}" for n in _PROPERTY_TABLES if n not in tables]
    if missing:
        raise ImportError(
            f"gateway.mqtt_client needs private parts of paho-mqtt that paho-mqtt "
            f"{paho.mqtt.__version__} lacks ({', '.join(missing)}); install the paho-mqtt "
            f"version pinned in pyproject.toml"
        )


_check_paho()

_DISCONNECTING = (
    enums._ConnectionState.MQTT_CS_DISCONNECTING,
    enums._ConnectionState.MQTT_CS_DISCONNECTED,
)
_pack_ack = struct.Struct("!BBH").pack
_PUBLISH_TABLES = {
    n: vars(Properties(PacketTypes.PUBLISH))[n]  # type: ignore[no-untyped-call]
    for n in _PROPERTY_TABLES
}


def _no_properties() -> Properties:
    """PUBLISH properties with nothing set, sharing the (read-only) lookup tables of paho's
    ``Properties`` instead of building them again."""
    props = Properties.__new__(Properties)
    vars(props).update(_PUBLISH_TABLES)
    return props


def _out_packet(command: int, packet: bytes | bytearray, mid: int, qos: int, info: Any) -> Any:
    """An entry of paho's outgoing queue, as ``Client._packet_queue`` makes it."""
    return {"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(packet),
            "packet": packet, "info": info}  # fmt: skip


class BufferedClient(mqtt.Client):
    """paho ``Client`` with block reads, coalesced writes and :meth:`ack_many`."""

    READ_SIZE = 65536
    """Bytes asked of the socket per ``recv()``."""
    MAX_REFILLS = 8
    """``recv()`` calls per ``loop_read()`` before the loop gets to write and keep alive."""
    WRITE_SIZE = 65536
    """Soft cap of one coalesced ``send()`` (a single larger packet is still sent whole)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bf_buf = b""
        self._bf_pos = 0
        self._bf_sock: object = None  # the socket the buffered bytes came from
        self._bf_refills_left = -1  # < 0: outside our loop_read, refill freely
        self._bf_reader = 0  # ident of the thread inside our loop_read (0: none)
        self._bf_deferred = False  # packets were queued without waking the loop

    # -- reading ------------------------------------------------------------------------------

    def _bf_buffered(self) -> int:
        """Bytes of the current socket waiting in the private buffer."""
        if self._bf_sock is not self._sock:
            return 0
        return len(self._bf_buf) - self._bf_pos

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._bf_buf, self._bf_pos
        if pos < len(buf) and self._bf_sock is self._sock:
            end = pos + bufsize
            if end >= len(buf):  # the rest (possibly short: paho reads a packet in parts)
                self._bf_buf, self._bf_pos = b"", 0
                return buf[pos:] if pos else buf
            self._bf_pos = end
            return buf[pos:end]
        self._bf_buf, self._bf_pos = b"", 0
        self._bf_sock = self._sock
        if self._bf_refills_left == 0:
            raise BlockingIOError  # loop_read returns; select() sees the kernel's data
        if self._bf_refills_left > 0:
            self._bf_refills_left -= 1
        # A large packet is asked for whole, without a copy through the buffer.
        data: bytes = super()._sock_recv(max(bufsize, self.READ_SIZE))
        if len(data) <= bufsize:
            return data
        self._bf_buf, self._bf_pos = data, bufsize
        return data[:bufsize]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read and handle packets until the socket would block (``max_packets`` is ignored)."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self._bf_reader:  # re-entered from a callback: paho's own behaviour
            return super().loop_read(max_packets)
        self._bf_reader = threading.get_ident()
        self._bf_refills_left = self.MAX_REFILLS
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            while True:
                if self._sock is None:
                    rc = MQTTErrorCode.MQTT_ERR_NO_CONN
                    break
                prc = self._packet_read()
                if prc > 0:
                    rc = self._loop_rc_handle(prc)
                    break
                if self._state in _DISCONNECTING:
                    break  # disconnect() was called: take no more messages
                if prc == MQTTErrorCode.MQTT_ERR_AGAIN and not self._bf_buffered():
                    break
        finally:
            self._bf_reader = 0
            self._bf_refills_left = -1
        if self._bf_deferred:
            self._bf_deferred = False
            if self._sock is not None and self._out_packet:
                wrc = self.loop_write()
                if wrc and not rc:
                    rc = wrc
        return rc

    # -- writing ------------------------------------------------------------------------------

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: mqtt.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        if self._bf_reader and self._bf_reader == threading.get_ident():
            # The network thread inside loop_read: loop_read writes it on its way out.
            self._out_packet.append(_out_packet(command, packet, mid, qos, info))
            self._bf_deferred = True
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        rc: MQTTErrorCode = super()._packet_queue(command, packet, mid, qos, info)
        return rc

    def _packet_write(self) -> MQTTErrorCode:
        queue = self._out_packet
        while True:
            run: list[Any] = []
            size = 0
            while queue and size < self.WRITE_SIZE:
                packet = queue.popleft()
                cmd = packet["command"] & 0xF0
                if cmd == DISCONNECT or (cmd == PUBLISH and packet["qos"] == 0):
                    queue.appendleft(packet)  # needs paho's completion handling
                    break
                run.append(packet)
                size += packet["to_process"]
            if not run:
                if queue:
                    rc: MQTTErrorCode = super()._packet_write()
                    return rc
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            parts = [p["packet"][p["pos"] :] if p["pos"] else p["packet"] for p in run]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            try:
                sent = self._sock_send(data)
            except (AttributeError, ValueError):
                queue.extendleft(reversed(run))
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except BlockingIOError:
                queue.extendleft(reversed(run))
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as err:
                queue.extendleft(reversed(run))
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to send on socket: %s", err)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            if sent > 0:
                with self._msgtime_mutex:
                    self._last_msg_out = mqtt.time_func()
            if sent >= size:
                continue
            # Partial send: drop the packets that went out whole, keep the rest in order.
            # (A websocket send returns 0 until its whole frame is out, then the frame's size.)
            i = 0
            while sent >= run[i]["to_process"]:
                sent -= run[i]["to_process"]
                i += 1
            run[i]["to_process"] -= sent
            run[i]["pos"] += sent
            queue.extendleft(reversed(run[i:]))
            if i == 0 and sent == 0:
                return MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing moved: wait for writability

    # -- incoming PUBLISH ---------------------------------------------------------------------

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos == 2 or self.on_log is not None or self._logger is not None:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        v5 = self._protocol == mqtt.MQTTv5
        if len(packet) < 2:
            return super()._handle_publish()  # malformed: paho reports it
        end = 2 + (packet[0] << 8 | packet[1])
        start = end + 2 if qos else end
        if (
            (v5 and (len(packet) <= start or packet[start] != 0))
            or len(packet) < start
            or (not v5 and end == 2)
        ):
            return super()._handle_publish()  # properties, an empty 3.1.1 topic, or malformed
        message = mqtt.MQTTMessage(packet[end] << 8 | packet[end + 1] if qos else 0,
                                   bytes(packet[2:end]))  # fmt: skip
        message.dup = header & 0x08 != 0
        message.qos = qos
        message.retain = header & 0x01 != 0
        if v5:
            message.properties = _no_properties()
            start += 1
        message.payload = bytes(packet[start:])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # -- acknowledgement ----------------------------------------------------------------------

    def ack_many(self, mids: Iterable[int], qos: int = 1) -> MQTTErrorCode:
        """Acknowledge messages with one wake-up of the network thread.

        Same as ``for mid in mids: client.ack(mid, qos)``: it does nothing unless the client
        was made with ``manual_ack=True`` and ``qos`` is 1 (PUBACK) or 2 (PUBCOMP).
        """
        if not self._manual_ack or qos not in (1, 2):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        command = PUBACK if qos == 1 else PUBCOMP
        mids = list(mids)
        if not mids:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        packets = [_pack_ack(command, 2, mid) for mid in mids]  # bad mids raise before queueing
        append = self._out_packet.append
        for mid, packet in zip(mids[:-1], packets, strict=False):
            append(_out_packet(command, packet, mid, 1, None))
        return self._packet_queue(command, packets[-1], mids[-1], 1)

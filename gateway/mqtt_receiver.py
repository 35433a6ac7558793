"""MQTT receiver on paho-mqtt 2.x (MQTT v5, QoS 1, persistent session, manual acknowledgement).

paho's network thread does nothing but append each message to a deque and, when the consumer is
waiting, wake the event loop once. The consumer takes messages in bulk with :meth:`receive` and
hands back their delivery tokens with :meth:`ack` only once they are committed: the broker keeps
at most ``receive_maximum`` unacknowledged messages in flight to us, which bounds the intake.
The client is :class:`~gateway.mqtt_client.BufferedClient`: block reads, coalesced writes, and
one wake-up of the network thread per :meth:`ack` call however many tokens it carries.

The session is persistent (clean start off, session expiry > 0), so QoS 1 messages published
while the gateway is down wait at the broker and arrive after restart; messages received but not
acknowledged before a crash are redelivered (the store de-duplicates them).

paho's network thread (``loop_start``) reconnects with exponential backoff, re-jittered after
every loss so that a fleet of gateways does not reconnect in step. Bad credentials or a
refused TLS handshake are permanent: :meth:`receive` raises them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import threading
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttConfig
from gateway.errors import PermanentError
from gateway.mqtt_client import BufferedClient
from gateway.records import RawMessage, Source

__all__ = ["MqttReceiver", "ReceiverStats"]

log = logging.getLogger(__name__)

# Unsubscribed from on close (never subscribed): its UNSUBACK proves that the broker has read
# every acknowledgement sent before it. Without it a quick restart can take the session over
# while the broker still holds the last acks unread, and those messages come back.
_SYNC_FILTER = "$vitalwire/close-sync"
_SYNC_TIMEOUT_S = 5.0

# CONNACK reason codes that retrying cannot fix.
_PERMANENT_CONNACK = {
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8C: "bad authentication method",
    0x95: "packet too large",
}


@dataclass(slots=True)
class ReceiverStats:
    """Counters of one receiver (read them; only the receiver writes them)."""

    received: int = 0
    acked: int = 0
    stale_acks: int = 0  # tokens from a connection that has since been lost (broker redelivers)
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    last_error: str = ""
    connected: bool = False
    session_present: bool = False


class MqttReceiver:
    """Receive MQTT messages into the gateway.

    Use as ``async with MqttReceiver(config, filters) as rx: msgs = await rx.receive(...)``.
    """

    def __init__(self, config: MqttConfig, subscriptions: Sequence[str]) -> None:
        if not subscriptions:
            raise ValueError("at least one subscription filter is needed")
        self.config = config
        self.subscriptions = tuple(subscriptions)
        self.stats = ReceiverStats()
        self._buf: collections.deque[RawMessage] = collections.deque()
        self._waiting = False
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        # Held while acks are checked and queued, and while a lost connection bumps the
        # generation: an ack is either queued before the loss (and dropped with the old
        # connection's queue) or sees the new generation.
        self._ack_lock = threading.RLock()
        self._stopping = threading.Event()
        self._started = False
        self._failure: PermanentError | None = None
        self._connected = threading.Event()
        self._synced = threading.Event()
        self._client = self._make_client()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> MqttReceiver:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._jitter_backoff()
        await asyncio.to_thread(self._first_connect)
        if self._failure is None:
            # paho's own network thread: client calls from other threads (ack, disconnect)
            # are then only queued for it, never written to the socket concurrently.
            self._client.loop_start()
            self._started = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect cleanly (the broker has read our acknowledgements first). Idempotent.

        The session stays at the broker for ``session_expiry_s``; nothing is unsubscribed.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._started and self._client.is_connected():
            self._client.unsubscribe(_SYNC_FILTER)
            await asyncio.to_thread(self._synced.wait, _SYNC_TIMEOUT_S)
        self._client.disconnect()
        if self._started:
            await asyncio.to_thread(self._client.loop_stop)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the first connection is up; False on timeout. Raises permanent failures."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._failure is not None:
                raise self._failure
            if self._connected.is_set():
                return True
            await asyncio.sleep(0.02)
        return self._connected.is_set()

    # -- consuming ---------------------------------------------------------------------------

    def pending(self) -> int:
        """Messages received and not yet taken by :meth:`receive`."""
        return len(self._buf)

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        """Take up to ``max_items`` messages, waiting up to ``timeout`` seconds for the first.

        Returns an empty list on timeout or once the receiver is closed; ``timeout=0`` only
        takes what is there.
        """
        if self._failure is not None:
            raise self._failure
        assert self._wakeup is not None, "use the receiver inside 'async with'"
        if not self._buf and not self._closed and timeout != 0:
            self._wakeup.clear()
            self._waiting = True
            if not self._buf:  # re-check after publishing the flag: no lost wake-up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._waiting = False
        if self._failure is not None:
            raise self._failure
        out: list[RawMessage] = []
        buf = self._buf
        n = min(max_items, len(buf))
        pop = buf.popleft
        for _ in range(n):
            out.append(pop())
        return out

    def ack(self, tokens: Sequence[object]) -> None:
        """Acknowledge committed messages (PUBACK), in the order received.

        Tokens of a connection that has since been lost are skipped (counted as ``stale_acks``):
        the broker redelivers those messages on the new connection.
        """
        with self._ack_lock:
            generation = self._generation
            by_qos: dict[int, list[int]] = {}
            for token in tokens:
                if token is None:
                    continue
                gen, mid, qos = typing.cast(tuple[int, int, int], token)
                if gen != generation:
                    self.stats.stale_acks += 1
                elif qos:
                    by_qos.setdefault(qos, []).append(mid)
            for qos, mids in by_qos.items():
                self._client.ack_many(mids, qos)
                self.stats.acked += len(mids)

    # -- paho thread -------------------------------------------------------------------------

    def _make_client(self) -> BufferedClient:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=True,
            manual_ack=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
            if cfg.cert_file and cfg.key_file:
                ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
            if cfg.tls_insecure:
                ctx.check_hostname = False
            client.tls_set_context(ctx)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_unsubscribe = lambda *args: self._synced.set()
        return client

    def _connect_options(self) -> dict[str, Any]:
        if self.config.protocol != "5":
            return {"keepalive": self.config.keepalive_s}
        return {
            "keepalive": self.config.keepalive_s,
            "clean_start": False,
            "properties": self._connect_properties(),
        }

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        return props

    def _first_connect(self) -> None:
        """One direct attempt: TLS and address errors surface here, before the loop retries."""
        cfg = self.config
        try:
            self._client.connect(cfg.host, cfg.port, **self._connect_options())
        except ssl.SSLError as exc:
            self._fail(f"TLS handshake with {cfg.host}:{cfg.port} failed: {exc}")
        except OSError as exc:
            # Broker not up yet: paho's loop keeps retrying with our (jittered) backoff.
            self.stats.connect_failures += 1
            self.stats.last_error = f"cannot reach {cfg.host}:{cfg.port}: {exc}"
            log.warning("%s; retrying", self.stats.last_error)
            self._client.connect_async(cfg.host, cfg.port, **self._connect_options())

    def _jitter_backoff(self) -> None:
        """Full jitter on paho's exponential reconnect delay, so gateways do not stampede."""
        cfg = self.config
        # paho's arithmetic takes float seconds although its hints say int.
        low: Any = random.uniform(cfg.reconnect_min_s / 2, cfg.reconnect_min_s)
        high: Any = random.uniform(cfg.reconnect_max_s / 2, cfg.reconnect_max_s)
        self._client.reconnect_delay_set(min_delay=low, max_delay=max(high, low))

    def _fail(self, message: str) -> None:
        self.stats.last_error = message
        self._failure = PermanentError(message)
        log.error("MQTT receiver stopped: %s", message)
        self._wake()

    def _wake(self) -> None:
        loop, ev = self._loop, self._wakeup
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            code = reason.value
            if code in _PERMANENT_CONNACK:
                self._fail(
                    f"broker {self.config.host}:{self.config.port} refused the connection: "
                    f"{_PERMANENT_CONNACK[code]} ({reason})"
                )
                client.disconnect()
                return
            self.stats.connect_failures += 1
            self.stats.last_error = f"connection refused: {reason}"
            return
        self._generation += 1
        self.stats.connects += 1
        self.stats.connected = True
        self.stats.session_present = bool(flags.session_present)
        client.subscribe([(f, self.config.qos) for f in self.subscriptions])
        self._connected.set()
        log.info(
            "connected to %s:%d (session present: %s)",
            self.config.host,
            self.config.port,
            flags.session_present,
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        with self._ack_lock:
            # tokens of the lost connection must not be acked on the next one
            self._generation += 1
        self.stats.connected = False
        self.stats.disconnects += 1
        if not self._stopping.is_set() and self._failure is None:
            self.stats.last_error = f"disconnected: {reason}"
            log.warning("MQTT connection lost (%s); reconnecting", reason)
            self._jitter_backoff()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._buf.append(
            RawMessage(
                msg.topic,
                bytes(msg.payload),
                time.time_ns() // 1000,
                Source.MQTT,
                (self._generation, msg.mid, msg.qos),
            )
        )
        self.stats.received += 1
        if self._waiting:
            self._waiting = False
            self._wake()

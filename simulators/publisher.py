"""The live fleet: publish the generated messages to an MQTT broker at their due wall time.

:class:`Fleet` walks :func:`~simulators.fleet.generate` and hands each message to a
:class:`Publisher` once the injected :class:`Clock` reaches the message's wall time
(:meth:`~simulators.config.Timeline.wall_time_us`). :class:`MqttPublisher` wraps paho-mqtt 2.x
(callback API version 2, MQTT 5 or 3.1.1, network loop in paho's thread); paho reconnects by
itself and re-sends unacknowledged QoS 1/2 messages. ``publish`` waits when ``max_pending``
messages already await their acknowledgement, and while the connection is down (backpressure,
not unbounded memory), so the fleet falls behind during an outage and catches up after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import ConfigError, PermanentError, RetryableError
from simulators.config import FleetConfig, Timeline
from simulators.fleet import FleetPlan, SimMessage, generate, ground_truth, plan_fleet
from simulators.scenario import write_event_log

__all__ = ["Clock", "Fleet", "MqttPublisher", "Publisher", "SystemClock"]

log = logging.getLogger(__name__)

US = 1_000_000
KEEPALIVE_S = 30
RECONNECT_DELAY_S = (1, 30)
MAX_INFLIGHT = 0  # unlimited in paho: its queue costs O(queued) per ack; _limit bounds instead
AUTH_FAILURES = frozenset({134, 135})  # bad user name or password, not authorized
UNSUPPORTED_VERSION = 132
PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


class Clock(Protocol):
    """Wall-clock time, injectable so that tests never sleep."""

    def now_us(self) -> int:
        """Now, in UTC microseconds since the epoch."""
        ...

    async def sleep_until(self, t_us: int) -> None:
        """Return once ``now_us() >= t_us``."""
        ...


class SystemClock:
    """The real clock."""

    def now_us(self) -> int:
        """Now, in UTC microseconds since the epoch."""
        return time.time_ns() // 1000

    async def sleep_until(self, t_us: int) -> None:
        """Sleep until ``t_us``; returns at once when it has passed."""
        delay = (t_us - self.now_us()) / US
        if delay > 0:
            await asyncio.sleep(delay)


class Publisher(Protocol):
    """Where the fleet's messages go: an async context manager with ``publish``."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Hand one message over; ``False`` when it was lost or refused."""
        ...


class MqttPublisher:
    """paho-mqtt publisher with an asyncio face.

    Attributes:
        sent: Messages accepted by the client (sent, or queued for QoS 1/2).
        acked: Messages acknowledged by the broker (written to the socket for QoS 0).
        errors: Messages lost or refused (publish failed, or a failure reason in the PUBACK).
        connects: Successful connections (more than 1 means reconnects happened).
        disconnects: Unexpected connection losses.
    """

    def __init__(self, config: FleetConfig) -> None:
        self._config = config
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.connects = 0
        self.disconnects = 0
        self._closing = False
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first: asyncio.Future[ReasonCode | None] | None = None
        self._progress = asyncio.Event()
        self._waiting = False
        self._limit = config.max_pending
        self._connected = asyncio.Event()
        self._last_failure = ""

    @property
    def pending(self) -> int:
        """Messages sent but not yet acknowledged."""
        return self.sent - self.acked

    def _signal(self, result: ReasonCode | None) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(result)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        assert self._loop is not None
        if rc.is_failure:
            self._last_failure = str(rc)
            log.warning("broker refused the connection: %s", rc)
            self._loop.call_soon_threadsafe(self._signal, rc)
            return
        self.connects += 1
        # Respect the broker's MQTT 5 Receive Maximum (paho itself does not).
        self._limit = min(self._config.max_pending, getattr(props, "ReceiveMaximum", 65535))
        if self.connects > 1:
            log.info("reconnected to %s:%d", self._config.host, self._config.port)
        self._loop.call_soon_threadsafe(self._signal, None)
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._last_failure = "connection failed"

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if not self._closing and self.connects:
            self.disconnects += 1
            log.warning("lost the broker connection (%s); paho reconnects", rc)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self.errors += 1
        self.acked += 1
        if self._waiting:  # wake the event loop only when someone waits for acknowledgements
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._progress.set)

    async def __aenter__(self) -> Self:
        cfg = self._config
        self._loop = asyncio.get_running_loop()
        self._first = self._loop.create_future()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=PROTOCOLS[cfg.mqtt_version],
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(cfg.host, cfg.port, keepalive=KEEPALIVE_S)
        client.loop_start()
        try:
            result = await asyncio.wait_for(self._first, cfg.connect_timeout_s)
        except TimeoutError:
            await self._stop()
            detail = f" ({self._last_failure})" if self._last_failure else ""
            raise RetryableError(
                f"cannot connect to MQTT broker {cfg.host}:{cfg.port} within "
                f"{cfg.connect_timeout_s:g} s{detail}"
            ) from None
        if result is not None:
            await self._stop()
            err = PermanentError if result.value in AUTH_FAILURES else RetryableError
            hint = ""
            if result.value == UNSUPPORTED_VERSION and cfg.mqtt_version == "5":
                hint = ' (an MQTT 3.1.1 broker? set mqtt_version="3.1.1")'
            raise err(f"MQTT broker {cfg.host}:{cfg.port} refused the connection: {result}{hint}")
        return self

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Publish one message.

        Waits while ``max_pending`` messages await acknowledgement, and while the connection is
        down. After a reconnect it first lets paho re-send and settle the messages from before,
        so that every device's messages reach the broker in order.
        """
        client = self._client
        if client is None:
            raise RuntimeError("MqttPublisher.publish called outside 'async with'")
        qos = self._config.qos
        if not self._connected.is_set():
            await self._connected.wait()
            await self._settle()
        if qos and self.pending >= self._limit:
            await self._wait_for_acks(lambda: self.pending < self._limit)
        info = client.publish(topic, payload, qos=qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            qos and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            self.sent += 1  # QoS 1/2 while disconnected: queued, sent after the reconnect
            return True
        self.errors += 1
        return False

    async def _wait_for_acks(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, re-checked after each acknowledgement."""
        try:
            while True:
                self._waiting = True  # before the check, so no acknowledgement goes unseen
                self._progress.clear()
                if done():
                    return
                await self._progress.wait()
        finally:
            self._waiting = False

    async def _settle(self) -> None:
        await self._wait_for_acks(lambda: self.pending <= 0)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every sent message is acknowledged; ``False`` on timeout."""
        try:
            await asyncio.wait_for(self._settle(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None and not await self.drain(self._config.connect_timeout_s):
            log.warning("%d messages were not acknowledged before closing", self.pending)
        await self._stop()


class Fleet:
    """The live fleet: publishes every generated message at its due wall time.

    Use as ``async with Fleet(config) as fleet: await fleet.run_until(stop_event)``. Entering
    connects the publisher, fixes the timeline from the clock and writes the event log
    (``config.event_log``). ``run_until`` returns when the duration has been published or the
    stop event is set; it can be called again to continue.

    Attributes:
        config: The fleet configuration.
        plan: Patients and devices.
        timeline: Simulated against wall time (set on entering).
        published: Messages handed to the publisher.
        errors: Messages the publisher could not take.
        max_lag_us: Longest a message waited past its due wall time: above zero when the
            publisher cannot keep up (a ``rate`` beyond what one process sends) or waited out
            a broker outage.
    """

    def __init__(
        self, config: FleetConfig, *, clock: Clock | None = None, publisher: Publisher | None = None
    ) -> None:
        self.config = config
        self.plan: FleetPlan = plan_fleet(config)
        self.timeline: Timeline | None = None
        self.published = 0
        self.errors = 0
        self.max_lag_us = 0
        self.publisher: Publisher = publisher if publisher is not None else MqttPublisher(config)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._messages: Iterator[SimMessage] | None = None
        self._held: SimMessage | None = None

    async def __aenter__(self) -> Self:
        await self.publisher.__aenter__()
        try:
            wall_start = self._clock.now_us()
            if self.config.event_log is not None:
                try:
                    write_event_log(self.config.event_log, ground_truth(self.config, wall_start))
                except OSError as exc:
                    raise ConfigError(
                        f"{self.config.event_log}: cannot write the event log: {exc}"
                    ) from exc
            self.timeline = Timeline.of(self.config, wall_start)
            self._messages = generate(self.config, wall_start)
        except BaseException as exc:
            await self.publisher.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._messages = None
        await self.publisher.__aexit__(et, e, tb)

    async def run_until(self, stop: asyncio.Event | None = None) -> int:
        """Publish until the timeline ends or ``stop`` is set; returns ``published``."""
        if self._messages is None or self.timeline is None:
            raise RuntimeError("Fleet.run_until called outside 'async with'")
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            while True:
                msg = self._held if self._held is not None else next(self._messages, None)
                self._held = None
                if msg is None:
                    break
                due = self.timeline.wall_time_us(msg.ts_us)
                late = self._clock.now_us() - due
                self.max_lag_us = max(self.max_lag_us, late)
                stopped = late < 0 and await self._sleep(due, stopper)
                if stopped or (stop is not None and stop.is_set()):
                    self._held = msg
                    break
                if await self.publisher.publish(msg.topic, msg.payload):
                    self.published += 1
                else:
                    self.errors += 1
        finally:
            if stopper is not None and not stopper.done():
                stopper.cancel()
        return self.published

    async def _sleep(self, due_us: int, stopper: asyncio.Future[Any] | None) -> bool:
        """Sleep until ``due_us``; ``True`` when the stop event fired first."""
        if stopper is None:
            await self._clock.sleep_until(due_us)
            return False
        sleeper = asyncio.ensure_future(self._clock.sleep_until(due_us))
        done, _ = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if sleeper not in done:
            sleeper.cancel()
            return True
        return False

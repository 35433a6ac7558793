"""Gateway configuration: the MQTT connection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

__all__ = ["MqttConfig"]


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How the gateway connects to the MQTT broker.

    Attributes:
        host: Broker host name or address.
        port: Broker port (1883 plain, 8883 TLS by convention).
        client_id: MQTT client id; also names the persistent session at the broker, so two
            gateways must never share it.
        username: Optional user name.
        password: Optional password (only with ``username``).
        tls: Connect with TLS.
        ca_file: CA bundle for verifying the broker (system store when ``None``).
        cert_file: Client certificate for mutual TLS.
        key_file: Private key of ``cert_file``.
        tls_insecure: Skip host name verification (test rigs only).
        keepalive_s: MQTT keepalive interval.
        session_expiry_s: How long the broker keeps the session, and queues QoS 1 messages for it,
            while the gateway is away; > 0 so that messages published during a restart survive.
        receive_maximum: Unacknowledged QoS 1 messages the broker may have in flight to us (MQTT v5
            Receive Maximum). Messages are acknowledged only after they are committed, so this is
            the bound of the gateway's intake queue.
        qos: Subscription QoS (0 or 1).
        protocol: ``"5"`` (default) or ``"3.1.1"`` for brokers without MQTT 5. With 3.1.1 the
            session persists through clean-session off (no expiry, no Receive Maximum: the
            broker's own in-flight limit bounds the intake).
        reconnect_min_s: First reconnect delay; doubles per failure, with jitter.
        reconnect_max_s: Largest reconnect delay.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "vitalwire-gateway"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 20_000
    qos: int = 1
    protocol: str = "5"
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the bad key."""
        if not self.host:
            raise ConfigError("mqtt.host: must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"mqtt.port: {self.port} is not a TCP port (1-65535)")
        if not self.client_id or len(self.client_id.encode()) > 65535:
            raise ConfigError("mqtt.client_id: must be a non-empty string")
        if self.password is not None and self.username is None:
            raise ConfigError("mqtt.password: given without mqtt.username")
        if self.protocol not in ("5", "3.1.1"):
            raise ConfigError(f"mqtt.protocol: {self.protocol!r} is not '5' or '3.1.1'")
        if self.qos not in (0, 1):
            raise ConfigError(f"mqtt.qos: {self.qos} is not supported (0 or 1)")
        if self.session_expiry_s < 0 or self.session_expiry_s > 0xFFFFFFFF:
            raise ConfigError("mqtt.session_expiry_s: must be 0..4294967295")
        if not 1 <= self.receive_maximum <= 65535:
            raise ConfigError(f"mqtt.receive_maximum: {self.receive_maximum} is not in 1..65535")
        if self.keepalive_s < 5:
            raise ConfigError(f"mqtt.keepalive_s: {self.keepalive_s} is below 5 seconds")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError("mqtt.reconnect_min_s: must be > 0 and <= mqtt.reconnect_max_s")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("mqtt.cert_file and mqtt.key_file: give both or neither")
        for key, path in (
            ("ca_file", self.ca_file),
            ("cert_file", self.cert_file),
            ("key_file", self.key_file),
        ):
            if path is not None and not self.tls:
                raise ConfigError(f"mqtt.{key}: set mqtt.tls = true to use it")
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"mqtt.{key}: {path} is not a readable file")

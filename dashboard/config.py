"""Dashboard settings: where it listens, sessions, the live feed's queues and heartbeat.

Every field has a named default, so ``DashboardConfig()`` is a working local setup on
http://127.0.0.1:8000. ``--http HOST:PORT`` on the command line goes through
:func:`parse_http`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_CLIENT_QUEUE",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_PUSH_INTERVAL_S",
    "DEFAULT_SESSION_TTL_S",
    "DashboardConfig",
    "parse_http",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_SESSION_TTL_S = 8 * 3600.0
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_PUSH_INTERVAL_S = 0.25
DEFAULT_CLIENT_QUEUE = 256
DEFAULT_BACKLOG = 2048
DEFAULT_INGEST_STALE_S = 30.0
DEFAULT_TREND_WINDOW_S = 60.0
DEFAULT_MAX_POINTS = 600
DEFAULT_SHUTDOWN_GRACE_S = 3.0

_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$"
)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """How the dashboard is served.

    Attributes:
        host: Interface to listen on (loopback by default; put a TLS proxy in front for more).
        port: TCP port; 0 picks a free one (tests).
        session_ttl_s: A login session expires this long after it was made.
        cookie_secure: Mark the session cookie ``Secure`` (set it when served over HTTPS).
        heartbeat_s: Seconds between heartbeats on every live connection (the page shows its
            banner when none came for 2.5 heartbeats).
        push_interval_s: Vital-sign changes are gathered and sent as one ``vitals`` delta at
            most this often, whatever the ingest rate (0: one delta per batch). What the live
            clients cost the pipeline then depends on the number of clients, not on the rate.
        client_queue: Messages queued per live client; beyond it the oldest is dropped, the drop
            counted and the client resynchronised with a fresh snapshot.
        backlog: Deltas kept for backfill: a client reconnecting with a sequence number still in
            it gets the deltas it missed instead of a snapshot.
        ingest_stale_s: The page shows an "ingest down" banner when no batch arrived this long.
        trend_window_s: The trend arrow compares the latest value with one at least this old.
        max_points: Most points one history request returns; longer ranges are downsampled.
        shutdown_grace_s: On exit, how long open connections get to close before they are cut.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    cookie_secure: bool = False
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    push_interval_s: float = DEFAULT_PUSH_INTERVAL_S
    client_queue: int = DEFAULT_CLIENT_QUEUE
    backlog: int = DEFAULT_BACKLOG
    ingest_stale_s: float = DEFAULT_INGEST_STALE_S
    trend_window_s: float = DEFAULT_TREND_WINDOW_S
    max_points: int = DEFAULT_MAX_POINTS
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"dashboard.host: expected a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
            0 <= self.port <= 65535
        ):
            raise ConfigError(f"dashboard.port: expected 0-65535, got {self.port!r}")
        for name in ("session_ttl_s", "heartbeat_s", "ingest_stale_s", "trend_window_s",
                     "shutdown_grace_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0
            ):
                raise ConfigError(f"dashboard.{name}: expected seconds > 0, got {value!r}")
        push = self.push_interval_s
        if isinstance(push, bool) or not isinstance(push, int | float) or not (
            math.isfinite(push) and 0 <= push <= 10
        ):
            raise ConfigError(f"dashboard.push_interval_s: expected seconds in [0, 10], "
                              f"got {push!r}")
        for name, low in (("client_queue", 2), ("backlog", 1), ("max_points", 10)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"dashboard.{name}: expected a whole number >= {low}, "
                                  f"got {value!r}")

    def with_http(self, text: str) -> DashboardConfig:
        """A copy listening on ``HOST:PORT`` (see :func:`parse_http`)."""
        host, port = parse_http(text)
        return dataclasses.replace(self, host=host, port=port)


def parse_http(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) -> ``(host, port)``.

    Raises:
        ConfigError: Naming ``--http`` and the expected form.
    """
    m = _HOST_PORT.match(text.strip()) if isinstance(text, str) else None
    if m is None or int(m.group("port")) > 65535:
        raise ConfigError(f"--http: expected HOST:PORT such as 127.0.0.1:8000, got {text!r}")
    return m.group("v6") or m.group("host"), int(m.group("port"))

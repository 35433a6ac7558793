"""Serve the dashboard with uvicorn inside the service's own event loop.

::

    feed = LiveFeed(config)
    async with DashboardServer(config, store=svc.store, engine=engine, feed=feed,
                               registry_changed=svc.refresh_assignments) as server:
        print(server.url)

Entering migrates the dashboard tables, seeds the feed from the store (latest vitals of the
last 24 h, assigned patients, plan versions, open alerts), starts the feed's heartbeat and
binds the socket (a port in use fails here, with the address). Leaving stops accepting
connections, closes live clients, gives open requests ``shutdown_grace_s`` and stops the
heartbeat. It never installs signal handlers: the service owns SIGINT and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Generator

import uvicorn

from alerts.engine import AlertEngine
from dashboard import queries, schema
from dashboard.app import DashboardContext, create_app
from dashboard.config import DashboardConfig
from dashboard.errors import DashboardError
from dashboard.feed import LiveFeed
from pipeline.store import DuckDbStore

__all__ = ["DashboardServer", "seed_feed"]

log = logging.getLogger(__name__)

SEED_WINDOW_US = 24 * 3_600_000_000


async def _nothing() -> None:
    return None


class _Server(uvicorn.Server):
    """uvicorn without its signal handling (the service has its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def seed_feed(feed: LiveFeed, store: DuckDbStore, engine: AlertEngine | None) -> None:
    """Fill the feed from the store and the engine (at start)."""
    since = feed.clock_us() - SEED_WINDOW_US
    latest = await store.call(queries.latest_vitals, since)
    patients = await store.call(queries.known_patients)
    plans = await store.call(queries.plan_versions)
    feed.seed(latest, patients, plans)
    if engine is not None:
        feed.attach(engine)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DashboardError(f"--http: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class DashboardServer:
    """The dashboard as an async context manager.

    Args:
        config: Host, port and the rest of the dashboard settings.
        store: The service's open store.
        engine: The alert engine, if one runs.
        feed: The live feed hub the service feeds.
        registry_changed: Awaited after an assignment changed through the API.
        seed: Fill the feed from the store on entry.
    """

    def __init__(self, config: DashboardConfig, *, store: DuckDbStore,
                 engine: AlertEngine | None, feed: LiveFeed,
                 registry_changed: Callable[[], Awaitable[None]] = _nothing,
                 seed: bool = True) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.feed = feed
        self.seed = seed
        self.context = DashboardContext.build(config, store, feed, engine, registry_changed)
        self.app = create_app(self.context)
        self.port = config.port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The page's address."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> DashboardServer:
        await self.store.call(schema.migrate)
        if self.seed:
            await seed_feed(self.feed, self.store, self.engine)
        sock = _bind(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        uv = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False,
                            ws="websockets-sansio", ws_ping_interval=20.0,
                            ws_ping_timeout=20.0, ws_per_message_deflate=False,
                            timeout_graceful_shutdown=None)
        self._server = _Server(uv)
        self.feed.start()
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name="dashboard-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise DashboardError(f"dashboard: server on {self.url} stopped while starting")
            await asyncio.sleep(0.01)
        log.info("dashboard on %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        await self.feed.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.config.shutdown_grace_s)
        except TimeoutError:
            server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task

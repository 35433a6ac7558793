"""The FastAPI application: API routers, the websocket, the page, errors as 4xx with a message.

:func:`create_app` takes a :class:`DashboardContext` (store, engine, feed, sessions...). The
OpenAPI document is published at ``/api/openapi.json`` and lists every route with its security
(session cookie or bearer token). Public: ``POST /api/auth/login``, ``GET /api/health``, the
OpenAPI document and the page's static assets; everything else needs a login. No interactive
docs are served (they would load scripts from a CDN).

Error mapping: validation and refused values 422 (``{"detail": [{"loc", "msg", "type"}]}``),
not logged in 401, role or CSRF 403, unknown resource 404, illegal alert transition 409, too
many login attempts 429, no alert engine or store failure 503.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from alerts.engine import AlertEngine
from alerts.errors import AlertActionError, CarePlanError, LifecycleError, PlanNotFound
from dashboard import api_admin, api_plans, api_ward, auth, ws
from dashboard.auth import LoginThrottle, TooManyAttempts
from dashboard.config import DashboardConfig
from dashboard.desk import AlertDesk, EngineUnavailable, UnknownAlert
from dashboard.errors import AuthError, CsrfError, Forbidden, UserError
from dashboard.feed import LiveFeed
from dashboard.sessions import SessionManager
from gateway.errors import ConfigError
from pipeline.errors import StoreError
from pipeline.registry import RegistryError
from pipeline.store import DuckDbStore

__all__ = ["STATIC_DIR", "DashboardContext", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


async def _nothing() -> None:
    return None


@dataclass
class DashboardContext:
    """Everything the routes use.

    Attributes:
        config: Dashboard settings.
        store: The open store (dashboard tables migrated).
        feed: The live feed hub.
        desk: Audited actions on alerts and care plans.
        sessions: Login sessions.
        engine: The alert engine, if one runs.
        registry_changed: Awaited after a device assignment changed (the service reloads its
            assignments).
        throttle: Failed-login counter.
        started_us: When the app was made.
    """

    config: DashboardConfig
    store: DuckDbStore
    feed: LiveFeed
    desk: AlertDesk
    sessions: SessionManager
    engine: AlertEngine | None = None
    registry_changed: Callable[[], Awaitable[None]] = _nothing
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    started_us: int = field(default_factory=lambda: time.time_ns() // 1000)

    @classmethod
    def build(cls, config: DashboardConfig, store: DuckDbStore, feed: LiveFeed,
              engine: AlertEngine | None = None,
              registry_changed: Callable[[], Awaitable[None]] = _nothing,
              clock_us: Callable[[], int] | None = None) -> DashboardContext:
        """A context with a desk and session manager on ``store``."""
        clock = clock_us or feed.clock_us
        return cls(config, store, feed, AlertDesk(store, engine, feed, clock),
                   SessionManager(store, config.session_ttl_s, clock), engine, registry_changed)


def _field_path(message: str) -> list[str]:
    parts = [p.strip() for p in message.split(": ")]
    return parts[:-1] or ["body"]


def _unprocessable(exc: Exception, where: str) -> JSONResponse:
    msg = str(exc)
    return JSONResponse(status_code=422, content={"detail": [
        {"loc": [where, *_field_path(msg)], "msg": msg, "type": "value_error"}]})


def _status(code: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(status_code=code, content={"detail": str(exc)}, headers=headers)

    return handler


async def _invalid(request: Request, exc: Exception) -> Response:
    return _unprocessable(exc, "body")


def create_app(ctx: DashboardContext) -> FastAPI:
    """The dashboard application for one context."""
    app = FastAPI(
        title="vitalwire dashboard", version="1",
        description="Ward view, patient trends, alert handling, care plans and audit. "
                    "Live stream: websocket /api/live (see docs/dashboard.md).",
        openapi_url="/api/openapi.json", docs_url=None, redoc_url=None,
    )  # fmt: skip
    app.state.ctx = ctx
    for router in (auth.router, api_ward.router, api_plans.router, api_admin.router, ws.router):
        app.include_router(router)
    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[Response]]]] = [
        (AuthError, _status(401)), (Forbidden, _status(403)), (CsrfError, _status(403)),
        (UnknownAlert, _status(404)), (PlanNotFound, _status(404)),
        (api_ward.NotFound, _status(404)), (LifecycleError, _status(409)),
        (TooManyAttempts, _status(429)), (EngineUnavailable, _status(503)),
        (StoreError, _status(503)), (UserError, _invalid), (CarePlanError, _invalid),
        (AlertActionError, _invalid), (RegistryError, _invalid), (ConfigError, _invalid),
        (api_ward.UnknownMetric, _invalid),
    ]  # fmt: skip
    for exc_type, handler in handlers:
        app.add_exception_handler(exc_type, handler)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/api/health", tags=["health"], summary="Liveness and ingest age (public)")
    async def health() -> dict[str, Any]:
        """Up since when, live clients, and seconds since the last batch."""
        feed = ctx.feed
        now = feed.clock_us()
        last = feed.stats.last_batch_us
        return {"status": "ok", "started_us": ctx.started_us, "clients": len(feed.clients),
                "ingest_age_s": None if last is None else (now - last) / 1e6,
                "engine": ctx.engine is not None}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

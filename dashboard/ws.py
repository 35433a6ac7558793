"""``/api/live``: the websocket stream of the live feed.

Authentication is the same as for the API: the session cookie (the page) or
``Authorization: Bearer`` (other clients). A cookie-authenticated connection must come from the
dashboard's own origin (``Origin`` equal to the ``Host`` it was served from), so that another
site cannot open it with the user's cookie. Refusals close with 4401 (not logged in) or 4403
(foreign origin) right after the handshake, before any data.

Query parameters ``since`` and ``epoch`` ask for backfill after a reconnect. Messages from the
client: ``{"type": "resync"}`` (it saw a gap) and ``{"type": "ping"}`` (answered with a
heartbeat-free ``pong``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from dashboard.auth import COOKIE
from dashboard.feed import FeedClient
from dashboard.sessions import Session

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


async def _session(ws: WebSocket) -> tuple[Session | None, bool]:
    sessions = ws.app.state.ctx.sessions
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return await sessions.lookup(auth[7:].strip()), False
    return await sessions.lookup(ws.cookies.get(COOKIE)), True


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    host = ws.headers.get("host")
    if origin is None or host is None:
        return False
    return origin.split("://", 1)[-1].rstrip("/") == host


def _int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


@router.websocket("/api/live")
async def live(ws: WebSocket) -> None:
    """Snapshot (or backfill), then deltas, heartbeats and resyncs until either side closes."""
    session, by_cookie = await _session(ws)
    refusal = None
    if session is None:
        refusal = (CLOSE_UNAUTHORIZED, "log in first")
    elif by_cookie and not _same_origin(ws):
        refusal = (CLOSE_FORBIDDEN, "foreign origin")
    await ws.accept()
    if refusal is not None or session is None:  # accepted only to say why: no data is sent
        code, reason = refusal or (CLOSE_UNAUTHORIZED, "log in first")
        await ws.close(code=code, reason=reason)
        return
    feed = ws.app.state.ctx.feed
    client = feed.connect(session.user.username, _int(ws.query_params.get("since")),
                          ws.query_params.get("epoch"))
    sender = asyncio.create_task(_send(ws, client))
    receiver = asyncio.create_task(_receive(ws, client))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        feed.disconnect(client)
        for task in (sender, receiver):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await ws.close()


async def _send(ws: WebSocket, client: FeedClient) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            messages = await client.take()
            if not messages:
                return
            for text in messages:
                await ws.send_text(text)


async def _receive(ws: WebSocket, client: FeedClient) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            text = await ws.receive_text()
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "resync":
                client.request_resync()
            elif kind == "ping":
                client.offer(orjson.dumps({"type": "pong"}).decode())

"""The control socket: data commands against a running service.

A DuckDB file has one writer process. While ``vitalwire run`` (or ``demo``) holds it, the
``devices``, ``quarantine`` and ``readings`` commands send their operation over a Unix socket
next to the database (``<db>.sock``, mode 0600: only the service's user may connect) and the
service runs it on its own store. Protocol: one JSON object per line each way:
``{"op": "devices.assign", "args": {...}}`` -> ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from pipeline.errors import PermanentStoreError, PipelineError
from vitalwire.operations import OPERATIONS, DataContext
from vitalwire.service import Service

__all__ = ["ControlError", "ControlServer", "call", "socket_path"]

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20


class ControlError(PipelineError):
    """The running service refused or failed an operation."""


def socket_path(db: Path) -> Path:
    """Where the service holding ``db`` listens."""
    return Path(f"{db}.sock")


class ControlServer:
    """Serve :data:`~vitalwire.operations.OPERATIONS` for a running :class:`Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.path = socket_path(service.config.store.path)
        self._server: asyncio.AbstractServer | None = None
        self.context = DataContext(
            store=service.store,
            normalizer=service.normalizer,
            registry_changed=service.refresh_assignments,
            clock_us=service.clock_us,
        )

    async def __aenter__(self) -> ControlServer:
        if str(self.service.config.store.path) == ":memory:":
            return self
        if self.path.exists():
            if _answers(self.path):
                raise PermanentStoreError(f"{self.path}: another service is already listening")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            reply = await self._dispatch(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("control connection failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            op = OPERATIONS[request["op"]]
            args = request.get("args", {})
            if not isinstance(args, dict):
                raise TypeError("args must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        try:
            return {"ok": True, "result": await op(self.context, **args)}
        except (GatewayError, PipelineError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("control operation %s failed", request["op"])
            return {"ok": False, "error": f"internal error in {request['op']}: {exc}"}


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def call(path: Path, op: str, args: dict[str, Any], timeout: float = 60.0) -> Any:
    """Run one operation in the service listening at ``path``; raise its error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise ControlError(f"{path}: no service answers ({exc.strerror})") from exc
        s.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data or b"{}")
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "no reply from the service"))
    return reply["result"]

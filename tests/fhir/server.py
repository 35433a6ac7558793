"""Test support: a real FHIR server (``sekmet-fhir``) on loopback, and a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SekmetServer:
    """``sekmet serve -c settings.yaml`` in a subprocess, on 127.0.0.1, data in ``workdir``.

    Stop and start it again at will: the SQLite store in ``workdir`` survives.
    """

    def __init__(self, workdir: Path, server_auth: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        settings = {
            "host": "127.0.0.1",
            "port": self.port,
            "base_url": self.base_url,
            "data_dir": str(workdir / "data"),
            "own_private_key_path": str(workdir / "keys" / "sekmet.pem"),
            "simulator": {"enabled": False},
            "log_inbound": False,
            "server_auth": server_auth or {"types": ["none"]},
        }
        self.config = workdir / "settings.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "sekmet.log"

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until ``/metadata`` answers."""
        exe = Path(sys.executable).with_name("sekmet")
        env = {**os.environ, "SEKMET_CONFIG": str(self.config)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "serve", "-c", str(self.config)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekmet exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"sekmet did not answer in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: an outage, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def search(self, rtype: str, **params: str) -> list[dict[str, Any]]:
        """Every resource matching a search (follows paging)."""
        out: list[dict[str, Any]] = []
        url: str | None = f"{self.base_url}/{rtype}"
        query: dict[str, str] | None = {"_count": "500", **params}
        while url:
            body = httpx.get(url, params=query, timeout=30).json()
            out.extend(e["resource"] for e in body.get("entry", []) if "resource" in e)
            url = next(
                (link["url"] for link in body.get("link", []) if link.get("relation") == "next"),
                None,
            )
            query = None
        return out


@dataclass
class FaultProxy:
    """An HTTP proxy in front of a server that answers some requests itself.

    ``faults`` are consumed in order: each is ``(status, headers, body)`` answered to the next
    request whose method is in ``methods`` instead of forwarding it. Every request is logged
    with its arrival order.
    """

    upstream: str
    faults: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    methods: tuple[str, ...] = ("POST",)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    port: int = 0
    handler: Callable[[str, str, bytes], tuple[int, dict[str, str], bytes] | None] | None = None
    _server: asyncio.AbstractServer | None = None
    _client: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    async def __aenter__(self) -> FaultProxy:
        self._client = httpx.AsyncClient(timeout=60)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._client is not None
        self._server.close()
        await self._server.wait_closed()
        await self._client.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                length = int(
                    next((v for k, v in headers.items() if k.lower() == "content-length"), "0")
                )
                body = await reader.readexactly(length) if length else b""
                status, out_headers, out_body = await self._answer(method, target, headers, body)
                self.log.append((method, target, status))
                out_headers = {**out_headers, "Content-Length": str(len(out_body))}
                head_out = (
                    f"HTTP/1.1 {status} X\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in out_headers.items())
                    + "\r\n"
                )
                writer.write(head_out.encode("latin-1") + out_body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self.handler is not None:
            answer = self.handler(method, target, body)
            if answer is not None:
                return answer
        if method in self.methods and self.faults:
            return self.faults.pop(0)
        assert self._client is not None
        upstream = self.upstream.rsplit("/fhir", 1)[0] + target
        keep = {
            k: v
            for k, v in headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        }
        resp = await self._client.request(method, upstream, headers=keep, content=body)
        out = {
            k: v
            for k, v in resp.headers.items()
            if k.lower() in ("content-type", "location", "etag", "retry-after")
        }
        return resp.status_code, out, resp.content

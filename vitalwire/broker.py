"""An embedded MQTT broker for the demo and the tests.

:class:`MosquittoBroker` runs Debian's ``mosquitto`` on a loopback port with a generated config
derived from the shipped ``mosquitto.conf`` (burst-sized queues, Nagle off). When no mosquitto
binary is installed, :func:`start_embedded_broker` falls back to amqtt, a maintained pure-Python
broker (slower: fine for a demo, not for production).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "AmqttBroker",
    "EmbeddedBroker",
    "MosquittoBroker",
    "find_mosquitto",
    "free_port",
    "start_embedded_broker",
]

log = logging.getLogger(__name__)

SHIPPED_CONF = Path(__file__).with_name("mosquitto.conf")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (PATH, then /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    candidate = Path("/usr/sbin/mosquitto")
    return str(candidate) if candidate.exists() else None


def _wait_listening(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"broker did not listen on {host}:{port} within {timeout}s")


class EmbeddedBroker(Protocol):
    """What the demo needs of a broker it started."""

    host: str
    port: int
    mqtt_version: str

    def stop(self) -> None: ...


class MosquittoBroker:
    """A mosquitto process on a loopback port.

    Args:
        port: Port to listen on; a free one when 0.
        persistence: Keep queued messages of persistent sessions on disk across broker restarts.
        workdir: Folder for the config, log and persistence file (a temporary one when None).
        binary: Path of mosquitto (found automatically when None).
        password_file: A mosquitto password file; anonymous clients are refused when given.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        persistence: bool = False,
        workdir: Path | None = None,
        binary: str | None = None,
        password_file: Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.mqtt_version = "5"
        self.persistence = persistence
        self.password_file = password_file
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="vitalwire-broker-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        """The shipped config's tuning plus this instance's listener and files."""
        lines = [
            ln
            for ln in SHIPPED_CONF.read_text().splitlines()
            if ln.strip()
            and not ln.lstrip().startswith("#")
            and not ln.startswith(
                (
                    "listener",
                    "persistence",
                    "log_dest",
                    "password_file",
                    "allow_anonymous",
                    "persistence_location",
                    "user",
                )
            )
        ]
        lines += [
            f"listener {self.port} {self.host}",
            *(
                ["allow_anonymous false", f"password_file {self.password_file}"]
                if self.password_file
                else ["allow_anonymous true"]
            ),
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            # Started as root, mosquitto would switch to the 'mosquitto' user and then fail to
            # read the password file or write persistence into our private folder.
            f"user {getpass.getuser()}",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the process and wait until it listens."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        assert self.binary is not None
        # Its own session: a Ctrl-C in the terminal reaches only its owner (the demo), which
        # drains the service first and stops the broker last.
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _wait_listening(self.host, self.port, timeout, self.proc)
        return self

    def stop(self) -> None:
        """Terminate the process (persisting sessions when persistence is on). Idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self) -> None:
        """Stop and remove the temporary folder."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class AmqttBroker:
    """amqtt running in a thread of its own event loop (fallback when mosquitto is missing)."""

    mqtt_version = "3.1.1"

    def __init__(self, port: int = 0) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: Any = None

    def start(self, timeout: float = 10.0) -> AmqttBroker:
        import threading

        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        _wait_listening(self.host, self.port, timeout, None)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None


def start_embedded_broker(
    port: int = 1883, workdir: Path | None = None, prefer: str = "mosquitto"
) -> EmbeddedBroker:
    """mosquitto when installed (unless ``prefer`` is "amqtt"), else amqtt; on ``port`` or a
    free one if it is taken. amqtt speaks MQTT 3.1.1 only (``MQTT_VERSION`` of the broker)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            port = 0
    if prefer == "mosquitto" and find_mosquitto():
        return MosquittoBroker(port, persistence=workdir is not None, workdir=workdir).start()
    log.warning("mosquitto not found; using the pure-Python amqtt broker (demo speed only)")
    return AmqttBroker(port).start()

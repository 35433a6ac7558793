"""The intake process itself: ``python -m vitalwire.intake_child FD SERVICE_PID`` (started by
:class:`vitalwire.intake.IntakeProcess`, which documents the wire).

MQTT receiver → batcher (decoding through the router) → batches to the service over the socket
``FD``; PUBACKs once the service says a batch is committed. The process ignores SIGINT and
SIGTERM: the service stops it in order, and if the service dies the socket closes and the
child exits without acknowledging anything more (the broker redelivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Sequence

from gateway.errors import RetryableError
from gateway.mqtt_receiver import MqttReceiver
from pipeline.batcher import Batcher
from vitalwire.config import ServiceConfig
from vitalwire.intake import IntakeSetup, read_frame, write_frame
from vitalwire.routing import build_router

log = logging.getLogger("vitalwire.intake")

_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies."""

_WATCH_S = 0.05
"""How often the connection state is looked at (changes are sent to the service)."""


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a :class:`RetryableError` with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RetryableError(f"{type(exc).__name__}: {exc}")
    return exc


class _Intake:
    """Receiver and batcher of the child; batches go out one per ``want``, their message
    tokens wait in ``pending`` (by batch number) until the service acknowledges them."""

    def __init__(self, config: ServiceConfig, writer: asyncio.StreamWriter) -> None:
        self.config = config
        self.writer = writer
        self.wanted = 0
        self.want = asyncio.Event()
        self.pending: dict[int, list[object]] = {}
        self.numbers = 0

    def send(self, item: object) -> None:
        if not self.writer.is_closing():
            write_frame(self.writer, item)

    async def run(self, reader: asyncio.StreamReader) -> int:
        try:
            router = build_router(self.config)
            receiver = MqttReceiver(self.config.mqtt, router.subscriptions())
            await receiver.__aenter__()
        except Exception as exc:
            self.send(("failed", _portable(exc)))
            await self.writer.drain()
            return 1
        self.send(("started",))
        gc.collect()
        gc.freeze()  # as the service does: start-up objects are never scanned again
        batcher = Batcher(receiver, router.decode, self.config.batch, ready=self._wanted)
        tasks = [
            asyncio.create_task(self._send_batches(batcher)),
            asyncio.create_task(self._watch(receiver)),
        ]
        try:
            await self._commands(reader, receiver, batcher)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await receiver.close()  # PUBACKs queued by the last acks go out first
        return 0

    def _wanted(self) -> bool:
        return self.wanted > 0

    async def _commands(
        self, reader: asyncio.StreamReader, receiver: MqttReceiver, batcher: Batcher
    ) -> None:
        """Obey the service until it says ``close`` or goes away."""
        while True:
            try:
                frame = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.warning("the service went away; exiting without further acknowledgements")
                return
            kind = frame[0]
            if kind == "want":
                self.wanted += 1
                self.want.set()
            elif kind == "ack":
                receiver.ack(self._tokens(frame[1]))
            elif kind == "stop":
                batcher.stop()
            elif kind == "close":
                return

    def _tokens(self, numbers: Sequence[int]) -> list[object]:
        return [t for n in numbers for t in self.pending.pop(n, ())]

    async def _send_batches(self, batcher: Batcher) -> None:
        try:
            async for batch, tokens in batcher.batches():
                while self.wanted == 0:
                    self.want.clear()
                    await self.want.wait()
                self.wanted -= 1
                number = self.numbers
                self.numbers += 1
                self.pending[number] = tokens
                self.send(("batch", number, batch))
                await self.writer.drain()
            self.send(("end",))
        except Exception as exc:
            log.error("intake failed: %s", exc)
            self.send(("failed", _portable(exc)))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def _watch(self, receiver: MqttReceiver) -> None:
        last: bool | None = None
        while True:
            now = receiver.stats.connected
            if now != last:
                self.send(("connected", now))
                last = now
            await asyncio.sleep(_WATCH_S)


async def _main(fd: int) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    setup: IntakeSetup = await read_frame(reader)
    logging.basicConfig(
        level=setup.log_level, format="%(asctime)s %(levelname)s intake %(name)s: %(message)s"
    )
    try:
        return await _Intake(setup.config, writer).run(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the intake on the socket descriptor ``FD`` for the service process ``SERVICE_PID``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print("usage: python -m vitalwire.intake_child FD SERVICE_PID (the service starts it)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(int(args[1]))
    return asyncio.run(_main(int(args[0])))


def _die_with_parent(parent: int) -> None:
    """On Linux, ask the kernel to kill this process when the service (``parent``) dies; the
    closed socket covers it otherwise: the child exits when it reads the end of the stream."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the service died before the request was made
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())

"""The intake process: MQTT receive, decoding and batching in a child process.

At the service's rates the MQTT client (paho parses every packet in Python) and the payload
decoders hold the interpreter lock about half of the time, and normalization, scoring and the
store's write then wait for it. :class:`IntakeProcess` runs :class:`~gateway.mqtt_receiver.
MqttReceiver` → :class:`~pipeline.batcher.Batcher` (with the router's decoders) in a child
process (:mod:`vitalwire.intake_child`), so the two halves run on two CPU cores. The child sends
finished :class:`~pipeline.readings.ReadingBatch` frames; the service acknowledges a batch by
its number once it is committed, and the child then sends the PUBACKs of its messages.

Wire: one Unix socket pair; each frame is a pickled tuple behind an 8-byte length. Service →
child: the setup (:class:`IntakeSetup`), then ``("want",)`` (send the next batch as soon as it
is due), ``("ack", [numbers])``, ``("stop",)`` (flush what is pending, then ``("end",)``) and
``("close",)`` (acknowledge what was acked, disconnect, exit). Child → service: ``("started",)``
or ``("failed", error)``, ``("connected", bool)``, ``("batch", number, batch)``, ``("end",)``.

Backpressure: the child sends a batch only when the service asked for one, and the service
asks only when it takes the previous one, so at most one batch waits in the socket; meanwhile
the child's batcher keeps collecting (up to ``max_rows``) and, beyond that, the MQTT client's
receive window holds the rest at the broker. Nothing is acknowledged before it is committed:
if either process dies, the broker redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import struct
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import RetryableError
from pipeline.readings import ReadingBatch
from vitalwire.config import ServiceConfig

__all__ = ["IntakeProcess", "IntakeSetup", "read_frame", "write_frame"]

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!Q")

SOCKET_BUFFER_BYTES = 4 << 20
"""Kernel buffer asked for the child -> service direction of the socket pair."""

READER_LIMIT_BYTES = 16 << 20
"""The service's stream reader buffers this much before it pauses the socket."""

EXIT_WAIT_S = 10.0
"""After ``close``, how long the child may take to send its last PUBACKs and exit."""


@dataclass(frozen=True, slots=True)
class IntakeSetup:
    """The first frame the child reads: what to receive and how to batch it."""

    config: ServiceConfig
    log_level: int


def write_frame(writer: asyncio.StreamWriter, item: object) -> None:
    """Queue one frame on ``writer`` (the caller drains when it wants to wait)."""
    data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_LENGTH.pack(len(data)))
    writer.write(data)  # not concatenated: a batch frame is large, and is not copied


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame; raises :class:`asyncio.IncompleteReadError` at end of stream."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))


class IntakeProcess:
    """The service's source of batches when intake runs in a child process.

    Used by :class:`~vitalwire.service.Service` in place of the receiver and the batcher:
    ``async with IntakeProcess(config) as intake``, then ``intake.batches()`` yields
    ``(batch, [number])``, ``intake.ack(numbers)`` after the commit, ``intake.stop()`` to
    flush and end the iteration.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.messages_in = 0
        self.batches_out = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> IntakeProcess:
        ours, theirs = socket.socketpair()
        # Room for a whole batch in the kernel, so that a frame goes out in one send instead
        # of being buffered and re-sliced by the event loop (the OS may cap the size).
        with contextlib.suppress(OSError):
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vitalwire.intake_child", str(theirs.fileno()),
                str(os.getpid()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # Its own session: a Ctrl-C in the terminal reaches only the service, which
                # then stops the child in order (flush, commit, acknowledge).
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        # A reader limit above a batch frame: no pause/resume of the transport per 128 KiB.
        self._reader, self._writer = await asyncio.open_unix_connection(
            sock=ours, limit=READER_LIMIT_BYTES
        )
        write_frame(self._writer, IntakeSetup(self.config, logging.getLogger().getEffectiveLevel()))
        await self._writer.drain()
        first = await self._read_or_exit()
        if first[0] == "failed":
            await self._close()
            raise first[1]
        self._pump = asyncio.create_task(self._read_frames(), name="intake-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        """Tell the child to send its PUBACKs and exit; wait for it (killed after a while)."""
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                write_frame(self._writer, ("close",))
                await self._writer.drain()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), EXIT_WAIT_S)
            except TimeoutError:
                log.error("intake process %d did not exit; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before start)."""
        return None if self._proc is None else self._proc.pid

    # -- the receiver's face -----------------------------------------------------------------

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the child's first MQTT connection is up; False on timeout.

        Raises:
            ReceiverError: The child's receiver failed (bad credentials, TLS), or it exited.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._connected.is_set() and self._failure is None:
                    self._changed.clear()
                    await self._changed.wait()
        if self._failure is not None:
            raise self._failure
        return self._connected.is_set()

    def ack(self, tokens: Sequence[object]) -> None:
        """Acknowledge committed batches (by number); the child sends their PUBACKs."""
        if self._writer is not None and not self._writer.is_closing() and tokens:
            write_frame(self._writer, ("ack", list(tokens)))

    # -- the batcher's face ------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the child to flush what it holds and end the batches."""
        if not self._stopping and self._writer is not None and not self._writer.is_closing():
            self._stopping = True
            write_frame(self._writer, ("stop",))

    async def batches(self) -> AsyncIterator[tuple[ReadingBatch, list[object]]]:
        """Yield ``(batch, [number])`` until the child has flushed after :meth:`stop`.

        Raises:
            ReceiverError: The child's receiver failed, or the child exited unexpectedly.
        """
        assert self._writer is not None, "use the intake inside 'async with'"
        while True:
            if not self._writer.is_closing():
                write_frame(self._writer, ("want",))
            frame = await self._frames.get()
            kind = frame[0]
            if kind == "end":
                return
            if kind == "failed":
                raise frame[1]
            _, number, batch = frame
            self.messages_in += batch.messages.height
            self.batches_out += 1
            yield batch, [number]

    async def _read_or_exit(self) -> tuple[Any, ...]:
        assert self._reader is not None and self._proc is not None
        try:
            frame: tuple[Any, ...] = await read_frame(self._reader)
            return frame
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self._proc.wait()
            return ("failed", RetryableError(f"the intake process exited (code {code})"))

    async def _read_frames(self) -> None:
        """Sort the child's frames: state changes here, batches and ends for :meth:`batches`."""
        while True:
            frame = await self._read_or_exit()
            kind = frame[0]
            if kind == "connected":
                if frame[1]:
                    self._connected.set()
            elif kind == "failed":
                self._failure = frame[1]
                self._frames.put_nowait(frame)
                self._changed.set()
                return
            else:
                self._frames.put_nowait(frame)
                if kind == "end":
                    return
            self._changed.set()

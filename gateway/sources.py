"""Several receivers as one message source.

Each receiver gets a pump task that takes messages in bulk and puts them on one bounded queue;
the batcher reads that queue. Delivery tokens are tagged with their receiver, so that
:meth:`MergedSource.ack` hands each token back to the receiver it came from. The queue bound
(in chunks) is the backpressure: a full queue stops the pumps, and each receiver's own bound
(MQTT Receive Maximum, BLE queue size) holds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from collections.abc import Sequence
from typing import Protocol

from gateway.records import RawMessage

__all__ = ["MergedSource", "Receiver"]


class Receiver(Protocol):
    """What a receiver offers (the MQTT and BLE receivers both do)."""

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]: ...

    def ack(self, tokens: Sequence[object]) -> None: ...


class MergedSource:
    """Messages of several receivers, in arrival order per receiver.

    Args:
        receivers: Entered receivers (their lifecycle stays with the caller).
        chunk: Most messages one pump takes at a time.
        queue_chunks: Chunks waiting for the batcher before the pumps pause.
    """

    def __init__(self, receivers: Sequence[Receiver], chunk: int = 5000, queue_chunks: int = 4):
        self.receivers = tuple(receivers)
        self.chunk = chunk
        self._queue: asyncio.Queue[list[RawMessage]] = asyncio.Queue(queue_chunks)
        self._pending: list[RawMessage] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: BaseException | None = None

    async def __aenter__(self) -> MergedSource:
        self._tasks = [
            asyncio.create_task(self._pump(i, rx), name=f"source-{i}")
            for i, rx in enumerate(self.receivers)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pump(self, index: int, rx: Receiver) -> None:
        try:
            while True:
                got = await rx.receive(self.chunk, 0.5)
                if got:
                    await self._queue.put(
                        [m._replace(ack=None if m.ack is None else (index, m.ack)) for m in got]
                    )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced by receive(): a receiver failed for good
            self.failure = exc
            await self._queue.put([])

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        """Up to ``max_items`` messages from any receiver, waiting up to ``timeout`` for one."""
        if not self._pending:
            try:
                self._pending = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return []
        if self.failure is not None:
            raise self.failure
        while len(self._pending) < max_items and not self._queue.empty():
            self._pending.extend(self._queue.get_nowait())
        out, self._pending = self._pending[:max_items], self._pending[max_items:]
        return out

    def ack(self, tokens: Sequence[object]) -> None:
        """Return each token to its receiver, in order."""
        per: dict[int, list[object]] = {}
        for token in tokens:
            if token is None:
                continue
            index, inner = typing.cast(tuple[int, object], token)
            per.setdefault(index, []).append(inner)
        for index, inner_tokens in per.items():
            self.receivers[index].ack(inner_tokens)

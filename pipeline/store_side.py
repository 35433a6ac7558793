"""A second connection to the store's database, on a thread of its own.

The store's writer commits readings on one connection and one thread. Work that takes long
and writes other tables (the alert engine's once-a-second save of its state) would hold those
commits up if it queued on the same thread; on a :class:`SideConnection` it runs beside them.
DuckDB runs transactions of different connections concurrently (the WAL write at commit is
serialized), so the only rule is that side work never writes a table the writer writes.

The store owns it: the connection is a ``cursor()`` of the store's own (created on the store's
thread), it is closed before the store checkpoints on close, and checkpoints wait for side work
in flight (:attr:`lock`), because a checkpoint needs the other connections idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import duckdb

__all__ = ["SideConnection"]

T = TypeVar("T")
Conn = duckdb.DuckDBPyConnection


class SideConnection:
    """One connection and one thread for side work; :meth:`call` runs a function on them.

    Args:
        open_conn: Makes the connection (run once, on the store's thread, by the store).
        guard: Runs ``fn(conn, *args)`` and translates DuckDB errors (the store's policy).
    """

    def __init__(self, open_conn: Callable[[], Awaitable[Conn]],
                 guard: Callable[[Conn, Callable[..., Any], tuple[Any, ...]], Any]) -> None:
        self._open_conn = open_conn
        self._guard = guard
        self._conn: Conn | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.lock = asyncio.Lock()
        """Held while side work runs; a checkpoint or close takes it to find the side idle."""

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the side thread (opening the connection the first time)."""
        async with self.lock:
            if self._conn is None:
                self._conn = await self._open_conn()
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="duckdb-side")
            conn = self._conn
            job: Callable[[], T] = lambda: self._guard(conn, fn, args)  # noqa: E731
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def close(self) -> None:
        """Close the connection and stop the thread (after the work in flight). Idempotent."""
        async with self.lock:
            conn, self._conn = self._conn, None
            executor, self._executor = self._executor, None
            if conn is not None and executor is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
            if executor is not None:
                executor.shutdown(wait=True)

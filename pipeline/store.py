"""The DuckDB store: one connection on one thread, one transaction per batch.

Every DuckDB call runs on a single dedicated worker thread (a one-thread executor), reached from
asyncio with ``run_in_executor``: the event loop never blocks, and calls are serialized without
locks. DuckDB releases the GIL while it executes.

A write appends the batch's readings from Arrow (``INSERT ... SELECT`` from a registered view,
never row by row), skipping readings already stored, and appends its quarantine rows, all in
one transaction. Checkpoints stay off the ingest path: DuckDB's own checkpoint only runs when the
WAL reaches ``checkpoint_threshold`` (1 GB), and the store checkpoints when writes pause for
``idle_checkpoint_s`` and on close. See ``docs/storage.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import duckdb
import polars as pl

from pipeline.errors import (
    ConfigError,
    PermanentStoreError,
    RetryableStoreError,
    StoreError,
    StoreLocked,
)
from pipeline.quarantine import mark_replayed
from pipeline.readings import ReadingBatch
from pipeline.registry import assignments_frame, sql_frame, transaction
from pipeline.store_sql import (
    DEDUP_KEY,
    READING_COLUMNS,
    insert_quarantine_sql,
    insert_readings_sql,
    migrate,
)

__all__ = [
    "DEFAULT_CHECKPOINT_THRESHOLD",
    "DEFAULT_DB_PATH",
    "DEFAULT_DEDUP_WINDOW_S",
    "DEFAULT_IDLE_CHECKPOINT_S",
    "CommitListener",
    "DuckDbStore",
    "StoreConfig",
    "TransactionHook",
    "WriteResult",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Conn = duckdb.DuckDBPyConnection

DEFAULT_DB_PATH = Path("vitalwire.duckdb")
"""The database file every command uses when none is configured or given."""
DEFAULT_CHECKPOINT_THRESHOLD = "1GB"
DEFAULT_IDLE_CHECKPOINT_S = 30.0
DEFAULT_DEDUP_WINDOW_S = 86_400.0

_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)$", re.IGNORECASE)
_READINGS_VIEW = "_vitalwire_batch_readings"
_QUARANTINE_VIEW = "_vitalwire_batch_quarantine"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the database lives, and the checkpoint and de-duplication policy.

    Attributes:
        path: DuckDB file (``":memory:"`` for a throw-away database).
        checkpoint_threshold: WAL size at which DuckDB checkpoints on its own (``"1GB"``).
            Each checkpoint stalls the writer (about 200 ms per 16 MB of WAL), so keep it large.
        idle_checkpoint_s: Checkpoint when no write arrived for this long and the WAL holds
            data; 0 disables it (close still checkpoints).
        dedup_window_s: How long after storing a reading a copy of it is still recognised as
            a duplicate (the anti-join only reads rows stored this recently); ``inf`` checks
            every stored row, 0 de-duplicates within each batch only.
    """

    path: Path
    checkpoint_threshold: str = DEFAULT_CHECKPOINT_THRESHOLD
    idle_checkpoint_s: float = DEFAULT_IDLE_CHECKPOINT_S
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if not str(self.path):
            raise ConfigError("store.path: expected a file path or ':memory:'")
        if not _SIZE.match(self.checkpoint_threshold.strip()):
            raise ConfigError(
                f"store.checkpoint_threshold: expected a size such as '1GB' or '512MB',"
                f" got {self.checkpoint_threshold!r}"
            )
        if not (math.isfinite(self.idle_checkpoint_s) and self.idle_checkpoint_s >= 0):
            raise ConfigError(
                f"store.idle_checkpoint_s: expected seconds >= 0, got {self.idle_checkpoint_s}"
            )
        if math.isnan(self.dedup_window_s) or self.dedup_window_s < 0:
            raise ConfigError(
                f"store.dedup_window_s: expected seconds >= 0 (or inf), got {self.dedup_window_s}"
            )


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write committed.

    Attributes:
        stored: Readings inserted.
        duplicates: Readings skipped: repeated in the batch or already stored.
        quarantined: Quarantine rows inserted.
        replayed: Quarantine rows marked replayed.
    """

    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    replayed: int = 0


CommitListener = Callable[[ReadingBatch, WriteResult], None]

TransactionHook = Callable[[duckdb.DuckDBPyConnection, pl.DataFrame], None]
"""``fn(conn, inserted)``: runs on the store thread inside a write's transaction, with exactly
the readings that write inserted (``READING_COLUMNS``, duplicates left out); raising rolls the
whole write back."""


def _translate(exc: duckdb.Error, path: Path, action: str, *, io_retryable: bool) -> StoreError:
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "Could not set lock" in text:
        return StoreLocked(
            f"database {path} is in use by another process (a running vitalwire service?): {text}"
        )
    transient = (duckdb.TransactionException, duckdb.OutOfMemoryException)
    if isinstance(exc, transient) or (io_retryable and isinstance(exc, duckdb.IOException)):
        return RetryableStoreError(f"{path}: {action} failed, may be retried: {text}")
    return PermanentStoreError(f"{path}: {action} failed: {text}")


class DuckDbStore:
    """Readings, quarantine and registry in one DuckDB file.

    Use ``async with DuckDbStore(config) as store`` in the service, or
    ``with DuckDbStore.open_sync(config) as store`` in tools without an event loop.

    Args:
        config: File and policies.
        clock: Monotonic seconds, for the idle checkpoint (injectable for tests).
    """

    def __init__(self, config: StoreConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: Conn | None = None  # used on the store thread only
        self._thread_id: int | None = None
        self._state = "new"
        self._listeners: list[CommitListener] = []
        self._hooks: list[TransactionHook] = []
        self._last_write = clock()
        self._dirty = False
        self._idle_task: asyncio.Task[None] | None = None

    @property
    def config(self) -> StoreConfig:
        """The configuration the store was made with."""
        return self._config

    # -- lifecycle -------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._state != "new":
            raise PermanentStoreError(f"{self._config.path}: a store can be opened only once")
        self._state = "open"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="duckdb-store")

    async def __aenter__(self) -> DuckDbStore:
        """Open the file, create or migrate the schema, apply settings, start idle checkpoints."""
        self._start()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open)
        except BaseException:
            self._shutdown_executor()
            raise
        if self._config.idle_checkpoint_s > 0:
            self._idle_task = asyncio.create_task(self._idle_loop(), name="duckdb-idle-checkpoint")
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop accepting work, let queued writes finish, checkpoint and close. Idempotent."""
        if self._state != "open":
            return
        self._state = "closing"
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._shutdown_executor()

    @classmethod
    @contextlib.contextmanager
    def open_sync(cls, config: StoreConfig) -> Iterator[DuckDbStore]:
        """Open for blocking use (CLI); closes, with a checkpoint, on exit."""
        store = cls(config)
        store._start()
        assert store._executor is not None
        try:
            store._executor.submit(store._open).result()
        except BaseException:
            store._shutdown_executor()
            raise
        try:
            yield store
        finally:
            store.close_sync()

    def close_sync(self) -> None:
        """Blocking close for stores opened with :meth:`open_sync`. Idempotent."""
        if self._state != "open":
            return
        self._state = "closing"
        assert self._executor is not None
        try:
            self._executor.submit(self._close).result()
        finally:
            self._shutdown_executor()

    def _shutdown_executor(self) -> None:
        self._state = "closed"
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _open(self) -> None:
        path = self._config.path
        self._thread_id = threading.get_ident()
        try:
            conn = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise _translate(exc, path, "opening the database", io_retryable=False) from exc
        try:
            conn.execute("SET TimeZone = 'UTC'").fetchall()
            threshold = self._config.checkpoint_threshold.strip()
            conn.execute(f"SET checkpoint_threshold = '{threshold}'").fetchall()
            migrate(conn, str(path))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, duckdb.Error):
                raise _translate(exc, path, "preparing the schema", io_retryable=False) from exc
            raise
        self._conn = conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("CHECKPOINT").fetchall()
        except duckdb.Error as exc:  # the WAL is replayed on the next open: nothing is lost
            log.warning("%s: checkpoint on close failed: %s", self._config.path, exc)
        finally:
            conn.close()

    # -- running on the store thread -------------------------------------------------------------

    def _guarded(self, fn: Callable[..., T], args: Sequence[Any], kwargs: dict[str, Any]) -> T:
        conn = self._conn
        if conn is None:
            raise PermanentStoreError(f"{self._config.path}: the store is closed")
        try:
            return fn(conn, *args, **kwargs)
        except duckdb.Error as exc:
            name = getattr(fn, "__name__", "operation").strip("_")
            raise _translate(exc, self._config.path, name, io_retryable=True) from exc

    def _check_open(self) -> ThreadPoolExecutor:
        if self._state != "open" or self._executor is None:
            raise PermanentStoreError(
                f"{self._config.path}: the store is {self._state}, not open; writes are refused"
            )
        return self._executor

    async def call(
        self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on the store thread; duckdb errors become
        :class:`~pipeline.errors.StoreError`. ``fn`` must not keep the connection."""
        executor = self._check_open()
        job = functools.partial(self._guarded, fn, args, kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, job)

    def call_sync(
        self, fn: Callable[Concatenate[Conn, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Blocking :meth:`call`, for tools (blocks the event loop if called from one)."""
        if threading.get_ident() == self._thread_id:
            return self._guarded(fn, args, kwargs)  # already on the store thread
        return self._check_open().submit(self._guarded, fn, args, kwargs).result()

    def query(
        self, sql: str, params: Sequence[object] | Mapping[str, object] | None = None
    ) -> pl.DataFrame:
        """Run one read statement on the store thread (blocking) and return its rows."""
        return self.call_sync(sql_frame, sql, params)

    async def assignments(self) -> pl.DataFrame:
        """All assignments, for the resolver (:func:`pipeline.registry.assignments_frame`)."""
        return await self.call(assignments_frame)

    # -- writes ----------------------------------------------------------------------------------

    def add_commit_listener(self, fn: CommitListener) -> None:
        """Call ``fn(batch, result)`` after each commit, on the caller's (event loop) thread."""
        self._listeners.append(fn)

    def add_transaction_hook(self, fn: TransactionHook) -> None:
        """Call ``fn(conn, inserted)`` inside every write's transaction (see
        :data:`TransactionHook`), so that derived rows commit atomically with the readings.
        Not called when a write inserts no reading."""
        self._hooks.append(fn)

    async def write(self, batch: ReadingBatch, replayed_ids: Sequence[int] = ()) -> WriteResult:
        """Store a batch in one transaction.

        Readings are de-duplicated on (device_id, metric, observed_at, seq), within the batch
        and against rows already stored; quarantine rows are appended; ``replayed_ids`` (rows
        of the quarantine table that this batch replays) are marked replayed.

        Raises:
            RetryableStoreError: Transient failure; nothing was committed, write it again.
            PermanentStoreError: The store cannot take this batch or is closed.
        """
        result = await self.call(self._write, batch, tuple(replayed_ids))
        self._notify(batch, result)
        return result

    def write_sync(self, batch: ReadingBatch, replayed_ids: Sequence[int] = ()) -> WriteResult:
        """Blocking :meth:`write`, for tools."""
        result = self.call_sync(self._write, batch, tuple(replayed_ids))
        self._notify(batch, result)
        return result

    def _notify(self, batch: ReadingBatch, result: WriteResult) -> None:
        for fn in self._listeners:
            try:
                fn(batch, result)
            except Exception:
                log.exception("commit listener %r failed", fn)

    def _write(self, conn: Conn, batch: ReadingBatch, replayed_ids: tuple[int, ...]) -> WriteResult:
        readings = batch.readings.drop("origin").unique(
            DEDUP_KEY, keep="first", maintain_order=True
        )
        missing = readings.select(pl.col("patient_id", "device_id").null_count()).row(0)
        if any(missing):
            raise PermanentStoreError(
                f"{self._config.path}: cannot store readings without patient_id ({missing[0]})"
                f" or device_id ({missing[1]}); resolve or quarantine them first"
            )
        stored = quarantined = replayed = 0
        if readings.height or batch.quarantine.height or replayed_ids:
            try:
                with transaction(conn):
                    if readings.height:
                        stored = self._insert_readings(conn, readings)
                    if batch.quarantine.height:
                        conn.register(_QUARANTINE_VIEW, batch.quarantine.to_arrow())
                        sql = insert_quarantine_sql(_QUARANTINE_VIEW)
                        quarantined = _count(conn.execute(sql).fetchall())
                    replayed = mark_replayed(conn, replayed_ids)
            finally:
                for view in (_READINGS_VIEW, _QUARANTINE_VIEW):
                    with contextlib.suppress(duckdb.Error):
                        conn.unregister(view)
            self._dirty = True
            self._last_write = self._clock()
        return WriteResult(stored, batch.readings.height - stored, quarantined, replayed)

    def _insert_readings(self, conn: Conn, readings: pl.DataFrame) -> int:
        conn.register(_READINGS_VIEW, readings.to_arrow())
        sql = insert_readings_sql(
            _READINGS_VIEW, readings["observed_at"], self._config.dedup_window_s
        )
        if not self._hooks:
            return _count(conn.execute(sql).fetchall())
        inserted = sql_frame(conn, f"{sql} RETURNING {', '.join(READING_COLUMNS)}")
        if inserted.height:
            for hook in self._hooks:
                hook(conn, inserted)
        return inserted.height

    # -- checkpoints -----------------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Checkpoint now (waits for queued writes)."""
        await self.call(self._checkpoint)

    def _checkpoint(self, conn: Conn) -> None:
        conn.execute("CHECKPOINT").fetchall()
        self._dirty = False

    async def checkpoint_if_idle(self) -> bool:
        """Checkpoint when the WAL holds writes and none came for ``idle_checkpoint_s``.

        Returns:
            True when a checkpoint ran.
        """
        idle = self._config.idle_checkpoint_s
        if idle <= 0 or not self._dirty or self._clock() - self._last_write < idle:
            return False
        await self.checkpoint()
        return True

    async def _idle_loop(self) -> None:
        idle = self._config.idle_checkpoint_s
        while True:
            wait = idle - (self._clock() - self._last_write)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.checkpoint_if_idle()
            except StoreError as exc:
                log.warning("idle checkpoint failed (will retry): %s", exc)
            await asyncio.sleep(idle)


def _count(rows: list[tuple[Any, ...]]) -> int:
    return int(rows[0][0]) if rows else 0

"""The store's side connection: long work on other tables runs beside the writes, checkpoints
and close wait for it, and its errors are the store's errors."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import duckdb
import pytest

from pipeline.errors import PermanentStoreError, StoreError
from pipeline.store import DuckDbStore
from tests.pipeline.test_store import T0, batch, cfg, readings, wal_size


def _slow_side_insert(conn: duckdb.DuckDBPyConnection, entered: threading.Event,
                      release: threading.Event) -> int:
    """A side transaction that stays open until ``release``."""
    conn.execute("CREATE TABLE IF NOT EXISTS side_state (k INTEGER)").fetchall()
    conn.execute("BEGIN TRANSACTION")
    conn.execute("INSERT INTO side_state VALUES (1), (2)").fetchall()
    entered.set()
    if not release.wait(20):
        conn.execute("ROLLBACK")
        raise TimeoutError("never released")
    conn.execute("COMMIT")
    return threading.get_ident()


async def _started(entered: threading.Event) -> None:
    assert await asyncio.to_thread(entered.wait, 20)


async def test_side_work_does_not_hold_up_writes(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path)) as store:
        entered, release = threading.Event(), threading.Event()
        side = asyncio.create_task(store.call_side(_slow_side_insert, entered, release))
        await _started(entered)
        # The side transaction is open, yet a write commits and is visible.
        result = await asyncio.wait_for(
            store.write(batch(readings(("D1", "heart_rate", 70.0, T0, 1)))), 20)
        assert result.stored == 1
        assert store.query("SELECT count(*) AS n FROM readings")["n"][0] == 1
        assert not side.done()
        release.set()
        side_thread = await side
        writer_thread = await store.call(lambda conn: threading.get_ident())
        assert side_thread != writer_thread
        assert store.query("SELECT count(*) AS n FROM side_state")["n"][0] == 2


async def test_checkpoint_and_close_wait_for_side_work(tmp_path: Path) -> None:
    path = tmp_path / "vw.duckdb"
    store = DuckDbStore(cfg(tmp_path))
    await store.__aenter__()
    await store.write(batch(readings(("D1", "heart_rate", 70.0, T0, 1))))
    entered, release = threading.Event(), threading.Event()
    side = asyncio.create_task(store.call_side(_slow_side_insert, entered, release))
    await _started(entered)
    checkpoint = asyncio.create_task(store.checkpoint())
    await asyncio.sleep(0.3)
    assert not checkpoint.done()  # waits for the side transaction
    release.set()
    await side
    await asyncio.wait_for(checkpoint, 20)
    entered, release = threading.Event(), threading.Event()
    side = asyncio.create_task(store.call_side(_slow_side_insert, entered, release))
    await _started(entered)
    close = asyncio.create_task(store.__aexit__(None, None, None))
    await asyncio.sleep(0.3)
    assert not close.done()  # lets the side work finish first
    release.set()
    await side
    await asyncio.wait_for(close, 20)
    assert wal_size(path) == 0  # closed with a checkpoint
    with pytest.raises(PermanentStoreError, match="not open"):
        await store.call_side(lambda conn: None)
    with duckdb.connect(str(path)) as conn:
        assert conn.execute("SELECT count(*) FROM side_state").fetchone() == (4,)


async def test_side_errors_are_store_errors_and_settings_match(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path)) as store:
        with pytest.raises(StoreError):
            await store.call_side(lambda conn: conn.execute("SELECT * FROM no_such_table"))
        tz = await store.call_side(
            lambda conn: conn.execute("SELECT current_setting('TimeZone')").fetchone())
        assert tz == ("UTC",)

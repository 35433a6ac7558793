"""The service's two stages: batches are scored while the store writes, and batches that arrive
during a write are committed together in the next transaction, in order, acknowledged after it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pytest

from gateway.records import RawMessage
from pipeline import registry
from pipeline.batcher import BatchConfig
from pipeline.readings import ReadingBatch
from pipeline.store import DuckDbStore, StoreConfig
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

NOW_US = time.time_ns() // 1000


class QueueSource:
    """Messages put by the test, acknowledgements recorded."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[RawMessage] = asyncio.Queue()
        self.acked: list[object] = []

    def put(self, seq: int, value: float = 70.0) -> None:
        body = {"device_id": "D1", "metric": "heart_rate", "value": value, "unit": "/min",
                "ts": NOW_US // 1000 - 1000 + seq, "seq": seq}
        self.queue.put_nowait(RawMessage("vitalwire/v1/devices/D1/readings",
                                         orjson.dumps(body), time.time_ns() // 1000, "mqtt", seq))

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return []
        out = [first]
        while not self.queue.empty() and len(out) < max_items:
            out.append(self.queue.get_nowait())
        return out

    def ack(self, tokens: list[object]) -> None:
        self.acked.extend(tokens)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def config(tmp_path: Path) -> ServiceConfig:
    db = tmp_path / "stages.duckdb"
    with DuckDbStore.open_sync(StoreConfig(path=db, idle_checkpoint_s=0)) as store:
        registry.assign(store, "D1", "P1", datetime(2000, 1, 1, tzinfo=UTC))
    return ServiceConfig(store=StoreConfig(path=db, idle_checkpoint_s=0),
                         batch=BatchConfig(max_age_ms=5.0), progress_s=0)


async def test_batches_are_scored_during_a_write_then_committed_together(
    tmp_path: Path,
) -> None:
    source = QueueSource()
    scored: list[list[int]] = []
    commits: list[list[int]] = []
    entered, gate = threading.Event(), threading.Event()

    def slow_first_write(conn: duckdb.DuckDBPyConnection, inserted: pl.DataFrame) -> None:
        entered.set()
        assert gate.wait(10)  # the store's thread is held inside the first transaction

    def seqs(batch: ReadingBatch) -> list[int]:
        return batch.readings["seq"].to_list()

    async with Service(config(tmp_path), source=source) as svc:
        svc.store.add_transaction_hook(slow_first_write)
        svc.add_pre_commit(lambda b: scored.append(seqs(b)))
        svc.add_batch_listener(lambda b, r: commits.append(seqs(b)))
        source.put(1)
        assert await asyncio.to_thread(entered.wait, 10)
        source.put(2)
        await until(lambda: len(scored) == 2, "the second batch to be scored")
        source.put(3)
        await until(lambda: len(scored) == 3, "the third batch to be scored")
        # Scored while the first write is still in its transaction: nothing committed or acked.
        assert scored == [[1], [2], [3]]
        assert commits == [] and source.acked == []
        gate.set()
        await until(lambda: svc.stats.stored == 3, "three readings stored")
        assert commits == [[1], [2, 3]]  # the two batches that waited: one transaction
        assert source.acked == [1, 2, 3]
        assert (svc.stats.batches, svc.stats.messages) == (3, 3)
        rows = svc.store.query("SELECT seq FROM readings ORDER BY seq")
    assert rows["seq"].to_list() == [1, 2, 3]


async def test_a_failed_write_stops_the_service_and_acknowledges_nothing(
    tmp_path: Path,
) -> None:
    source = QueueSource()
    scored: list[int] = []

    def broken(conn: duckdb.DuckDBPyConnection, inserted: pl.DataFrame) -> None:
        raise RuntimeError("disk on fire")

    svc = Service(config(tmp_path), source=source)
    with pytest.raises(RuntimeError, match="disk on fire"):  # stopping re-raises it too
        async with svc:
            svc.store.add_transaction_hook(broken)
            svc.add_pre_commit(lambda b: scored.append(b.readings.height))
            source.put(1)
            with pytest.raises(RuntimeError, match="disk on fire"):
                await asyncio.wait_for(svc.wait(), 10)
            source.put(2)  # after the failure nothing more is scored or acknowledged
            await asyncio.sleep(0.1)
    assert scored == [1] and source.acked == []
    assert isinstance(svc.failed, RuntimeError)


def test_concat_renumbers_origin_so_readings_keep_their_message() -> None:
    from gateway.formats.router import DEFAULT_ROUTES, Router, load_default_profiles
    from pipeline.batcher import build_batch
    from pipeline.catalogue import catalogue

    router = Router(DEFAULT_ROUTES, load_default_profiles(catalogue().names))

    def batch_of(*seqs: int) -> ReadingBatch:
        src = QueueSource()
        for s in seqs:
            src.put(s, value=60.0 + s)
        msgs = [src.queue.get_nowait() for _ in seqs]
        readings, origins = [], []
        for i, m in enumerate(msgs):
            got = router.decode(m).readings
            readings += got
            origins += [i] * len(got)
        return build_batch(msgs, readings, origins, [])

    merged = ReadingBatch.concat([batch_of(1, 2), batch_of(3), batch_of(4, 5)])
    joined = merged.readings.join(merged.messages, on="origin")
    payload_seq = [orjson.loads(p)["seq"] for p in joined["payload"].to_list()]
    assert joined["seq"].to_list() == payload_seq == [1, 2, 3, 4, 5]
    assert merged.messages["origin"].to_list() == [0, 1, 2, 3, 4]
    assert merged.readings.schema == batch_of(1).readings.schema
    assert ReadingBatch.concat([b := batch_of(9)]) is b


def test_freeze_startup_objects_moves_live_objects_out_of_collections() -> None:
    import gc

    from vitalwire.service import freeze_startup_objects

    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000  # modules, functions, the catalogue...
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0

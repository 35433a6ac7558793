"""The micro-batcher: frames from records, flush on size and on age."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import polars as pl
import pytest

from gateway.formats.base import DecodeResult
from gateway.records import RawMessage, RawReading, Rejection
from pipeline.batcher import GATHER_S, BatchConfig, Batcher, build_batch
from pipeline.readings import READING_SCHEMA, ReadingBatch

T0 = 1_790_000_000_000_000


def msg(i: int, payload: bytes = b"{}") -> RawMessage:
    return RawMessage(f"t/{i}", payload, T0 + i, "mqtt", ("tok", i))


def test_build_batch_columns_and_types() -> None:
    messages = [msg(0, b"a"), msg(1, b"b")]
    readings = [
        RawReading("D1", "heart_rate", 72.0, "/min", T0 - 5, 7, 0),
        RawReading("D1", "spo2", 0.97, "1", T0 - 5, None, 2),
        RawReading("D2", "glucose", 5.5, "mmol/L", T0 - 9, 2**63 + 1, 0),
    ]
    batch = build_batch(
        messages, readings, [0, 0, 1], [(1, Rejection("bad_value", "$.x", "x: no"))]
    )
    r = batch.readings
    assert r.schema == READING_SCHEMA
    assert r["device_id"].to_list() == ["D1", "D1", "D2"]
    assert r["metric"].cast(pl.Utf8).to_list() == ["heart_rate", "spo2", "glucose"]
    assert r["seq"].to_list() == [7, None, 2**63 + 1]
    assert r["quality"].to_list() == [0, 2, 0]
    assert r["origin"].to_list() == [0, 0, 1]
    assert r["received_at"].dt.epoch("us").to_list() == [T0, T0, T0 + 1]
    assert r["observed_at"].dt.epoch("us").to_list() == [T0 - 5, T0 - 5, T0 - 9]
    assert r["patient_id"].null_count() == 3
    q = batch.quarantine
    assert q.height == 1
    assert q.row(0, named=True)["payload"] == b"b"
    assert q.row(0, named=True)["reason"] == "x: no"
    assert q.row(0, named=True)["topic"] == "t/1"


def test_unknown_metric_goes_to_quarantine_with_payload() -> None:
    batch = build_batch(
        [msg(0, b"raw")],
        [
            RawReading("D1", "blood_ph", 7.4, "1", T0, 1, 0),
            RawReading("D1", "heart_rate", 60.0, "/min", T0, 1, 0),
        ],
        [0, 0],
        [],
    )
    assert batch.readings["metric"].cast(pl.Utf8).to_list() == ["heart_rate"]
    row = batch.quarantine.row(0, named=True)
    assert row["reason_code"] == "unknown_metric"
    assert row["field"] == "metric"
    assert row["reason"].startswith("metric: unknown metric 'blood_ph'")
    assert row["payload"] == b"raw"
    assert row["value"] == 7.4


def test_sources_and_unknown_metrics_keep_each_reading_with_its_own_message() -> None:
    messages = [msg(0, b"m0"), RawMessage("ble/AA/2a37", b"b1", T0 + 1, "ble"), msg(2, b"m2")]
    readings = [
        RawReading("D1", "heart_rate", 70.0, "/min", T0, 1, 0),
        RawReading("D9", "blood_ph", 7.4, "1", T0, 2, 0),
        RawReading("D2", "heart_rate", 71.0, "/min", T0, 3, 0),
        RawReading("D2", "nonsense", None, "x", T0, 4, 0),
        RawReading("D3", "spo2", 97.0, "%", T0, 5, 0),
        RawReading("D3", "blood_ph", 7.3, "1", T0, 6, 0),
    ]
    batch = build_batch(messages, readings, [0, 0, 1, 1, 2, 2],
                        [(2, Rejection("bad_value", "$.v", "v: no"))])
    r = batch.readings
    assert r["seq"].to_list() == [1, 3, 5]
    assert r["source"].cast(pl.Utf8).to_list() == ["mqtt", "ble", "mqtt"]
    assert r["origin"].to_list() == [0, 1, 2]
    assert r["received_at"].dt.epoch("us").to_list() == [T0, T0 + 1, T0 + 2]
    q = batch.quarantine
    assert q["reason_code"].to_list() == ["bad_value"] + ["unknown_metric"] * 3
    assert q["metric"].to_list() == [None, "blood_ph", "nonsense", "blood_ph"]
    assert q["payload"].to_list() == [b"m2", b"m0", b"b1", b"m2"]
    assert q["source"].to_list() == ["mqtt", "mqtt", "ble", "mqtt"]
    assert q["seq"].to_list() == [None, 2, 4, 6]
    assert q["value"].to_list() == [None, 7.4, None, 7.3]
    assert batch.messages["source"].cast(pl.Utf8).to_list() == ["mqtt", "ble", "mqtt"]


def test_empty_batch_has_fixed_schemas() -> None:
    batch = build_batch([], [], [], [])
    assert len(batch) == 0
    assert batch.readings.schema == ReadingBatch.empty().readings.schema


class ListSource:
    """Serves prepared message lists; then waits (like an idle receiver)."""

    def __init__(self, chunks: Sequence[Sequence[RawMessage]], clock: list[float]) -> None:
        self.chunks = list(chunks)
        self.clock = clock
        self.timeouts: list[float | None] = []
        self.pauses: list[float] = []
        self.on_empty: object = None

    async def sleep(self, seconds: float) -> None:
        """The batcher's pause: time passes on the test clock."""
        self.pauses.append(seconds)
        self.clock[0] += seconds
        await asyncio.sleep(0)

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        self.timeouts.append(timeout)
        if self.chunks:
            return list(self.chunks.pop(0))[:max_items]
        self.clock[0] += timeout or 0.0  # time passes while idle
        if callable(self.on_empty):
            self.on_empty()
        await asyncio.sleep(0)
        return []


def decode_one(m: RawMessage) -> DecodeResult:
    n = int(m.topic.split("/")[1])
    return DecodeResult([RawReading("D", "heart_rate", 60.0 + n, "/min", T0 + n, n, 0)], [])


async def test_flushes_on_size() -> None:
    clock = [0.0]
    src = ListSource([[msg(i) for i in range(3)], [msg(i) for i in range(3, 6)]], clock)
    b = Batcher(src, decode_one, BatchConfig(max_rows=3, max_age_ms=50), lambda: clock[0],
                sleep=src.sleep)
    out = []
    async for batch, tokens in b.batches():
        out.append((len(batch), tokens))
        if len(out) == 2:
            b.stop()
    assert out[0] == (3, [("tok", 0), ("tok", 1), ("tok", 2)])
    assert out[1][0] == 3


async def test_flushes_on_age() -> None:
    clock = [0.0]
    src = ListSource([[msg(0)]], clock)
    b = Batcher(src, decode_one, BatchConfig(max_rows=1000, max_age_ms=50), lambda: clock[0],
                sleep=src.sleep)
    async for batch, _ in b.batches():
        assert len(batch) == 1
        # after the first message it paused in short steps, then flushed at the age limit
        assert src.pauses and max(src.pauses) <= GATHER_S
        assert sum(src.pauses) == pytest.approx(0.05)
        assert src.timeouts[1:] == [0] * len(src.pauses)
        break


async def test_stop_flushes_pending() -> None:
    clock = [0.0]
    src = ListSource([[msg(0), msg(1)]], clock)
    b = Batcher(src, decode_one, BatchConfig(max_rows=1000, max_age_ms=60_000), lambda: clock[0],
                sleep=src.sleep)
    src.on_empty = b.stop  # stop while two messages wait for a 60 s age limit
    got = [len(batch) async for batch, _ in b.batches()]
    assert got == [2]


async def test_stop_when_idle_ends_without_a_batch() -> None:
    clock = [0.0]
    src = ListSource([], clock)
    b = Batcher(src, decode_one, BatchConfig(), lambda: clock[0], sleep=src.sleep)
    b.stop()
    assert [len(batch) async for batch, _ in b.batches()] == []


async def test_aged_batch_grows_while_the_consumer_is_busy() -> None:
    clock = [0.0]
    chunks = [[msg(i)] for i in range(6)]
    src = ListSource(chunks, clock)
    busy = [True]

    async def receive(max_items: int, timeout: float | None) -> list[RawMessage]:
        clock[0] += 0.03  # each step takes 30 ms: the age limit passes after the second
        if len(src.chunks) == 2:
            busy[0] = False  # the consumer frees up after four messages
        return await ListSource.receive(src, max_items, timeout)

    src.receive = receive  # type: ignore[method-assign]
    b = Batcher(src, decode_one, BatchConfig(max_rows=1000, max_age_ms=50), lambda: clock[0],
                sleep=src.sleep, ready=lambda: not busy[0])
    sizes = []
    async for batch, _ in b.batches():
        sizes.append(len(batch))
        if sum(sizes) == 6:
            b.stop()
    # the age limit passed after two messages; it kept collecting until the consumer freed up
    # (during the fifth step)
    assert sizes[0] == 5
    assert sum(sizes) == 6


async def test_busy_consumer_cannot_hold_a_full_batch() -> None:
    clock = [0.0]
    src = ListSource([[msg(i) for i in range(5)]], clock)
    b = Batcher(src, decode_one, BatchConfig(max_rows=5, max_age_ms=50), lambda: clock[0],
                sleep=src.sleep, ready=lambda: False)
    async for batch, _ in b.batches():
        assert len(batch) == 5  # max_rows flushes regardless
        break


async def test_a_large_take_is_split_at_max_rows_in_order() -> None:
    clock = [0.0]
    src = ListSource([[msg(i) for i in range(10)]], clock)
    b = Batcher(src, decode_one, BatchConfig(max_rows=4, max_age_ms=50, max_messages=100),
                lambda: clock[0], sleep=src.sleep)
    tokens = []
    async for batch, toks in b.batches():
        assert len(batch) <= 4
        tokens.append(toks)
        if sum(map(len, tokens)) == 10:
            b.stop()
    assert [len(t) for t in tokens] == [4, 4, 2]
    assert [t for ts in tokens for t in ts] == [("tok", i) for i in range(10)]


async def test_stop_flushes_messages_carried_over_from_a_full_batch() -> None:
    clock = [0.0]
    src = ListSource([[msg(i) for i in range(7)]], clock)
    b = Batcher(src, decode_one, BatchConfig(max_rows=3, max_age_ms=60_000, max_messages=100),
                lambda: clock[0], sleep=src.sleep)
    sizes = []
    async for batch, _ in b.batches():
        sizes.append(len(batch))
        b.stop()  # four messages are still carried over
    assert sizes == [3, 3, 1]

"""The micro-batcher: raw messages in, one :class:`ReadingBatch` out per flush.

Messages are decoded as they are taken from the source (a cheap per-message step), and the
decoded records are turned into frames only at flush time, column by column. A batch is flushed
when it holds ``max_rows`` readings or its oldest message has waited ``max_age_ms``, whichever
comes first; on stop, whatever is pending is flushed. When the consumer says it is busy (the
``ready`` predicate), an aged batch keeps growing until the consumer is free or ``max_rows`` is
reached: under load, fewer and larger batches carry the per-batch costs. Once a batch has
started, new messages are taken every :data:`GATHER_S` rather than as each arrives. A batch
holds at most ``max_rows`` readings plus those of its last message: messages taken beyond that
wait, in order, for the next batch (and are flushed on stop like the rest).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import polars as pl

from gateway.formats.base import DecodeResult
from gateway.records import RawMessage, RawReading, Rejection
from pipeline.catalogue import catalogue
from pipeline.errors import ConfigError
from pipeline.readings import (
    QUARANTINE_SCHEMA,
    READING_SCHEMA,
    SOURCE_DTYPE,
    UTC_US,
    ReadingBatch,
    empty_frame,
)

__all__ = ["BatchConfig", "Batcher", "MessageSource", "build_batch"]


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """When batches close.

    Attributes:
        max_rows: Flush once this many readings are pending (a batch holds at most this many
            plus the readings of its last message).
        max_age_ms: Flush once the oldest pending message has waited this long.
        max_messages: Most messages taken from the source in one step.
    """

    max_rows: int = 5000
    max_age_ms: float = 20.0
    max_messages: int = 5000

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ConfigError(f"batch.max_rows: {self.max_rows} must be >= 1")
        if not 0 < self.max_age_ms <= 60_000:
            raise ConfigError(f"batch.max_age_ms: {self.max_age_ms} must be in (0, 60000]")
        if self.max_messages < 1:
            raise ConfigError(f"batch.max_messages: {self.max_messages} must be >= 1")


class MessageSource(Protocol):
    """What the batcher needs of a receiver."""

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]: ...


Decode = Callable[[RawMessage], DecodeResult]

_BUSY_POLL_S = 0.002

GATHER_S = 0.005
"""Once a batch has started, the batcher takes new messages every this many seconds (at most:
the age limit comes first), so a trickle of messages does not wake it once per message. A
``max_rows`` flush is noticed within this time."""


_EMPTY_QUARANTINE = empty_frame(QUARANTINE_SCHEMA)
"""Shared by batches with nothing rejected while decoding (frames are never changed in
place)."""


def _quarantine_rows(
    messages: Sequence[RawMessage], rejects: Sequence[tuple[int, Rejection]]
) -> pl.DataFrame:
    n = len(rejects)
    msgs = [messages[i] for i, _ in rejects]
    return pl.DataFrame(
        {
            "received_at": pl.Series([m.received_at_us for m in msgs], dtype=pl.Int64).cast(UTC_US),
            "source": [m.source for m in msgs],
            "topic": [m.topic for m in msgs],
            "device_id": [r.device_id for _, r in rejects],
            "metric": pl.Series([None] * n, dtype=pl.Utf8),
            "value": pl.Series([None] * n, dtype=pl.Float64),
            "unit": pl.Series([None] * n, dtype=pl.Utf8),
            "observed_at": pl.Series([None] * n, dtype=UTC_US),
            "seq": pl.Series([None] * n, dtype=pl.UInt64),
            "payload": pl.Series([m.payload for m in msgs], dtype=pl.Binary),
            "reason_code": [r.reason_code for _, r in rejects],
            "field": [r.field for _, r in rejects],
            "reason": [r.reason for _, r in rejects],
        },
        schema=QUARANTINE_SCHEMA,
    )


def build_batch(
    messages: Sequence[RawMessage],
    readings: Sequence[RawReading],
    origins: Sequence[int],
    rejects: Sequence[tuple[int, Rejection]],
) -> ReadingBatch:
    """Turn decoded records into a :class:`ReadingBatch` (columns at once, no row loop).

    Readings whose metric is not in the catalogue go straight to quarantine. Each column is
    built once with its final type: on a batch of a few hundred readings, the fixed cost of
    every further frame operation is larger than the work itself.
    """
    if messages:
        topic, payload, received_us, source, _ = zip(*messages, strict=True)
    else:
        topic = payload = received_us = source = ()
    received = np.asarray(received_us, dtype=np.int64)
    sources = pl.Series("source", source, dtype=pl.Utf8).cast(SOURCE_DTYPE)
    message_frame = pl.DataFrame([
        pl.Series("origin", np.arange(len(messages), dtype=np.uint32)),
        pl.Series("topic", topic, dtype=pl.Utf8),
        pl.Series("payload", payload, dtype=pl.Binary),
        pl.Series("received_at", received).cast(UTC_US),
        sources,
    ])  # fmt: skip
    quarantine = _quarantine_rows(messages, rejects) if rejects else _EMPTY_QUARANTINE
    if readings:
        device_id, metric, value, unit, observed, seq, quality = zip(*readings, strict=True)
    else:
        device_id = metric = value = unit = observed = seq = quality = ()
    origin = pl.Series("origin", np.asarray(origins, dtype=np.uint32))
    metric_names = pl.Series("metric", metric, dtype=pl.Utf8)
    metric_codes = metric_names.cast(READING_SCHEMA["metric"], strict=False)
    raw = pl.DataFrame([
        pl.Series("patient_id", [None] * len(origin), dtype=pl.Utf8),
        pl.Series("device_id", device_id, dtype=pl.Utf8),
        sources.gather(origin),
        metric_codes,
        pl.Series("value", value, dtype=pl.Float64),
        pl.Series("unit", unit, dtype=pl.Utf8),
        pl.Series("observed_at", observed, dtype=pl.Int64).cast(UTC_US),
        pl.Series("received_at", received[origin.to_numpy()], dtype=pl.Int64).cast(UTC_US),
        pl.Series("seq", seq, dtype=pl.UInt64),
        pl.Series("quality", quality, dtype=pl.UInt8),
        origin,
    ])  # fmt: skip
    if metric_codes.null_count():
        unknown = metric_codes.is_null()
        rows = raw.filter(unknown).with_columns(metric_names.filter(unknown))
        quarantine = pl.concat([quarantine, _unknown_metric_rows(rows, message_frame)])
        raw = raw.filter(~unknown)
    return ReadingBatch(raw, message_frame, quarantine)


def _unknown_metric_rows(rows: pl.DataFrame, message_frame: pl.DataFrame) -> pl.DataFrame:
    """Quarantine rows for readings of metrics the catalogue does not know (``rows`` carries
    the metric names as sent)."""
    return rows.join(
        message_frame.select("origin", "topic", "payload"), on="origin", how="left",
        maintain_order="left",
    ).select(
        "received_at",
        pl.col("source").cast(pl.Utf8),
        "topic",
        "device_id",
        "metric",
        "value",
        "unit",
        "observed_at",
        "seq",
        "payload",
        pl.lit("unknown_metric").alias("reason_code"),
        pl.lit("metric").alias("field"),
        pl.format(
            "metric: unknown metric '{}' (known: {})",
            pl.col("metric"),
            pl.lit(", ".join(catalogue().names)),
        ).alias("reason"),
    ).cast(QUARANTINE_SCHEMA)  # fmt: skip


class Batcher:
    """Pull messages from a source, decode them, and yield batches with their ack tokens."""

    def __init__(
        self,
        source: MessageSource,
        decode: Decode,
        config: BatchConfig = BatchConfig(),
        clock: Callable[[], float] = time.monotonic,
        ready: Callable[[], bool] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.source = source
        self.decode = decode
        self.config = config
        self.clock = clock
        self.ready = ready
        self.sleep = sleep
        self._stop = asyncio.Event()
        self.messages_in = 0
        self.batches_out = 0
        self._carried: deque[RawMessage] = deque()

    def stop(self) -> None:
        """Flush what is pending and end the iteration."""
        self._stop.set()

    async def batches(self) -> AsyncIterator[tuple[ReadingBatch, list[object]]]:
        """Yield ``(batch, ack_tokens)``; tokens are for the source once the batch is committed."""
        cfg = self.config
        max_age = cfg.max_age_ms / 1000.0
        idle_poll = 0.25
        while True:
            messages: list[RawMessage] = []
            readings: list[RawReading] = []
            origins: list[int] = []
            rejects: list[tuple[int, Rejection]] = []
            started: float | None = None
            while True:
                stopping = self._stop.is_set()
                if stopping and not self._carried:
                    break
                if started is None or stopping:
                    got = self._take_carried(cfg.max_messages)
                    if not got:
                        got = await self.source.receive(cfg.max_messages, idle_poll)
                    if got and started is None:
                        started = self.clock()
                else:
                    left = max_age - (self.clock() - started)
                    if left <= 0:
                        if self.ready is None or self.ready():
                            break
                        pause = _BUSY_POLL_S  # consumer busy: keep collecting
                    else:
                        pause = min(left, GATHER_S)
                    # Let the batch gather, then take what came: one wake-up per pause, not
                    # one per message.
                    await self.sleep(pause)
                    got = await self.source.receive(cfg.max_messages, 0)
                decode = self.decode
                for i, msg in enumerate(got):
                    if len(readings) >= cfg.max_rows:
                        self._carried.extendleft(reversed(got[i:]))  # the next batch's
                        break
                    index = len(messages)
                    messages.append(msg)
                    result = decode(msg)
                    if result.readings:
                        readings.extend(result.readings)
                        origins.extend([index] * len(result.readings))
                    for rej in result.rejections:
                        rejects.append((index, rej))
                if len(readings) >= cfg.max_rows:
                    break
            if messages:
                self.messages_in += len(messages)
                self.batches_out += 1
                batch = build_batch(messages, readings, origins, rejects)
                yield batch, [m.ack for m in messages]
            if self._stop.is_set() and not self._carried:
                return

    def _take_carried(self, limit: int) -> list[RawMessage]:
        """Messages taken from the source but left out of a full batch, oldest first."""
        carried = self._carried
        return [carried.popleft() for _ in range(min(limit, len(carried)))]

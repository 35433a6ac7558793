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
    MESSAGE_SCHEMA,
    QUARANTINE_SCHEMA,
    READING_SCHEMA,
    SOURCE_DTYPE,
    UTC_US,
    ReadingBatch,
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
    max_age_ms: float = 30.0
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

    Readings whose metric is not in the catalogue go straight to quarantine.
    """
    received = np.fromiter(
        (m.received_at_us for m in messages), dtype=np.int64, count=len(messages)
    )
    message_frame = pl.DataFrame(
        {
            "origin": pl.Series(np.arange(len(messages), dtype=np.uint32)),
            "topic": [m.topic for m in messages],
            "payload": pl.Series([m.payload for m in messages], dtype=pl.Binary),
            "received_at": pl.Series(received).cast(UTC_US),
            "source": pl.Series([m.source for m in messages], dtype=pl.Utf8).cast(SOURCE_DTYPE),
        },
        schema=MESSAGE_SCHEMA,
    )
    quarantine = _quarantine_rows(messages, rejects)
    if readings:
        device_id, metric, value, unit, observed, seq, quality = zip(*readings, strict=True)
    else:
        device_id = metric = value = unit = observed = seq = quality = ()
    origin = np.asarray(origins, dtype=np.uint32)
    raw = pl.DataFrame(
        {
            "patient_id": pl.Series([None] * len(origin), dtype=pl.Utf8),
            "device_id": pl.Series(device_id, dtype=pl.Utf8),
            "source": pl.Series(
                message_frame["source"].to_numpy()[origin] if len(origin) else [], dtype=pl.Utf8
            ),
            "metric": pl.Series(metric, dtype=pl.Utf8),
            "value": pl.Series(value, dtype=pl.Float64),
            "unit": pl.Series(unit, dtype=pl.Utf8),
            "observed_at": pl.Series(observed, dtype=pl.Int64).cast(UTC_US),
            "received_at": pl.Series(received[origin] if len(origin) else [], dtype=pl.Int64).cast(
                UTC_US
            ),
            "seq": pl.Series(seq, dtype=pl.UInt64),
            "quality": pl.Series(quality, dtype=pl.UInt8),
            "origin": pl.Series(origin, dtype=pl.UInt32),
        }
    )
    known = raw["metric"].is_in(list(catalogue().names))
    if not known.all():
        unknown = raw.filter(~known)
        rows = unknown.join(
            message_frame.select("origin", "topic", "payload"), on="origin", how="left"
        ).select(
            "received_at",
            "source",
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
        )
        quarantine = pl.concat([quarantine, rows.cast(QUARANTINE_SCHEMA)], how="vertical")
        raw = raw.filter(known)
    frame = raw.with_columns(
        pl.col("source").cast(SOURCE_DTYPE), pl.col("metric").cast(READING_SCHEMA["metric"])
    )
    return ReadingBatch(frame, message_frame, quarantine)


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

"""The one batch type that flows between pipeline stages.

A :class:`ReadingBatch` holds three polars frames with fixed schemas:

``readings`` (:data:`READING_SCHEMA`), one row per reading:

=============  ======================  =================================================
column         type                    meaning
=============  ======================  =================================================
patient_id     Utf8 (null until        patient the device was assigned to at observed_at
               resolved)
device_id      Utf8                    device identifier
source         Enum(mqtt, ble, sim)    how the reading arrived
metric         Enum(catalogue names)   metric identifier from ``pipeline/metrics.toml``
value          Float64                 as received before ``normalize``; canonical after
unit           Utf8                    UCUM; the canonical unit after ``normalize``
observed_at    Datetime(us, UTC)       device time
received_at    Datetime(us, UTC)       gateway receive time
seq            UInt64 (nullable)       device sequence number, for de-duplication
quality        UInt8                   :class:`Quality` flag bits
origin         UInt32                  row of ``messages`` the reading came from
=============  ======================  =================================================

``messages`` (:data:`MESSAGE_SCHEMA`): the raw messages of the batch, so that any reading
rejected later can be quarantined with the payload it came in.

``quarantine`` (:data:`QUARANTINE_SCHEMA`): rows rejected so far, each with raw payload,
topic, a stable ``reason_code``, the ``field`` at fault and a readable ``reason``.

Frames are never mutated: stages return new batches, so fan-out needs no copies.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.catalogue import catalogue
from pipeline.errors import SchemaMismatch

__all__ = [
    "MESSAGE_SCHEMA",
    "QUARANTINE_SCHEMA",
    "READING_SCHEMA",
    "SOURCE_DTYPE",
    "UTC_US",
    "Quality",
    "ReadingBatch",
    "check_schema",
    "empty_frame",
]

UTC_US = pl.Datetime("us", "UTC")


def _schema(columns: dict[str, Any]) -> dict[str, pl.DataType]:
    """Typed view of a column mapping (keeps mypy's polars stubs satisfied)."""
    return columns
SOURCE_DTYPE = pl.Enum(["mqtt", "ble", "sim"])


class Quality(enum.IntFlag):
    """Bits of the ``quality`` column."""

    CLOCK_UNSET = 1  # device time unknown; gateway receive time used
    QUESTIONABLE = 2  # device marked the measurement questionable
    CALIBRATING = 4  # device calibrating or early estimate
    VALUE_ABSENT = 8  # device sent a special value (NaN, NRes, INF); value is null
    CONVERTED = 16  # value converted from another unit on the way in
    REPLAYED = 32  # stored by ``quarantine replay`` after a late assignment
    CLOCK_SKEW = 64  # device clock differs from the gateway's by more than the allowed skew


READING_SCHEMA: pl.Schema = pl.Schema(
    _schema({
        "patient_id": pl.Utf8,
        "device_id": pl.Utf8,
        "source": SOURCE_DTYPE,
        "metric": catalogue().metric_dtype,
        "value": pl.Float64,
        "unit": pl.Utf8,
        "observed_at": UTC_US,
        "received_at": UTC_US,
        "seq": pl.UInt64,
        "quality": pl.UInt8,
        "origin": pl.UInt32,
    })
)

MESSAGE_SCHEMA: pl.Schema = pl.Schema(
    _schema({
        "origin": pl.UInt32,
        "topic": pl.Utf8,
        "payload": pl.Binary,
        "received_at": UTC_US,
        "source": SOURCE_DTYPE,
    })
)

QUARANTINE_SCHEMA: pl.Schema = pl.Schema(
    _schema({
        "received_at": UTC_US,
        "source": pl.Utf8,
        "topic": pl.Utf8,
        "device_id": pl.Utf8,
        "metric": pl.Utf8,
        "value": pl.Float64,
        "unit": pl.Utf8,
        "observed_at": UTC_US,
        "seq": pl.UInt64,
        "payload": pl.Binary,
        "reason_code": pl.Utf8,
        "field": pl.Utf8,
        "reason": pl.Utf8,
    })
)


def empty_frame(schema: pl.Schema) -> pl.DataFrame:
    """A frame with no rows and exactly ``schema``."""
    return pl.DataFrame(schema=schema)


def check_schema(frame: pl.DataFrame, schema: pl.Schema, what: str) -> None:
    """Raise :class:`SchemaMismatch` naming every column that differs."""
    if frame.schema == schema:
        return
    problems = []
    for name, dtype in schema.items():
        got = frame.schema.get(name)
        if got is None:
            problems.append(f"missing {name} ({dtype})")
        elif got != dtype:
            problems.append(f"{name} is {got}, expected {dtype}")
    extra = [c for c in frame.columns if c not in schema]
    problems.extend(f"unexpected {c}" for c in extra)
    if not problems:
        problems.append(f"column order {frame.columns} != {list(schema)}")
    raise SchemaMismatch(f"{what}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Readings, their raw messages and the rows quarantined so far."""

    readings: pl.DataFrame
    messages: pl.DataFrame
    quarantine: pl.DataFrame

    def __post_init__(self) -> None:
        check_schema(self.readings, READING_SCHEMA, "readings")
        check_schema(self.messages, MESSAGE_SCHEMA, "messages")
        check_schema(self.quarantine, QUARANTINE_SCHEMA, "quarantine")

    @classmethod
    def empty(cls) -> ReadingBatch:
        """A batch with no rows."""
        return cls(
            empty_frame(READING_SCHEMA), empty_frame(MESSAGE_SCHEMA), empty_frame(QUARANTINE_SCHEMA)
        )

    def __len__(self) -> int:
        return self.readings.height

    @classmethod
    def concat(cls, batches: Sequence[ReadingBatch]) -> ReadingBatch:
        """One batch holding ``batches`` in order; ``origin`` is renumbered so that every
        reading still points at its own message."""
        if len(batches) == 1:
            return batches[0]
        readings, messages, offset = [], [], 0
        for b in batches:
            if offset:
                readings.append(b.readings.with_columns(pl.col("origin") + offset))
                messages.append(b.messages.with_columns(pl.col("origin") + offset))
            else:
                readings.append(b.readings)
                messages.append(b.messages)
            offset += b.messages.height
        return cls(
            pl.concat(readings, how="vertical"),
            pl.concat(messages, how="vertical"),
            pl.concat([b.quarantine for b in batches], how="vertical"),
        )

    def replace(
        self, *, readings: pl.DataFrame | None = None, quarantine: pl.DataFrame | None = None
    ) -> ReadingBatch:
        """A new batch sharing the unchanged frames (only the new frames are checked)."""
        if readings is not None:
            check_schema(readings, READING_SCHEMA, "readings")
        if quarantine is not None:
            check_schema(quarantine, QUARANTINE_SCHEMA, "quarantine")
        out = object.__new__(ReadingBatch)
        object.__setattr__(out, "readings", readings if readings is not None else self.readings)
        object.__setattr__(out, "messages", self.messages)
        object.__setattr__(
            out, "quarantine", quarantine if quarantine is not None else self.quarantine
        )
        return out

    def reject(
        self, mask: pl.Series, reason_code: str, field: str, reason: pl.Expr | pl.Series
    ) -> ReadingBatch:
        """Move the readings where ``mask`` is true to quarantine.

        Args:
            mask: Boolean series over ``readings``.
            reason_code: Stable code stored with each row.
            field: The payload field at fault.
            reason: Each row's message: an expression over the readings columns, or a string
                series aligned with ``readings``.
        """
        if not mask.any():
            return self
        bad = self.readings.filter(mask)
        if isinstance(reason, pl.Series):
            reason_rows = reason.filter(mask)
            bad = bad.with_columns(_reason=reason_rows)
        else:
            bad = bad.with_columns(_reason=reason)
        rows = bad.join(
            self.messages.select("origin", "topic", "payload"), on="origin", how="left"
        ).select(
            pl.col("received_at"),
            pl.col("source").cast(pl.Utf8),
            pl.col("topic"),
            pl.col("device_id"),
            pl.col("metric").cast(pl.Utf8),
            pl.col("value"),
            pl.col("unit"),
            pl.col("observed_at"),
            pl.col("seq"),
            pl.col("payload"),
            pl.lit(reason_code, pl.Utf8).alias("reason_code"),
            pl.lit(field, pl.Utf8).alias("field"),
            pl.col("_reason").cast(pl.Utf8).alias("reason"),
        )
        return ReadingBatch(
            self.readings.filter(~mask),
            self.messages,
            pl.concat([self.quarantine, rows], how="vertical"),
        )

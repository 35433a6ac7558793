"""Literal readings frames and batches for the FHIR tests."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from pipeline.readings import MESSAGE_SCHEMA, QUARANTINE_SCHEMA, READING_SCHEMA, ReadingBatch

T0 = datetime(2026, 3, 1, 8, 30, 15, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 8, 31, 0, tzinfo=UTC)

Row = tuple[str, str, float | None, str]  # metric, device, value, unit


def frame(
    *rows: tuple[object, ...],
    patient: str = "P1",
    when: datetime = T0,
    source: str = "mqtt",
    quality: int = 0,
) -> pl.DataFrame:
    """Readings (READING_SCHEMA) from (metric, device, value, unit[, seq]) tuples."""
    out = []
    for i, r in enumerate(rows):
        metric, device, value, unit = r[:4]
        seq = r[4] if len(r) > 4 else i + 1
        out.append((patient, device, source, metric, value, unit, when, when, seq, quality, 0))
    return pl.DataFrame(out, schema=READING_SCHEMA, orient="row")


def batch(readings: pl.DataFrame) -> ReadingBatch:
    """A batch of these readings, no messages, no quarantine."""
    return ReadingBatch(
        readings, pl.DataFrame(schema=MESSAGE_SCHEMA), pl.DataFrame(schema=QUARANTINE_SCHEMA)
    )

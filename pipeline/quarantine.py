"""Queries over the ``quarantine`` table, and replay of readings whose device was assigned late.

The table is an append-only log of rejected rows with their raw payload; ``replayed_at`` marks
rows fed back through the pipeline. Replay, as driven by ``vitalwire quarantine replay``::

    batch, ids = replay_batch(store)          # pending rows a current assignment now covers
    batch = normalize(batch, ...)             # resolves patients (and re-checks everything)
    store.write_sync(batch, replayed_ids=ids) # stores readings and marks ids, one transaction

A replayed reading that is rejected again comes back as a new quarantine row with its new
reason, so each row is replayed at most once and nothing is lost. Functions take a
:data:`~pipeline.registry.StoreTarget` (a store or a connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import polars as pl

from pipeline.catalogue import catalogue
from pipeline.readings import (
    QUARANTINE_SCHEMA,
    READING_SCHEMA,
    SOURCE_DTYPE,
    Quality,
    ReadingBatch,
    empty_frame,
)
from pipeline.registry import StoreTarget, run_on, sql_frame

__all__ = [
    "REPLAYABLE_REASON",
    "batch_from_quarantine",
    "list_quarantine",
    "mark_replayed",
    "pending_replay",
    "quarantine_summary",
    "replay_batch",
]

REPLAYABLE_REASON = "unassigned_device"
"""The ``reason_code`` of readings that a later assignment can make storable."""

DEFAULT_REPLAY_LIMIT = 10_000
"""Rows per replay batch."""

_COLUMNS = ", ".join(["id", *QUARANTINE_SCHEMA.names(), "replayed_at"])


def _list(conn: duckdb.DuckDBPyConnection, reason_code: str | None, limit: int) -> pl.DataFrame:
    return sql_frame(
        conn,
        f"SELECT {_COLUMNS} FROM quarantine"
        " WHERE $reason::VARCHAR IS NULL OR reason_code = $reason"
        " ORDER BY id DESC LIMIT $limit",
        {"reason": reason_code, "limit": limit},
    )


def list_quarantine(
    target: StoreTarget, reason_code: str | None = None, limit: int = 100
) -> pl.DataFrame:
    """The newest ``limit`` quarantine rows (all columns), optionally of one ``reason_code``."""
    if limit < 0:
        raise ValueError(f"limit: expected a count >= 0, got {limit}")
    return run_on(target, _list, reason_code, limit)


def quarantine_summary(target: StoreTarget) -> pl.DataFrame:
    """Per ``reason_code``: ``rows``, ``pending`` (not replayed) and the receive-time span."""
    return run_on(
        target,
        lambda conn: sql_frame(
            conn,
            "SELECT reason_code, count(*) AS rows,"
            " count(*) FILTER (WHERE replayed_at IS NULL) AS pending,"
            " min(received_at) AS first_received, max(received_at) AS last_received"
            " FROM quarantine GROUP BY reason_code ORDER BY rows DESC, reason_code",
        ),
    )


_COVERED = (
    " AND EXISTS (SELECT 1 FROM assignments a WHERE a.device_id = q.device_id"
    " AND a.valid_from <= q.observed_at AND (a.valid_to IS NULL OR q.observed_at < a.valid_to))"
)


def _pending(
    conn: duckdb.DuckDBPyConnection, resolvable_only: bool, after_id: int, limit: int
) -> pl.DataFrame:
    # Only rows that can become a reading again: known metric and source, device and time set.
    sql = (
        f"SELECT {_COLUMNS} FROM quarantine q"
        " WHERE q.reason_code = $reason AND q.replayed_at IS NULL AND q.id > $after"
        " AND q.device_id IS NOT NULL AND q.observed_at IS NOT NULL"
        " AND list_contains($metrics::VARCHAR[], q.metric)"
        " AND list_contains($sources::VARCHAR[], q.source)"
        + (_COVERED if resolvable_only else "")
        + " ORDER BY q.id LIMIT $limit"
    )
    params = {
        "reason": REPLAYABLE_REASON,
        "after": after_id,
        "metrics": list(catalogue().names),
        "sources": SOURCE_DTYPE.categories.to_list(),
        "limit": limit,
    }
    return sql_frame(conn, sql, params)


def pending_replay(
    target: StoreTarget,
    *,
    resolvable_only: bool = True,
    after_id: int = 0,
    limit: int = DEFAULT_REPLAY_LIMIT,
) -> pl.DataFrame:
    """Quarantine rows waiting for replay, by ``id``.

    Args:
        target: Store or connection.
        resolvable_only: Only rows whose device has an assignment covering their
            ``observed_at`` now; rows still unassigned stay pending untouched.
        after_id: Only rows with a larger ``id`` (to page through).
        limit: At most this many rows.

    Returns:
        Rows with reason ``unassigned_device``, not replayed, with a catalogue metric, a
        known source, a device id and a device time; columns as :func:`list_quarantine`.
    """
    if limit < 0:
        raise ValueError(f"limit: expected a count >= 0, got {limit}")
    return run_on(target, _pending, resolvable_only, after_id, limit)


def batch_from_quarantine(rows: pl.DataFrame) -> tuple[ReadingBatch, list[int]]:
    """Turn rows from :func:`pending_replay` back into a batch for the pipeline.

    Each row becomes one message (``origin`` = its position, with the original topic, payload,
    receive time and source) and one reading with ``patient_id`` null and the
    :attr:`~pipeline.readings.Quality.REPLAYED` flag.

    Returns:
        The batch (empty quarantine) and the quarantine ``id`` of each reading, in order.
    """
    origin = pl.int_range(pl.len(), dtype=pl.UInt32).alias("origin")
    received = pl.col("received_at").dt.convert_time_zone("UTC").cast(READING_SCHEMA["received_at"])
    source = pl.col("source").cast(SOURCE_DTYPE)
    messages = rows.select(
        origin,
        pl.col("topic").cast(pl.Utf8),
        pl.col("payload").cast(pl.Binary),
        received,
        source,
    )
    readings = rows.select(
        pl.lit(None, pl.Utf8).alias("patient_id"),
        pl.col("device_id").cast(pl.Utf8),
        source,
        pl.col("metric").cast(pl.Utf8).cast(READING_SCHEMA["metric"]),
        pl.col("value").cast(pl.Float64),
        pl.col("unit").cast(pl.Utf8),
        pl.col("observed_at").dt.convert_time_zone("UTC").cast(READING_SCHEMA["observed_at"]),
        received,
        pl.col("seq").cast(pl.UInt64),
        pl.lit(int(Quality.REPLAYED), pl.UInt8).alias("quality"),
        origin,
    )
    batch = ReadingBatch(readings, messages, empty_frame(QUARANTINE_SCHEMA))
    return batch, [int(i) for i in rows["id"].to_list()]


def replay_batch(
    target: StoreTarget, *, after_id: int = 0, limit: int = DEFAULT_REPLAY_LIMIT
) -> tuple[ReadingBatch, list[int]]:
    """The next batch of resolvable pending rows, and their ids (see :func:`pending_replay`)."""
    return batch_from_quarantine(pending_replay(target, after_id=after_id, limit=limit))


def _mark(conn: duckdb.DuckDBPyConnection, ids: Sequence[int], at: datetime | None) -> int:
    if not ids:
        return 0
    rows = conn.execute(
        "UPDATE quarantine SET replayed_at = coalesce($at::TIMESTAMPTZ, current_timestamp)"
        " WHERE id IN (SELECT unnest($ids::BIGINT[])) AND replayed_at IS NULL",
        {"at": at, "ids": [int(i) for i in ids]},
    ).fetchall()
    return int(rows[0][0])


def mark_replayed(target: StoreTarget, ids: Sequence[int], at: datetime | None = None) -> int:
    """Set ``replayed_at`` (default: the transaction's time) on rows not yet marked.

    :meth:`~pipeline.store.DuckDbStore.write` calls this with its connection inside the
    transaction that stores the replayed readings, so both happen or neither.

    Returns:
        How many rows were marked (ids already replayed or unknown are skipped).
    """
    return run_on(target, _mark, ids, at)

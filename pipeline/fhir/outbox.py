"""The durable outbox: enqueue inside the readings' transaction, then fetch, confirm, dead-letter.

Every function takes the store's DuckDB connection (run them with ``store.call`` or
``store.call_sync``). :class:`OutboxWriter` is the store's transaction hook: it copies the
readings a write inserted, filtered by the per-metric export policy, into ``fhir_outbox``
within that write's transaction, so a reading is stored if and only if it is queued.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from pipeline.fhir.config import FhirConfig
from pipeline.fhir.schema import OUTBOX_COLUMNS
from pipeline.registry import sql_frame, transaction

__all__ = [
    "DeadLetter",
    "Delivered",
    "OutboxWriter",
    "dead_letter",
    "fetch_pending",
    "list_dead_letter",
    "mark_delivered",
    "outbox_size",
    "record_failure",
    "retry_dead_letter",
    "set_state",
    "status",
]

Conn = duckdb.DuckDBPyConnection
_VIEW = "_vitalwire_fhir_enqueue"
_MARKS_VIEW = "_vitalwire_fhir_marks"
_COLS = ", ".join(OUTBOX_COLUMNS)
_BP = "('systolic_bp', 'diastolic_bp', 'mean_bp')"


class OutboxWriter:
    """The transaction hook that queues inserted readings for export.

    Args:
        config: Supplies the per-metric policy (``all``, ``sample`` every ``interval_s``,
            ``none``).
    """

    def __init__(self, config: FhirConfig) -> None:
        policies = config.policies()
        self._all = [m for m, p in policies.items() if p.mode == "all"]
        self._sample = {
            m: int(p.interval_s * 1_000_000) for m, p in policies.items() if p.mode == "sample"
        }

    def __call__(self, conn: Conn, inserted: pl.DataFrame) -> None:
        """Queue ``inserted`` per policy; runs inside the write's transaction."""
        metric = pl.col("metric").cast(pl.Utf8)
        rows = inserted.filter(metric.is_in(self._all))
        if self._sample:
            rows = pl.concat([rows, self._sampled(conn, inserted)], how="vertical_relaxed")
        if rows.height == 0:
            return
        conn.register(_VIEW, rows.select(OUTBOX_COLUMNS).sort("observed_at").to_arrow())
        try:
            conn.execute(
                f"INSERT INTO fhir_outbox ({_COLS}) SELECT {_COLS} FROM {_VIEW}"
            ).fetchall()
        finally:
            with contextlib.suppress(duckdb.Error):
                conn.unregister(_VIEW)

    def _sampled(self, conn: Conn, inserted: pl.DataFrame) -> pl.DataFrame:
        """The first reading per (device, metric, bucket) not taken by an earlier batch."""
        interval = (
            pl.col("metric")
            .cast(pl.Utf8)
            .replace_strict(self._sample, default=None, return_dtype=pl.Int64)
        )
        first = (
            inserted.filter(pl.col("metric").cast(pl.Utf8).is_in(list(self._sample)))
            .with_columns(bucket=pl.col("observed_at").dt.epoch("us") // interval)
            .sort("observed_at")
            .unique(["device_id", "metric", "bucket"], keep="first", maintain_order=True)
        )
        if first.height == 0:
            return inserted.clear()
        marks = first.select("device_id", pl.col("metric").cast(pl.Utf8), "bucket")
        conn.register(_MARKS_VIEW, marks.to_arrow())
        try:
            taken = sql_frame(
                conn,
                f"INSERT INTO fhir_sample_marks SELECT v.device_id, v.metric, v.bucket"
                f" FROM {_MARKS_VIEW} v WHERE NOT EXISTS (SELECT 1 FROM fhir_sample_marks m"
                " WHERE m.device_id = v.device_id AND m.metric = v.metric AND m.bucket = v.bucket)"
                " RETURNING device_id, metric, bucket",
            )
        finally:
            with contextlib.suppress(duckdb.Error):
                conn.unregister(_MARKS_VIEW)
        if taken.height == 0:
            return inserted.clear()
        keys = taken.select(
            pl.col("device_id").cast(pl.Utf8),
            pl.col("metric").cast(pl.Utf8),
            pl.col("bucket").cast(pl.Int64),
        )
        kept = first.with_columns(pl.col("metric").cast(pl.Utf8)).join(
            keys, on=["device_id", "metric", "bucket"], how="semi"
        )
        return kept.select(inserted.columns).with_columns(
            pl.col("metric").cast(inserted.schema["metric"])
        )


def fetch_pending(conn: Conn, limit: int) -> pl.DataFrame:
    """The oldest ``limit`` queued readings, plus any BP partner of theirs queued later.

    Returns:
        ``outbox_id``, the reading columns, ``enqueued_at`` and ``attempts``, by id.
    """
    return sql_frame(
        conn,
        f"""WITH head AS (SELECT * FROM fhir_outbox ORDER BY id LIMIT $limit)
        SELECT id AS outbox_id, {_COLS}, enqueued_at, attempts FROM head
        UNION ALL
        SELECT o.id, {", ".join("o." + c for c in OUTBOX_COLUMNS)}, o.enqueued_at, o.attempts
        FROM fhir_outbox o
        WHERE o.id > (SELECT max(id) FROM head) AND o.metric IN {_BP}
          AND EXISTS (SELECT 1 FROM head h WHERE h.metric IN {_BP}
                      AND h.device_id = o.device_id AND h.observed_at = o.observed_at)
        ORDER BY outbox_id""",
        {"limit": limit},
    )


@dataclass(frozen=True, slots=True)
class Delivered:
    """One confirmed Observation."""

    outbox_ids: tuple[int, ...]
    identifier: str
    status: int
    location: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Readings that go to the dead-letter table, and why."""

    outbox_ids: tuple[int, ...]
    reason_code: str
    reason: str
    identifier: str = ""
    outcome: dict[str, Any] | None = None
    resource: dict[str, Any] | None = None


def _ids(groups: Sequence[tuple[int, ...]]) -> list[int]:
    return [i for g in groups for i in g]


def mark_delivered(conn: Conn, done: Sequence[Delivered]) -> None:
    """Record confirmed Observations and drop their readings from the outbox (one transaction)."""
    if not done:
        return
    with transaction(conn):
        conn.executemany(
            "INSERT INTO fhir_delivered (outbox_id, readings, identifier, status, location)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (d.outbox_ids[0], len(d.outbox_ids), d.identifier, d.status, d.location)
                for d in done
            ],
        )
        conn.execute(
            "DELETE FROM fhir_outbox WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [_ids([d.outbox_ids for d in done])],
        ).fetchall()
        _set(conn, {"last_success_at": "now", "last_error": ""})


def dead_letter(conn: Conn, letters: Sequence[DeadLetter]) -> None:
    """Move readings to ``fhir_dead_letter`` with the reason, outcome and resource."""
    if not letters:
        return
    with transaction(conn):
        for d in letters:
            conn.execute(
                f"INSERT INTO fhir_dead_letter (id, {_COLS}, attempts, reason_code, reason,"
                f" identifier, outcome, resource) SELECT id, {_COLS}, attempts, ?, ?, ?, ?, ?"
                " FROM fhir_outbox WHERE id IN (SELECT unnest(?::BIGINT[]))",
                [
                    d.reason_code,
                    d.reason,
                    d.identifier,
                    None if d.outcome is None else json.dumps(d.outcome),
                    None if d.resource is None else json.dumps(d.resource),
                    list(d.outbox_ids),
                ],
            ).fetchall()
        conn.execute(
            "DELETE FROM fhir_outbox WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [_ids([d.outbox_ids for d in letters])],
        ).fetchall()


def record_failure(conn: Conn, outbox_ids: Sequence[int], error: str) -> None:
    """Count a failed attempt on the readings and remember the error."""
    with transaction(conn):
        conn.execute(
            "UPDATE fhir_outbox SET attempts = attempts + 1, last_error = ?"
            " WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [error[:2000], list(outbox_ids)],
        ).fetchall()
        _set(conn, {"last_error": error[:2000], "last_error_at": "now"})


def _set(conn: Conn, values: dict[str, str]) -> None:
    for key, value in values.items():
        conn.execute(
            "INSERT INTO fhir_exporter_state (key, value, updated_at)"
            " VALUES (?, CASE WHEN ? = 'now' THEN strftime(current_timestamp,"
            " '%Y-%m-%dT%H:%M:%S.%fZ') ELSE ? END, current_timestamp)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            [key, value, value],
        ).fetchall()


def set_state(conn: Conn, /, **values: str) -> None:
    """Store exporter facts for ``status`` (``"now"`` stores the current time)."""
    with transaction(conn):
        _set(conn, values)


def outbox_size(conn: Conn) -> int:
    """Readings waiting in the outbox."""
    return int(conn.execute("SELECT count(*) FROM fhir_outbox").fetchall()[0][0])


def status(conn: Conn) -> dict[str, Any]:
    """Outbox size and age, delivered and dead-letter counts, and the exporter's state."""
    pending, oldest, attempts = conn.execute(
        "SELECT count(*), min(enqueued_at), coalesce(max(attempts), 0) FROM fhir_outbox"
    ).fetchall()[0]
    delivered, readings, last = conn.execute(
        "SELECT count(*), coalesce(sum(readings), 0), max(delivered_at) FROM fhir_delivered"
    ).fetchall()[0]
    dead = conn.execute(
        "SELECT reason_code, count(*) FROM fhir_dead_letter GROUP BY 1 ORDER BY 1"
    ).fetchall()
    state = dict(conn.execute("SELECT key, value FROM fhir_exporter_state ORDER BY key").fetchall())
    return {
        "pending": int(pending),
        "oldest_pending": oldest.isoformat() if oldest is not None else None,
        "max_attempts": int(attempts),
        "delivered_observations": int(delivered),
        "delivered_readings": int(readings),
        "last_delivered": last.isoformat() if last is not None else None,
        "dead_letter": {code: int(n) for code, n in dead},
        "state": state,
    }


def list_dead_letter(
    conn: Conn, reason_code: str | None = None, limit: int = 50, dead_id: int | None = None
) -> pl.DataFrame:
    """Dead-lettered readings, newest first (one reason, or one id, when given)."""
    return sql_frame(
        conn,
        "SELECT id, failed_at, reason_code, reason, patient_id, device_id, metric, value, unit,"
        " observed_at, attempts, identifier, outcome, resource FROM fhir_dead_letter"
        " WHERE ($reason::VARCHAR IS NULL OR reason_code = $reason)"
        " AND ($id::BIGINT IS NULL OR id = $id) ORDER BY failed_at DESC, id DESC LIMIT $limit",
        {"reason": reason_code, "id": dead_id, "limit": limit},
    )


def retry_dead_letter(conn: Conn, ids: Sequence[int] = (), reason_code: str | None = None) -> int:
    """Queue dead-lettered readings again (all, these ids, or one reason); returns how many."""
    where = "($reason::VARCHAR IS NULL OR reason_code = $reason)"
    params: dict[str, Any] = {"reason": reason_code}
    if ids:
        where += " AND id IN (SELECT unnest($ids::BIGINT[]))"
        params["ids"] = list(ids)
    with transaction(conn):
        rows = conn.execute(
            f"INSERT INTO fhir_outbox ({_COLS}) SELECT {_COLS} FROM fhir_dead_letter"
            f" WHERE {where} ORDER BY id",
            params,
        ).fetchall()
        conn.execute(f"DELETE FROM fhir_dead_letter WHERE {where}", params).fetchall()
    return int(rows[0][0]) if rows else 0

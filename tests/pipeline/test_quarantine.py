"""Quarantine listing and replay against a real DuckDB file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import PermanentStoreError
from pipeline.quarantine import (
    batch_from_quarantine,
    list_quarantine,
    mark_replayed,
    pending_replay,
    quarantine_summary,
    replay_batch,
)
from pipeline.readings import (
    MESSAGE_SCHEMA,
    QUARANTINE_SCHEMA,
    READING_SCHEMA,
    Quality,
    ReadingBatch,
)
from pipeline.registry import assign
from pipeline.store import DuckDbStore, StoreConfig, WriteResult

T = datetime(2026, 6, 1, 9, 0, 0, 250001, tzinfo=UTC)
H = timedelta(hours=1)

QRow = tuple[
    str, str, str, datetime, int | None, bytes
]  # reason, device, metric, observed, seq, payload


def qframe(*rows: QRow) -> pl.DataFrame:
    return pl.DataFrame(
        [
            (obs + timedelta(seconds=2), "ble", f"ble/{dev}/2a37", dev, metric, 60.0 + i, "/min",
             obs, seq, payload, reason, "device_id", f"row {i}")
            for i, (reason, dev, metric, obs, seq, payload) in enumerate(rows)
        ],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )  # fmt: skip


def only_quarantine(q: pl.DataFrame) -> ReadingBatch:
    return ReadingBatch(pl.DataFrame(schema=READING_SCHEMA), pl.DataFrame(schema=MESSAGE_SCHEMA), q)


ROWS: tuple[QRow, ...] = (
    ("unassigned_device", "D1", "heart_rate", T, 1, b"\x01\x3c"),  # id 1
    ("malformed_json", "D1", "heart_rate", T, 2, b"{"),  # id 2
    ("unassigned_device", "D2", "heart_rate", T, None, b"\x00\x3d"),  # id 3
    ("unassigned_device", "D1", "heart_rate", T - 2 * H, 3, b"\x02"),  # id 4, before any assignment
    ("unassigned_device", "D1", "no_such_metric", T, 4, b"\x03"),  # id 5, cannot become a reading
    ("unassigned_device", "D1", "spo2", T + H, 5, b"\x04"),  # id 6
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDbStore]:
    config = StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0)
    with DuckDbStore.open_sync(config) as s:
        s.write_sync(only_quarantine(qframe(*ROWS)))
        yield s


def test_list_newest_first_with_filter_and_limit(store: DuckDbStore) -> None:
    every = list_quarantine(store)
    assert every["id"].to_list() == [6, 5, 4, 3, 2, 1]
    assert every.columns == ["id", *QUARANTINE_SCHEMA.names(), "replayed_at"]
    assert list_quarantine(store, "malformed_json")["payload"].to_list() == [b"{"]
    assert list_quarantine(store, "unassigned_device", limit=2)["id"].to_list() == [6, 5]
    assert list_quarantine(store, "nothing_like_this").height == 0


def test_summary_counts_rows_and_pending(store: DuckDbStore) -> None:
    mark_replayed(store, [1])
    summary = quarantine_summary(store).select("reason_code", "rows", "pending").rows()
    assert summary == [("unassigned_device", 5, 4), ("malformed_json", 1, 1)]


def test_pending_replay_selects_replayable_rows(store: DuckDbStore) -> None:
    assert pending_replay(store).height == 0  # nobody is assigned yet
    assert pending_replay(store, resolvable_only=False)["id"].to_list() == [1, 3, 4, 6]
    assign(store, "D1", "P1", T - H)
    assert pending_replay(store)["id"].to_list() == [1, 6]  # id 4 is before the assignment
    assert pending_replay(store, after_id=1)["id"].to_list() == [6]
    assert pending_replay(store, limit=1)["id"].to_list() == [1]


def test_batch_from_quarantine_rebuilds_readings_and_messages(store: DuckDbStore) -> None:
    assign(store, "D1", "P1", T - H)
    batch, ids = batch_from_quarantine(pending_replay(store))
    assert ids == [1, 6]
    assert batch.readings.schema == READING_SCHEMA
    assert batch.readings.rows() == [
        (None, "D1", "ble", "heart_rate", 60.0, "/min", T, T + timedelta(seconds=2), 1,
         int(Quality.REPLAYED), 0),
        (None, "D1", "ble", "spo2", 65.0, "/min", T + H, T + H + timedelta(seconds=2), 5,
         int(Quality.REPLAYED), 1),
    ]  # fmt: skip
    assert batch.messages.rows() == [
        (0, "ble/D1/2a37", b"\x01\x3c", T + timedelta(seconds=2), "ble"),
        (1, "ble/D1/2a37", b"\x04", T + H + timedelta(seconds=2), "ble"),
    ]
    assert batch.quarantine.height == 0


def test_replay_stores_readings_and_marks_rows_in_one_write(store: DuckDbStore) -> None:
    assign(store, "D1", "P1", T - H)
    batch, ids = replay_batch(store)
    resolved = batch.replace(readings=batch.readings.with_columns(patient_id=pl.lit("P1")))
    result = store.write_sync(resolved, replayed_ids=ids)
    assert result == WriteResult(stored=2, duplicates=0, quarantined=0, replayed=2)
    stored = store.query("SELECT patient_id, metric, seq, quality FROM readings ORDER BY seq")
    assert stored.rows() == [("P1", "heart_rate", 1, 32), ("P1", "spo2", 5, 32)]
    marks = store.query(
        "SELECT q.id FROM quarantine q, (SELECT max(stored_at) AS s FROM readings) r"
        " WHERE q.replayed_at = r.s ORDER BY q.id"
    )
    assert marks["id"].to_list() == [1, 6]  # marked in the same transaction as the insert
    assert pending_replay(store).height == 0
    assert store.write_sync(resolved, replayed_ids=ids) == WriteResult(duplicates=2)


def test_failed_replay_write_marks_nothing(store: DuckDbStore) -> None:
    assign(store, "D1", "P1", T - H)
    batch, ids = replay_batch(store)
    with pytest.raises(PermanentStoreError, match="without patient_id"):
        store.write_sync(batch, replayed_ids=ids)  # patients not resolved
    assert pending_replay(store)["id"].to_list() == [1, 6]


def test_mark_replayed_skips_marked_and_unknown_ids(store: DuckDbStore) -> None:
    at = datetime(2026, 6, 2, tzinfo=UTC)
    assert mark_replayed(store, [3, 4, 999], at) == 2
    assert mark_replayed(store, [3, 4], at + H) == 0
    assert mark_replayed(store, []) == 0
    rows = store.query("SELECT id, replayed_at FROM quarantine WHERE replayed_at IS NOT NULL")
    assert sorted(rows.rows()) == [(3, at), (4, at)]


def test_limits_must_not_be_negative(store: DuckDbStore) -> None:
    with pytest.raises(ValueError, match="limit: expected a count >= 0, got -1"):
        list_quarantine(store, limit=-1)
    with pytest.raises(ValueError, match="limit: expected a count >= 0, got -2"):
        pending_replay(store, limit=-2)

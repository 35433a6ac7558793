"""DuckDbStore against real DuckDB files: schema, round trips, de-duplication, quarantine,
transactions, locking, checkpoints and lifecycle."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipeline.errors import ConfigError, PermanentStoreError, RetryableStoreError
from pipeline.readings import MESSAGE_SCHEMA, QUARANTINE_SCHEMA, READING_SCHEMA, ReadingBatch
from pipeline.store import DuckDbStore, StoreConfig, WriteResult
from pipeline.store_sql import SCHEMA_VERSION, migrate, observed_ranges

T0 = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
US = timedelta(microseconds=1)

Row = tuple[str, str, float | None, datetime, int | None]  # device, metric, value, observed, seq


def readings(*rows: Row, patient: str | None = "P1") -> pl.DataFrame:
    return pl.DataFrame(
        [
            (patient, dev, "mqtt", metric, value, "/min", obs, obs + 5 * US, seq, 0, i)
            for i, (dev, metric, value, obs, seq) in enumerate(rows)
        ],
        schema=READING_SCHEMA,
        orient="row",
    )


def quarantine(*payloads: bytes, reason_code: str | None = "malformed_json") -> pl.DataFrame:
    return pl.DataFrame(
        [
            (T0, "mqtt", f"vitals/D{i}", f"D{i}", None, None, None, None, None, p,
             reason_code, "", f"payload {i} is not JSON")
            for i, p in enumerate(payloads)
        ],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )  # fmt: skip


def batch(r: pl.DataFrame | None = None, q: pl.DataFrame | None = None) -> ReadingBatch:
    return ReadingBatch(
        r if r is not None else pl.DataFrame(schema=READING_SCHEMA),
        pl.DataFrame(schema=MESSAGE_SCHEMA),
        q if q is not None else pl.DataFrame(schema=QUARANTINE_SCHEMA),
    )


def cfg(tmp_path: Path, **kw: object) -> StoreConfig:
    return StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0, **kw)  # type: ignore[arg-type]


HR = "heart_rate"


# -- config --------------------------------------------------------------------------------------


def test_config_defaults_and_path_coercion() -> None:
    c = StoreConfig(path="data/vw.duckdb")  # type: ignore[arg-type]
    assert c.path == Path("data/vw.duckdb")
    assert (c.checkpoint_threshold, c.idle_checkpoint_s, c.dedup_window_s) == ("1GB", 30.0, 86400.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("checkpoint_threshold", "lots", "store.checkpoint_threshold: expected a size"),
        ("checkpoint_threshold", "1 GB; DROP TABLE x", "store.checkpoint_threshold"),
        ("idle_checkpoint_s", -1.0, "store.idle_checkpoint_s: expected seconds >= 0, got -1.0"),
        ("idle_checkpoint_s", float("inf"), "store.idle_checkpoint_s"),
        ("dedup_window_s", float("nan"), "store.dedup_window_s"),
        ("dedup_window_s", -5.0, "store.dedup_window_s: expected seconds >= 0 (or inf), got -5.0"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StoreConfig(path=Path("x.duckdb"), **{field: value})  # type: ignore[arg-type]


# -- schema --------------------------------------------------------------------------------------


async def test_schema_creation_is_idempotent(tmp_path: Path) -> None:
    for _ in range(3):
        async with DuckDbStore(cfg(tmp_path)) as store:
            versions = store.query("SELECT version FROM schema_version")
            tables = store.query(
                "SELECT table_name FROM information_schema.tables ORDER BY table_name"
            )
    assert versions["version"].to_list() == [SCHEMA_VERSION]
    assert tables["table_name"].to_list() == [
        "assignments", "devices", "quarantine", "readings", "schema_version",
    ]  # fmt: skip
    conn = duckdb.connect(str(tmp_path / "vw.duckdb"))
    try:
        assert migrate(conn, "vw.duckdb") == 0
    finally:
        conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path)) as store:
        store.query("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(PermanentStoreError, match="schema version 99 is newer than this"):
        async with DuckDbStore(cfg(tmp_path)):
            pass


async def test_readings_table_has_no_index_and_no_origin(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path)) as store:
        cols = store.query(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'readings' ORDER BY ordinal_position"
        )
        indexes = store.query(
            "SELECT count(*) AS n FROM duckdb_indexes() WHERE table_name = 'readings'"
        )
        keys = store.query(
            "SELECT count(*) AS n FROM duckdb_constraints()"
            " WHERE table_name = 'readings' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
        )
    assert cols.rows() == [
        ("patient_id", "VARCHAR"), ("device_id", "VARCHAR"), ("source", "VARCHAR"),
        ("metric", "VARCHAR"), ("value", "DOUBLE"), ("unit", "VARCHAR"),
        ("observed_at", "TIMESTAMP WITH TIME ZONE"), ("received_at", "TIMESTAMP WITH TIME ZONE"),
        ("seq", "UBIGINT"), ("quality", "UTINYINT"), ("stored_at", "TIMESTAMP WITH TIME ZONE"),
    ]  # fmt: skip
    assert indexes["n"].item() == 0
    assert keys["n"].item() == 0


# -- writes --------------------------------------------------------------------------------------


async def test_write_round_trips_values_types_and_microseconds(tmp_path: Path) -> None:
    r = readings(
        ("D1", HR, 72.25, T0, 7),
        ("D1", "spo2", None, T0 + US, None),
        ("D2", HR, 1e-300, T0 + timedelta(days=400), 2**64 - 1),
    ).with_columns(quality=pl.Series([0, 8, 255], dtype=pl.UInt8))
    async with DuckDbStore(cfg(tmp_path)) as store:
        result = await store.write(batch(r))
        out = store.query(
            "SELECT * EXCLUDE (stored_at) FROM readings ORDER BY device_id, observed_at"
        )
    assert result == WriteResult(stored=3, duplicates=0, quarantined=0, replayed=0)
    expected = r.drop("origin").with_columns(pl.col("source", "metric").cast(pl.Utf8))
    assert out.schema == expected.schema
    assert out.rows() == expected.rows()
    assert out["observed_at"][1] == datetime(2026, 3, 1, 8, 30, 15, 123457, tzinfo=UTC)


async def test_duplicates_within_a_batch_are_stored_once(tmp_path: Path) -> None:
    r = readings(
        ("D1", HR, 70.0, T0, 1),
        ("D1", HR, 70.0, T0, 1),  # exact copy
        ("D1", HR, 99.0, T0, 1),  # same key, other value: still the same reading
        ("D1", HR, 70.0, T0, None),
        ("D1", HR, 70.0, T0, None),  # NULL seq equals NULL seq
        ("D1", "spo2", 97.0, T0, 1),  # other metric
        ("D2", HR, 70.0, T0, 1),  # other device
        ("D1", HR, 70.0, T0 + US, 1),  # other time
        ("D1", HR, 70.0, T0, 2),  # other seq
    )
    async with DuckDbStore(cfg(tmp_path)) as store:
        result = await store.write(batch(r))
        values = store.query(
            "SELECT value FROM readings WHERE seq = 1 AND device_id = 'D1'"
            " AND metric = 'heart_rate' AND observed_at = $t",
            {"t": T0},
        )
    assert (result.stored, result.duplicates) == (6, 3)
    assert values["value"].to_list() == [70.0]  # the first copy wins


async def test_duplicates_across_batches_and_after_reopen_are_stored_once(tmp_path: Path) -> None:
    first = readings(("D1", HR, 70.0, T0, 1), ("D1", HR, 71.0, T0 + US, None))
    again = readings(
        ("D1", HR, 70.0, T0, 1),
        ("D1", HR, 71.0, T0 + US, None),
        ("D1", HR, 72.0, T0 + 2 * US, 3),
    )
    async with DuckDbStore(cfg(tmp_path)) as store:
        r1 = await store.write(batch(first))
        r2 = await store.write(batch(first))
    async with DuckDbStore(cfg(tmp_path)) as store:
        r3 = await store.write(batch(again))
        n = store.query("SELECT count(*) AS n FROM readings")["n"].item()
    assert (r1.stored, r1.duplicates) == (2, 0)
    assert (r2.stored, r2.duplicates) == (0, 2)
    assert (r3.stored, r3.duplicates) == (1, 2)
    assert n == 3


async def test_duplicate_far_from_the_rest_of_its_batch_is_found(tmp_path: Path) -> None:
    day_old = T0 - timedelta(days=1)
    async with DuckDbStore(cfg(tmp_path)) as store:
        await store.write(batch(readings(("D1", HR, 60.0, day_old, 5))))
        await store.write(batch(readings(("D1", HR, 61.0, T0, 6))))
        mixed = readings(
            ("D1", HR, 60.0, day_old, 5),  # redelivered straggler
            ("D1", HR, 61.0, T0, 6),
            ("D1", HR, 62.0, T0 + timedelta(seconds=1), 7),
        )
        result = await store.write(batch(mixed))
    assert (result.stored, result.duplicates) == (1, 2)


async def test_zero_dedup_window_only_deduplicates_within_the_batch(tmp_path: Path) -> None:
    r = readings(("D1", HR, 70.0, T0, 1), ("D1", HR, 70.0, T0, 1))
    async with DuckDbStore(cfg(tmp_path, dedup_window_s=0.0)) as store:
        first = await store.write(batch(r))
        second = await store.write(batch(r))
        n = store.query("SELECT count(*) AS n FROM readings")["n"].item()
    assert (first.stored, second.stored, n) == (1, 1, 2)


async def test_dedup_window_limits_how_far_back_stored_rows_are_compared(tmp_path: Path) -> None:
    r = readings(("D1", HR, 70.0, T0, 1))
    async with DuckDbStore(cfg(tmp_path, dedup_window_s=3600.0)) as store:
        await store.write(batch(r))
        store.query("UPDATE readings SET stored_at = stored_at - INTERVAL 2 HOUR")
        late = await store.write(batch(r))
        fresh = await store.write(batch(r))
    assert (late.stored, fresh.stored) == (1, 0)


def test_observed_ranges_cluster_by_gap_and_cap_the_count() -> None:
    def ts(*us: int | None) -> pl.Series:
        return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))

    minute = 60_000_000
    assert observed_ranges(ts()) == []
    assert observed_ranges(ts(None)) == []
    assert observed_ranges(ts(5, None, 1, 3)) == [(1, 5)]
    assert observed_ranges(ts(0, minute, 3 * minute, 3 * minute + 1)) == [
        (0, minute), (3 * minute, 3 * minute + 1),
    ]  # fmt: skip
    # 40 points; gap i (before point i) is 2*i minutes: the 15 largest (i = 25..39) split.
    growing = [sum(2 * k * minute for k in range(i + 1)) for i in range(40)]
    ranges = observed_ranges(ts(*growing))
    assert len(ranges) == 16
    assert ranges[0] == (0, growing[24])
    assert ranges[1:] == [(t, t) for t in growing[25:]]
    # Equal gaps: ties split in time order, still at most 16 ranges.
    even = [i * 10 * minute for i in range(40)]
    assert observed_ranges(ts(*even)) == [(t, t) for t in even[:15]] + [(even[15], even[-1])]


async def test_quarantine_rows_keep_payload_bytes(tmp_path: Path) -> None:
    payloads = (b"\x00\xff{not json", b"", "caf\u00e9".encode("latin-1"))
    async with DuckDbStore(cfg(tmp_path)) as store:
        result = await store.write(batch(readings(("D1", HR, 70.0, T0, 1)), quarantine(*payloads)))
        rows = store.query(
            "SELECT id, payload, topic, reason_code, replayed_at FROM quarantine ORDER BY id"
        )
    assert result == WriteResult(stored=1, duplicates=0, quarantined=3, replayed=0)
    assert rows.rows() == [
        (1, payloads[0], "vitals/D0", "malformed_json", None),
        (2, payloads[1], "vitals/D1", "malformed_json", None),
        (3, payloads[2], "vitals/D2", "malformed_json", None),
    ]


async def test_failed_write_commits_nothing(tmp_path: Path) -> None:
    bad = batch(readings(("D1", HR, 70.0, T0, 1)), quarantine(b"x", reason_code=None))
    async with DuckDbStore(cfg(tmp_path)) as store:
        with pytest.raises(PermanentStoreError, match="reason_code") as info:
            await store.write(bad)
        n = store.query(
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM quarantine) AS n"
        )
        assert isinstance(info.value.__cause__, duckdb.ConstraintException)
        ok = await store.write(batch(readings(("D1", HR, 70.0, T0, 1))))
    assert n["n"].item() == 0
    assert ok.stored == 1


async def test_readings_without_patient_are_refused(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path)) as store:
        with pytest.raises(
            PermanentStoreError, match=r"without patient_id \(1\) or device_id \(0\)"
        ):
            await store.write(batch(readings(("D1", HR, 70.0, T0, 1), patient=None)))


async def test_empty_batch_is_a_no_op(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path)) as store:
        assert await store.write(ReadingBatch.empty()) == WriteResult()


async def test_commit_listeners_see_batch_and_result(tmp_path: Path) -> None:
    seen: list[tuple[int, WriteResult]] = []
    b = batch(readings(("D1", HR, 70.0, T0, 1), ("D1", HR, 70.0, T0, 1)))
    async with DuckDbStore(cfg(tmp_path)) as store:
        store.add_commit_listener(lambda bb, res: seen.append((len(bb), res)))
        await store.write(b)
    assert seen == [(2, WriteResult(stored=1, duplicates=1))]


# -- errors and lifecycle ------------------------------------------------------------------------


async def test_database_locked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "vw.duckdb"
    holder = textwrap.dedent(
        f"""
        import sys, duckdb
        conn = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(PermanentStoreError) as info:
            async with DuckDbStore(cfg(tmp_path)):
                pass
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert str(info.value).startswith(
        f"database {path} is in use by another process (a running vitalwire service?)"
    )
    assert isinstance(info.value.__cause__, duckdb.IOException)


async def test_duckdb_errors_are_translated(tmp_path: Path) -> None:
    def conflict(conn: duckdb.DuckDBPyConnection) -> None:
        raise duckdb.TransactionException("Conflict on tuple deletion")

    async with DuckDbStore(cfg(tmp_path)) as store:
        with pytest.raises(RetryableStoreError, match="Conflict on tuple deletion") as info:
            await store.call(conflict)
        assert isinstance(info.value.__cause__, duckdb.TransactionException)
        with pytest.raises(PermanentStoreError, match="no_such_table"):
            store.query("SELECT * FROM no_such_table")


async def test_close_is_idempotent_and_refuses_later_writes(tmp_path: Path) -> None:
    store = DuckDbStore(cfg(tmp_path))
    async with store:
        await store.write(batch(readings(("D1", HR, 70.0, T0, 1))))
    await store.__aexit__(None, None, None)
    with pytest.raises(PermanentStoreError, match="the store is closed, not open"):
        await store.write(batch(readings(("D1", HR, 71.0, T0, 2))))
    with pytest.raises(PermanentStoreError, match="can be opened only once"):
        async with store:
            pass
    with DuckDbStore.open_sync(cfg(tmp_path)) as reopened:
        assert reopened.query("SELECT value FROM readings")["value"].to_list() == [70.0]


def test_sync_use_without_event_loop(tmp_path: Path) -> None:
    with DuckDbStore.open_sync(cfg(tmp_path)) as store:
        result = store.write_sync(batch(readings(("D1", HR, 70.0, T0, 1))))
        nested = store.call_sync(lambda conn: store.call_sync(lambda c: c is conn))
        n = store.query("SELECT count(*) AS n FROM readings WHERE device_id = ?", ["D1"])
    assert result.stored == 1
    assert nested is True  # a call from the store thread runs inline, without deadlock
    assert n["n"].item() == 1


def wal_size(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return wal.stat().st_size if wal.exists() else 0


async def test_idle_checkpoint_runs_only_after_the_idle_time(tmp_path: Path) -> None:
    now = [1000.0]
    config = StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=30.0)
    async with DuckDbStore(config, clock=lambda: now[0]) as store:
        await store.write(batch(readings(("D1", HR, 70.0, T0, 1))))
        assert wal_size(config.path) > 0  # below the 1 GB threshold: no automatic checkpoint
        now[0] += 29.0
        assert await store.checkpoint_if_idle() is False
        assert wal_size(config.path) > 0
        now[0] += 1.0
        assert await store.checkpoint_if_idle() is True
        assert wal_size(config.path) == 0
        now[0] += 100.0
        assert await store.checkpoint_if_idle() is False  # nothing new to checkpoint


async def test_close_checkpoints(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    async with DuckDbStore(config) as store:
        await store.write(batch(readings(("D1", HR, 70.0, T0, 1))))
        assert wal_size(config.path) > 0
    assert wal_size(config.path) == 0


async def test_settings_applied(tmp_path: Path) -> None:
    async with DuckDbStore(cfg(tmp_path, checkpoint_threshold="512MiB")) as store:
        s = store.query(
            "SELECT current_setting('checkpoint_threshold') AS t, current_setting('TimeZone') AS z"
        )
    assert s.rows() == [("512.0 MiB", "UTC")]

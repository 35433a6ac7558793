"""The outbox as the store's transaction hook: atomic, exactly the inserted readings, policies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipeline.errors import PermanentStoreError
from pipeline.fhir import outbox, schema
from pipeline.fhir.config import FhirConfig, MetricPolicy
from pipeline.store import DuckDbStore, StoreConfig
from tests.fhir.support import T0, batch, frame


def open_store(tmp_path: Path) -> DuckDbStore:
    return DuckDbStore(StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0))


async def test_hook_sees_exactly_the_inserted_readings(tmp_path: Path) -> None:
    seen: list[pl.DataFrame] = []
    async with open_store(tmp_path) as store:
        store.add_transaction_hook(lambda conn, inserted: seen.append(inserted))
        first = frame(("heart_rate", "HR-1", 70.0, "/min"), ("spo2", "HR-1", 97.0, "%"))
        result = await store.write(batch(first))
        again = pl.concat([first, frame(("heart_rate", "HR-1", 71.0, "/min", 9))])
        result2 = await store.write(batch(again))
        await store.write(batch(first))  # nothing new: the hook is not called
    assert (result.stored, result2.stored, result2.duplicates) == (2, 1, 2)
    assert [f.height for f in seen] == [2, 1]
    assert seen[1].select("metric", "value", "seq").rows() == [("heart_rate", 71.0, 9)]
    assert seen[1]["observed_at"].dtype == pl.Datetime("us", "UTC")


async def test_a_failing_hook_rolls_the_readings_back(tmp_path: Path) -> None:
    def boom(conn: duckdb.DuckDBPyConnection, inserted: pl.DataFrame) -> None:
        conn.execute("CREATE TABLE side (x INT)")
        raise RuntimeError("hook failed")

    async with open_store(tmp_path) as store:
        store.add_transaction_hook(boom)
        with pytest.raises(RuntimeError, match="hook failed"):
            await store.write(batch(frame(("heart_rate", "HR-1", 70.0, "/min"))))
        rows = store.query("SELECT count(*) AS n FROM readings")["n"].to_list()
        tables = store.query(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'side'"
        )
    assert rows == [0]
    assert tables.height == 0


async def test_outbox_follows_policy_and_samples(tmp_path: Path) -> None:
    config = FhirConfig(metrics={"spo2": MetricPolicy("sample", 60.0),
                                 "steps": MetricPolicy("all"),
                                 "heart_rate": MetricPolicy("none")})  # fmt: skip
    async with open_store(tmp_path) as store:
        await store.call(schema.migrate)
        store.add_transaction_hook(outbox.OutboxWriter(config))
        for seconds in (0, 10, 59, 61, 130):
            when = T0 + timedelta(seconds=seconds)
            await store.write(
                batch(
                    frame(
                        ("spo2", "OX-1", 90.0 + seconds / 10, "%"),
                        ("heart_rate", "OX-1", 70.0, "/min"),
                        ("glucose", "GM-1", 100.0, "mg/dL"),
                        ("steps", "PW-1", float(seconds), "{steps}"),
                        ("hrv_sdnn", "PW-1", 40.0, "ms"),
                        when=when,
                    )
                )
            )
        pending = await store.call(outbox.fetch_pending, 100)
    # T0 is 08:30:15, so the 60 s buckets start at 08:30:00, 08:31:00, 08:32:00
    spo2 = pending.filter(pl.col("metric") == "spo2")["value"].to_list()
    assert spo2 == [90.0, 95.9, 103.0]
    assert pending.filter(pl.col("metric") == "glucose").height == 5
    assert pending.filter(pl.col("metric") == "steps").height == 5
    assert pending.filter(pl.col("metric").is_in(["heart_rate", "hrv_sdnn"])).height == 0


async def test_dead_letter_status_and_retry(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.call(schema.migrate)
        store.add_transaction_hook(outbox.OutboxWriter(FhirConfig()))
        await store.write(
            batch(frame(("heart_rate", "HR-1", 70.0, "/min"), ("glucose", "GM-1", 100.0, "mg/dL")))
        )
        await store.call(
            outbox.dead_letter,
            [
                outbox.DeadLetter(
                    (2,),
                    "rejected",
                    "HTTP 400: value",
                    "abc",
                    {"resourceType": "OperationOutcome"},
                    {"resourceType": "Observation"},
                )
            ],
        )
        await store.call(outbox.record_failure, [1], "HTTP 503")
        status = await store.call(outbox.status)
        assert (status["pending"], status["max_attempts"], status["dead_letter"]) == (
            1,
            1,
            {"rejected": 1},
        )
        assert status["state"]["last_error"] == "HTTP 503"
        dead = await store.call(outbox.list_dead_letter, None, 10, None)
        assert dead.select("id", "metric", "reason", "outcome").rows() == [
            (2, "glucose", "HTTP 400: value", '{"resourceType": "OperationOutcome"}')
        ]
        assert await store.call(outbox.retry_dead_letter, (), "other") == 0
        assert await store.call(outbox.retry_dead_letter, (2,), None) == 1
        pending = await store.call(outbox.fetch_pending, 10)
        assert pending.select("outbox_id", "metric").rows() == [(1, "heart_rate"), (3, "glucose")]
        await store.call(outbox.mark_delivered, [outbox.Delivered((1,), "id1", 201, "Obs/1")])
        assert await store.call(outbox.outbox_size) == 1


async def test_newer_fhir_schema_is_refused(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.call(schema.migrate)
        store.query("INSERT INTO fhir_schema_version (version) VALUES (99)")
        with pytest.raises(PermanentStoreError, match="FHIR tables version 99 is newer than"):
            await store.call(schema.migrate)

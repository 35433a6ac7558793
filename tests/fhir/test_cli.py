"""``vitalwire fhir status|retry|dead-letter`` on a database."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from pipeline.fhir import cli, outbox, schema
from pipeline.fhir.config import FhirConfig
from pipeline.store import DuckDbStore, StoreConfig
from tests.fhir.support import batch, frame


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_arguments(sub)
    return parser.parse_args(["fhir", *argv])


def prepare(db: Path) -> None:
    async def go() -> None:
        async with DuckDbStore(StoreConfig(path=db, idle_checkpoint_s=0)) as store:
            await store.call(schema.migrate)
            store.add_transaction_hook(outbox.OutboxWriter(FhirConfig()))
            await store.write(
                batch(
                    frame(("heart_rate", "HR-1", 70.0, "/min"), ("glucose", "GM-1", 100.0, "mg/dL"))
                )
            )
            await store.call(
                outbox.dead_letter,
                [
                    outbox.DeadLetter(
                        (2,),
                        "rejected",
                        "HTTP 400: value refused",
                        "abc",
                        {"resourceType": "OperationOutcome", "issue": []},
                        {"resourceType": "Observation"},
                    )
                ],
            )

    asyncio.run(go())


def test_status_dead_letter_and_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "vw.duckdb"
    prepare(db)
    assert cli.run(parse("status", "--db", str(db))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "endpoint           (none configured: readings wait in the outbox)"
    assert out[2].startswith("outbox             1 readings waiting, oldest since ")
    assert out[3] == "delivered          0 Observations (0 readings), last -"
    assert out[4] == "dead letters       1 (rejected 1)"

    assert cli.run(parse("dead-letter", "--db", str(db))) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "failed_at", "reason_code", "patient_id", "device_id",
                                "metric", "value", "reason"]  # fmt: skip
    assert table[1].split()[2:7] == ["rejected", "P1", "GM-1", "glucose", "100"]

    assert cli.run(parse("dead-letter", "--show", "2", "--db", str(db))) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["outcome"] == {"resourceType": "OperationOutcome", "issue": []}
    assert shown["resource"] == {"resourceType": "Observation"}
    assert cli.run(parse("dead-letter", "--show", "99", "--db", str(db))) == 1
    capsys.readouterr()

    assert cli.run(parse("retry", "--db", str(db))) == 0
    assert capsys.readouterr().out == "queued 1 dead-lettered readings again\n"
    cli.run(parse("status", "--db", str(db)))
    assert "outbox             2 readings waiting" in capsys.readouterr().out


def test_runner_is_pluggable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Path, str, dict[str, object]]] = []

    def runner(db: Path, op: str, **kwargs: object) -> object:
        calls.append((db, op, kwargs))
        return {"requeued": 3}

    assert cli.run(parse("retry", "4", "5", "--reason", "rejected"), run_data_op=runner) == 0
    assert calls == [
        (Path("vitalwire.duckdb"), "fhir.retry", {"ids": [4, 5], "reason": "rejected"})
    ]
    assert set(cli.OPERATIONS) == {"fhir.status", "fhir.retry", "fhir.dead_letter"}
    capsys.readouterr()


def test_missing_database_is_an_error(tmp_path: Path) -> None:
    from pipeline.fhir.errors import FhirConfigError

    with pytest.raises(FhirConfigError, match="--db: no database at"):
        cli.run(parse("status", "--db", str(tmp_path / "none.duckdb")))

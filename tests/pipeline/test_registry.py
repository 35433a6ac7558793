"""Device registry and time-bounded assignments (real DuckDB), and the vectorized resolver."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pipeline.registry import (
    ASSIGNMENTS_SCHEMA,
    RegistryError,
    assign,
    assignments_frame,
    list_assignments,
    list_devices,
    register_device,
    resolve_patients,
    unassign,
)
from pipeline.store import DuckDbStore, StoreConfig
from pipeline.store_sql import migrate

T = datetime(2026, 5, 4, 10, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
US = timedelta(microseconds=1)
UTC_US = pl.Datetime("us", "UTC")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "reg.duckdb"))
    c.execute("SET TimeZone = 'UTC'").fetchall()
    migrate(c, "reg.duckdb")
    try:
        yield c
    finally:
        c.close()


def intervals(conn: duckdb.DuckDBPyConnection, device: str) -> list[tuple[object, ...]]:
    return list_assignments(conn, device).select("patient_id", "valid_from", "valid_to").rows()


# -- devices -------------------------------------------------------------------------------------


def test_register_device_is_idempotent_and_updates_given_fields(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    assert register_device(conn, "D1", kind="oximeter", label="bed 4") is True
    assert register_device(conn, "D1") is False
    assert register_device(conn, "D1", label="bed 7", profile="vitalwire_json") is False
    rows = conn.execute("SELECT device_id, kind, profile, label FROM devices").fetchall()
    assert rows == [("D1", "oximeter", "vitalwire_json", "bed 7")]


def test_register_device_rejects_empty_id(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(RegistryError, match="device_id: expected a non-empty string, got ' '"):
        register_device(conn, " ")


# -- assignments ---------------------------------------------------------------------------------


def test_assign_auto_registers_and_returns_ids(conn: duckdb.DuckDBPyConnection) -> None:
    a1 = assign(conn, "D1", "P1", T, T + H, created_by="nurse", note="admission")
    a2 = assign(conn, "D1", "P2", T + H)
    assert (a1, a2) == (1, 2)
    assert conn.execute("SELECT device_id FROM devices").fetchall() == [("D1",)]
    assert intervals(conn, "D1") == [("P1", T, T + H), ("P2", T + H, None)]
    extra = list_assignments(conn, "D1").select("created_by", "note").row(0)
    assert extra == ("nurse", "admission")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (T + H - US, T + 2 * H),  # starts inside the existing one
        (T - H, T + US),  # ends inside it
        (T - H, None),  # open, covering it
        (T + 10 * US, T + 20 * US),  # inside it
        (T, T + H),  # the same interval
    ],
)
def test_overlapping_assignment_is_rejected(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime | None
) -> None:
    assign(conn, "D1", "P1", T, T + H)
    with pytest.raises(RegistryError) as info:
        assign(conn, "D1", "P2", start, end)
    message = str(info.value)
    assert message.startswith("device 'D1': assignment to 'P2' over [")
    assert (
        "overlaps assignment 1 to 'P1' over [2026-05-04T10:00:00+00:00, 2026-05-04T11:00:00+00:00)"
        in message
    )
    assert "unassign it first" in message
    assert intervals(conn, "D1") == [("P1", T, T + H)]  # nothing changed


def test_touching_intervals_and_other_devices_do_not_overlap(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    assign(conn, "D1", "P1", T, T + H)
    assign(conn, "D1", "P2", T + H, T + 2 * H)  # starts where the first ends
    assign(conn, "D1", "P3", T - H, T)  # ends where the first starts
    assign(conn, "D2", "P1", T, None)  # another device, same patient and time
    assert intervals(conn, "D1") == [("P3", T - H, T), ("P1", T, T + H), ("P2", T + H, T + 2 * H)]


def test_open_assignment_blocks_later_ones(conn: duckdb.DuckDBPyConnection) -> None:
    assign(conn, "D1", "P1", T)
    with pytest.raises(RegistryError, match=r"overlaps assignment 1 to 'P1' over \[.*, open\)"):
        assign(conn, "D1", "P2", T + 24 * H)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (T, T, "valid_to: 2026-05-04T10:00:00+00:00 must be after valid_from"),
        (T, T - H, "valid_to: 2026-05-04T09:00:00+00:00 must be after valid_from"),
        (datetime(2026, 5, 4, 10), None, "valid_from: 2026-05-04T10:00:00 has no time zone"),
    ],
)
def test_bad_interval_is_rejected(
    conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime | None, message: str
) -> None:
    with pytest.raises(RegistryError, match=re.escape(message)):
        assign(conn, "D1", "P1", start, end)


def test_assign_defaults_to_now_and_converts_offsets_to_utc(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    before = datetime.now(UTC)
    assign(conn, "D1", "P1")
    after = datetime.now(UTC)
    cet = datetime(2026, 5, 4, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assign(conn, "D2", "P2", cet)
    start = list_assignments(conn, "D1")["valid_from"].item()
    assert before - US <= start <= after
    assert list_assignments(conn, "D2")["valid_from"].item() == datetime(2026, 5, 4, 12, tzinfo=UTC)


def test_unassign_closes_the_open_assignment(conn: duckdb.DuckDBPyConnection) -> None:
    assign(conn, "D1", "P1", T - H, T)
    open_id = assign(conn, "D1", "P2", T)
    assert unassign(conn, "D1", T + H) == open_id
    assert intervals(conn, "D1") == [("P1", T - H, T), ("P2", T, T + H)]
    with pytest.raises(RegistryError, match="device 'D1' has no open assignment to end"):
        unassign(conn, "D1", T + 2 * H)
    with pytest.raises(RegistryError, match="device 'D9' has no open assignment to end"):
        unassign(conn, "D9")


def test_unassign_must_end_after_the_start(conn: duckdb.DuckDBPyConnection) -> None:
    assign(conn, "D1", "P1", T)
    with pytest.raises(
        RegistryError,
        match=r"cannot end assignment 1 to 'P1' at 2026-05-04T10:00:00\+00:00: it starts at",
    ):
        unassign(conn, "D1", T)
    assert intervals(conn, "D1") == [("P1", T, None)]


def test_assignments_frame_has_the_resolver_schema(conn: duckdb.DuckDBPyConnection) -> None:
    assert assignments_frame(conn).schema == ASSIGNMENTS_SCHEMA
    assign(conn, "D2", "P2", T)
    assign(conn, "D1", "P1", T - H, T)
    frame = assignments_frame(conn)
    assert frame.schema == ASSIGNMENTS_SCHEMA
    assert frame.rows() == [("D1", "P1", T - H, T), ("D2", "P2", T, None)]


def test_list_devices_shows_the_current_patient(conn: duckdb.DuckDBPyConnection) -> None:
    now = datetime.now(UTC)
    assign(conn, "D1", "P1", now - H)
    assign(conn, "D2", "P2", now - 2 * H, now - H)
    register_device(conn, "D3", kind="scale")
    rows = list_devices(conn).select("device_id", "kind", "patient_id").rows()
    assert rows == [("D1", "", "P1"), ("D2", "", None), ("D3", "scale", None)]


# -- through the store ---------------------------------------------------------------------------


async def test_registry_through_the_store_sync_and_async(tmp_path: Path) -> None:
    config = StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0)
    with DuckDbStore.open_sync(config) as store:
        assign(store, "D1", "P1", T)
        with pytest.raises(RegistryError, match="overlaps"):
            assign(store, "D1", "P2", T + H)
    async with DuckDbStore(config) as store:
        await store.call(unassign, "D1", T + H)
        await store.call(assign, "D1", "P2", T + H)
        frame = await store.assignments()
    assert frame.rows() == [("D1", "P1", T, T + H), ("D1", "P2", T + H, None)]


# -- resolver ------------------------------------------------------------------------------------


def assignments(*rows: tuple[str, str, datetime, datetime | None]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ASSIGNMENTS_SCHEMA, orient="row")


def observed(*rows: tuple[str | None, datetime | None]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"device_id": pl.Utf8, "observed_at": UTC_US}, orient="row")


def test_resolver_boundaries() -> None:
    a = assignments(
        ("D1", "P1", T, T + H),  # reassigned to P2 at T + H
        ("D1", "P2", T + H, None),
        ("D2", "P3", T, T + H),  # then nobody
    )
    r = observed(
        ("D1", T - US),  # before the first assignment
        ("D1", T),  # exactly at valid_from: assigned
        ("D1", T + H - US),  # last microsecond of P1
        ("D1", T + H),  # exactly at valid_to of P1 = valid_from of P2
        ("D1", T + 1000 * H),  # open assignment
        ("D2", T + H - US),
        ("D2", T + H),  # exactly at valid_to: not assigned
        ("D9", T),  # unknown device
        (None, T),
        ("D1", None),
    )
    out = resolve_patients(r, a)
    assert out.name == "patient_id"
    assert out.dtype == pl.Utf8
    assert out.to_list() == [None, "P1", "P1", "P2", "P2", "P3", None, None, None, None]


def test_resolver_keeps_input_order_of_unsorted_readings() -> None:
    a = assignments(("D1", "P1", T, T + H), ("D1", "P2", T + H, None), ("D2", "P3", T, None))
    r = observed(("D1", T + 2 * H), ("D2", T), ("D1", T + US), ("D1", T - H), ("D2", T + 5 * H))
    assert resolve_patients(r, a).to_list() == ["P2", "P3", "P1", None, "P3"]


def test_resolver_with_no_assignments_or_no_readings() -> None:
    none = assignments()
    assert resolve_patients(observed(("D1", T)), none).to_list() == [None]
    assert resolve_patients(observed(), assignments(("D1", "P1", T, None))).to_list() == []


def test_resolver_on_the_stored_registry(conn: duckdb.DuckDBPyConnection) -> None:
    assign(conn, "D1", "P1", T, T + H)
    assign(conn, "D1", "P2", T + H)
    r = observed(("D1", T + H), ("D1", T), ("D1", T - US))
    assert resolve_patients(r, assignments_frame(conn)).to_list() == ["P2", "P1", None]

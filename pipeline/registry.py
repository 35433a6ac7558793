"""Devices, their time-bounded assignments to patients, and the vectorized patient resolver.

A device is worn by one patient over a half-open interval ``[valid_from, valid_to)``;
``valid_to`` NULL means the assignment is still open. Intervals of one device never overlap, so
at any instant a device belongs to at most one patient. A reading is attributed to the patient
whose assignment covers its ``observed_at`` (device time, not arrival time), which keeps late and
replayed readings with the right patient.

Every function takes a :data:`StoreTarget`: a :class:`~pipeline.store.DuckDbStore` (the call runs
on the store's thread and blocks; for the CLI) or a ``duckdb`` connection (inside
``await store.call(assign, ...)`` in the service, or in tests). Changes run in one transaction
of their own. Times are timezone-aware datetimes; ``None`` means now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeAlias, TypeVar, cast

import duckdb
import polars as pl

from pipeline.errors import PipelineError
from pipeline.readings import UTC_US

if TYPE_CHECKING:
    from pipeline.store import DuckDbStore

__all__ = [
    "ASSIGNMENTS_SCHEMA",
    "RegistryError",
    "StoreTarget",
    "assign",
    "assignments_frame",
    "list_assignments",
    "list_devices",
    "register_device",
    "resolve_patients",
    "run_on",
    "sql_frame",
    "transaction",
    "unassign",
]

StoreTarget: TypeAlias = "DuckDbStore | duckdb.DuckDBPyConnection"

ASSIGNMENTS_SCHEMA: pl.Schema = pl.Schema(
    [("device_id", pl.String()), ("patient_id", pl.String()),
     ("valid_from", UTC_US), ("valid_to", UTC_US)]
)  # fmt: skip
"""Columns of :func:`assignments_frame`, the input of :func:`resolve_patients`."""

P = ParamSpec("P")
T = TypeVar("T")


class RegistryError(PipelineError):
    """A registry change was refused: overlapping interval, nothing to close, bad argument."""


def run_on(
    target: StoreTarget,
    fn: Callable[Concatenate[duckdb.DuckDBPyConnection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run ``fn(conn, *args, **kwargs)`` directly on a connection, or on a store's thread."""
    if isinstance(target, duckdb.DuckDBPyConnection):
        return fn(target, *args, **kwargs)
    return target.call_sync(fn, *args, **kwargs)


def sql_frame(
    conn: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[object] | Mapping[str, object] | None = None,
) -> pl.DataFrame:
    """Run one statement and return its rows as a polars frame (empty when it returns none)."""
    relation = conn.sql(sql, params=params)
    return pl.DataFrame() if relation is None else cast(pl.DataFrame, relation.pl())


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``BEGIN`` ... ``COMMIT``, rolled back when the body raises."""
    conn.begin()
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):  # the original error matters more than a failed rollback
            conn.rollback()
        raise
    conn.commit()


def _utc(value: datetime | None, name: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        raise RegistryError(f"{name}: {value.isoformat()} has no time zone; pass an aware datetime")
    return value.astimezone(UTC)


def _require_id(value: str, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{name}: expected a non-empty string, got {value!r}")


def _interval(valid_from: datetime, valid_to: datetime | None) -> str:
    end = valid_to.isoformat() if valid_to is not None else "open"
    return f"[{valid_from.isoformat()}, {end})"


# -- devices -------------------------------------------------------------------------------------


def _register(
    conn: duckdb.DuckDBPyConnection, device_id: str, kind: str, label: str, profile: str
) -> bool:
    _require_id(device_id, "device_id")
    found = conn.execute("SELECT 1 FROM devices WHERE device_id = ?", [device_id]).fetchall()
    if not found:
        conn.execute(
            "INSERT INTO devices (device_id, kind, profile, label) VALUES (?, ?, ?, ?)",
            [device_id, kind, profile, label],
        ).fetchall()
        return True
    if kind or label or profile:
        conn.execute(
            "UPDATE devices SET kind = CASE WHEN $kind = '' THEN kind ELSE $kind END,"
            " profile = CASE WHEN $profile = '' THEN profile ELSE $profile END,"
            " label = CASE WHEN $label = '' THEN label ELSE $label END"
            " WHERE device_id = $device_id",
            {"kind": kind, "profile": profile, "label": label, "device_id": device_id},
        ).fetchall()
    return False


def register_device(
    target: StoreTarget, device_id: str, kind: str = "", label: str = "", profile: str = ""
) -> bool:
    """Register a device; idempotent.

    Registering a known device again updates ``kind``, ``label`` and ``profile`` where they
    are given (non-empty) and leaves the rest.

    Returns:
        True when the device was new.
    """
    return run_on(target, _register, device_id, kind, label, profile)


def list_devices(target: StoreTarget) -> pl.DataFrame:
    """All devices with their current patient (null when unassigned now), by ``device_id``."""
    return run_on(
        target,
        lambda conn: sql_frame(
            conn,
            "SELECT d.device_id, d.kind, d.profile, d.label, d.registered_at, a.patient_id"
            " FROM devices d LEFT JOIN assignments a ON a.device_id = d.device_id"
            " AND a.valid_from <= current_timestamp"
            " AND (a.valid_to IS NULL OR current_timestamp < a.valid_to)"
            " ORDER BY d.device_id",
        ),
    )


# -- assignments ---------------------------------------------------------------------------------

_OVERLAPS = (
    "SELECT assignment_id, patient_id, valid_from, valid_to FROM assignments"
    " WHERE device_id = $device_id AND ($valid_to::TIMESTAMPTZ IS NULL OR valid_from < $valid_to)"
    " AND (valid_to IS NULL OR valid_to > $valid_from) ORDER BY valid_from LIMIT 1"
)


def _assign(
    conn: duckdb.DuckDBPyConnection,
    device_id: str,
    patient_id: str,
    valid_from: datetime | None,
    valid_to: datetime | None,
    created_by: str,
    note: str,
) -> int:
    _require_id(device_id, "device_id")
    _require_id(patient_id, "patient_id")
    start = _utc(valid_from, "valid_from")
    end = None if valid_to is None else _utc(valid_to, "valid_to")
    if end is not None and end <= start:
        raise RegistryError(
            f"valid_to: {end.isoformat()} must be after valid_from {start.isoformat()}"
        )
    with transaction(conn):
        _register(conn, device_id, "", "", "")
        clash = conn.execute(
            _OVERLAPS, {"device_id": device_id, "valid_from": start, "valid_to": end}
        ).fetchall()
        if clash:
            other_id, other_patient, other_from, other_to = clash[0]
            raise RegistryError(
                f"device {device_id!r}: assignment to {patient_id!r} over "
                f"{_interval(start, end)} overlaps assignment {other_id} to {other_patient!r} "
                f"over {_interval(other_from, other_to)}; unassign it first or choose "
                "an interval that does not overlap"
            )
        rows = conn.execute(
            "INSERT INTO assignments"
            " (device_id, patient_id, valid_from, valid_to, created_by, note)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING assignment_id",
            [device_id, patient_id, start, end, created_by, note],
        ).fetchall()
    return int(rows[0][0])


def assign(
    target: StoreTarget,
    device_id: str,
    patient_id: str,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    *,
    created_by: str = "",
    note: str = "",
) -> int:
    """Assign a device to a patient over ``[valid_from, valid_to)``.

    Unknown devices are registered on the way.

    Args:
        target: Store or connection.
        device_id: The device.
        patient_id: The patient wearing it.
        valid_from: Start, included (default now).
        valid_to: End, excluded; ``None`` leaves the assignment open.
        created_by: Who made the change (free text, optional).
        note: Why (free text, optional).

    Returns:
        The new ``assignment_id``.

    Raises:
        RegistryError: The interval overlaps another assignment of the device, ends before
            it starts, or a time has no time zone.
    """
    return run_on(target, _assign, device_id, patient_id, valid_from, valid_to, created_by, note)


def _unassign(conn: duckdb.DuckDBPyConnection, device_id: str, at: datetime | None) -> int:
    _require_id(device_id, "device_id")
    end = _utc(at, "at")
    with transaction(conn):
        rows = conn.execute(
            "SELECT assignment_id, patient_id, valid_from FROM assignments"
            " WHERE device_id = ? AND valid_to IS NULL",
            [device_id],
        ).fetchall()
        if not rows:
            raise RegistryError(f"device {device_id!r} has no open assignment to end")
        assignment_id, patient_id, start = rows[0]
        if end <= start:
            raise RegistryError(
                f"device {device_id!r}: cannot end assignment {assignment_id} to {patient_id!r}"
                f" at {end.isoformat()}: it starts at {start.isoformat()} (end must be later)"
            )
        conn.execute(
            "UPDATE assignments SET valid_to = ? WHERE assignment_id = ?", [end, assignment_id]
        ).fetchall()
    return int(assignment_id)


def unassign(target: StoreTarget, device_id: str, at: datetime | None = None) -> int:
    """End the device's open assignment at ``at`` (default now; excluded from the interval).

    Returns:
        The ``assignment_id`` that was closed.

    Raises:
        RegistryError: The device has no open assignment, or ``at`` is not after its start.
    """
    return run_on(target, _unassign, device_id, at)


def _list(conn: duckdb.DuckDBPyConnection, device_id: str | None) -> pl.DataFrame:
    return sql_frame(
        conn,
        "SELECT assignment_id, device_id, patient_id, valid_from, valid_to, created_at,"
        " created_by, note FROM assignments"
        " WHERE $device_id::VARCHAR IS NULL OR device_id = $device_id"
        " ORDER BY device_id, valid_from",
        {"device_id": device_id},
    )


def list_assignments(target: StoreTarget, device_id: str | None = None) -> pl.DataFrame:
    """Assignments (all columns), by device and start; only ``device_id``'s when given."""
    return run_on(target, _list, device_id)


def _frame(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    frame = sql_frame(
        conn,
        "SELECT device_id, patient_id, valid_from, valid_to FROM assignments"
        " ORDER BY device_id, valid_from",
    )
    return frame.select(
        pl.col("device_id").cast(pl.Utf8),
        pl.col("patient_id").cast(pl.Utf8),
        pl.col("valid_from").dt.convert_time_zone("UTC").cast(UTC_US),
        pl.col("valid_to").dt.convert_time_zone("UTC").cast(UTC_US),
    )


def assignments_frame(target: StoreTarget) -> pl.DataFrame:
    """Every assignment as a frame with :data:`ASSIGNMENTS_SCHEMA`, for :func:`resolve_patients`."""
    return run_on(target, _frame)


# -- resolver ------------------------------------------------------------------------------------


def resolve_patients(readings: pl.DataFrame, assignments: pl.DataFrame) -> pl.Series:
    """The patient wearing each reading's device at its ``observed_at``.

    An as-of join finds, per device, the latest assignment starting at or before
    ``observed_at``; the reading belongs to it when ``observed_at < valid_to`` (or the
    assignment is open). Assignments of one device must not overlap (the registry ensures it).

    Args:
        readings: Frame with ``device_id`` (Utf8) and ``observed_at`` (Datetime).
        assignments: Frame with the :data:`ASSIGNMENTS_SCHEMA` columns (others are ignored).

    Returns:
        ``patient_id`` (Utf8) aligned with ``readings``; null where no assignment covers the
        reading, or its device or time is null.
    """
    ts = readings.schema["observed_at"]
    left = readings.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        pl.col("device_id").cast(pl.Utf8),
        pl.col("observed_at"),
    ).sort("observed_at")
    right = assignments.select(
        pl.col("device_id").cast(pl.Utf8),
        pl.col("patient_id").cast(pl.Utf8),
        pl.col("valid_from").cast(ts).alias("_from"),
        pl.col("valid_to").cast(ts).alias("_to"),
    ).sort("_from")
    matched = left.join_asof(
        right,
        left_on="observed_at",
        right_on="_from",
        by="device_id",
        strategy="backward",
        check_sortedness=False,
    )
    covered = pl.col("_to").is_null() | (pl.col("observed_at") < pl.col("_to"))
    return (
        matched.sort("_row")
        .select(pl.when(covered).then(pl.col("patient_id")).alias("patient_id"))
        .to_series()
    )

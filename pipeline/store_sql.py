"""The SQL the store runs: the schema as numbered migrations, and the de-duplicating insert.

Schema. On open, :func:`migrate` applies, in order and each in its own transaction, every migration
above the highest version recorded in ``schema_version``, then records it. Never edit a released
migration: append a new one. A database newer than this code is refused.

No PRIMARY KEY or index on ``readings``: an ART index makes Arrow appends 2-3.5x slower, so
duplicates are removed by the store's anti-join instead (``docs/storage.md``). ``source`` and
``metric`` are VARCHAR, not ENUM: DuckDB dictionary-compresses them to the same size, appends
are as fast, and a new catalogue metric needs no type migration.

De-duplication. A reading equal to a stored one on :data:`DEDUP_KEY` (``seq`` NULL equal to
NULL) is skipped by an anti-join, ``INSERT ... SELECT ... WHERE NOT EXISTS``. The stored side is
bounded by constant ranges of ``observed_at`` (the batch's device times, clustered) and of
``stored_at`` (the de-duplication window), so DuckDB's zone maps skip every row group outside
them before the hash join: readings arrive roughly in time order, so few row groups remain.
"""

from __future__ import annotations

import logging
import math

import duckdb
import numpy as np
import polars as pl

from pipeline.migrations import apply_migrations, component_version
from pipeline.readings import QUARANTINE_SCHEMA

__all__ = [
    "DEDUP_KEY",
    "MIGRATIONS",
    "READING_COLUMNS",
    "SCHEMA_VERSION",
    "insert_quarantine_sql",
    "insert_readings_sql",
    "migrate",
    "observed_ranges",
    "schema_version",
]

log = logging.getLogger(__name__)

_V1 = """
CREATE TABLE readings (
    patient_id  VARCHAR NOT NULL,
    device_id   VARCHAR NOT NULL,
    source      VARCHAR,
    metric      VARCHAR,
    value       DOUBLE,
    unit        VARCHAR,
    observed_at TIMESTAMPTZ,
    received_at TIMESTAMPTZ,
    seq         UBIGINT,
    quality     UTINYINT,
    stored_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE quarantine_id_seq START 1;

CREATE TABLE quarantine (
    id          BIGINT PRIMARY KEY DEFAULT nextval('quarantine_id_seq'),
    received_at TIMESTAMPTZ,
    source      VARCHAR,
    topic       VARCHAR,
    device_id   VARCHAR,
    metric      VARCHAR,
    value       DOUBLE,
    unit        VARCHAR,
    observed_at TIMESTAMPTZ,
    seq         UBIGINT,
    payload     BLOB,
    reason_code VARCHAR NOT NULL,
    field       VARCHAR,
    reason      VARCHAR,
    replayed_at TIMESTAMPTZ
);

CREATE TABLE devices (
    device_id     VARCHAR PRIMARY KEY,
    kind          VARCHAR NOT NULL DEFAULT '',
    profile       VARCHAR NOT NULL DEFAULT '',
    label         VARCHAR NOT NULL DEFAULT '',
    registered_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE assignment_id_seq START 1;

CREATE TABLE assignments (
    assignment_id BIGINT PRIMARY KEY DEFAULT nextval('assignment_id_seq'),
    device_id     VARCHAR NOT NULL,
    patient_id    VARCHAR NOT NULL,
    valid_from    TIMESTAMPTZ NOT NULL,
    valid_to      TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    created_by    VARCHAR NOT NULL DEFAULT '',
    note          VARCHAR NOT NULL DEFAULT '',
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""Migration ``i`` (0-based) takes the schema from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The version this code creates and expects."""


# -- de-duplicating insert -----------------------------------------------------------------------

READING_COLUMNS = (
    "patient_id", "device_id", "source", "metric", "value", "unit",
    "observed_at", "received_at", "seq", "quality",
)  # fmt: skip
"""Stored columns of a reading, in table order (``origin`` is in-flight only)."""

DEDUP_KEY = ("device_id", "metric", "observed_at", "seq")
"""Readings equal on these columns are one reading."""

RANGE_GAP_US = 60_000_000
"""Device times further apart than this are looked up in separate ``observed_at`` ranges."""

MAX_RANGES = 16
"""At most this many ranges per batch (the largest gaps split first)."""


def observed_ranges(observed: pl.Series) -> list[tuple[int, int]]:
    """The batch's device times as at most :data:`MAX_RANGES` ``[lo, hi]`` clusters (UTC µs).

    One far-off reading (a late or replayed one) would otherwise stretch a single min..max
    range over most of the table and defeat the zone maps. Nulls are left out.
    """
    t = np.sort(observed.drop_nulls().dt.epoch("us").to_numpy())
    if len(t) == 0:
        return []
    gaps = np.diff(t)
    big = np.flatnonzero(gaps > RANGE_GAP_US)
    if len(big) >= MAX_RANGES:  # keep the widest gaps (the earliest of equal ones)
        order = np.argsort(-gaps[big], kind="stable")[: MAX_RANGES - 1]
        big = np.sort(big[order])
    starts = np.concatenate([[0], big + 1])
    ends = np.concatenate([big, [len(t) - 1]])
    return [(int(t[a]), int(t[b])) for a, b in zip(starts, ends, strict=True)]


def insert_readings_sql(view: str, observed: pl.Series, window_s: float) -> str:
    """``INSERT`` of ``view``'s readings that are not stored yet.

    Args:
        view: Registered relation holding the batch, already unique on :data:`DEDUP_KEY`.
        observed: The batch's ``observed_at`` column.
        window_s: Compare with rows stored this many seconds back at most; ``inf`` for all
            rows, 0 to skip the comparison.

    The bounds are SQL literals made from integers (no user text), so that they are constants
    the planner pushes into the table scan. ``make_timestamp`` reads UTC microseconds; the
    store's session time zone is UTC.
    """
    cols = ", ".join(READING_COLUMNS)
    sql = f"INSERT INTO readings ({cols}) SELECT {cols} FROM {view} AS b"
    if window_s <= 0:
        return sql
    ts = "make_timestamp({}::BIGINT)::TIMESTAMPTZ"
    ranges = " OR ".join(
        f"r.observed_at BETWEEN {ts.format(lo)} AND {ts.format(hi)}"
        for lo, hi in observed_ranges(observed)
    )
    parts = [f"({ranges or 'FALSE'})"]
    if math.isfinite(window_s):
        micros = round(window_s * 1_000_000)
        parts.append(f"r.stored_at >= current_timestamp - INTERVAL {micros} MICROSECOND")
    parts += [f"r.{c} = b.{c}" for c in DEDUP_KEY[:-1]]
    parts.append("r.seq IS NOT DISTINCT FROM b.seq")
    return sql + f" WHERE NOT EXISTS (SELECT 1 FROM readings AS r WHERE {' AND '.join(parts)})"


def insert_quarantine_sql(view: str) -> str:
    """``INSERT`` of ``view``'s quarantine rows (``id`` from the sequence)."""
    cols = ", ".join(QUARANTINE_SCHEMA.names())
    return f"INSERT INTO quarantine ({cols}) SELECT {cols} FROM {view}"


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The highest core schema version recorded in the database (0 for a new one)."""
    return component_version(conn, "schema_version")


def migrate(conn: duckdb.DuckDBPyConnection, where: str) -> int:
    """Bring the core schema to :data:`SCHEMA_VERSION`; idempotent; returns migrations run.

    Raises:
        PermanentStoreError: The database was written by a newer vitalwire.
    """
    return apply_migrations(conn, "schema_version", MIGRATIONS, f"{where}: schema")

"""One migration runner for every component that keeps tables in the store.

Each component (the core tables, FHIR, alerting, the dashboard) has its own ordered list of
DDL scripts and its own version table, so that components evolve independently in one file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import duckdb

from pipeline.errors import PermanentStoreError
from pipeline.registry import transaction

__all__ = ["apply_migrations", "component_version"]

log = logging.getLogger(__name__)


def component_version(conn: duckdb.DuckDBPyConnection, version_table: str) -> int:
    """The highest version recorded in ``version_table`` (0 for a new database)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    ).fetchall()
    rows = conn.execute(f"SELECT coalesce(max(version), 0) FROM {version_table}").fetchall()
    return int(rows[0][0])


def apply_migrations(
    conn: duckdb.DuckDBPyConnection,
    version_table: str,
    migrations: Sequence[str],
    what: str,
    error: type[Exception] = PermanentStoreError,
) -> int:
    """Apply the scripts after the recorded version, each in its own transaction.

    Args:
        conn: Connection to the database.
        version_table: The component's version table.
        migrations: Script ``i`` (0-based) takes the component from version ``i`` to ``i + 1``.
        what: The component, for messages ("/path/db: schema", "alerting schema").
        error: Raised when the database is newer than this code.

    Returns:
        How many migrations ran (0 when up to date).
    """
    have = component_version(conn, version_table)
    target = len(migrations)
    if have > target:
        raise error(
            f"{what} version {have} is newer than this vitalwire supports ({target});"
            " upgrade vitalwire"
        )
    for version in range(have + 1, target + 1):
        with transaction(conn):
            conn.execute(migrations[version - 1]).fetchall()
            conn.execute(f"INSERT INTO {version_table} (version) VALUES (?)", [version]).fetchall()
        log.info("%s migrated to version %d", what, version)
    return target - have

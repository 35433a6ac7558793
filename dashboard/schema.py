"""The dashboard's tables (users, login sessions, the audit log) as numbered migrations.

:func:`migrate` brings a database to :data:`SCHEMA_VERSION`; it is idempotent and runs on the
store's thread (``await store.call(dashboard.schema.migrate)``). The version is kept in
``dashboard_schema_version``, apart from the pipeline's and the alerting schema's versions.
Never edit a released migration: append one.

``audit_log`` is append-only: one row per acknowledgement, snooze, resolution, care-plan change,
observation, device or user change, with who did it and in which role.
"""

from __future__ import annotations

import logging

import duckdb

from pipeline.errors import PermanentStoreError
from pipeline.registry import transaction

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

log = logging.getLogger(__name__)

_V1 = """
CREATE TABLE dashboard_users (
    username            VARCHAR PRIMARY KEY,
    role                VARCHAR NOT NULL,
    password_hash       VARCHAR NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    password_changed_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE dashboard_sessions (
    token_hash  VARCHAR PRIMARY KEY,
    username    VARCHAR NOT NULL,
    csrf_token  VARCHAR NOT NULL,
    created_us  BIGINT NOT NULL,
    expires_us  BIGINT NOT NULL
);

CREATE SEQUENCE audit_log_id_seq START 1;

CREATE TABLE audit_log (
    audit_id    BIGINT PRIMARY KEY DEFAULT nextval('audit_log_id_seq'),
    at_us       BIGINT NOT NULL,
    username    VARCHAR NOT NULL,
    role        VARCHAR NOT NULL,
    action      VARCHAR NOT NULL,
    patient_id  VARCHAR,
    target      VARCHAR NOT NULL,
    detail      VARCHAR NOT NULL
);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""Migration ``i`` (0-based) takes the dashboard schema from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The dashboard schema version of the database (0 when it has none)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS dashboard_schema_version (version INTEGER NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    ).fetchall()
    rows = conn.execute("SELECT coalesce(max(version), 0) FROM dashboard_schema_version").fetchall()
    return int(rows[0][0])


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Create or upgrade the dashboard tables; returns how many migrations ran.

    Raises:
        PermanentStoreError: The database's dashboard schema is newer than this code.
    """
    have = schema_version(conn)
    if have > SCHEMA_VERSION:
        raise PermanentStoreError(
            f"dashboard schema version {have} is newer than this vitalwire supports "
            f"({SCHEMA_VERSION}); upgrade vitalwire"
        )
    for version in range(have + 1, SCHEMA_VERSION + 1):
        with transaction(conn):
            conn.execute(MIGRATIONS[version - 1]).fetchall()
            conn.execute(
                "INSERT INTO dashboard_schema_version (version) VALUES (?)", [version]
            ).fetchall()
        log.info("dashboard schema migrated to version %d", version)
    return SCHEMA_VERSION - have

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

from pipeline.migrations import apply_migrations, component_version

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
    return component_version(conn, "dashboard_schema_version")


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Create or upgrade the dashboard tables; returns how many migrations ran.

    Raises:
        PermanentStoreError: The database's dashboard schema is newer than this code.
    """
    return apply_migrations(conn, "dashboard_schema_version", MIGRATIONS, "dashboard schema")

"""The FHIR export's tables, as numbered migrations of their own.

The store's migrations (``pipeline/store_sql.py``) own the readings; these tables are created by
:func:`migrate`, which the exporter runs on the store's connection when it starts (idempotent,
each migration in its own transaction, versions in ``fhir_schema_version``).

``fhir_outbox``
    Readings waiting to be sent, written in the same transaction as the readings. No index
    (appends stay cheap; the table is drained, so scans stay small). ``attempts`` and
    ``last_error`` describe failed sends.
``fhir_sample_marks``
    For metrics exported as a downsampled series: the (device, metric, bucket) already taken.
``fhir_delivered``
    One row per Observation the server confirmed (201 created, 200 already there).
``fhir_dead_letter``
    Readings that will not be sent without an operator: the reading, the reason, the
    server's OperationOutcome and the resource. ``vitalwire fhir retry`` moves them back.
``fhir_exporter_state``
    Key/value facts of the exporter (endpoint, capability check, last success, last error)
    for ``vitalwire fhir status``.
"""

from __future__ import annotations

import logging

import duckdb

from pipeline.migrations import apply_migrations

__all__ = ["FHIR_SCHEMA_VERSION", "MIGRATIONS", "OUTBOX_COLUMNS", "migrate"]

log = logging.getLogger(__name__)

OUTBOX_COLUMNS = (
    "patient_id", "device_id", "source", "metric", "value", "unit",
    "observed_at", "received_at", "seq", "quality",
)  # fmt: skip
"""Reading columns copied into the outbox (and the dead-letter table)."""

_V1 = """
CREATE SEQUENCE fhir_outbox_id_seq START 1;

CREATE TABLE fhir_outbox (
    id          BIGINT NOT NULL DEFAULT nextval('fhir_outbox_id_seq'),
    patient_id  VARCHAR NOT NULL,
    device_id   VARCHAR NOT NULL,
    source      VARCHAR,
    metric      VARCHAR NOT NULL,
    value       DOUBLE,
    unit        VARCHAR,
    observed_at TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ,
    seq         UBIGINT,
    quality     UTINYINT,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  VARCHAR
);

CREATE TABLE fhir_sample_marks (
    device_id VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,
    bucket    BIGINT NOT NULL
);

CREATE TABLE fhir_delivered (
    outbox_id    BIGINT NOT NULL,
    readings     INTEGER NOT NULL,
    identifier   VARCHAR NOT NULL,
    status       SMALLINT NOT NULL,
    location     VARCHAR,
    delivered_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE fhir_dead_letter (
    id          BIGINT NOT NULL,
    patient_id  VARCHAR,
    device_id   VARCHAR,
    source      VARCHAR,
    metric      VARCHAR,
    value       DOUBLE,
    unit        VARCHAR,
    observed_at TIMESTAMPTZ,
    received_at TIMESTAMPTZ,
    seq         UBIGINT,
    quality     UTINYINT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    reason_code VARCHAR NOT NULL,
    reason      VARCHAR NOT NULL,
    identifier  VARCHAR,
    outcome     VARCHAR,
    resource    VARCHAR,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE TABLE fhir_exporter_state (
    key        VARCHAR PRIMARY KEY,
    value      VARCHAR,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""Migration ``i`` (0-based) takes the FHIR tables from version ``i`` to ``i + 1``."""

FHIR_SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Create or upgrade the FHIR tables; idempotent; returns migrations applied.

    Raises:
        PermanentStoreError: The tables were made by a newer vitalwire.
    """
    return apply_migrations(conn, "fhir_schema_version", MIGRATIONS, "FHIR tables")

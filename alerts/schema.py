"""The alerting tables, as numbered migrations of their own.

:func:`migrate` brings a database to :data:`SCHEMA_VERSION` (idempotent; call it once at service
start, on the store's thread: ``await store.call(alerts.schema.migrate)``). The version is kept in
``alerts_schema_version``, apart from the pipeline's ``schema_version``, so both sets of
migrations evolve independently. Never edit a released migration: append one.

History tables (``care_plans``, ``alerts``, ``alert_events``, ``alert_observations``) are
append-only except ``alerts``, whose row is updated while the alert is open. ``alert_state_*``
tables hold the engine's carried state (what survives a restart).
"""

from __future__ import annotations

import logging

import duckdb

from alerts.errors import AlertError
from pipeline.migrations import apply_migrations, component_version

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

log = logging.getLogger(__name__)

_V1 = """
CREATE SEQUENCE care_plan_id_seq START 1;

CREATE TABLE care_plans (
    plan_id     BIGINT PRIMARY KEY DEFAULT nextval('care_plan_id_seq'),
    patient_id  VARCHAR NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    author      VARCHAR NOT NULL,
    reason      VARCHAR NOT NULL,
    template    VARCHAR NOT NULL DEFAULT '',
    body        VARCHAR NOT NULL,
    UNIQUE (patient_id, version)
);

CREATE TABLE alerts (
    alert_id           VARCHAR PRIMARY KEY,
    patient_id         VARCHAR NOT NULL,
    rule_id            VARCHAR NOT NULL,
    rule_kind          VARCHAR NOT NULL,
    category           VARCHAR NOT NULL,
    predicted          BOOLEAN NOT NULL,
    side               VARCHAR NOT NULL,
    metric             VARCHAR,
    unit               VARCHAR,
    priority           VARCHAR NOT NULL,
    level              INTEGER NOT NULL,
    peak_level         INTEGER NOT NULL,
    state              VARCHAR NOT NULL,
    opened_at          TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    trigger_value      DOUBLE,
    trigger_limit      DOUBLE,
    trigger_at         TIMESTAMPTZ,
    device_id          VARCHAR,
    plan_version       INTEGER NOT NULL,
    sustain            VARCHAR NOT NULL,
    message            VARCHAR NOT NULL,
    acknowledged_by    VARCHAR,
    acknowledged_at    TIMESTAMPTZ,
    resolved_at        TIMESTAMPTZ,
    escalation_level   INTEGER NOT NULL,
    last_notified_at   TIMESTAMPTZ,
    escalated_at       TIMESTAMPTZ,
    clear_for_us       BIGINT NOT NULL,
    cleared_at         TIMESTAMPTZ
);

CREATE TABLE alert_events (
    event_id      BIGINT PRIMARY KEY,
    kind          VARCHAR NOT NULL,
    alert_id      VARCHAR NOT NULL,
    patient_id    VARCHAR NOT NULL,
    rule_id       VARCHAR NOT NULL,
    side          VARCHAR NOT NULL,
    category      VARCHAR NOT NULL,
    predicted     BOOLEAN NOT NULL,
    from_state    VARCHAR,
    to_state      VARCHAR,
    event_at      TIMESTAMPTZ NOT NULL,
    actor         VARCHAR NOT NULL,
    role          VARCHAR NOT NULL,
    priority      VARCHAR NOT NULL,
    level         INTEGER NOT NULL,
    value         DOUBLE,
    limit_value   DOUBLE,
    notify        BOOLEAN NOT NULL,
    plan_version  INTEGER NOT NULL,
    detail        VARCHAR NOT NULL,
    observed_at   TIMESTAMPTZ
);

CREATE SEQUENCE alert_observation_id_seq START 1;

CREATE TABLE alert_observations (
    observation_id      BIGINT PRIMARY KEY DEFAULT nextval('alert_observation_id_seq'),
    patient_id          VARCHAR NOT NULL,
    consciousness       VARCHAR,
    supplemental_oxygen BOOLEAN,
    entered_at          TIMESTAMPTZ NOT NULL,
    entered_by          VARCHAR NOT NULL
);

CREATE TABLE alert_snoozes (
    patient_id  VARCHAR NOT NULL,
    rule_id     VARCHAR NOT NULL,
    side        VARCHAR NOT NULL,
    until_us    BIGINT NOT NULL,
    max_level   INTEGER NOT NULL,
    snoozed_by  VARCHAR NOT NULL,
    reason      VARCHAR NOT NULL,
    created_us  BIGINT NOT NULL,
    PRIMARY KEY (patient_id, rule_id, side)
);

CREATE TABLE alert_state_conditions (
    patient_id  VARCHAR NOT NULL,
    rule_id     VARCHAR NOT NULL,
    low_side    BOOLEAN NOT NULL,
    level       TINYINT NOT NULL,
    c_start     BIGINT,
    c_count     BIGINT,
    c_value     DOUBLE
);

CREATE TABLE alert_state_episodes (
    patient_id  VARCHAR NOT NULL,
    rule_id     VARCHAR NOT NULL,
    low_side    BOOLEAN NOT NULL,
    c_level     TINYINT NOT NULL
);

CREATE TABLE alert_state_latest (
    patient_id  VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    t           BIGINT NOT NULL,
    value       DOUBLE,
    PRIMARY KEY (patient_id, metric)
);

CREATE TABLE alert_state_history (
    patient_id  VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    t           BIGINT NOT NULL,
    value       DOUBLE
);

CREATE TABLE alert_state_meta (
    key    VARCHAR PRIMARY KEY,
    value  BIGINT
);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""Migration ``i`` (0-based) takes the alerting schema from version ``i`` to ``i + 1``."""

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The alerting schema version of the database (0 when it has none)."""
    return component_version(conn, "alerts_schema_version")


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Create or upgrade the alerting tables; returns how many migrations ran.

    Raises:
        AlertError: The database's alerting schema is newer than this code.
    """
    return apply_migrations(conn, "alerts_schema_version", MIGRATIONS, "alerting schema",
                            error=AlertError)

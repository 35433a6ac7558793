"""Saving and restoring the engine through the store's thread.

:func:`save` writes a :class:`Snapshot` in one transaction: new events (append-only), changed
alerts (upsert), snoozes and carried condition/episode state (replaced: they are small, only
conditions that are on), the latest value per (patient, metric) that changed (upsert), new
history rows for rate rules (appended, old ones pruned), manual observations (appended) and
counters. :func:`load` reads it all back. Both take a DuckDB connection: call them through
``await store.call(save, snapshot)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import polars as pl

from alerts.evaluate import STATE_COND_SCHEMA, STATE_EP_SCHEMA
from alerts.lifecycle import ALERT_FIELDS, EVENT_FIELDS, Alert, AlertEvent, Snooze
from alerts.signals import MANUAL_SCHEMA
from pipeline.registry import transaction

__all__ = ["Loaded", "Observation", "Snapshot", "load", "save"]

Conn = duckdb.DuckDBPyConnection
_VIEW = "_vitalwire_alerts_rows"
_STREAM = ["patient_id", "metric", "t", "value"]
_STREAM_SCHEMA = pl.Schema(
    {"patient_id": pl.Utf8, "metric": pl.Utf8, "t": pl.Int64, "value": pl.Float64})
_TS = pl.Datetime("us", "UTC")
_ALERT_TIMES = {
    "opened_at_us": "opened_at", "updated_at_us": "updated_at", "trigger_t_us": "trigger_at",
    "acknowledged_at_us": "acknowledged_at", "resolved_at_us": "resolved_at",
    "last_notified_us": "last_notified_at", "escalated_at_us": "escalated_at",
    "cleared_at_us": "cleared_at",
}  # fmt: skip
"""Alert fields in UTC microseconds -> TIMESTAMPTZ columns of ``alerts``."""


@dataclass(frozen=True, slots=True)
class Observation:
    """A manual NEWS2 entry: consciousness (ACVPU) and/or supplemental oxygen."""

    patient_id: str
    consciousness: str | None
    supplemental_oxygen: bool | None
    at_us: int
    by: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What changed since the last save."""

    events: Sequence[AlertEvent]
    alerts: Sequence[Alert]
    snoozes: Sequence[Snooze] | None
    carry_cond: pl.DataFrame
    carry_ep: pl.DataFrame
    latest: pl.DataFrame
    history: pl.DataFrame
    history_before_us: int | None
    observations: Sequence[Observation]
    meta: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The engine's persisted state."""

    alerts: list[Alert]
    snoozes: list[Snooze]
    carry_cond: pl.DataFrame
    carry_ep: pl.DataFrame
    latest: pl.DataFrame
    history: pl.DataFrame
    manual: pl.DataFrame
    meta: dict[str, int]
    last_event: int


def _alert_frame(alerts: Sequence[Alert]) -> pl.DataFrame:
    frame = pl.DataFrame([a.values() for a in alerts], schema=list(ALERT_FIELDS), orient="row",
                         infer_schema_length=None)
    frame = frame.with_columns(pl.col(c).cast(pl.Int64).cast(_TS) for c in _ALERT_TIMES)
    frame = frame.rename(dict(_ALERT_TIMES))
    return frame.with_columns(pl.col("trigger_value", "trigger_limit").cast(pl.Float64))


def _event_frame(events: Sequence[AlertEvent]) -> pl.DataFrame:
    frame = pl.DataFrame([e.values() for e in events], schema=list(EVENT_FIELDS), orient="row",
                         infer_schema_length=None)
    return frame.with_columns(
        pl.col("at_us").cast(_TS), pl.col("observed_at_us").cast(pl.Int64).cast(_TS),
        pl.col("value", "limit").cast(pl.Float64),
        pl.col("from_state", "to_state").cast(pl.Utf8),
    ).rename({"seq": "event_id", "at_us": "event_at", "limit": "limit_value",
              "observed_at_us": "observed_at"})


def _insert(conn: Conn, table: str, frame: pl.DataFrame, verb: str = "INSERT") -> None:
    if frame.height == 0:
        return
    conn.register(_VIEW, frame.to_arrow())
    try:
        cols = ", ".join(frame.columns)
        conn.execute(f"{verb} INTO {table} ({cols}) SELECT {cols} FROM {_VIEW}").fetchall()
    finally:
        with contextlib.suppress(duckdb.Error):
            conn.unregister(_VIEW)


def save(conn: Conn, snap: Snapshot) -> None:
    """Write ``snap`` in one transaction."""
    with transaction(conn):
        if snap.events:  # idempotent: a save retried after an unknown outcome adds nothing
            _insert(conn, "alert_events", _event_frame(snap.events), "INSERT OR IGNORE")
        if snap.alerts:
            _insert(conn, "alerts", _alert_frame(snap.alerts), "INSERT OR REPLACE")
        if snap.snoozes is not None:
            conn.execute("DELETE FROM alert_snoozes").fetchall()
            rows = [(s.patient_id, s.rule_id, s.side, s.until_us, s.max_level, s.by, s.reason,
                     s.created_at_us) for s in snap.snoozes]  # fmt: skip
            if rows:
                conn.executemany("INSERT INTO alert_snoozes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("DELETE FROM alert_state_conditions").fetchall()
        _insert(conn, "alert_state_conditions", snap.carry_cond)
        conn.execute("DELETE FROM alert_state_episodes").fetchall()
        _insert(conn, "alert_state_episodes", snap.carry_ep)
        _insert(conn, "alert_state_latest", snap.latest.select(_STREAM), "INSERT OR REPLACE")
        if snap.history_before_us is not None:
            conn.execute("DELETE FROM alert_state_history WHERE t < ?",
                         [snap.history_before_us]).fetchall()
        _insert(conn, "alert_state_history", snap.history.select(_STREAM))
        for o in snap.observations:
            conn.execute(
                "INSERT INTO alert_observations (patient_id, consciousness, supplemental_oxygen,"
                " entered_at, entered_by) VALUES (?, ?, ?, make_timestamp(?::BIGINT)::TIMESTAMPTZ,"
                " ?)", [o.patient_id, o.consciousness, o.supplemental_oxygen, o.at_us, o.by],
            ).fetchall()
        for key, value in snap.meta.items():
            conn.execute("INSERT OR REPLACE INTO alert_state_meta VALUES (?, ?)",
                         [key, value]).fetchall()


def _frame(conn: Conn, sql: str, schema: pl.Schema) -> pl.DataFrame:
    rows = conn.execute(sql).fetchall()
    return pl.DataFrame(rows, schema=schema, orient="row")


def _alerts(conn: Conn) -> list[Alert]:
    names = [f.name for f in dataclasses.fields(Alert)]
    cols = [
        f"epoch_us({_ALERT_TIMES[n]})" if n in _ALERT_TIMES else n
        for n in names
    ]
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM alerts WHERE state <> 'resolved'")
    return [Alert(*row) for row in rows.fetchall()]


def load(conn: Conn) -> Loaded:
    """Read the engine's persisted state."""
    snoozes = [Snooze(*r) for r in conn.execute(
        "SELECT patient_id, rule_id, side, until_us, max_level, snoozed_by, reason, created_us "
        "FROM alert_snoozes").fetchall()]  # fmt: skip
    manual = conn.execute(
        "SELECT patient_id, last(consciousness ORDER BY observation_id) FILTER "
        "(consciousness IS NOT NULL), last(supplemental_oxygen ORDER BY observation_id) FILTER "
        "(supplemental_oxygen IS NOT NULL) FROM alert_observations GROUP BY patient_id"
    ).fetchall()
    meta = dict(conn.execute("SELECT key, value FROM alert_state_meta").fetchall())
    last = conn.execute("SELECT coalesce(max(event_id), 0) FROM alert_events").fetchall()
    return Loaded(
        alerts=_alerts(conn),
        snoozes=snoozes,
        carry_cond=_frame(conn, "SELECT * FROM alert_state_conditions", STATE_COND_SCHEMA),
        carry_ep=_frame(conn, "SELECT * FROM alert_state_episodes", STATE_EP_SCHEMA),
        latest=_frame(conn, "SELECT patient_id, metric, t, value FROM alert_state_latest",
                      _STREAM_SCHEMA),
        history=_frame(conn, "SELECT patient_id, metric, t, value FROM alert_state_history "
                       "ORDER BY t", _STREAM_SCHEMA),
        manual=pl.DataFrame(manual, schema=MANUAL_SCHEMA, orient="row"),
        meta={str(k): int(v) for k, v in meta.items()},
        last_event=int(last[0][0]),
    )

"""Read queries behind the API: latest vitals, downsampled history, alert history, timeline.

Every function takes a DuckDB connection and runs on the store's thread
(``await store.call(fn, ...)``). Times are UTC microseconds in and out.
"""

from __future__ import annotations

from typing import Any

import duckdb
import polars as pl

from pipeline.registry import sql_frame

__all__ = [
    "closed_alerts",
    "has_table",
    "history",
    "known_patients",
    "latest_vitals",
    "plan_versions",
    "timeline",
]

_ALERT_COLUMNS = (
    "alert_id, patient_id, rule_id, rule_kind, category, predicted, side, metric, unit,"
    " priority, level, peak_level, state, epoch_us(opened_at) AS opened_at_us,"
    " epoch_us(updated_at) AS updated_at_us, trigger_value, trigger_limit,"
    " epoch_us(trigger_at) AS trigger_t_us, device_id, plan_version, sustain, message,"
    " acknowledged_by, epoch_us(acknowledged_at) AS acknowledged_at_us,"
    " epoch_us(resolved_at) AS resolved_at_us, escalation_level"
)


def has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the database has table ``name`` (the alerting tables may be absent)."""
    rows = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_name = ?",
                        [name]).fetchall()
    return bool(rows)


def latest_vitals(conn: duckdb.DuckDBPyConnection, since_us: int) -> pl.DataFrame:
    """The latest value per (patient, metric) observed since ``since_us``:
    ``patient_id, metric, value, t``."""
    return sql_frame(
        conn,
        "SELECT patient_id, metric, arg_max(value, observed_at) AS value,"
        " epoch_us(max(observed_at)) AS t FROM readings"
        " WHERE observed_at >= make_timestamp(?::BIGINT)::TIMESTAMPTZ AND value IS NOT NULL"
        " GROUP BY patient_id, metric",
        [since_us],
    ).select(
        pl.col("patient_id").cast(pl.Utf8), pl.col("metric").cast(pl.Utf8),
        pl.col("value").cast(pl.Float64), pl.col("t").cast(pl.Int64),
    )


def known_patients(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Patients with an open assignment or a care plan."""
    sql = "SELECT DISTINCT patient_id FROM assignments WHERE valid_to IS NULL"
    if has_table(conn, "care_plans"):
        sql += " UNION SELECT DISTINCT patient_id FROM care_plans"
    return sorted(str(r[0]) for r in conn.execute(sql).fetchall())


def plan_versions(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The current care-plan version per patient."""
    if not has_table(conn, "care_plans"):
        return {}
    rows = conn.execute("SELECT patient_id, max(version) FROM care_plans GROUP BY 1").fetchall()
    return {str(p): int(v) for p, v in rows}


def history(conn: duckdb.DuckDBPyConnection, patient_id: str, metric: str, start_us: int,
            end_us: int, max_points: int) -> dict[str, Any]:
    """Readings of one patient and metric in ``[start_us, end_us]``.

    At most ``max_points`` points: when the range holds more readings they are averaged over
    equal time buckets (each point then has the bucket's min, max and count).

    Returns:
        ``{"points": [[t_us, value, min, max, count], ...], "downsampled": bool,
        "bucket_us": int, "unit": str}``.
    """
    where = ("patient_id = $p AND metric = $m AND value IS NOT NULL AND observed_at BETWEEN"
             " make_timestamp($s::BIGINT)::TIMESTAMPTZ AND make_timestamp($e::BIGINT)::TIMESTAMPTZ")
    params = {"p": patient_id, "m": metric, "s": start_us, "e": end_us}
    count, unit = conn.execute(f"SELECT count(*), any_value(unit) FROM readings WHERE {where}",
                               params).fetchall()[0]
    if int(count) <= max_points:
        rows = conn.execute(
            f"SELECT epoch_us(observed_at), value, value, value, 1 FROM readings WHERE {where}"
            " ORDER BY observed_at", params).fetchall()
        return {"points": [list(r) for r in rows], "downsampled": False, "bucket_us": 0,
                "unit": unit or ""}
    bucket = max((end_us - start_us) // max_points + 1, 1)
    rows = conn.execute(
        f"SELECT ($s + (epoch_us(observed_at) - $s) // $b * $b + $b // 2) AS t, avg(value),"
        f" min(value), max(value), count(*) FROM readings WHERE {where} GROUP BY 1 ORDER BY 1",
        {**params, "b": bucket}).fetchall()
    return {"points": [[int(t), v, lo, hi, int(n)] for t, v, lo, hi, n in rows],
            "downsampled": True, "bucket_us": bucket, "unit": unit or ""}


def closed_alerts(conn: duckdb.DuckDBPyConnection, *, patient_id: str | None,
                  priority: str | None, since_us: int | None, limit: int) -> list[dict[str, Any]]:
    """Resolved alerts, newest first (open ones come from the engine)."""
    if not has_table(conn, "alerts"):
        return []
    frame = sql_frame(
        conn,
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state = 'resolved'"
        " AND ($p::VARCHAR IS NULL OR patient_id = $p)"
        " AND ($r::VARCHAR IS NULL OR priority = $r)"
        " AND ($s::BIGINT IS NULL OR opened_at >= make_timestamp($s::BIGINT)::TIMESTAMPTZ)"
        " ORDER BY opened_at DESC LIMIT $n",
        {"p": patient_id, "r": priority, "s": since_us, "n": limit},
    )
    return frame.to_dicts()


def timeline(conn: duckdb.DuckDBPyConnection, patient_id: str, since_us: int,
             limit: int) -> list[dict[str, Any]]:
    """Alert events (opened, acknowledged, escalated, resolved...) and audited actions of one
    patient since ``since_us``, newest first."""
    parts: list[dict[str, Any]] = []
    if has_table(conn, "alert_events"):
        rows = conn.execute(
            "SELECT epoch_us(event_at), kind, alert_id, rule_id, side, priority, actor, role,"
            " value, limit_value, plan_version, detail FROM alert_events WHERE patient_id = ?"
            " AND event_at >= make_timestamp(?::BIGINT)::TIMESTAMPTZ"
            " ORDER BY event_at DESC, event_id DESC LIMIT ?",
            [patient_id, since_us, limit]).fetchall()
        keys = ("at_us", "kind", "alert_id", "rule_id", "side", "priority", "actor", "role",
                "value", "limit", "plan_version", "detail")
        parts += [{"source": "alert", **dict(zip(keys, r, strict=True))} for r in rows]
    rows = conn.execute(
        "SELECT at_us, action, target, username, role, detail FROM audit_log"
        " WHERE patient_id = ? AND at_us >= ? ORDER BY audit_id DESC LIMIT ?",
        [patient_id, since_us, limit]).fetchall()
    parts += [{"source": "audit", "at_us": t, "kind": a, "target": tg, "actor": u, "role": r,
               "detail": d} for t, a, tg, u, r, d in rows]
    parts.sort(key=lambda x: -int(x["at_us"]))
    return parts[:limit]

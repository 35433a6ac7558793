"""The audit log: who acknowledged, snoozed, resolved or changed what, and when.

Append-only (``audit_log``, :mod:`dashboard.schema`). Functions run on the store's thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

__all__ = ["AuditEntry", "list_audit", "record"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action by one person.

    Attributes:
        at_us: When (UTC microseconds).
        username: Who.
        role: In which role.
        action: ``acknowledge``, ``snooze``, ``resolve``, ``care_plan.set``,
            ``care_plan.template``, ``observation``, ``device.register``, ``device.assign``,
            ``device.unassign``, ``user.add``, ``user.passwd``, ``login``, ``logout``.
        patient_id: The patient concerned, if any.
        target: What was acted on (alert id, ``P001 v3``, device id, user name).
        detail: Note, reason, duration.
    """

    at_us: int
    username: str
    role: str
    action: str
    patient_id: str | None
    target: str
    detail: str = ""


def record(conn: duckdb.DuckDBPyConnection, entry: AuditEntry) -> int:
    """Append one entry; returns its ``audit_id``."""
    rows = conn.execute(
        "INSERT INTO audit_log (at_us, username, role, action, patient_id, target, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING audit_id",
        [entry.at_us, entry.username, entry.role, entry.action, entry.patient_id, entry.target,
         entry.detail],
    ).fetchall()
    return int(rows[0][0])


def list_audit(conn: duckdb.DuckDBPyConnection, *, username: str | None = None,
               action: str | None = None, patient_id: str | None = None,
               before_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Entries, newest first, optionally filtered; page with ``before_id``."""
    rows = conn.execute(
        "SELECT audit_id, at_us, username, role, action, patient_id, target, detail"
        " FROM audit_log WHERE ($u::VARCHAR IS NULL OR username = $u)"
        " AND ($a::VARCHAR IS NULL OR action = $a) AND ($p::VARCHAR IS NULL OR patient_id = $p)"
        " AND ($b::BIGINT IS NULL OR audit_id < $b) ORDER BY audit_id DESC LIMIT $n",
        {"u": username, "a": action, "p": patient_id, "b": before_id, "n": limit},
    ).fetchall()
    keys = ("audit_id", "at_us", "username", "role", "action", "patient_id", "target", "detail")
    return [dict(zip(keys, r, strict=True)) for r in rows]

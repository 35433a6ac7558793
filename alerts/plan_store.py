"""Care plans in DuckDB: every version kept, none overwritten; and the coordinator API.

Functions taking a connection run on the store's thread (``await store.call(fn, ...)``).
:class:`CarePlans` is the Python API the dashboard and the command line use::

    plans = CarePlans(store)
    plan = await plans.apply_template("P003", "t1d-cgm", author="dr.lee", reason="admitted")
    await plans.set("P003", toml_text, author="dr.lee", reason="night low 60")
    history = await plans.history("P003")

A new version is validated first (:class:`~alerts.errors.CarePlanError` names the rule and
field) and numbered in the same transaction that stores it. The engine picks new versions up
on its next :meth:`~alerts.engine.AlertEngine.sync`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import duckdb

from alerts.errors import CarePlanError, PlanNotFound
from alerts.plans import (
    CarePlan,
    check_patient_id,
    iso_utc,
    merge_templates,
    parse_plan_document,
    parse_plan_text,
)
from pipeline.registry import transaction
from pipeline.store import DuckDbStore

__all__ = [
    "CarePlans",
    "current_plan",
    "insert_plan",
    "load_current_plans",
    "plan_history",
    "plan_version",
]

Conn = duckdb.DuckDBPyConnection
_COLUMNS = "plan_id, patient_id, version, epoch_us(created_at), author, reason, template, body"


def _plan(row: tuple[Any, ...]) -> CarePlan:
    _, patient, version, created, author, reason, template, body = row
    settings, rules = parse_plan_document(json.loads(body), f"care plan {patient} v{version}")
    return CarePlan(patient, int(version), int(created), author, reason, template, settings,
                    rules)


def insert_plan(conn: Conn, patient_id: str, document: Mapping[str, Any], author: str,
                reason: str, template: str, created_at_us: int) -> CarePlan:
    """Validate ``document`` and store it as the patient's next version."""
    check_patient_id(patient_id)
    if not author.strip():
        raise CarePlanError("author: expected who makes this version")
    if not reason.strip():
        raise CarePlanError("reason: expected why this version is made")
    settings, rules = parse_plan_document(document, f"care plan for {patient_id}")
    body = json.dumps({"plan": settings.to_doc(), "rule": [dict(r.doc) for r in rules]},
                      sort_keys=False)
    with transaction(conn):
        rows = conn.execute("SELECT coalesce(max(version), 0) FROM care_plans WHERE patient_id = ?",
                            [patient_id]).fetchall()
        version = int(rows[0][0]) + 1
        conn.execute(
            "INSERT INTO care_plans (patient_id, version, created_at, author, reason, template,"
            " body) VALUES (?, ?, make_timestamp(?::BIGINT)::TIMESTAMPTZ, ?, ?, ?, ?)",
            [patient_id, version, created_at_us, author, reason, template, body],
        ).fetchall()
    return CarePlan(patient_id, version, created_at_us, author, reason, template, settings, rules)


def current_plan(conn: Conn, patient_id: str) -> CarePlan | None:
    """The newest version, or ``None`` when the patient has no plan."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM care_plans WHERE patient_id = ? "
                        "ORDER BY version DESC LIMIT 1", [patient_id]).fetchall()
    return _plan(rows[0]) if rows else None


def plan_version(conn: Conn, patient_id: str, version: int) -> CarePlan:
    """One stored version; :class:`PlanNotFound` when it does not exist."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM care_plans WHERE patient_id = ? AND version = ?",
                        [patient_id, version]).fetchall()
    if not rows:
        raise PlanNotFound(f"care plan: {patient_id} has no version {version}")
    return _plan(rows[0])


def plan_history(conn: Conn, patient_id: str) -> list[dict[str, Any]]:
    """Every version, oldest first: version, created_at, author, reason, template, rules."""
    rows = conn.execute(
        "SELECT version, epoch_us(created_at), author, reason, template, body FROM care_plans "
        "WHERE patient_id = ? ORDER BY version", [patient_id]).fetchall()
    return [
        {"version": int(v), "created_at": iso_utc(int(t)), "author": a, "reason": r,
         "template": tpl, "rules": [x.get("id") for x in json.loads(body).get("rule", [])]}
        for v, t, a, r, tpl, body in rows
    ]  # fmt: skip


def load_current_plans(conn: Conn, after_plan_id: int = 0) -> tuple[list[CarePlan], int]:
    """The newest version of every patient that has a version stored after ``after_plan_id``,
    and the highest ``plan_id`` seen (pass it back next time)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM care_plans WHERE patient_id IN (SELECT patient_id FROM "
        "care_plans WHERE plan_id > ?) QUALIFY row_number() OVER (PARTITION BY patient_id "
        "ORDER BY version DESC) = 1", [after_plan_id]).fetchall()
    top = conn.execute("SELECT coalesce(max(plan_id), 0) FROM care_plans").fetchall()
    return [_plan(r) for r in rows], int(top[0][0])


class CarePlans:
    """Coordinator API over a store (async; every call runs on the store's thread).

    Args:
        store: An open :class:`~pipeline.store.DuckDbStore` whose alerting tables exist
            (:func:`alerts.schema.migrate`).
        clock_us: Wall clock, UTC microseconds (injectable).
    """

    def __init__(self, store: DuckDbStore,
                 clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.store = store
        self.clock_us = clock_us

    async def current(self, patient_id: str) -> CarePlan:
        """The patient's current plan; :class:`PlanNotFound` when there is none."""
        plan = await self.store.call(current_plan, check_patient_id(patient_id))
        if plan is None:
            raise PlanNotFound(f"care plan: {patient_id} has no care plan (apply a template "
                               "or set one)")
        return plan

    async def version(self, patient_id: str, version: int) -> CarePlan:
        """One stored version."""
        return await self.store.call(plan_version, check_patient_id(patient_id), version)

    async def history(self, patient_id: str) -> list[dict[str, Any]]:
        """Every version of the patient's plan, oldest first."""
        return await self.store.call(plan_history, check_patient_id(patient_id))

    async def set(self, patient_id: str, document: Mapping[str, Any] | str, *, author: str,
                  reason: str, template: str = "") -> CarePlan:
        """Store a new version from a plan document (a mapping, or TOML text)."""
        if isinstance(document, str):
            settings, rules = parse_plan_text(document, f"care plan for {patient_id}")
            document = {"plan": settings.to_doc(), "rule": [dict(r.doc) for r in rules]}
        return await self.store.call(insert_plan, patient_id, document, author, reason,
                                     template, self.clock_us())

    async def apply_template(self, patient_id: str, template: str | Sequence[str], *,
                             author: str, reason: str) -> CarePlan:
        """Store a new version made from one shipped template, or several merged
        (:func:`alerts.plans.merge_templates`)."""
        names = [template] if isinstance(template, str) else list(template)
        tpl = merge_templates(names)
        return await self.set(patient_id, dict(tpl.document), author=author, reason=reason,
                              template=tpl.name)

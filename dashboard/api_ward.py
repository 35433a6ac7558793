"""Ward routes: patients with latest vitals and NEWS2, reading history, alerts and actions,
timeline, the metric catalogue and live-feed counters. Every route needs a login."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from dashboard.auth import current_user, require
from dashboard.errors import DashboardError
from dashboard.models import ID_PATTERN, MAX_US, AckRequest, ObservationRequest, SnoozeRequest
from dashboard.queries import closed_alerts, history, timeline
from dashboard.users import User
from pipeline.catalogue import catalogue

__all__ = ["NotFound", "UnknownMetric", "router", "sort_key"]

router = APIRouter(prefix="/api", tags=["ward"])

PatientId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
Viewer = Annotated[User, Depends(current_user)]
Actor = Annotated[User, Depends(require("act"))]
PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
BAND_ORDER = {"high": 0, "medium": 1, "low-medium": 2, "low": 3}
HOUR_US = 3_600_000_000


class NotFound(DashboardError):
    """The patient or resource does not exist (HTTP 404)."""


class UnknownMetric(DashboardError):
    """The metric is not in the catalogue (HTTP 422)."""


def sort_key(patient: dict[str, Any], alerts: dict[str, dict[str, Any]],
             now_us: int) -> tuple[int, int, float, str]:
    """Ward order: active alert priority, then NEWS2 band, then staleness (oldest first)."""
    prios = [PRIORITY_ORDER.get(alerts[a]["priority"], 3) for a in patient["alerts"]
             if a in alerts]
    news2 = patient.get("news2") or {}
    times = [v["t_us"] for v in patient["vitals"].values()]
    age = (now_us - max(times)) if times else float("inf")
    return (min(prios, default=4), BAND_ORDER.get(news2.get("risk_band", ""), 4), -age,
            patient["patient_id"])


def _ctx(request: Request) -> Any:
    return request.app.state.ctx


@router.get("/patients", summary="Patients with latest vitals, NEWS2 and open alerts, "
            "in ward order")
async def patients(request: Request, user: Viewer) -> dict[str, Any]:
    """Ward grid: sorted by alert priority, NEWS2 band, then staleness."""
    feed = _ctx(request).feed
    alerts = {a["alert_id"]: a for a in feed.alerts()}
    now = feed.clock_us()
    rows = sorted(feed.patients(), key=lambda p: sort_key(p, alerts, now))
    return {"server_us": now, "seq": feed.seq, "patients": rows, "alerts": list(alerts.values())}


@router.get("/patients/{patient_id}", summary="One patient: vitals, NEWS2, alerts, plan")
async def patient(request: Request, patient_id: PatientId, user: Viewer) -> dict[str, Any]:
    """Latest state of one patient."""
    ctx = _ctx(request)
    for p in ctx.feed.patients():
        if p["patient_id"] == patient_id:
            return {**p, "open_alerts": ctx.desk.open_alerts(patient_id)}
    raise NotFound(f"patient_id: no patient {patient_id!r} (no readings, assignment or plan)")


@router.get("/patients/{patient_id}/readings", summary="Reading history of one metric "
            "(time-bounded, downsampled for long ranges)")
async def readings(
    request: Request, patient_id: PatientId, user: Viewer,
    metric: Annotated[str, Query(min_length=1, max_length=64)],
    start_us: Annotated[int | None, Query(ge=0, le=MAX_US)] = None,
    end_us: Annotated[int | None, Query(ge=0, le=MAX_US)] = None,
    max_points: Annotated[int | None, Query(ge=10, le=5000)] = None,
) -> dict[str, Any]:
    """Points ``[t_us, value, min, max, count]`` between ``start_us`` (default 1 h ago) and
    ``end_us`` (default now)."""
    ctx = _ctx(request)
    if metric not in catalogue():
        raise UnknownMetric(f"metric: unknown metric {metric!r} "
                            f"(known: {', '.join(catalogue().names)})")
    end = end_us if end_us is not None else ctx.feed.clock_us()
    start = start_us if start_us is not None else max(end - HOUR_US, 0)
    if start >= end:
        raise UnknownMetric(f"start_us: {start} must be before end_us {end}")
    points = max_points or ctx.config.max_points
    out = await ctx.store.call(history, patient_id, metric, start, end, points)
    return {"patient_id": patient_id, "metric": metric, "start_us": start, "end_us": end, **out}


@router.get("/patients/{patient_id}/timeline", summary="Alert events and audited actions "
            "of one patient")
async def patient_timeline(
    request: Request, patient_id: PatientId, user: Viewer,
    since_us: Annotated[int | None, Query(ge=0, le=MAX_US)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Newest first: opened, acknowledged, escalated, resolved, snoozed, plan changes."""
    ctx = _ctx(request)
    since = since_us if since_us is not None else ctx.feed.clock_us() - 24 * HOUR_US
    items = await ctx.store.call(timeline, patient_id, max(since, 0), limit)
    return {"patient_id": patient_id, "items": items}


@router.post("/patients/{patient_id}/observations", summary="Manual NEWS2 entry "
             "(consciousness, supplemental oxygen)")
async def observation(request: Request, patient_id: PatientId, body: ObservationRequest,
                      user: Actor) -> dict[str, Any]:
    """Record ACVPU and/or supplemental oxygen; NEWS2 is re-scored at once."""
    events = await _ctx(request).desk.observation(user, patient_id, body.consciousness,
                                                  body.supplemental_oxygen)
    return {"events": events}


@router.get("/alerts", summary="Alerts with filters")
async def alerts(
    request: Request, user: Viewer,
    state: Literal["open", "resolved", "all"] = "open",
    patient_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    priority: Literal["high", "medium", "low", "info"] | None = None,
    category: Literal["physiological", "technical"] | None = None,
    since_us: Annotated[int | None, Query(ge=0, le=MAX_US)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Open alerts come from the engine; resolved ones from the store."""
    ctx = _ctx(request)
    found: list[dict[str, Any]] = []
    if state in ("open", "all"):
        found += [a for a in ctx.desk.open_alerts(patient_id)
                  if (priority is None or a["priority"] == priority)
                  and (since_us is None or a["opened_at_us"] >= since_us)]
    if state in ("resolved", "all"):
        found += await ctx.store.call(closed_alerts, patient_id=patient_id, priority=priority,
                                      since_us=since_us, limit=limit)
    if category is not None:
        found = [a for a in found if a["category"] == category]
    return {"alerts": found[:limit]}


@router.post("/alerts/acknowledge", summary="Acknowledge an alert")
async def acknowledge(request: Request, body: AckRequest, user: Actor) -> dict[str, Any]:
    """Seen by a person: the alert stops notifying; a latched one resolves."""
    return {"event": await _ctx(request).desk.acknowledge(user, body.alert_id, body.note)}


@router.post("/alerts/resolve", summary="Resolve a latched alert")
async def resolve(request: Request, body: AckRequest, user: Actor) -> dict[str, Any]:
    """Close an alert whose condition cleared (409 while it still holds)."""
    return {"event": await _ctx(request).desk.resolve(user, body.alert_id, body.note)}


@router.post("/alerts/snooze", summary="Snooze patient + rule + side")
async def snooze(request: Request, body: SnoozeRequest, user: Actor) -> dict[str, Any]:
    """No re-notification for ``duration_s`` (capped per priority; broken by a worse level)."""
    event = await _ctx(request).desk.snooze(
        user, alert_id=body.alert_id, patient_id=body.patient_id, rule_id=body.rule_id,
        side=body.side, duration_s=body.duration_s, reason=body.reason)
    return {"event": event}


@router.get("/metrics", summary="The metric catalogue (labels and canonical units)")
async def metrics(user: Viewer) -> dict[str, Any]:
    """Names, labels and units for charts and tiles."""
    return {"metrics": [{"name": m.name, "label": m.label, "unit": m.canonical_unit}
                        for m in catalogue().metrics]}


@router.get("/live/stats", summary="Live feed counters (clients, drops, resyncs)")
async def live_stats(request: Request, user: Viewer) -> dict[str, Any]:
    """Connected clients, sequence number, dropped messages, resyncs."""
    return dict(_ctx(request).feed.client_stats())

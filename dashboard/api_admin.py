"""Devices, assignments, users and the audit log. Reading devices, assignments and the audit
log needs a login; changing devices, assignments and users needs the admin role. Every change
is audited."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from dashboard.audit import list_audit
from dashboard.auth import current_user, require
from dashboard.models import (
    ID_PATTERN,
    AssignRequest,
    DeviceRequest,
    NewUserRequest,
    PasswordRequest,
    UnassignRequest,
)
from dashboard.users import User, add_user, hash_password, list_users, set_password_hash
from pipeline import registry

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["admin"])

Viewer = Annotated[User, Depends(current_user)]
Admin = Annotated[User, Depends(require("admin"))]


def _rows(frame: Any) -> list[dict[str, Any]]:
    out = []
    for row in frame.iter_rows(named=True):
        out.append({k: (int(v.timestamp() * 1_000_000) if hasattr(v, "timestamp") else v)
                    for k, v in row.items()})
    return out


@router.get("/devices", summary="Devices with their current patient")
async def devices(request: Request, user: Viewer) -> dict[str, Any]:
    """Every registered device (times in UTC microseconds)."""
    store = request.app.state.ctx.store
    return {"devices": _rows(await store.call(lambda c: registry.list_devices(c)))}


@router.get("/assignments", summary="Device assignments (time-bounded)")
async def assignments(
    request: Request, user: Viewer,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
) -> dict[str, Any]:
    """All assignments, or those of one device."""
    store = request.app.state.ctx.store
    return {"assignments": _rows(await store.call(registry.list_assignments, device_id))}


@router.post("/devices", summary="Register or relabel a device (admin)")
async def register(request: Request, body: DeviceRequest, user: Admin) -> dict[str, Any]:
    """Idempotent; returns whether the device was new."""
    ctx = request.app.state.ctx
    new = await ctx.store.call(registry.register_device, body.device_id, body.kind, body.label)
    await ctx.desk.audit(user, "device.register", body.device_id, None,
                         f"kind={body.kind} label={body.label}")
    return {"device_id": body.device_id, "new": new}


@router.post("/assignments", summary="Assign a device to a patient (admin)")
async def assign(request: Request, body: AssignRequest, user: Admin) -> dict[str, Any]:
    """422 when the interval overlaps another assignment of the device."""
    ctx = request.app.state.ctx
    assignment_id = await ctx.store.call(
        registry.assign, body.device_id, body.patient_id, body.valid_from, body.valid_to,
        created_by=user.username, note=body.note)
    await ctx.registry_changed()
    ctx.feed.add_patients([body.patient_id])
    await ctx.desk.audit(user, "device.assign", body.device_id, body.patient_id, body.note)
    return {"assignment_id": assignment_id}


@router.post("/assignments/end", summary="End a device's open assignment (admin)")
async def unassign(request: Request, body: UnassignRequest, user: Admin) -> dict[str, Any]:
    """422 when the device has no open assignment."""
    ctx = request.app.state.ctx
    closed = await ctx.store.call(registry.unassign, body.device_id, body.at)
    await ctx.registry_changed()
    await ctx.desk.audit(user, "device.unassign", body.device_id, None, f"assignment {closed}")
    return {"assignment_id": closed}


@router.get("/audit", summary="The audit log, newest first")
async def audit(
    request: Request, user: Viewer,
    username: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    patient_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Who did what and when; page with ``before_id``."""
    store = request.app.state.ctx.store
    return {"entries": await store.call(list_audit, username=username, action=action,
                                        patient_id=patient_id, before_id=before_id, limit=limit)}


@router.get("/users", summary="Dashboard users (admin)")
async def users(request: Request, user: Admin) -> dict[str, Any]:
    """Names and roles."""
    return {"users": await request.app.state.ctx.store.call(list_users)}


@router.post("/users", summary="Add a user (admin)")
async def new_user(request: Request, body: NewUserRequest, user: Admin) -> dict[str, Any]:
    """422 when the name is taken."""
    ctx = request.app.state.ctx
    digest = await asyncio.to_thread(hash_password, body.password)
    made = await ctx.store.call(add_user, body.username, body.role, digest)
    await ctx.desk.audit(user, "user.add", body.username, None, f"role={body.role}")
    return {"user": made.to_json()}


@router.put("/users/{username}/password", summary="Set a user's password (admin)")
async def set_password(
    request: Request, body: PasswordRequest, user: Admin,
    username: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{1,31}$")],
) -> dict[str, Any]:
    """Ends every session of that user."""
    ctx = request.app.state.ctx
    digest = await asyncio.to_thread(hash_password, body.password)
    await ctx.store.call(set_password_hash, username, digest)
    ctx.sessions.forget_user(username)
    await ctx.desk.audit(user, "user.passwd", username)
    return {"ok": True}

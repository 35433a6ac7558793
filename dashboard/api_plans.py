"""Care-plan routes: read any version and the history (every role); write a new version or
apply templates (coordinator, admin). A plan that does not validate is a 422 naming the rule
and field; nothing is stored then."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from alerts.errors import CarePlanError
from alerts.plans import list_templates, load_template, parse_plan_document
from dashboard.auth import current_user, require
from dashboard.models import ID_PATTERN, PlanRequest, TemplateRequest
from dashboard.users import User

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["care plans"])

PatientId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
Viewer = Annotated[User, Depends(current_user)]
Planner = Annotated[User, Depends(require("plans"))]


def _plans(request: Request) -> Any:
    return request.app.state.ctx.desk.plans


@router.get("/care-plans/templates", summary="Shipped care-plan templates")
async def templates(user: Viewer) -> dict[str, Any]:
    """Name, description and document of every template."""
    out = []
    for name in list_templates():
        t = load_template(name)
        out.append({"name": t.name, "description": t.description, "document": t.document})
    return {"templates": out}


@router.get("/patients/{patient_id}/care-plan", summary="The care plan in force")
async def plan(request: Request, patient_id: PatientId, user: Viewer) -> dict[str, Any]:
    """Current version: metadata and document (404 without a plan)."""
    found = await _plans(request).current(patient_id)
    return dict(found.to_json())


@router.get("/patients/{patient_id}/care-plan/history", summary="Every version of the plan")
async def plan_history(request: Request, patient_id: PatientId, user: Viewer) -> dict[str, Any]:
    """Versions oldest first: who, when, why, template, rules."""
    return {"patient_id": patient_id, "versions": await _plans(request).history(patient_id)}


@router.get("/patients/{patient_id}/care-plan/versions/{version}",
            summary="One stored version")
async def plan_version(request: Request, patient_id: PatientId,
                       version: Annotated[int, Path(ge=1, le=1_000_000)],
                       user: Viewer) -> dict[str, Any]:
    """A past (or the current) version."""
    return dict((await _plans(request).version(patient_id, version)).to_json())


def _validate(document: dict[str, Any], patient_id: str) -> None:
    """Plan validation, with malformed JSON shapes reported as plan errors."""
    try:
        parse_plan_document(document, f"care plan for {patient_id}", allow_template=False)
    except CarePlanError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CarePlanError(f"care plan for {patient_id}: document: malformed ({exc})") from exc


@router.put("/patients/{patient_id}/care-plan", summary="Store a new plan version")
async def set_plan(request: Request, patient_id: PatientId, body: PlanRequest,
                   user: Planner) -> dict[str, Any]:
    """Validate, store as the next version, put in force, audit."""
    _validate(body.document, patient_id)
    desk = request.app.state.ctx.desk
    made = await desk.set_plan(user, patient_id, body.document, body.reason)
    return dict(made.to_json())


@router.post("/patients/{patient_id}/care-plan/template",
             summary="Store a new plan version made from templates")
async def apply_template(request: Request, patient_id: PatientId, body: TemplateRequest,
                         user: Planner) -> dict[str, Any]:
    """Merge the named templates into the next version, put in force, audit."""
    desk = request.app.state.ctx.desk
    made = await desk.apply_template(user, patient_id, body.templates, body.reason)
    return dict(made.to_json())


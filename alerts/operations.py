"""Care-plan operations for the command line and the service's control socket.

Same contract as :data:`vitalwire.operations.OPERATIONS`: each takes a context with ``store``
(an open :class:`~pipeline.store.DuckDbStore`) and ``clock_us``, and JSON-friendly keyword
arguments, and returns JSON-friendly results. Merge :data:`OPERATIONS` into the service's table
so that ``vitalwire careplan`` works while a service holds the database; the engine picks new
versions up on its next sync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from alerts.plan_store import CarePlans
from alerts.plans import list_templates, load_template, to_toml
from alerts.schema import migrate
from pipeline.store import DuckDbStore

__all__ = ["OPERATIONS", "OperationContext"]


class OperationContext(Protocol):
    """What an operation needs (``vitalwire.operations.DataContext`` has it)."""

    @property
    def store(self) -> DuckDbStore: ...

    @property
    def clock_us(self) -> Callable[[], int]: ...


async def _plans(ctx: OperationContext) -> CarePlans:
    await ctx.store.call(migrate)
    return CarePlans(ctx.store, ctx.clock_us)


def _shown(plan: Any) -> dict[str, Any]:
    out: dict[str, Any] = plan.to_json()
    header = [
        f"care plan of {plan.patient_id}, version {plan.version}",
        f"made {out['created_at']} by {plan.author}"
        + (f" from template {plan.template}" if plan.template else ""),
        f"reason: {plan.reason}",
    ]
    out["toml"] = to_toml(plan.document(), header)
    return out


async def careplan_show(ctx: OperationContext, patient: str,
                        version: int | None = None) -> dict[str, Any]:
    """The current plan (or one version): metadata, document and TOML text."""
    plans = await _plans(ctx)
    plan = await (plans.current(patient) if version is None else plans.version(patient, version))
    return _shown(plan)


async def careplan_set(ctx: OperationContext, patient: str, text: str, author: str,
                       reason: str) -> dict[str, Any]:
    """Store a new version from TOML text."""
    plans = await _plans(ctx)
    return _shown(await plans.set(patient, text, author=author, reason=reason))


async def careplan_apply_template(ctx: OperationContext, patient: str, templates: list[str],
                                  author: str, reason: str) -> dict[str, Any]:
    """Store a new version made from one or more templates."""
    plans = await _plans(ctx)
    return _shown(await plans.apply_template(patient, templates, author=author, reason=reason))


async def careplan_history(ctx: OperationContext, patient: str) -> list[dict[str, Any]]:
    """Every version, oldest first."""
    plans = await _plans(ctx)
    return await plans.history(patient)


async def careplan_templates(ctx: OperationContext) -> list[dict[str, Any]]:
    """The shipped templates."""
    out = []
    for name in list_templates():
        tpl = load_template(name)
        out.append({"template": name, "rules": len(tpl.rules), "description": tpl.description})
    return out


OPERATIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "careplan.show": careplan_show,
    "careplan.set": careplan_set,
    "careplan.apply_template": careplan_apply_template,
    "careplan.history": careplan_history,
    "careplan.templates": careplan_templates,
}

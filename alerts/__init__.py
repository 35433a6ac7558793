"""Care plans and the alert engine: per-patient thresholds, NEWS2, alert lifecycle.

* :class:`AlertEngine` evaluates normalized batches (vectorized) against every patient's care
  plan and returns :class:`AlertEvent` records; its state survives restarts
  (:meth:`AlertEngine.sync`, :meth:`AlertEngine.load`).
* :class:`CarePlans` is the coordinators' API: versioned plans made from templates.
* ``alerts/cli.py`` adds ``vitalwire news2``, ``vitalwire careplan`` and ``vitalwire evaluate``.

See ``docs/alerts.md``.
"""

from alerts.config import AlertConfig, PriorityPolicy
from alerts.engine import AlertEngine
from alerts.errors import (
    AlertActionError,
    AlertError,
    CarePlanError,
    LifecycleError,
    PlanNotFound,
)
from alerts.lifecycle import Alert, AlertEvent, Snooze
from alerts.news2 import score_observation
from alerts.plan_store import CarePlans
from alerts.plans import CarePlan, list_templates, load_template, merge_templates
from alerts.schema import migrate

__all__ = [
    "Alert",
    "AlertActionError",
    "AlertConfig",
    "AlertEngine",
    "AlertError",
    "AlertEvent",
    "CarePlan",
    "CarePlanError",
    "CarePlans",
    "LifecycleError",
    "PlanNotFound",
    "PriorityPolicy",
    "Snooze",
    "list_templates",
    "load_template",
    "merge_templates",
    "migrate",
    "score_observation",
]

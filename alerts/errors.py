"""Alerting errors.

::

    AlertError (a pipeline.errors.PipelineError)
    ├── CarePlanError     a care plan, rule or template is invalid (names the rule and field)
    ├── PlanNotFound      no care plan (or no such version / template) for the request
    ├── LifecycleError    an alert transition that the transition table does not allow
    └── AlertActionError  an acknowledge or snooze request was refused (unknown alert, cap)

``CarePlanError`` is also a :class:`pipeline.errors.ConfigError`, so every command line and
service path that reports configuration errors reports it the same way.
"""

from __future__ import annotations

from pipeline.errors import ConfigError, PipelineError

__all__ = [
    "AlertActionError",
    "AlertError",
    "CarePlanError",
    "LifecycleError",
    "PlanNotFound",
]


class AlertError(PipelineError):
    """Base of every alerting error."""


class CarePlanError(AlertError, ConfigError):
    """A care plan, rule or template is invalid; the message names the rule and field."""


class PlanNotFound(AlertError):
    """The patient has no care plan, or the version or template asked for does not exist."""


class LifecycleError(AlertError):
    """A transition the lifecycle table does not allow (for example acknowledging a resolved
    alert)."""


class AlertActionError(AlertError):
    """A person's action was refused: unknown alert, snooze beyond the cap, bad scope."""

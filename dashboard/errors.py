"""Dashboard errors.

::

    DashboardError (a pipeline.errors.PipelineError)
    ├── UserError        a user name, role or password was refused (names the field)
    ├── AuthError        not logged in, session expired, or wrong password (HTTP 401)
    ├── Forbidden        logged in, but the role may not do this (HTTP 403)
    └── CsrfError        a cookie-authenticated change without a valid CSRF token (HTTP 403)

Errors of the alerting package (care plans, lifecycle) and of the registry are mapped to HTTP
statuses where they reach the API (:mod:`dashboard.app`).
"""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["AuthError", "CsrfError", "DashboardError", "Forbidden", "UserError"]


class DashboardError(PipelineError):
    """Base of every dashboard error."""


class UserError(DashboardError):
    """A user name, role or password was refused; the message names the field."""


class AuthError(DashboardError):
    """Authentication failed or is missing."""


class Forbidden(DashboardError):
    """The user's role does not allow the action."""


class CsrfError(DashboardError):
    """A state-changing request authenticated by cookie lacks the session's CSRF token."""

"""Request bodies of the API, validated by pydantic (a bad field is a 422 naming it).

Care-plan documents are validated by :mod:`alerts.plans` after this first check, so their
errors name the rule and field too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ID_PATTERN",
    "MAX_US",
    "AckRequest",
    "AssignRequest",
    "DeviceRequest",
    "LoginRequest",
    "NewUserRequest",
    "ObservationRequest",
    "PasswordRequest",
    "PlanRequest",
    "SnoozeRequest",
    "TemplateRequest",
    "UnassignRequest",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""Patient and device identifiers (as :func:`alerts.plans.check_patient_id`)."""
MAX_US = 4_102_444_800_000_000
"""2100-01-01 in UTC microseconds: the latest time a query may name."""
LONG_SNOOZE_S = 900.0
"""Snoozes longer than this need a reason."""

Ident = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
Note = Annotated[str, Field(max_length=500)]
AlertId = Annotated[str, Field(min_length=1, max_length=300)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    """Credentials; ``issue_token`` also returns a bearer token (API clients)."""

    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=256)]
    issue_token: bool = False


class AckRequest(_Body):
    """Acknowledge (or resolve) one alert."""

    alert_id: AlertId
    note: Note = ""


class SnoozeRequest(_Body):
    """Snooze by alert, or by patient + rule + side; long snoozes need a reason."""

    alert_id: AlertId | None = None
    patient_id: Ident | None = None
    rule_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] | None = None
    side: Literal["low", "high"] | None = None
    duration_s: Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
    reason: Note = ""

    @model_validator(mode="after")
    def _scope(self) -> SnoozeRequest:
        if self.alert_id is None and None in (self.patient_id, self.rule_id, self.side):
            raise ValueError("give alert_id, or patient_id, rule_id and side")
        if self.duration_s > LONG_SNOOZE_S and not self.reason.strip():
            raise ValueError(f"reason: required for snoozes longer than {LONG_SNOOZE_S:g} s")
        return self


class ObservationRequest(_Body):
    """A manual NEWS2 entry."""

    consciousness: Literal["A", "C", "V", "P", "U"] | None = None
    supplemental_oxygen: bool | None = None


class PlanRequest(_Body):
    """A new care-plan version: the document (``{"plan": {...}, "rule": [...]}``) and why."""

    document: dict[str, Any]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class TemplateRequest(_Body):
    """A new care-plan version from one or more shipped templates."""

    templates: Annotated[
        list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]],
        Field(min_length=1, max_length=4),
    ]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class DeviceRequest(_Body):
    """Register (or relabel) a device."""

    device_id: Ident
    kind: Annotated[str, Field(max_length=64)] = ""
    label: Annotated[str, Field(max_length=200)] = ""


class AssignRequest(_Body):
    """Assign a device to a patient over ``[valid_from, valid_to)`` (default: from now, open)."""

    device_id: Ident
    patient_id: Ident
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    note: Note = ""


class UnassignRequest(_Body):
    """End a device's open assignment at ``at`` (default now)."""

    device_id: Ident
    at: AwareDatetime | None = None


class NewUserRequest(_Body):
    """A new dashboard user."""

    username: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,31}$")]
    role: Literal["clinician", "coordinator", "admin"]
    password: Annotated[str, Field(min_length=8, max_length=256)]


class PasswordRequest(_Body):
    """A new password."""

    password: Annotated[str, Field(min_length=8, max_length=256)]

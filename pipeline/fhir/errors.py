"""FHIR export errors.

::

    PipelineError
    └── FhirError
        ├── FhirConfigError (also a pipeline ConfigError)  bad [fhir] config, key file, endpoint
        │                                                   or credentials: fails at start
        ├── MappingError          one reading cannot become an Observation (dead-lettered)
        └── DeliveryError         sending a Bundle failed
            ├── RetryableDelivery back off (or wait ``retry_after``) and send the same Bundle again
            ├── PermanentDelivery the server refused the content: dead-letter with its outcome
            └── AuthFailed        the server or token endpoint refused our credentials

``httpx`` exceptions are translated in :mod:`pipeline.fhir.client` and chained with ``from``.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ConfigError, PipelineError

__all__ = [
    "AuthFailed",
    "DeliveryError",
    "FhirConfigError",
    "FhirError",
    "MappingError",
    "PermanentDelivery",
    "RetryableDelivery",
]


class FhirError(PipelineError):
    """Base of every FHIR export error."""


class FhirConfigError(FhirError, ConfigError):
    """The FHIR configuration, a key file, the endpoint or the credentials are unusable."""


class MappingError(FhirError):
    """A reading cannot be mapped.

    Attributes:
        reason_code: Stable short code stored in the dead-letter table (``no_code``...).
    """

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class DeliveryError(FhirError):
    """Sending to the FHIR server failed.

    Attributes:
        status: HTTP status, or 0 when no response arrived.
        outcome: The OperationOutcome the server sent, if any.
    """

    def __init__(self, message: str, *, status: int = 0, outcome: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class RetryableDelivery(DeliveryError):
    """Transient: send again later.

    Attributes:
        retry_after: Seconds the server asked us to wait (``Retry-After``), or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        outcome: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, outcome=outcome)
        self.retry_after = retry_after


class PermanentDelivery(DeliveryError):
    """The server refused the content; sending it again will not help."""


class AuthFailed(DeliveryError):
    """The credentials were refused (after one token refresh)."""

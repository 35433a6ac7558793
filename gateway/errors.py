"""Gateway errors.

::

    GatewayError
    ├── ConfigError          bad configuration or device profile (permanent, fails at start)
    ├── DecodeError          one payload or reading cannot be decoded (permanent for that input)
    └── ReceiverError        a transport problem
        ├── RetryableError   worth another try after backoff (broker down, connection lost)
        └── PermanentError   retrying will not help (bad credentials, TLS misconfigured)

Library exceptions (paho, ssl, socket) are translated where they enter, chained with ``from``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "GatewayError",
    "PermanentError",
    "ReceiverError",
    "RetryableError",
]


class GatewayError(Exception):
    """Base of every gateway error."""


class ConfigError(GatewayError):
    """A configuration file, key or device profile is invalid."""


class DecodeError(GatewayError):
    """A payload or one reading in it cannot be decoded.

    Attributes:
        reason_code: Short stable code stored in quarantine (``malformed_json``...).
        field: The payload field at fault, or ``""`` when the whole payload is.
    """

    def __init__(self, reason_code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.field = field


class ReceiverError(GatewayError):
    """A transport problem in a receiver."""


class RetryableError(ReceiverError):
    """Transient: the caller backs off and tries again."""


class PermanentError(ReceiverError):
    """Retrying will not help; the caller stops and reports."""

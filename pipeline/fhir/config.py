"""Configuration of the FHIR export: endpoint, auth, bundles, retries and per-metric policy.

Every field has a named default, so ``FhirConfig()`` is a working setup with no EHR: the outbox
fills and nothing is sent. :func:`load_fhir_config` reads the ``[fhir]`` table of the service
config (see ``docs/fhir.md``) and names the key at fault when something is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pipeline.catalogue import Catalogue, catalogue
from pipeline.fhir.errors import FhirConfigError

__all__ = [
    "DEFAULT_BUNDLE_SIZE",
    "DEFAULT_DEVICE_SYSTEM",
    "DEFAULT_IDENTIFIER_SYSTEM",
    "DEFAULT_SCOPE",
    "AuthConfig",
    "FhirConfig",
    "MetricPolicy",
    "RetryPolicy",
    "load_fhir_config",
]

DEFAULT_BUNDLE_SIZE = 50
DEFAULT_IDENTIFIER_SYSTEM = "urn:vitalwire:fhir:observation"
DEFAULT_DEVICE_SYSTEM = "urn:vitalwire:fhir:device"
DEFAULT_SCOPE = "system/Observation.cs system/Device.cs system/Patient.rs"
DEFAULT_EXPORTED = ("glucose", "cgm_glucose")
"""Besides every vital-sign metric, these are exported by default."""

AuthKind = Literal["none", "bearer", "smart"]
ExportMode = Literal["all", "sample", "none"]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How the exporter authenticates.

    Attributes:
        kind: ``none``, ``bearer`` (a static token) or ``smart`` (SMART Backend Services).
        token: Bearer token (prefer ``token_file`` or ``token_env``: configs get copied around).
        token_file: File whose first line is the bearer token.
        token_env: Environment variable holding the bearer token.
        client_id: SMART client id registered with the EHR.
        private_key: PEM private key that signs the client assertion (RSA or EC P-384).
        alg: ``RS384`` or ``ES384``.
        kid: Key id of the registered public key (JWKS ``kid``).
        scope: Scopes requested with the token.
        token_url: Token endpoint; discovered from ``<url>/.well-known/smart-configuration``
            when empty.
    """

    kind: AuthKind = "none"
    token: str = ""
    token_file: Path | None = None
    token_env: str = ""
    client_id: str = ""
    private_key: Path | None = None
    alg: Literal["RS384", "ES384"] = "RS384"
    kid: str = ""
    scope: str = DEFAULT_SCOPE
    token_url: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("none", "bearer", "smart"):
            raise FhirConfigError(
                f"fhir.auth.kind: expected none, bearer or smart, got {self.kind!r}"
            )
        if self.kind == "bearer" and not (self.token or self.token_file or self.token_env):
            raise FhirConfigError("fhir.auth: kind 'bearer' needs token, token_file or token_env")
        if self.kind == "smart":
            if not self.client_id:
                raise FhirConfigError("fhir.auth.client_id: required for kind 'smart'")
            if self.private_key is None:
                raise FhirConfigError(
                    "fhir.auth.private_key: a PEM key file is required for 'smart'"
                )
            if self.alg not in ("RS384", "ES384"):
                raise FhirConfigError(f"fhir.auth.alg: expected RS384 or ES384, got {self.alg!r}")
            if self.token_url and urlsplit(self.token_url).scheme not in ("http", "https"):
                raise FhirConfigError(
                    f"fhir.auth.token_url: {self.token_url!r} is not an http(s) URL"
                )

    def bearer_token(self) -> str:
        """The static token, read from the file or environment when configured there."""
        if self.token:
            return self.token
        if self.token_file is not None:
            try:
                text = self.token_file.read_text(encoding="utf-8").strip().splitlines()
            except OSError as exc:
                raise FhirConfigError(
                    f"fhir.auth.token_file: cannot read {self.token_file}: {exc.strerror}"
                ) from exc
            if not text or not text[0].strip():
                raise FhirConfigError(f"fhir.auth.token_file: {self.token_file} is empty")
            return text[0].strip()
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise FhirConfigError(
                f"fhir.auth.token_env: environment variable {self.token_env!r} is unset"
            )
        return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between failed sends (exponential, with jitter, capped).

    Attributes:
        initial_s: First delay.
        max_s: Cap of the exponential delay.
        multiplier: Growth per consecutive failure.
        jitter: Fraction of the delay drawn at random (0 = none, 0.5 = between 50 % and 100 %).
        max_retry_after_s: Longest ``Retry-After`` honoured; longer requests wait this long.
    """

    initial_s: float = 1.0
    max_s: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_retry_after_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("initial_s", "max_s", "max_retry_after_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise FhirConfigError(f"fhir.retry.{name}: expected seconds > 0, got {v}")
        if self.max_s < self.initial_s:
            raise FhirConfigError(
                f"fhir.retry.max_s: {self.max_s} must be >= initial_s {self.initial_s}"
            )
        if not self.multiplier >= 1:
            raise FhirConfigError(f"fhir.retry.multiplier: expected >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise FhirConfigError(f"fhir.retry.jitter: expected 0..1, got {self.jitter}")

    def delay(self, failures: int, rand: float) -> float:
        """Delay after ``failures`` consecutive failures (>= 1); ``rand`` is uniform in [0, 1)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** max(failures - 1, 0))
        return base * (1 - self.jitter * rand)


@dataclass(frozen=True, slots=True)
class MetricPolicy:
    """Whether and how often one metric is exported.

    Attributes:
        mode: ``all`` (every reading), ``sample`` (the first reading of each device in each
            ``interval_s`` bucket: a downsampled series) or ``none``.
        interval_s: Bucket length for ``sample``.
    """

    mode: ExportMode = "all"
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("all", "sample", "none"):
            raise FhirConfigError(f"mode: expected all, sample or none, got {self.mode!r}")
        if self.mode == "sample" and not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise FhirConfigError(f"interval_s: 'sample' needs seconds > 0, got {self.interval_s}")


def default_policies(cat: Catalogue) -> dict[str, MetricPolicy]:
    """Every vital sign and glucose metric: every reading; the rest: not exported."""
    return {
        m.name: MetricPolicy("all" if m.fhir_profile or m.name in DEFAULT_EXPORTED else "none")
        for m in cat.metrics
    }


@dataclass(frozen=True, slots=True)
class FhirConfig:
    """The FHIR export.

    Attributes:
        url: FHIR base URL of the EHR, or ``None``: keep the outbox, send nothing.
        auth: Authentication.
        bundle_size: Observations per transaction Bundle.
        metrics: Per-metric policy overrides (metric -> policy); see :func:`default_policies`.
        identifier_system: System URI of our deterministic Observation identifiers.
        device_system: System URI of Device identifiers (our device ids).
        gateway_id: Identifier of this gateway, recorded as the gatewayDevice (PHD ``PhgDevice``).
        retry: Backoff policy.
        timeout_s: HTTP timeout per request.
        poll_s: How often an idle exporter looks at the outbox (it is also woken by commits).
        bp_pair_wait_s: How long a lone systolic or diastolic reading waits for its partner
            before it is sent as a panel with the other component absent.
        max_future_s: Clock skew allowed for ``effectiveDateTime`` ahead of now.
        require_capabilities: Refuse to start when the CapabilityStatement lacks transaction
            or conditional create (else warn).
        verify_tls: Verify the server's TLS certificate.
    """

    url: str | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    bundle_size: int = DEFAULT_BUNDLE_SIZE
    metrics: Mapping[str, MetricPolicy] = field(default_factory=dict)
    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM
    device_system: str = DEFAULT_DEVICE_SYSTEM
    gateway_id: str = "vitalwire-gateway"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 30.0
    poll_s: float = 2.0
    bp_pair_wait_s: float = 60.0
    max_future_s: float = 300.0
    require_capabilities: bool = True
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FhirConfigError(
                    f"fhir.url: {self.url!r} is not an http(s) URL such as https://ehr.example/fhir"
                )
            object.__setattr__(self, "url", self.url.rstrip("/"))
        if not 1 <= self.bundle_size <= 5000:
            raise FhirConfigError(f"fhir.bundle_size: expected 1..5000, got {self.bundle_size}")
        known = catalogue().names
        for name, policy in self.metrics.items():
            if name not in known:
                raise FhirConfigError(
                    f"fhir.metrics.{name}: unknown metric (known: {', '.join(known)})"
                )
            if not isinstance(policy, MetricPolicy):
                raise FhirConfigError(f"fhir.metrics.{name}: expected a MetricPolicy")
        for name in ("identifier_system", "device_system"):
            value = getattr(self, name)
            if ":" not in value or any(c.isspace() for c in value):
                raise FhirConfigError(f"fhir.{name}: {value!r} is not an absolute URI")
        if not self.gateway_id.strip():
            raise FhirConfigError("fhir.gateway_id: expected a non-empty identifier")
        for name in ("timeout_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise FhirConfigError(
                    f"fhir.{name}: expected seconds > 0, got {getattr(self, name)}"
                )
        for name in ("bp_pair_wait_s", "max_future_s"):
            if not getattr(self, name) >= 0:
                raise FhirConfigError(
                    f"fhir.{name}: expected seconds >= 0, got {getattr(self, name)}"
                )

    def policy(self, metric: str) -> MetricPolicy:
        """The export policy of ``metric`` (override, else the default)."""
        if metric in self.metrics:
            return self.metrics[metric]
        return default_policies(catalogue()).get(metric, MetricPolicy("none"))

    def policies(self) -> dict[str, MetricPolicy]:
        """Every catalogue metric's effective policy."""
        return {**default_policies(catalogue()), **self.metrics}

    def with_url(self, url: str | None) -> FhirConfig:
        """A copy with another endpoint (``vitalwire run --fhir-url``)."""
        return dataclasses.replace(self, url=url)


_SCALARS: dict[str, type | tuple[type, ...]] = {
    "url": str, "bundle_size": int, "identifier_system": str, "device_system": str,
    "gateway_id": str, "timeout_s": (int, float), "poll_s": (int, float),
    "bp_pair_wait_s": (int, float), "max_future_s": (int, float),
    "require_capabilities": bool, "verify_tls": bool,
}  # fmt: skip


def _check(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    bad_bool = (
        isinstance(value, bool)
        and kind is not bool
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    )
    if bad_bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FhirConfigError(f"{where}: expected {names}, got {value!r}")
    return float(value) if kind == (int, float) else value  # type: ignore[arg-type]


def _table(cls: type, table: Any, where: str, base_dir: Path) -> Any:
    if not isinstance(table, Mapping):
        raise FhirConfigError(f"{where}: expected a table")
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise FhirConfigError(
                f"{where}: unknown key {key!r} (expected one of: {', '.join(sorted(names))})"
            )
        if key in ("token_file", "private_key"):
            kwargs[key] = (base_dir / _check(value, str, f"{where}.{key}")).resolve()
        elif isinstance(value, bool) or not isinstance(value, int | float):
            kwargs[key] = _check(value, (str, bool), f"{where}.{key}")
        else:
            kwargs[key] = float(value)
    try:
        return cls(**kwargs)
    except FhirConfigError as exc:
        raise FhirConfigError(f"{where}: {exc}") from exc
    except TypeError as exc:
        raise FhirConfigError(f"{where}: {exc}") from exc


def load_fhir_config(
    table: Mapping[str, Any], where: str = "[fhir]", base_dir: Path = Path(".")
) -> FhirConfig:
    """Build a :class:`FhirConfig` from the ``[fhir]`` table of a TOML file.

    Args:
        table: The parsed table (``tomllib``), with optional sub-tables ``auth``, ``retry`` and
            ``metrics.<name>``.
        where: Prefix for messages (the file and section).
        base_dir: Folder relative key and token file paths are resolved against.

    Raises:
        FhirConfigError: Unknown key, wrong type or invalid value, naming it.
    """
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "auth":
            kwargs["auth"] = _table(AuthConfig, value, f"{where}.auth", base_dir)
        elif key == "retry":
            kwargs["retry"] = _table(RetryPolicy, value, f"{where}.retry", base_dir)
        elif key == "metrics":
            if not isinstance(value, Mapping):
                raise FhirConfigError(f"{where}.metrics: expected a table of metric tables")
            kwargs["metrics"] = {
                name: _table(MetricPolicy, sub, f"{where}.metrics.{name}", base_dir)
                for name, sub in value.items()
            }
        elif key in _SCALARS:
            kwargs[key] = _check(value, _SCALARS[key], f"{where}.{key}")
        else:
            known = sorted([*_SCALARS, "auth", "retry", "metrics"])
            raise FhirConfigError(
                f"{where}: unknown key {key!r} (expected one of: {', '.join(known)})"
            )
    if "bundle_size" in kwargs:
        kwargs["bundle_size"] = int(kwargs["bundle_size"])
    try:
        return FhirConfig(**kwargs)
    except FhirConfigError as exc:
        raise FhirConfigError(f"{where}: {exc}") from exc

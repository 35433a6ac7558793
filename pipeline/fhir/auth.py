"""Authentication to the EHR: none, a static bearer token, or SMART Backend Services.

SMART Backend Services (``docs/fhir.md`` §5): the token endpoint is discovered from
``<base>/.well-known/smart-configuration`` unless configured; each token request carries a
fresh client-assertion JWT signed with the registered key (RS384 or ES384, ``kid`` header,
``iss`` = ``sub`` = client id, ``aud`` = token URL, ``exp`` 4 minutes ahead, unique ``jti``).
The token is cached until shortly before ``expires_in``; the client asks for one refresh after
a 401 and then gives up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pipeline.fhir.config import AuthConfig
from pipeline.fhir.errors import AuthFailed, FhirConfigError, RetryableDelivery

__all__ = ["ASSERTION_TYPE", "Auth", "BearerAuth", "NoAuth", "SmartBackendAuth", "make_auth"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 240
"""Client assertions expire this long after signing (the spec allows at most 5 minutes)."""


class Auth(Protocol):
    """What the FHIR client needs from an authentication scheme."""

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """Headers for the next request (fetches a token when none is cached)."""
        ...

    def invalidate(self) -> bool:
        """Forget the cached token after a 401; True when a new one may help."""
        ...


class NoAuth:
    """No credentials."""

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """No headers."""
        return {}

    def invalidate(self) -> bool:
        """Nothing to refresh."""
        return False


class BearerAuth:
    """A static bearer token."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """``Authorization: Bearer <token>``."""
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> bool:
        """A static token cannot be refreshed."""
        return False


def _load_key(config: AuthConfig) -> Any:
    assert config.private_key is not None
    try:
        key = load_pem_private_key(config.private_key.read_bytes(), password=None)
    except OSError as exc:
        raise FhirConfigError(
            f"fhir.auth.private_key: cannot read {config.private_key}: {exc.strerror}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise FhirConfigError(
            f"fhir.auth.private_key: {config.private_key} is not an unencrypted PEM private key"
            f" ({exc})"
        ) from exc
    if config.alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise FhirConfigError(
            f"fhir.auth.private_key: RS384 needs an RSA key ({config.private_key})"
        )
    if config.alg == "ES384" and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    ):
        raise FhirConfigError(
            f"fhir.auth.private_key: ES384 needs an EC P-384 key ({config.private_key})"
        )
    return key


class SmartBackendAuth:
    """SMART Backend Services client credentials with a signed JWT assertion.

    Args:
        config: Client id, key, algorithm, kid, scope and optional token URL.
        base_url: FHIR base, for discovery.
        clock: Wall-clock seconds (injectable).
    """

    def __init__(
        self, config: AuthConfig, base_url: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._key = _load_key(config)
        self._token_url = config.token_url
        self._token: str | None = None
        self._expires = 0.0
        self.tokens_issued = 0

    @property
    def token_url(self) -> str:
        """The token endpoint (empty until discovered)."""
        return self._token_url

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        """``Authorization: Bearer <access token>``, fetching one when needed."""
        if self._token is None or self._clock() >= self._expires:
            await self._fetch(http)
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> bool:
        """Drop the cached token so the next request fetches a new one."""
        self._token = None
        return True

    async def _discover(self, http: httpx.AsyncClient) -> str:
        url = f"{self._base}/.well-known/smart-configuration"
        try:
            resp = await http.get(url, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise RetryableDelivery(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        if resp.status_code >= 500:
            raise RetryableDelivery(f"{url}: HTTP {resp.status_code}", status=resp.status_code)
        try:
            endpoint = resp.json()["token_endpoint"] if resp.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            endpoint = None
        if not isinstance(endpoint, str) or not endpoint:
            raise FhirConfigError(
                f"{url}: no token_endpoint (HTTP {resp.status_code}); the server does not announce"
                " SMART Backend Services: set fhir.auth.token_url or check fhir.url"
            )
        return endpoint

    def assertion(self, now: float) -> str:
        """A fresh signed client assertion for the token endpoint."""
        claims = {
            "iss": self._config.client_id,
            "sub": self._config.client_id,
            "aud": self._token_url,
            "exp": int(now) + ASSERTION_LIFETIME_S,
            "iat": int(now),
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self._config.kid} if self._config.kid else {}
        return jwt.encode(claims, self._key, algorithm=self._config.alg, headers=headers)

    async def _fetch(self, http: httpx.AsyncClient) -> None:
        if not self._token_url:
            self._token_url = await self._discover(http)
        now = self._clock()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(now),
            "scope": self._config.scope,
        }
        try:
            resp = await http.post(
                self._token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.TransportError as exc:
            raise RetryableDelivery(f"{self._token_url}: {exc.__class__.__name__}: {exc}") from exc
        if resp.status_code in (429, 503) or resp.status_code >= 500:
            raise RetryableDelivery(
                f"{self._token_url}: HTTP {resp.status_code}", status=resp.status_code
            )
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or not isinstance(body.get("access_token"), str):
            why = body.get("error_description") or body.get("error") or resp.text[:200]
            raise AuthFailed(
                f"{self._token_url}: token request for client {self._config.client_id!r} refused"
                f" (HTTP {resp.status_code}): {why}",
                status=resp.status_code,
            )
        lifetime = float(body.get("expires_in") or 300)
        self._token = body["access_token"]
        self._expires = now + max(lifetime - min(60.0, lifetime / 10), 1.0)
        self.tokens_issued += 1


def make_auth(config: AuthConfig, base_url: str, clock: Callable[[], float] = time.time) -> Auth:
    """The scheme ``config`` names (reads token and key files now, so errors surface at start)."""
    if config.kind == "bearer":
        return BearerAuth(config.bearer_token())
    if config.kind == "smart":
        return SmartBackendAuth(config, base_url, clock)
    return NoAuth()

"""The HTTP side: send a transaction Bundle, read the CapabilityStatement, classify failures.

Failures become :mod:`pipeline.fhir.errors` exceptions here, where ``httpx`` enters:

- network errors, timeouts, 408, 429, 502, 503, 504: :class:`RetryableDelivery`, with the
  ``Retry-After`` delay (delta-seconds or HTTP-date) when the server sent one;
- a 401: the token is refreshed once and the request repeated; a second 401 is
  :class:`AuthFailed`;
- other 4xx and 5xx: the OperationOutcome decides. ``throttled``, ``transient``, ``timeout``,
  ``lock-error``, ``incomplete`` are retryable; ``invalid``, ``structure``, ``required``,
  ``value``, ``invariant``, ``code-invalid``, ``business-rule``, ``security``, ``forbidden``
  are permanent. Without a known code, 5xx is retryable and 4xx permanent.

Every Bundle we send has ``ifNoneExist`` on every entry, so repeating it is safe.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.fhir.auth import Auth, NoAuth
from pipeline.fhir.errors import AuthFailed, DeliveryError, PermanentDelivery, RetryableDelivery

__all__ = [
    "PERMANENT_ISSUES",
    "RETRYABLE_ISSUES",
    "RETRYABLE_STATUS",
    "EntryResult",
    "FhirClient",
    "classify",
    "parse_retry_after",
]

RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
RETRYABLE_ISSUES = frozenset({"throttled", "transient", "timeout", "lock-error", "incomplete"})
PERMANENT_ISSUES = frozenset({
    "invalid", "structure", "required", "value", "invariant", "code-invalid", "business-rule",
    "security", "forbidden",
})  # fmt: skip
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class EntryResult:
    """The server's answer for one Bundle entry."""

    status: int
    location: str


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delta-seconds or an HTTP-date), or ``None``."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _outcome(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return (
        body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None
    )


def _issues_text(outcome: dict[str, Any] | None) -> str:
    if not outcome:
        return ""
    parts = []
    for issue in outcome.get("issue", [])[:5]:
        where = ", ".join(issue.get("expression", []) or issue.get("location", []))
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        parts.append(f"{issue.get('code')}{f' at {where}' if where else ''}: {text}".strip())
    return "; ".join(parts)


def classify(resp: httpx.Response, now: float) -> DeliveryError | None:
    """The error a response means, or ``None`` for success (2xx)."""
    status = resp.status_code
    if status < 300:
        return None
    outcome = _outcome(resp)
    detail = _issues_text(outcome) or resp.reason_phrase
    message = f"HTTP {status} from {resp.request.method} {resp.request.url}: {detail}"
    retry_after = parse_retry_after(resp.headers.get("Retry-After"), now)
    codes = {i.get("code") for i in (outcome or {}).get("issue", [])}
    if status == 401:
        return AuthFailed(message, status=status, outcome=outcome)
    if status in RETRYABLE_STATUS or (codes & RETRYABLE_ISSUES and not codes & PERMANENT_ISSUES):
        return RetryableDelivery(message, status=status, outcome=outcome, retry_after=retry_after)
    if codes & PERMANENT_ISSUES or 400 <= status < 500:
        return PermanentDelivery(message, status=status, outcome=outcome)
    return RetryableDelivery(message, status=status, outcome=outcome, retry_after=retry_after)


class FhirClient:
    """A small async FHIR client over ``httpx``.

    Args:
        base_url: FHIR base URL.
        auth: Authentication scheme.
        timeout_s: Per-request timeout.
        verify_tls: Verify certificates.
        transport: ``httpx`` transport (tests inject ``httpx.MockTransport``).
        clock: Wall-clock seconds, for ``Retry-After`` dates.
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth | None = None,
        *,
        timeout_s: float = 30.0,
        verify_tls: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth or NoAuth()
        self._clock = clock
        self._http = httpx.AsyncClient(timeout=timeout_s, verify=verify_tls, transport=transport)
        self.requests = 0

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        refreshed = False
        while True:
            headers = {"Accept": FHIR_JSON, **kwargs.pop("headers", {})}
            headers.update(await self.auth.headers(self._http))
            self.requests += 1
            try:
                resp = await self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                raise RetryableDelivery(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
            if resp.status_code == 401 and not refreshed and self.auth.invalidate():
                refreshed = True
                kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            return resp

    async def capability_statement(self) -> dict[str, Any]:
        """``GET [base]/metadata``."""
        resp = await self._request("GET", f"{self.base_url}/metadata")
        error = classify(resp, self._clock())
        if error is not None:
            raise error
        try:
            body = resp.json()
        except ValueError as exc:
            raise PermanentDelivery(
                f"{self.base_url}/metadata: not JSON", status=resp.status_code
            ) from exc
        if not isinstance(body, dict) or body.get("resourceType") != "CapabilityStatement":
            raise PermanentDelivery(
                f"{self.base_url}/metadata: expected a CapabilityStatement, got"
                f" {body.get('resourceType') if isinstance(body, dict) else type(body).__name__}",
                status=resp.status_code,
            )
        return body

    async def probe(self) -> None:
        """One authenticated search that matches nothing, so refused credentials show at start.

        Raises:
            AuthFailed: 401 even after a token refresh.
            RetryableDelivery: The server did not answer usefully.
        """
        resp = await self._request(
            "GET",
            f"{self.base_url}/Observation",
            params={"identifier": "urn:vitalwire:probe|none", "_count": "1"},
        )
        if resp.status_code == 401:
            error = classify(resp, self._clock())
            assert error is not None
            raise error
        if resp.status_code in RETRYABLE_STATUS or resp.status_code >= 500:
            error = classify(resp, self._clock())
            assert error is not None
            raise error

    async def transaction(self, bundle: dict[str, Any], body: bytes) -> list[EntryResult]:
        """POST a transaction Bundle (``body`` is its JSON); one result per entry, in order."""
        resp = await self._request(
            "POST",
            self.base_url,
            content=body,
            headers={"Content-Type": FHIR_JSON, "Prefer": "return=minimal"},
        )
        error = classify(resp, self._clock())
        if error is not None:
            raise error
        try:
            reply = resp.json()
            entries = reply["entry"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableDelivery(
                f"POST {self.base_url}: HTTP {resp.status_code} without a transaction-response"
                " Bundle",
                status=resp.status_code,
            ) from exc
        if len(entries) != len(bundle["entry"]):
            raise RetryableDelivery(
                f"POST {self.base_url}: {len(entries)} entry responses for"
                f" {len(bundle['entry'])} entries",
                status=resp.status_code,
            )
        out = []
        for e in entries:
            r = e.get("response") or {}
            head = str(r.get("status", "")).split(" ")[0]
            code = int(head) if head.isdigit() else 0
            out.append(EntryResult(code, str(r.get("location", ""))))
        bad = [r for r in out if not 200 <= r.status < 300]
        if bad:
            raise PermanentDelivery(
                f"POST {self.base_url}: entry statuses {[r.status for r in bad]}",
                status=resp.status_code,
            )
        return out

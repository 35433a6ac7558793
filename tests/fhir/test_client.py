"""The HTTP client: failure classification, Retry-After, auth refresh, SMART assertions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipeline.fhir.auth import ASSERTION_TYPE, BearerAuth, SmartBackendAuth, make_auth
from pipeline.fhir.client import FhirClient, classify, parse_retry_after
from pipeline.fhir.config import AuthConfig
from pipeline.fhir.errors import (
    AuthFailed,
    FhirConfigError,
    PermanentDelivery,
    RetryableDelivery,
)
from tests.fhir.fake import outcome

BASE = "https://ehr.test/fhir"
NOW = 1_772_353_815.0  # 2026-03-01T08:30:15Z


def response(status: int, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("POST", BASE))


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, None, None),
        (429, None, RetryableDelivery),
        (503, None, RetryableDelivery),
        (502, None, RetryableDelivery),
        (504, None, RetryableDelivery),
        (408, None, RetryableDelivery),
        (500, outcome("exception", "boom"), RetryableDelivery),
        (500, outcome("transient", "db busy"), RetryableDelivery),
        (409, outcome("lock-error", "locked"), RetryableDelivery),
        (400, outcome("invalid", "bad"), PermanentDelivery),
        (422, outcome("business-rule", "no"), PermanentDelivery),
        (403, outcome("forbidden", "scope"), PermanentDelivery),
        (412, outcome("multiple-matches", "2 matches"), PermanentDelivery),
        (500, outcome("structure", "bad json"), PermanentDelivery),
        (401, outcome("login", "who"), AuthFailed),
    ],
)
def test_classify(status: int, body: dict[str, Any] | None, kind: type | None) -> None:
    error = classify(response(status, body), NOW)
    if kind is None:
        assert error is None
    else:
        assert type(error) is kind
        assert error is not None and error.status == status


def test_classify_keeps_outcome_and_retry_after() -> None:
    error = classify(response(400, outcome("value", "too high", "Observation.valueQuantity")), NOW)
    assert isinstance(error, PermanentDelivery)
    assert error.outcome == outcome("value", "too high", "Observation.valueQuantity")
    assert str(error) == (
        f"HTTP 400 from POST {BASE}: value at Observation.valueQuantity: too high"
    )
    throttled = classify(response(429, None, **{"Retry-After": "7"}), NOW)
    assert isinstance(throttled, RetryableDelivery) and throttled.retry_after == 7.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after("Sun, 01 Mar 2026 08:30:45 GMT", NOW) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 08:00:00 GMT", NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def _key(tmp_path: Path, kind: str) -> Path:
    key = (
        rsa.generate_private_key(65537, 2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP384R1())
    )
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize(("alg", "kind"), [("RS384", "rsa"), ("ES384", "ec")])
async def test_smart_token_flow_discovery_cache_and_refresh_once(
    tmp_path: Path, alg: str, kind: str
) -> None:
    key_path = _key(tmp_path, kind)
    public: Any = serialization.load_pem_private_key(key_path.read_bytes(), None).public_key()
    issued: list[str] = []
    assertions: list[dict[str, Any]] = []
    posts = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.url.path == "/fhir/.well-known/smart-configuration":
            return httpx.Response(200, json={"token_endpoint": "https://auth.test/token"})
        if request.url.host == "auth.test":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            assert form["grant_type"] == "client_credentials"
            assert form["client_assertion_type"] == ASSERTION_TYPE
            assert form["scope"] == "system/Observation.cs"
            header = jwt.get_unverified_header(form["client_assertion"])
            assert (header["alg"], header["kid"]) == (alg, "k1")
            claims = jwt.decode(
                form["client_assertion"],
                public,
                algorithms=[alg],
                audience="https://auth.test/token",
                options={"verify_exp": False, "verify_iat": False},
            )
            assertions.append(claims)
            issued.append(f"tok{len(issued)}")
            return httpx.Response(200, json={"access_token": issued[-1], "expires_in": 300})
        posts += 1
        auth = request.headers["authorization"]
        if posts == 2:  # the server forgot the first token
            return httpx.Response(401, json=outcome("login", "expired"))
        return httpx.Response(200, json={"resourceType": "CapabilityStatement", "auth": auth})

    config = AuthConfig(
        kind="smart",
        client_id="vw",
        private_key=key_path,
        alg=alg,  # type: ignore[arg-type]
        kid="k1",
        scope="system/Observation.cs",
    )
    clock = [NOW]
    auth = make_auth(config, BASE, lambda: clock[0])
    assert isinstance(auth, SmartBackendAuth)
    client = FhirClient(BASE, auth, transport=httpx.MockTransport(handle), clock=lambda: clock[0])
    try:
        assert (await client.capability_statement())["auth"] == "Bearer tok0"
        assert (await client.capability_statement())["auth"] == "Bearer tok1"  # refreshed once
        assert (await client.capability_statement())["auth"] == "Bearer tok1"  # cached
        clock[0] += 300
        assert (await client.capability_statement())["auth"] == "Bearer tok2"  # expired
    finally:
        await client.aclose()
    assert auth.token_url == "https://auth.test/token"
    assert [(a["iss"], a["sub"], a["exp"] - a["iat"]) for a in assertions] == [
        ("vw", "vw", 240)
    ] * 3
    assert len({a["jti"] for a in assertions}) == 3


async def test_second_401_is_auth_failed() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("smart-configuration"):
            return httpx.Response(404)
        return httpx.Response(401, json=outcome("login", "no"))

    client = FhirClient(BASE, BearerAuth("t"), transport=httpx.MockTransport(handle))
    with pytest.raises(AuthFailed, match="HTTP 401"):
        await client.capability_statement()
    assert client.requests == 1  # a static token is not refreshed
    await client.aclose()


async def test_token_endpoint_refusal_is_auth_failed(tmp_path: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": "jti has already been used"}
        )

    config = AuthConfig(
        kind="smart",
        client_id="vw",
        private_key=_key(tmp_path, "rsa"),
        token_url="https://auth.test/token",
    )
    client = FhirClient(BASE, make_auth(config, BASE), transport=httpx.MockTransport(handle))
    with pytest.raises(AuthFailed, match=r"client 'vw' refused .*jti has already been used"):
        await client.capability_statement()
    await client.aclose()


def test_key_errors_name_the_file(tmp_path: Path) -> None:
    rsa_key = _key(tmp_path, "rsa")
    with pytest.raises(FhirConfigError, match="ES384 needs an EC P-384 key"):
        make_auth(AuthConfig(kind="smart", client_id="c", private_key=rsa_key, alg="ES384"), BASE)
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(FhirConfigError, match=r"junk\.pem is not an unencrypted PEM private key"):
        make_auth(AuthConfig(kind="smart", client_id="c", private_key=tmp_path / "junk.pem"), BASE)
    with pytest.raises(FhirConfigError, match=r"cannot read .*missing.pem"):
        make_auth(
            AuthConfig(kind="smart", client_id="c", private_key=tmp_path / "missing.pem"), BASE
        )
    assert json.dumps({"ok": True})

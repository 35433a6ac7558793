"""FhirConfig: defaults, the [fhir] table, and errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pipeline.fhir.config import (
    AuthConfig,
    FhirConfig,
    MetricPolicy,
    RetryPolicy,
    load_fhir_config,
)
from pipeline.fhir.errors import FhirConfigError

SAMPLE = """
[fhir]
url = "https://ehr.example/fhir/"
bundle_size = 200
gateway_id = "ward-7-hub"
[fhir.auth]
kind = "smart"
client_id = "vitalwire"
private_key = "keys/vw.pem"
alg = "ES384"
kid = "k1"
[fhir.retry]
initial_s = 2
max_s = 120
[fhir.metrics.spo2]
mode = "sample"
interval_s = 300
[fhir.metrics.steps]
mode = "all"
"""


def test_defaults_export_vital_signs_and_glucose_only() -> None:
    c = FhirConfig()
    assert (c.url, c.bundle_size, c.auth.kind) == (None, 50, "none")
    exported = sorted(m for m, p in c.policies().items() if p.mode == "all")
    assert exported == ["body_temperature", "body_weight", "cgm_glucose", "diastolic_bp",
                        "glucose", "heart_rate", "mean_bp", "respiratory_rate", "spo2",
                        "systolic_bp"]  # fmt: skip
    assert c.policy("steps") == MetricPolicy("none")
    assert c.with_url("http://127.0.0.1:8090/fhir").url == "http://127.0.0.1:8090/fhir"


def test_load_sample(tmp_path: Path) -> None:
    table = tomllib.loads(SAMPLE)["fhir"]
    c = load_fhir_config(table, "vw.toml: [fhir]", tmp_path)
    assert c.url == "https://ehr.example/fhir"
    assert (c.bundle_size, c.gateway_id) == (200, "ward-7-hub")
    assert c.auth == AuthConfig(
        kind="smart",
        client_id="vitalwire",
        private_key=(tmp_path / "keys/vw.pem").resolve(),
        alg="ES384",
        kid="k1",
    )
    assert c.retry == RetryPolicy(initial_s=2.0, max_s=120.0)
    assert c.policy("spo2") == MetricPolicy("sample", 300.0)
    assert c.policy("steps") == MetricPolicy("all")
    assert c.policy("heart_rate") == MetricPolicy("all")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "ftp://x"}, "[fhir]: fhir.url: 'ftp://x' is not an http(s) URL"),
        ({"bundle_size": 0}, "[fhir]: fhir.bundle_size: expected 1..5000, got 0"),
        ({"bundle_size": "50"}, "[fhir].bundle_size: expected int, got '50'"),
        ({"bundel_size": 5}, "[fhir]: unknown key 'bundel_size'"),
        ({"auth": {"kind": "bearer"}}, "[fhir].auth: fhir.auth: kind 'bearer' needs token"),
        ({"auth": {"kind": "smart", "client_id": "c"}}, "fhir.auth.private_key: a PEM key file"),
        ({"auth": {"kind": "oauth"}}, "fhir.auth.kind: expected none, bearer or smart"),
        ({"metrics": {"pulse": {"mode": "all"}}}, "fhir.metrics.pulse: unknown metric"),
        ({"metrics": {"spo2": {"mode": "sample"}}}, "[fhir].metrics.spo2: interval_s: 'sample'"),
        ({"retry": {"max_s": 0.5}}, "fhir.retry.max_s: 0.5 must be >= initial_s 1.0"),
    ],
)
def test_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(FhirConfigError) as info:
        load_fhir_config(table)
    assert message in str(info.value)


def test_bearer_token_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tok").write_text("s3cret\n")
    assert AuthConfig(kind="bearer", token_file=tmp_path / "tok").bearer_token() == "s3cret"
    monkeypatch.setenv("VW_TOKEN", "from-env")
    assert AuthConfig(kind="bearer", token_env="VW_TOKEN").bearer_token() == "from-env"
    with pytest.raises(FhirConfigError, match="environment variable 'VW_NONE' is unset"):
        AuthConfig(kind="bearer", token_env="VW_NONE").bearer_token()

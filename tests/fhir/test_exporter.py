"""The exporter against a fake server: delivery, retries, dead letters, start checks."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.fhir.config import FhirConfig, RetryPolicy
from pipeline.fhir.errors import FhirConfigError
from pipeline.fhir.exporter import FhirExporter
from pipeline.store import DuckDbStore, StoreConfig
from tests.fhir.fake import CAPABILITIES, FakeFhir, outcome
from tests.fhir.support import NOW, batch, frame

URL = "https://ehr.test/fhir"
CLOCK = NOW.timestamp()
READINGS = frame(
    ("heart_rate", "BM-1", 88.0, "/min"), ("spo2", "BM-1", 95.0, "%"),
    ("systolic_bp", "BM-1", 121.0, "mm[Hg]"), ("diastolic_bp", "BM-1", 79.0, "mm[Hg]"),
    ("glucose", "GM-1", 100.0, "mg/dL"), ("respiratory_rate", "BM-1", 18.0, "/min"),
)  # fmt: skip
OBSERVATIONS = 5  # the BP pair is one panel


class Sleeps:
    """Records requested delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@asynccontextmanager
async def exporter(
    tmp_path: Path, fake: FakeFhir | None, sleeps: Sleeps | None = None, **kw: Any
) -> AsyncIterator[FhirExporter]:
    config = FhirConfig(
        url=URL if fake else None, retry=RetryPolicy(initial_s=1.0, max_s=8.0), **kw
    )
    async with DuckDbStore(StoreConfig(path=tmp_path / "vw.duckdb", idle_checkpoint_s=0)) as store:
        exp = FhirExporter(
            config,
            store,
            transport=fake.transport() if fake else None,
            sleep=sleeps or Sleeps(),
            clock=lambda: CLOCK,
            rand=lambda: 0.0,
        )
        exp._run = _no_worker  # type: ignore[method-assign]  # tests drive export_once
        async with exp:
            yield exp


async def _no_worker() -> None:
    return None


async def test_delivers_each_observation_once(tmp_path: Path) -> None:
    fake = FakeFhir()
    async with exporter(tmp_path, fake) as exp:
        await exp.store.write(batch(READINGS))
        assert await exp.export_once() == 6
        assert await exp.export_once() == 0
        assert await exp.outbox_size() == 0
    assert (exp.stats.created, exp.stats.existed, exp.stats.bundles) == (OBSERVATIONS, 0, 1)
    assert len(fake.observations) == OBSERVATIONS
    assert fake.requests[:2] == ["GET /fhir/metadata", "GET /fhir/Observation"]


async def test_bundle_size_splits_bundles(tmp_path: Path) -> None:
    fake = FakeFhir()
    async with exporter(tmp_path, fake, bundle_size=2) as exp:
        await exp.store.write(batch(READINGS))
        await exp.export_once()
    assert (fake.posts, exp.stats.bundles, len(fake.observations)) == (3, 3, OBSERVATIONS)


async def test_retry_after_is_honoured_then_the_same_bundle_is_sent_again(tmp_path: Path) -> None:
    fake = FakeFhir(
        faults=[
            httpx.Response(429, headers={"Retry-After": "17"}),
            httpx.Response(503, json=outcome("transient", "busy")),
        ]
    )
    sleeps = Sleeps()
    async with exporter(tmp_path, fake, sleeps) as exp:
        await exp.store.write(batch(READINGS))
        for _ in range(3):
            try:
                await exp.export_once()
            except Exception as exc:  # what the worker loop does with it
                exp._failures += 1
                await sleeps(exp._delay(exc))  # type: ignore[arg-type]
        status = await exp.store.call(
            lambda c: c.execute("SELECT count(*) FROM fhir_outbox").fetchall()
        )
    assert sleeps.delays == [17.0, 2.0]  # Retry-After, then backoff 1 * 2^1 (no jitter)
    assert fake.posts == 3
    assert status == [(0,)]
    assert len(fake.observations) == OBSERVATIONS


async def test_worker_backs_off_exponentially_with_cap(tmp_path: Path) -> None:
    config = RetryPolicy(initial_s=1.0, max_s=8.0, jitter=0.5)
    assert [config.delay(n, 0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert config.delay(3, 0.999) == pytest.approx(4.0 * (1 - 0.5 * 0.999))


async def test_a_rejected_observation_is_isolated_and_dead_lettered(tmp_path: Path) -> None:
    fake = FakeFhir(reject_values={95.0})
    async with exporter(tmp_path, fake) as exp:
        await exp.store.write(batch(READINGS))
        await exp.export_once()
        dead = exp.store.query(
            "SELECT metric, reason_code, reason, outcome, resource FROM fhir_dead_letter"
        )
        assert await exp.outbox_size() == 0
    assert dead.height == 1
    metric, code, reason, oo, resource = dead.row(0)
    assert (metric, code) == ("spo2", "rejected")
    assert "HTTP 400" in reason and "value at Observation.valueQuantity" in reason
    assert '"code": "value"' in oo and '"2708-6"' in resource
    assert len(fake.observations) == OBSERVATIONS - 1
    assert exp.stats.dead_lettered == 1


async def test_unmappable_and_rule_breaking_readings_never_block(tmp_path: Path) -> None:
    fake = FakeFhir()
    async with exporter(tmp_path, fake, max_future_s=0.0) as exp:
        future = frame(("heart_rate", "HR-9", 70.0, "/min"), when=NOW.replace(hour=9))
        await exp.store.write(batch(READINGS))
        await exp.store.write(batch(future))
        await exp.export_once()
        dead = exp.store.query("SELECT device_id, reason_code, reason FROM fhir_dead_letter")
    assert dead.rows() == [
        (
            "HR-9",
            "rule_violation",
            "Observation.effectiveDateTime: 2026-03-01T09:31:00+00:00 is 3600 s in the future",
        )
    ]
    assert len(fake.observations) == OBSERVATIONS


async def test_lone_bp_reading_waits_for_its_partner(tmp_path: Path) -> None:
    fake = FakeFhir()
    sys_only = frame(("systolic_bp", "BP-1", 121.0, "mm[Hg]"))
    dia_only = frame(("diastolic_bp", "BP-1", 79.0, "mm[Hg]"))
    async with exporter(tmp_path, fake, bp_pair_wait_s=1e9) as exp:
        await exp.store.write(batch(sys_only))
        assert await exp.export_once() == 0
        await exp.store.write(batch(dia_only))
        assert await exp.export_once() == 2
    (panel,) = fake.observations.values()
    assert [c["valueQuantity"]["value"] for c in panel["component"]] == [121.0, 79.0]


async def test_without_url_the_outbox_is_kept(tmp_path: Path) -> None:
    async with exporter(tmp_path, None) as exp:
        await exp.store.write(batch(READINGS))
        assert await exp.outbox_size() == 6
        assert exp.client is None


async def test_missing_capabilities_fail_at_start(tmp_path: Path) -> None:
    caps = copy.deepcopy(CAPABILITIES)
    caps["rest"][0]["interaction"] = [{"code": "batch"}]
    caps["rest"][0]["resource"][0]["conditionalCreate"] = False
    with pytest.raises(FhirConfigError) as info:
        async with exporter(tmp_path, FakeFhir(capabilities=caps)):
            pass
    assert str(info.value) == (
        f"{URL}/metadata: the FHIR server does not support: the 'transaction' interaction"
        " (rest.interaction); Observation: conditionalCreate (needed for ifNoneExist)"
        " (set fhir.require_capabilities = false to try anyway)"
    )


async def test_wrong_url_and_refused_credentials_fail_at_start(tmp_path: Path) -> None:
    class NotFhir(FakeFhir):
        def handle(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(404, text="no such page")

    with pytest.raises(FhirConfigError, match=rf"fhir.url: {URL} does not work as a FHIR R4"):
        async with exporter(tmp_path, NotFhir()):
            pass

    class Refuses(FakeFhir):
        def handle(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/metadata"):
                return super().handle(request)
            return httpx.Response(401, json=outcome("login", "bad token"))

    with pytest.raises(FhirConfigError, match=r"fhir.auth: credentials refused by"):
        async with exporter(tmp_path, Refuses()):
            pass


async def test_unreachable_server_at_start_is_not_fatal(tmp_path: Path) -> None:
    class Down(FakeFhir):
        def handle(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

    async with exporter(tmp_path, Down()) as exp:
        state = exp.store.query("SELECT value FROM fhir_exporter_state WHERE key = 'capability'")
    assert state["value"][0].startswith("unreachable: GET https://ehr.test/fhir/metadata:")

"""The exporter: a component that drains the outbox into the EHR, exactly once, through outages.

Lifecycle (an async context manager the service enters right after the store):

- enter: create the FHIR tables, register the outbox as the store's transaction hook (so every
  stored reading the policy exports is queued in the same transaction), and, when a URL is
  configured, build the auth scheme (key and token files are read now), check the server's
  CapabilityStatement and credentials, and start the worker. A server that answers but lacks
  what we need, a wrong URL or refused credentials fail here with a clear message; a server
  that does not answer at all is logged and checked again before the first send.
- worker: take the oldest queued readings, map them (:mod:`pipeline.fhir.mapping`), check every
  resource against our rules (:mod:`pipeline.fhir.rules`), send transaction Bundles of
  ``bundle_size`` Observations, and confirm or dead-letter them. Retryable failures back off
  (``Retry-After`` when the server says, else exponential with jitter) and send the same Bundle
  again; a permanent failure of a Bundle is split in halves until the bad Observation is alone,
  and that one is dead-lettered with the OperationOutcome. Nothing is lost: a reading leaves
  the outbox only when the server confirmed it or it is in the dead-letter table.
- exit: stop taking new work, finish the Bundle in flight, close connections. Idempotent.

Without a URL only the outbox is kept; :meth:`FhirExporter.outbox_size` reports its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson
import polars as pl

from pipeline.errors import StoreError
from pipeline.fhir import codes, outbox, schema
from pipeline.fhir.auth import make_auth
from pipeline.fhir.bundle import build_bundle
from pipeline.fhir.capability import missing_capabilities
from pipeline.fhir.client import FhirClient
from pipeline.fhir.config import FhirConfig
from pipeline.fhir.errors import (
    AuthFailed,
    DeliveryError,
    FhirConfigError,
    PermanentDelivery,
    RetryableDelivery,
)
from pipeline.fhir.mapping import MappedObservation, to_fhir_observations
from pipeline.fhir.ranges import ReferenceRangeProvider
from pipeline.fhir.rules import check_observation
from pipeline.readings import ReadingBatch
from pipeline.store import DuckDbStore, WriteResult

__all__ = ["ExporterStats", "FhirExporter"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ExporterStats:
    """Running totals of one exporter."""

    bundles: int = 0
    created: int = 0
    existed: int = 0
    dead_lettered: int = 0
    failures: int = 0
    delays: list[float] = field(default_factory=list)
    last_error: str = ""

    @property
    def delivered(self) -> int:
        """Observations the server confirmed (created or already there)."""
        return self.created + self.existed


class FhirExporter:
    """Outbox + worker for one EHR.

    Args:
        config: Endpoint, auth, bundle size, policies.
        store: The open store (entered before this component).
        ranges: Care-plan limits for referenceRange and interpretation (none by default).
        transport: ``httpx`` transport for tests.
        sleep: Waits between retries (default: wait on the stop signal with a timeout).
        clock: Wall-clock seconds.
        rand: Uniform [0, 1) source for backoff jitter.
    """

    def __init__(
        self,
        config: FhirConfig,
        store: DuckDbStore,
        *,
        ranges: ReferenceRangeProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.store = store
        self.stats = ExporterStats()
        self.client: FhirClient | None = None
        self._ranges = ranges
        self._transport = transport
        self._sleep = sleep or self._wait_stop
        self._clock = clock
        self._rand = rand
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checked = False
        self._failures = 0
        self._state = "new"

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> FhirExporter:
        if self._state != "new":
            raise FhirConfigError("a FhirExporter can be entered only once")
        self._state = "open"
        await self.store.call(schema.migrate)
        self.store.add_transaction_hook(outbox.OutboxWriter(self.config))
        self.store.add_commit_listener(self._on_commit)
        url = self.config.url
        await self.store.call(outbox.set_state, endpoint=url or "", capability="")
        if url is None:
            log.info("FHIR export: no endpoint configured; readings wait in the outbox")
            return self
        auth = make_auth(self.config.auth, url, self._clock)
        self.client = FhirClient(
            url,
            auth,
            timeout_s=self.config.timeout_s,
            verify_tls=self.config.verify_tls,
            transport=self._transport,
            clock=self._clock,
        )
        try:
            await self.check_server(at_start=True)
        except BaseException:
            await self.client.aclose()
            raise
        self._task = asyncio.create_task(self._run(), name="fhir-exporter")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Finish the Bundle in flight, stop the worker and close connections. Idempotent."""
        if self._state != "open":
            return
        self._state = "closed"
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            await self.client.aclose()

    def _on_commit(self, batch: ReadingBatch, result: WriteResult) -> None:
        if result.stored:
            self._wake.set()

    async def outbox_size(self) -> int:
        """Readings waiting to be sent."""
        return await self.store.call(outbox.outbox_size)

    # -- the server ------------------------------------------------------------------------------

    async def check_server(self, *, at_start: bool = False) -> None:
        """Check the CapabilityStatement and the credentials.

        Raises:
            FhirConfigError: The server answered but lacks a capability we need, is not a FHIR
                server at that URL, or refused the credentials.
            RetryableDelivery: The server did not answer (only when not ``at_start``; at start
                this is logged and the check repeats before the first send).
        """
        assert self.client is not None
        url = self.config.url
        try:
            statement = await self.client.capability_statement()
            problems = missing_capabilities(statement)
            if problems:
                text = f"{url}/metadata: the FHIR server does not support: " + "; ".join(problems)
                if self.config.require_capabilities:
                    raise FhirConfigError(
                        text + " (set fhir.require_capabilities = false to try anyway)"
                    )
                log.warning("%s", text)
            await self.client.probe()
        except AuthFailed as exc:
            raise FhirConfigError(f"fhir.auth: credentials refused by {url}: {exc}") from exc
        except PermanentDelivery as exc:
            raise FhirConfigError(
                f"fhir.url: {url} does not work as a FHIR R4 endpoint: {exc}"
            ) from exc
        except RetryableDelivery as exc:
            await self.store.call(outbox.set_state, capability=f"unreachable: {exc}"[:500])
            if not at_start:
                raise
            log.warning(
                "FHIR server %s not reachable (%s); readings wait in the outbox and the"
                " server is checked again before sending",
                url,
                exc,
            )
            return
        self._checked = True
        await self.store.call(outbox.set_state, capability="ok", checked_at="now")
        log.info("FHIR export to %s: CapabilityStatement and credentials OK", url)

    # -- the worker ------------------------------------------------------------------------------

    async def _wait_stop(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.config.poll_s)

    def _delay(self, exc: DeliveryError) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.config.retry.max_retry_after_s)
        return self.config.retry.delay(self._failures, self._rand())

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._checked:
                    await self.check_server()
                handled = await self.export_once()
            except (RetryableDelivery, AuthFailed) as exc:
                self._failures += 1
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                delay = self._delay(exc)
                self.stats.delays.append(delay)
                log.warning("FHIR export failed (%s); retrying in %.1f s", exc, delay)
                await self._sleep(delay)
                continue
            except (FhirConfigError, StoreError) as exc:
                self.stats.last_error = str(exc)
                log.error("FHIR export paused: %s", exc)
                await self._sleep(self.config.retry.max_s)
                continue
            except Exception:
                log.exception("FHIR export: unexpected failure; retrying")
                await self._sleep(self.config.retry.max_s)
                continue
            if handled == 0:
                await self._idle()

    def _hold_back(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Leave out lone BP readings whose partner may still come."""
        is_bp = pl.col("metric").is_in(codes.BP_METRICS)
        keys = ["patient_id", "device_id", "observed_at"]
        cutoff = datetime.fromtimestamp(self._clock() - self.config.bp_pair_wait_s, UTC)
        waiting = (
            rows.filter(is_bp)
            .group_by(keys)
            .agg(
                complete=pl.col("metric").is_in(["systolic_bp"]).any()
                & pl.col("metric").is_in(["diastolic_bp"]).any(),
                newest=pl.col("enqueued_at").max(),
            )
            .filter(~pl.col("complete") & (pl.col("newest") > cutoff))
        )
        return rows.join(waiting.select(keys), on=keys, how="anti") if waiting.height else rows

    async def export_once(self) -> int:
        """Send what is queued now, in Bundles; returns how many readings were handled."""
        size = self.config.bundle_size
        rows = await self.store.call(outbox.fetch_pending, size * 4)
        if rows.height == 0:
            return 0
        rows = self._hold_back(rows)
        if rows.height == 0:
            return 0
        mapped = to_fhir_observations(rows, self.config, self._ranges)
        letters = [
            outbox.DeadLetter(f.outbox_ids, f.reason_code, f.reason) for f in mapped.failures
        ]
        now = datetime.fromtimestamp(self._clock(), UTC)
        good: list[MappedObservation] = []
        for obs in mapped.observations:
            problems = check_observation(
                obs.resource,
                now=now,
                max_future_s=self.config.max_future_s,
                identifier_system=self.config.identifier_system,
            )
            if problems:
                letters.append(
                    outbox.DeadLetter(
                        obs.outbox_ids,
                        "rule_violation",
                        "; ".join(problems),
                        obs.identifier,
                        resource=obs.resource,
                    )
                )
            else:
                good.append(obs)
        if letters:
            await self.store.call(outbox.dead_letter, letters)
            self.stats.dead_lettered += sum(len(d.outbox_ids) for d in letters)
            for d in letters:
                log.warning("FHIR export: dead-lettered %s: %s", d.reason_code, d.reason)
        for start in range(0, len(good), size):
            await self._send(good[start : start + size])
        return rows.height

    async def _send(self, chunk: Sequence[MappedObservation]) -> None:
        assert self.client is not None
        bundle = build_bundle(chunk, self.config)
        ids = [i for obs in chunk for i in obs.outbox_ids]
        try:
            results = await self.client.transaction(bundle, orjson.dumps(bundle))
        except (RetryableDelivery, AuthFailed) as exc:
            await self.store.call(outbox.record_failure, ids, str(exc))
            raise
        except PermanentDelivery as exc:
            if len(chunk) > 1:
                mid = len(chunk) // 2
                await self._send(chunk[:mid])
                await self._send(chunk[mid:])
                return
            obs = chunk[0]
            codes_ = sorted({i.get("code", "") for i in (exc.outcome or {}).get("issue", [])})
            letter = outbox.DeadLetter(
                obs.outbox_ids, "rejected", str(exc), obs.identifier, exc.outcome, obs.resource
            )
            await self.store.call(outbox.dead_letter, [letter])
            self.stats.dead_lettered += len(obs.outbox_ids)
            log.warning(
                "FHIR export: server rejected %s (%s): %s",
                obs.identifier,
                ",".join(codes_) or exc.status,
                exc,
            )
            return
        done = []
        for obs, res in zip(chunk, results[len(results) - len(chunk) :], strict=True):
            done.append(outbox.Delivered(obs.outbox_ids, obs.identifier, res.status, res.location))
            if res.status == 201:
                self.stats.created += 1
            else:
                self.stats.existed += 1
        await self.store.call(outbox.mark_delivered, done)
        self.stats.bundles += 1
        self._failures = 0

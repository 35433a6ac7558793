"""The measured subscribers: the vitalwire service (drain and paced latency) and count-only paho.

Each function here is the body of a child process (see :mod:`bench_proc`). Throughput runs
time from just before connecting to the moment the last expected message is committed (or
counted); the paced run records, at each commit, ``commit time - observed_at`` of every
reading in the batch, vectorized.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import polars as pl
from bench_publish import connect_client

from gateway.config import MqttConfig
from gateway.mqtt_client import BufferedClient
from pipeline.batcher import BatchConfig
from pipeline.readings import ReadingBatch
from pipeline.store import StoreConfig, WriteResult
from vitalwire.config import ServiceConfig
from vitalwire.intake import IntakeProcess
from vitalwire.service import Service, freeze_startup_objects

__all__ = [
    "COUNT_BUFFERED",
    "COUNT_ONLY",
    "LATENCY_EXCLUDED_METRICS",
    "RECEIVE_MAXIMUM",
    "SERVICE",
    "DrainResult",
    "LatencyResult",
    "Stopwatch",
    "drain_count_only",
    "drain_service",
    "paced_service",
    "peak_rss_bytes",
    "service_config",
]

SERVICE = "vitalwire service"
"""Name of the service's results."""
COUNT_ONLY = "paho count-only"
"""Name of the stock paho count-only subscriber's results (the issue's baseline)."""
COUNT_BUFFERED = "count-only, buffered client"
"""Name of the count-only subscriber on the gateway's buffered client (a reference)."""

RECEIVE_MAXIMUM = MqttConfig().receive_maximum
"""In-flight window of every subscriber: the service's default, for a like-for-like count-only."""

LATENCY_EXCLUDED_METRICS = ("cgm_glucose",)
"""Metrics whose device time is too coarse to time against (the CGM reports whole seconds)."""


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of another running process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_peak_rss(pid: int) -> int:
    """Peak RSS of another running process, bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Stopwatch:
    """Wall and CPU time (all threads) from construction to the first :meth:`stop`.

    CPU time is this process's, plus that of processes added with :meth:`add_process` from the
    moment they were added (the service's intake process).
    """

    def __init__(self) -> None:
        self._wall0 = time.monotonic()
        self._cpu0 = time.process_time()
        self._others: dict[int, float] = {}
        self._stopped: tuple[float, float] | None = None
        self._stopped_others = 0.0

    def add_process(self, pid: int) -> None:
        """Count ``pid``'s CPU time from now on."""
        self._others[pid] = process_cpu_s(pid)

    def stop(self) -> None:
        """Take the end time; later calls change nothing."""
        if self._stopped is None:
            self._stopped_others = self._others_cpu()
            self._stopped = (time.monotonic(), time.process_time() + self._stopped_others)

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped is not None

    def added_cpu_s(self) -> float:
        """CPU seconds of the added processes alone (until the stop, or until now)."""
        if self._stopped is not None:
            return self._stopped_others
        return self._others_cpu()

    def _others_cpu(self) -> float:
        others = 0.0
        for pid, start in self._others.items():
            with contextlib.suppress(OSError):
                others += process_cpu_s(pid) - start
        return others

    def seconds(self) -> tuple[float, float]:
        """``(wall, cpu)`` seconds until the stop, or until now when not stopped."""
        wall, cpu = self._stopped or (time.monotonic(), time.process_time() + self._others_cpu())
        return wall - self._wall0, cpu - self._cpu0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True, slots=True)
class DrainResult:
    """One subscriber draining a backlog.

    Attributes:
        name: Which subscriber.
        messages: Messages taken (received and, for writers, committed).
        readings: Readings committed (0 for the count-only subscriber).
        seconds: From just before connecting to the last expected message done.
        cpu_s: CPU time of the subscriber's processes (all threads) over ``seconds``: the
            service's includes its intake process.
        complete: Whether every expected message arrived before the timeout.
        peak_rss: Peak RSS of the subscriber's process (the service: plus its intake), bytes.
        detail: Counters worth printing (duplicates, quarantined, batches...).
    """

    name: str
    messages: int
    readings: int
    seconds: float
    cpu_s: float
    complete: bool
    peak_rss: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_us_per_message(self) -> float:
        """CPU microseconds per message (robust to other load, unlike the rates)."""
        return self.cpu_s / self.messages * 1e6 if self.messages else 0.0

    @property
    def messages_per_s(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def readings_per_s(self) -> float:
        """Readings per second."""
        return self.readings / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """The service under a paced load.

    Percentiles are ``{"p50": ..., "p90": ..., "p99": ..., "max": ...}`` in milliseconds, over
    readings published after the warm-up unless said otherwise.

    Attributes:
        messages: Messages committed.
        readings: Readings committed.
        timed_readings: Readings whose latency counts (published after the warm-up).
        warmup_s: Seconds at the start of the run left out of ``percentiles_ms``.
        percentiles_ms: Publish -> committed.
        receive_ms: Publish -> received by the gateway (the broker and network part; the rest
            is batching, normalizing and storing).
        whole_run_ms: Publish -> committed over every timed reading, warm-up included.
        commit_span_s: First to last commit.
        peak_rss: Peak RSS of the service process plus its intake process, bytes.
        complete: Whether every published message was committed before the timeout.
        detail: Counters worth printing.
    """

    messages: int
    readings: int
    timed_readings: int
    warmup_s: float
    percentiles_ms: dict[str, float]
    receive_ms: dict[str, float]
    whole_run_ms: dict[str, float]
    commit_span_s: float
    peak_rss: int
    complete: bool
    detail: dict[str, Any] = field(default_factory=dict)


def service_config(port: int, client_id: str, db: Path, max_age_ms: float | None = None,
                   protocol: str = "5", max_rows: int | None = None) -> ServiceConfig:
    """The shipped defaults, pointed at the benchmark's broker and database.

    ``max_age_ms`` and ``max_rows`` replace the batcher's flush age and size when given,
    ``protocol`` the MQTT version (to explore their effect).
    """
    batch = BatchConfig()
    if max_age_ms is not None:
        batch = dataclasses.replace(batch, max_age_ms=max_age_ms)
    if max_rows is not None:
        batch = dataclasses.replace(batch, max_rows=max_rows)
    return ServiceConfig(mqtt=MqttConfig(port=port, client_id=client_id, protocol=protocol),
                         store=StoreConfig(path=db), batch=batch)


def _detail(svc: Service) -> dict[str, Any]:
    s = svc.stats
    return {"batches": s.batches, "duplicates": s.duplicates, "quarantined": s.quarantined,
            "by_reason": dict(s.by_reason)}


async def _run_until(svc: Service, done: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``done``; re-raise a service failure; False on timeout."""
    waiter = asyncio.create_task(done.wait())
    failed = asyncio.create_task(svc.wait())
    finished, _ = await asyncio.wait({waiter, failed}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if failed in finished:
        failed.result()  # raises the service's failure
    failed.cancel()
    return waiter in finished


def drain_service(config: ServiceConfig, expected: int, timeout_s: float) -> DrainResult:
    """Start the service on an existing session with ``expected`` messages queued; drain it."""
    return asyncio.run(_drain_service(config, expected, timeout_s))


async def _drain_service(config: ServiceConfig, expected: int, timeout_s: float) -> DrainResult:
    svc = Service(config)
    done = asyncio.Event()
    watch: Stopwatch | None = None

    def on_commit(batch: ReadingBatch, result: WriteResult) -> None:
        if svc.stats.messages >= expected and watch is not None:
            watch.stop()
            done.set()

    svc.add_batch_listener(on_commit)
    watch = Stopwatch()
    async with svc:
        freeze_startup_objects()  # as vitalwire run does once started
        intake = _intake_pid(svc)
        if intake is not None:
            watch.add_process(intake)
        complete = await _run_until(svc, done, timeout_s)
        rss = service_peak_rss(svc)
    seconds, cpu = watch.seconds()
    detail = _detail(svc)
    if intake is not None and svc.stats.messages:
        detail["intake_cpu_us_per_message"] = watch.added_cpu_s() / svc.stats.messages * 1e6
    return DrainResult(SERVICE, svc.stats.messages, svc.stats.stored, seconds, cpu,
                       complete, rss, detail)


def _intake_pid(svc: Service) -> int | None:
    return svc.receiver.pid if isinstance(svc.receiver, IntakeProcess) else None


def service_peak_rss(svc: Service) -> int:
    """Peak RSS of the service's processes (itself and its intake process), bytes."""
    intake = _intake_pid(svc)
    return peak_rss_bytes() + (process_peak_rss(intake) if intake is not None else 0)


def drain_count_only(port: int, client_id: str, expected: int, timeout_s: float,
                     protocol: str = "5", buffered: bool = False) -> DrainResult:
    """A paho subscriber whose ``on_message`` only counts (paho acknowledges automatically).

    ``buffered`` uses the gateway's :class:`~gateway.mqtt_client.BufferedClient` instead of
    stock paho: the same transport as the service, with nothing behind it.

    It disconnects from another thread once the count is reached: paho queues a message's
    PUBACK after ``on_message`` returns, so a disconnect from inside the callback would leave
    the last message unacknowledged (the broker would deliver it again to the next drain).
    """
    count = 0
    watch = Stopwatch()
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count == expected:
            watch.stop()
            done.set()

    client = connect_client(port, client_id, clean_start=False, session_expiry_s=60,
                            receive_maximum=RECEIVE_MAXIMUM, protocol=protocol,
                            client_class=BufferedClient if buffered else mqtt.Client)
    client.on_message = on_message
    client.loop_start()
    done.wait(timeout_s)
    time.sleep(0.1)  # after the stopwatch: let the last PUBACK go out before DISCONNECT
    client.disconnect()
    client.loop_stop()
    seconds, cpu = watch.seconds()
    name = COUNT_BUFFERED if buffered else COUNT_ONLY
    return DrainResult(name, count, 0, seconds, cpu, watch.stopped,
                       peak_rss_bytes())


def paced_service(config: ServiceConfig, ready: Any, expected: Any, warmup_s: float,
                  timeout_s: float) -> LatencyResult:
    """Run the service, set ``ready`` once connected, and time every committed reading.

    ``expected`` is a queue that receives the number of messages published; the service
    stops once it committed that many.
    """
    return asyncio.run(_paced_service(config, ready, expected, warmup_s, timeout_s))


async def _paced_service(config: ServiceConfig, ready: Any, expected: Any, warmup_s: float,
                         timeout_s: float) -> LatencyResult:
    svc = Service(config)
    observed_at: list[np.ndarray] = []
    latencies: list[np.ndarray] = []
    receives: list[np.ndarray] = []
    commits: list[float] = []
    timed = pl.col("metric").is_in(LATENCY_EXCLUDED_METRICS).not_()

    def on_commit(batch: ReadingBatch, result: WriteResult) -> None:
        now_us = time.time_ns() // 1000
        commits.append(time.monotonic())
        times = batch.readings.filter(timed).select(
            pl.col("observed_at", "received_at").cast(pl.Int64))
        observed = times["observed_at"].to_numpy()
        observed_at.append(observed)
        latencies.append(now_us - observed)
        receives.append(times["received_at"].to_numpy() - observed)

    svc.add_batch_listener(on_commit)
    async with svc:
        freeze_startup_objects()  # as vitalwire run does once started
        assert svc.receiver is not None
        if not await svc.receiver.wait_connected(10):
            raise RuntimeError(f"service did not connect to {config.mqtt.host}:"
                               f"{config.mqtt.port} within 10 s")
        ready.set()
        total: int = await asyncio.to_thread(expected.get, True, timeout_s)
        done = asyncio.Event()

        async def watch() -> None:
            while svc.stats.messages < total:
                await asyncio.sleep(0.02)
            done.set()

        watcher = asyncio.create_task(watch())
        complete = await _run_until(svc, done, timeout_s)
        watcher.cancel()
        rss = service_peak_rss(svc)
    observed, lat_us, recv_us = _concat(observed_at), _concat(latencies), _concat(receives)
    steady = observed >= (observed.min() if observed.size else 0) + round(warmup_s * 1e6)
    span = commits[-1] - commits[0] if len(commits) > 1 else 0.0
    return LatencyResult(svc.stats.messages, svc.stats.stored, int(steady.sum()), warmup_s,
                         _percentiles_ms(lat_us[steady]), _percentiles_ms(recv_us[steady]),
                         _percentiles_ms(lat_us), span, rss, complete,
                         _detail(svc))


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _percentiles_ms(us: np.ndarray) -> dict[str, float]:
    """p50/p90/p99/max of microsecond durations, in milliseconds (empty when no data)."""
    if not us.size:
        return {}
    p50, p90, p99 = np.percentile(us, [50, 90, 99]) / 1000.0
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(us.max()) / 1000.0}

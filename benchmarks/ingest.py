"""Ingest benchmark: the vitalwire service through a real mosquitto at QoS 1.

Measures, in one run and against one broker:

1. the naive baseline (per message json.loads, Python checks, single-row INSERTs) draining a
   small backlog;
2. a paho subscriber that only counts, then the vitalwire service, each draining the same large
   backlog that was queued at the broker while they were away;
3. the service under a paced load (default 10k readings/s): publish -> committed latency;

and prints the figures with the issue's goals next to them. Every subscriber and publisher
runs in a process of its own. The exit status is 0 whether or not the goals are met; a missed
goal is printed as MISSED. Method and caveats: ``benchmarks/README.md``.

Run: ``.venv/bin/python benchmarks/ingest.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from bench_naive import drain_naive
from bench_proc import CTX, Child, CpuMeter
from bench_publish import PublishResult, create_session, end_session, publish_backlog, publish_paced
from bench_report import Report, render
from bench_subjects import (
    DrainResult,
    LatencyResult,
    drain_count_only,
    drain_service,
    paced_service,
    service_config,
)
from bench_workload import Device, Workload

from gateway.config import MqttConfig
from pipeline import registry
from pipeline.store import DuckDbStore, StoreConfig
from vitalwire.broker import MosquittoBroker
from vitalwire.config import ServiceConfig
from vitalwire.service import build_router

__all__ = ["main", "parse_args"]

ASSIGNED_FROM = datetime(2000, 1, 1, tzinfo=UTC)
"""Start of every benchmark device's assignment (long before any reading)."""

BACKLOG_END_LAG_US = 2_000_000
"""The newest backlog reading is this far in the past when publishing starts."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (all have defaults sized for about three minutes in total)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--messages", type=int, default=100_000,
                   help="backlog drained by the service and the count-only subscriber")
    p.add_argument("--naive-messages", type=int, default=3_000,
                   help="backlog drained by the naive baseline")
    p.add_argument("--devices", type=int, default=500, help="simulated devices")
    p.add_argument("--rounds", type=int, default=3,
                   help="backlogs drained by count-only and the service, in alternating order")
    p.add_argument("--publishers", type=int, default=2,
                   help="publisher processes for the backlogs")
    p.add_argument("--rate", type=float, default=10_000.0,
                   help="readings per second of the paced latency run")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds of the paced latency run that are timed")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="seconds of the paced run before timing starts (reported separately)")
    p.add_argument("--max-age-ms", type=float, default=None,
                   help="override the batcher's flush age (default: the shipped BatchConfig)")
    p.add_argument("--max-rows", type=int, default=None,
                   help="override the batcher's flush size (default: the shipped BatchConfig)")
    p.add_argument("--protocol", choices=("5", "3.1.1"), default=MqttConfig().protocol,
                   help="MQTT version of every subscriber (service, count-only, naive)")
    p.add_argument("--seed", type=int, default=7, help="seed of the workload")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="seconds a subscriber may take before it counts as incomplete")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE",
                   help="record a py-spy profile of the service's backlog drain (with its"
                        " intake process): a flame graph"
                        " (.svg), speedscope (.json) or collapsed stacks (.txt); needs py-spy"
                        " and slows that drain a little")
    p.add_argument("--profile-gil", action="store_true",
                   help="with --profile: sample only the thread holding the GIL")
    args = p.parse_args(argv)
    for name in ("messages", "naive_messages", "devices", "publishers", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        p.error("--rate and --duration must be > 0, --warmup >= 0")
    return args


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def prepare_database(path: Path, fleet: Sequence[Device]) -> None:
    """A store with the current schema and every device registered and assigned."""

    def populate(conn: duckdb.DuckDBPyConnection) -> None:
        for d in fleet:
            registry.register_device(conn, d.device_id, kind=d.kind)
            registry.assign(conn, d.device_id, d.patient_id, ASSIGNED_FROM,
                            created_by="benchmark")

    with DuckDbStore.open_sync(StoreConfig(path=path)) as store:
        store.call_sync(populate)


def publish(port: int, workload: Workload, n_messages: int, parts: int) -> PublishResult:
    """Publish a backlog ending just before now, from ``parts`` processes in parallel."""
    end_us = time.time_ns() // 1000 - BACKLOG_END_LAG_US
    children = [Child(f"publisher {i}", publish_backlog, port, workload, n_messages, end_us,
                      i, parts) for i in range(parts)]
    results: list[PublishResult] = [c.result(300) for c in children]
    return PublishResult(sum(r.messages for r in results), sum(r.readings for r in results),
                         max(r.seconds for r in results))


def _profiler(pid: int, out: Path, gil_only: bool) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` until it exits (None when py-spy is not installed)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        _log("py-spy not found (pip install py-spy); not profiling")
        return None
    fmt = {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph")
    cmd = [exe, "record", "--pid", str(pid), "--rate", "250", "--threads", "--nonblocking",
           "--subprocesses", "--format", fmt, "--output", str(out)]
    if gil_only:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_naive(args: argparse.Namespace, port: int, workload: Workload, template: Path,
              tmp: Path, filters: Sequence[str]) -> DrainResult:
    """The naive baseline draining its own (small) backlog."""
    patients = {d.device_id: d.patient_id for d in workload.fleet()}
    create_session(port, "bench-naive", filters, args.protocol)
    pub = publish(port, workload, args.naive_messages, 1)
    _log(f"naive backlog: {pub.messages} messages queued; draining")
    db = tmp / "naive.duckdb"
    shutil.copy(template, db)
    naive: DrainResult = Child("naive", drain_naive, port, "bench-naive", str(db), patients,
                               pub.messages, args.timeout, args.protocol
                               ).result(args.timeout + 60)
    end_session(port, "bench-naive", args.protocol)
    db.unlink()
    return naive


def run_round(args: argparse.Namespace, port: int, workload: Workload, template: Path,
              tmp: Path, filters: Sequence[str], index: int
              ) -> tuple[DrainResult, DrainResult, DrainResult, int]:
    """One backlog, queued for three sessions, drained by count-only (stock paho), by the
    service, and by count-only on the service's buffered client.

    The order rotates between rounds; each service drain starts from a fresh copy of the
    prepared database.

    Returns:
        ``(count_only, service, buffered count-only, readings published)``.
    """
    count_id, service_id = f"bench-count-{index}", f"bench-service-{index}"
    buffered_id = f"bench-buffered-{index}"
    for cid in (count_id, service_id, buffered_id):
        create_session(port, cid, filters, args.protocol)
    pub = publish(port, workload, args.messages, args.publishers)
    _log(f"round {index + 1}: {pub.messages} messages ({pub.readings} readings) queued in"
         f" {pub.seconds:.1f} s")
    db = tmp / f"service-{index}.duckdb"
    shutil.copy(template, db)

    def count_only(cid: str = count_id, buffered: bool = False) -> DrainResult:
        result: DrainResult = Child("count-only", drain_count_only, port, cid,
                                    pub.messages, args.timeout, args.protocol, buffered
                                    ).result(args.timeout + 60)
        end_session(port, cid, args.protocol)
        return result

    def count_buffered() -> DrainResult:
        return count_only(buffered_id, buffered=True)

    def service() -> DrainResult:
        config = service_config(port, service_id, db, args.max_age_ms, args.protocol,
                                args.max_rows)
        child = Child("service", drain_service, config, pub.messages, args.timeout)
        spy = (_profiler(child.pid, args.profile, args.profile_gil)
               if args.profile and index == 0 else None)
        result: DrainResult = child.result(args.timeout + 120)
        if spy is not None:
            spy.wait(60)
            _log(f"py-spy profile of the service drain written to {args.profile}")
        end_session(port, service_id, args.protocol)
        return result

    if index % 2 == 0:
        count, svc, buffered = count_only(), service(), count_buffered()
    else:
        buffered, svc, count = count_buffered(), service(), count_only()
    db.unlink()
    _log(f"round {index + 1}: count-only {count.messages_per_s:,.0f} msg/s,"
         f" service {svc.messages_per_s:,.0f} msg/s,"
         f" buffered count-only {buffered.messages_per_s:,.0f} msg/s")
    return count, svc, buffered, pub.readings


def run_latency(args: argparse.Namespace, port: int, workload: Workload, template: Path,
                tmp: Path, filters: Sequence[str]) -> tuple[LatencyResult, PublishResult]:
    """The service running; a paced publisher stamping each message with its publish time."""
    create_session(port, "bench-paced", filters, args.protocol)
    db = tmp / "paced.duckdb"
    shutil.copy(template, db)
    ready, expected = CTX.Event(), CTX.Queue()
    config = service_config(port, "bench-paced", db, args.max_age_ms, args.protocol,
                            args.max_rows)
    service = Child("paced service", paced_service, config, ready, expected, args.warmup,
                    args.timeout)
    if not ready.wait(60):
        service.result(1)  # surfaces the child's error
        raise RuntimeError("the paced service did not get ready within 60 s")
    seconds = args.warmup + args.duration
    _log(f"publishing {args.rate:,.0f} readings/s for {seconds:g} s")
    pub: PublishResult = Child("paced publisher", publish_paced, port, workload, args.rate,
                               seconds).result(seconds + 120)
    expected.put(pub.messages)
    latency: LatencyResult = service.result(args.timeout + 60)
    end_session(port, "bench-paced", args.protocol)
    return latency, pub


def _header(broker: MosquittoBroker, workload: Workload, protocol: str) -> list[str]:
    assert broker.binary is not None
    version = subprocess.run([broker.binary, "-h"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[:1]
    fleet = workload.fleet()
    kinds = {d.kind: 0 for d in fleet}
    for d in fleet:
        kinds[d.kind] += 1
    mix = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return ["vitalwire ingest benchmark",
            f"  {version[0] if version else 'mosquitto'}, MQTT {protocol} QoS 1,"
            f" {os.cpu_count()} CPUs,"
            f" python {sys.version.split()[0]}",
            f"  {len(fleet)} devices: {mix}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print the report; 0 unless something broke."""
    args = parse_args(argv)
    workload = Workload(args.devices, args.seed)
    meter = CpuMeter()
    with tempfile.TemporaryDirectory(prefix="vitalwire-bench-") as tmp_name, \
            MosquittoBroker() as broker:
        tmp = Path(tmp_name)
        template = tmp / "template.duckdb"
        prepare_database(template, workload.fleet())
        filters = build_router(ServiceConfig()).subscriptions()
        _log(f"broker on port {broker.port}; {args.devices} devices assigned")
        naive = run_naive(args, broker.port, workload, template, tmp, filters)
        counts: list[DrainResult] = []
        services: list[DrainResult] = []
        counts_buffered: list[DrainResult] = []
        backlog_readings = 0
        for index in range(args.rounds):
            count, service, buffered, backlog_readings = run_round(
                args, broker.port, workload, template, tmp, filters, index)
            counts.append(count)
            services.append(service)
            counts_buffered.append(buffered)
        latency, pub = run_latency(args, broker.port, workload, template, tmp, filters)
        header = _header(broker, workload, args.protocol)
    report = Report(header, naive, counts, services, backlog_readings, latency, args.rate,
                    pub.readings / pub.seconds if pub.seconds else 0.0, meter.read(),
                    counts_buffered)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

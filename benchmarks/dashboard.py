"""Dashboard benchmark: reading published -> tile updated over the websocket, and what live
clients cost the pipeline.

One run, one mosquitto, one vitalwire service with the alert engine, the live feed and the
dashboard server (all in this process, as in production), and in processes of their own:

* a paced MQTT publisher (default 10k readings/s: arrays of 10 readings per message) whose
  marker patient ``LAT`` carries its publish wall time as the reading's device time;
* N websocket clients (default 50, bearer-authenticated) that stamp the arrival of every
  marker row: latency = arrival wall time - publish wall time (one machine, one clock).

Then the throughput: a fixed burst is published while the service takes nothing (its receiver's
intake holds the burst), then drained by the service with no client connected and again with N
clients, in ABBA order over a few rounds; the figure is stored readings per second from opening
the intake to the last commit, the median per side. Goals
(issue 5): p95 <= 1 s at 10k readings/s with 50 clients; the clients cost <= 5 % of the
throughput. The exit status is 0 whether or not they are met; a miss is printed as MISSED.

Run: ``.venv/bin/python benchmarks/dashboard.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

# This file's name would shadow the ``dashboard`` package: import from the project instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CTX = mp.get_context("spawn")
DEVICES = 100
PER_MESSAGE = 10
METRICS = ("heart_rate", "spo2", "respiratory_rate")


VALUES = {"heart_rate": (72.0, "/min"), "spo2": (97.0, "%"), "respiratory_rate": (16.0, "/min")}


def _payload(device: str, t_ms: int, seq: int, shift: float) -> bytes:
    rows = []
    for i in range(PER_MESSAGE):
        metric = METRICS[i % 3]
        value, unit = VALUES[metric]
        rows.append({"device_id": device, "metric": metric, "value": value + (seq % 3) * shift,
                     "unit": unit, "ts": t_ms - i, "seq": seq + i})
    return orjson.dumps(rows)


def publisher(port: int, rate: float, seconds: float, burst: int, out: Any) -> None:
    """Publish paced readings (with a marker every 0.1 s), or a burst as fast as possible."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time()}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    seq = 0
    sent = 0
    if burst:
        base = int(time.time() * 1000) - 60_000
        infos = []
        for n in range(burst // PER_MESSAGE):
            device = f"BENCH-{n % DEVICES:03d}"
            infos.append(client.publish(f"vitalwire/v1/devices/{device}/readings",
                                        _payload(device, base + n // DEVICES * 20, seq, 1.0), 1))
            seq += PER_MESSAGE
        for info in infos:
            info.wait_for_publish(120)
        sent = burst
    else:
        per_s = rate / PER_MESSAGE
        start = time.monotonic()
        n = 0
        next_marker = start
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * per_s)
            while n < due:
                device = f"BENCH-{n % DEVICES:03d}"
                client.publish(f"vitalwire/v1/devices/{device}/readings",
                               _payload(device, int(time.time() * 1000), seq, 0.5), 1)
                seq += PER_MESSAGE
                n += 1
            if now >= next_marker:
                t_ms = int(time.time() * 1000)
                client.publish("vitalwire/v1/devices/LAT-1/readings", orjson.dumps(
                    {"device_id": "LAT-1", "metric": "heart_rate", "value": 60.0, "unit": "/min",
                     "ts": t_ms, "seq": t_ms}), 1)
                next_marker += 0.1
            time.sleep(0.002)
        sent = n * PER_MESSAGE
    client.loop_stop()
    client.disconnect()
    out.put(sent)


def clients(url: str, token: str, n: int, stop: Any, out: Any) -> None:
    """``n`` websocket clients until ``stop`` is set; returns marker latencies (s) seen."""
    import websockets

    async def one(lat: list[float]) -> None:
        async with websockets.connect(url, additional_headers={"Authorization": token},
                                      max_size=None) as ws:
            while not stop.is_set():
                try:
                    text = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                if '"LAT"' not in text:
                    continue
                msg = orjson.loads(text)
                for row in msg.get("rows", ()):
                    if row[0] == "LAT":
                        lat.append(now - row[3] / 1e6)

    async def main() -> list[float]:
        lats: list[list[float]] = [[] for _ in range(n)]
        await asyncio.gather(*(one(x) for x in lats))
        return [v for x in lats for v in x]

    out.put(asyncio.run(main()))


class Clients:
    """The client process: connected on enter, disconnected (latencies collected) on exit."""

    def __init__(self, url: str, token: str, n: int, feed: Any) -> None:
        self.args = (url, token, n)
        self.feed = feed
        self.latencies: list[float] = []

    async def __aenter__(self) -> Clients:
        self.stop, self.out = CTX.Event(), CTX.Queue()
        self.proc = CTX.Process(target=clients, args=(*self.args, self.stop, self.out))
        self.proc.start()
        deadline = time.monotonic() + 60
        while len(self.feed.clients) < self.args[2]:
            if not self.proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the websocket clients did not all connect")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.latencies = await asyncio.to_thread(self.out.get, True, 60)
        await asyncio.to_thread(self.proc.join, 30)
        while self.feed.clients:
            await asyncio.sleep(0.05)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    import httpx

    from alerts.engine import AlertEngine
    from dashboard.config import DashboardConfig
    from dashboard.demo import create_demo_users
    from dashboard.driver import EngineDriver
    from dashboard.feed import LiveFeed
    from dashboard.server import DashboardServer
    from gateway.config import MqttConfig
    from gateway.mqtt_receiver import MqttReceiver
    from pipeline import registry
    from pipeline.store import StoreConfig
    from vitalwire.broker import MosquittoBroker
    from vitalwire.config import ServiceConfig
    from vitalwire.service import Service, build_router, freeze_startup_objects

    tmp = Path(tempfile.mkdtemp(prefix="vw-bench-dash-"))
    broker = MosquittoBroker(workdir=tmp / "broker")
    broker.start()
    try:
        config = ServiceConfig(mqtt=MqttConfig(port=broker.port, client_id="bench-dash"),
                               store=StoreConfig(path=tmp / "bench.duckdb"), progress_s=0)
        receiver = MqttReceiver(config.mqtt, build_router(config).subscriptions())
        source = GatedSource(receiver)
        async with receiver, Service(config, source=source) as svc:
            since = datetime(2000, 1, 1, tzinfo=UTC)
            for i in range(DEVICES):
                await svc.store.call(registry.assign, f"BENCH-{i:03d}", f"B{i:03d}", since)
            await svc.store.call(registry.assign, "LAT-1", "LAT", since)
            await svc.refresh_assignments()
            engine = await AlertEngine.from_store(svc.store)
            await create_demo_users(svc.store)
            feed = LiveFeed(DashboardConfig())
            dash = DashboardConfig(port=0)
            server = DashboardServer(dash, store=svc.store, engine=engine, feed=feed)
            async with server, EngineDriver(server.context.desk) as driver:
                svc.add_pre_commit(driver.before_commit)  # wired as vitalwire.live does
                svc.add_batch_listener(driver.after_commit)
                assert await receiver.wait_connected(15)
                async with httpx.AsyncClient(base_url=server.url) as c:
                    r = await c.post("/api/auth/login", json={
                        "username": "clinician", "password": "clinician-demo",
                        "issue_token": True})
                    token = f"Bearer {r.json()['token']}"
                ws_url = server.url.replace("http://", "ws://") + "/api/live"
                freeze_startup_objects()  # as vitalwire run does once started
                report = await measure(args, svc, source, broker.port, ws_url, token, feed)
        print_report(args, report)
    finally:
        broker.cleanup()


class GatedSource:
    """The MQTT receiver behind a gate: while it is shut the service takes nothing, and what
    the broker sends waits in the receiver's intake (up to its Receive Maximum)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.open.set()
        self._inside = 0

    async def shut(self) -> None:
        """Close the gate and wait for a receive already past it to return."""
        self.open.clear()
        while self._inside:
            await asyncio.sleep(0.01)

    async def receive(self, max_items: int, timeout: float | None) -> list[Any]:
        if not self.open.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.open.wait(), timeout)
            return []
        self._inside += 1
        try:
            result: list[Any] = await self.inner.receive(max_items, timeout)
        finally:
            self._inside -= 1
        return result

    def ack(self, tokens: Any) -> None:
        self.inner.ack(tokens)


async def drain(svc: Any, source: GatedSource, port: int, burst: int) -> float:
    """Stored readings/s draining a burst that waited in the receiver's intake, so that the
    publisher does not compete with the drain for the CPUs."""
    messages = burst // PER_MESSAGE
    await source.shut()
    q = CTX.Queue()
    proc = CTX.Process(target=publisher, args=(port, 0.0, 0.0, burst, q))
    proc.start()
    await asyncio.to_thread(q.get, True, 300)
    await asyncio.to_thread(proc.join, 60)
    deadline = time.monotonic() + 120
    while source.inner.pending() < messages and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the machine settles after publishing
    before, seen = svc.stats.stored, svc.stats.messages
    started = time.monotonic()
    source.open.set()
    while svc.stats.messages - seen < messages and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    stored = svc.stats.stored - before
    if stored < burst:
        print(f"  note: {burst - stored} burst readings not stored "
              f"(quarantine: {svc.stats.by_reason})", file=sys.stderr)
    return stored / elapsed if elapsed > 0 else float("nan")


async def measure(args: argparse.Namespace, svc: Any, source: GatedSource, port: int,
                  ws_url: str, token: str, feed: Any) -> dict[str, Any]:
    """Throughput in ABBA order (alone, with clients, with clients, alone) per round, so that
    a drift over the run (a growing table) weighs on both sides alike; then the paced run."""
    out: dict[str, Any] = {"alone": [], "with_clients": []}
    for _ in range(args.rounds):
        for with_clients in (False, True, True, False):
            if with_clients:
                async with Clients(ws_url, token, args.clients, feed):
                    out["with_clients"].append(await drain(svc, source, port, args.burst))
            else:
                out["alone"].append(await drain(svc, source, port, args.burst))
    async with Clients(ws_url, token, args.clients, feed) as live:
        pq = CTX.Queue()
        pproc = CTX.Process(target=publisher, args=(port, args.rate, args.seconds, 0, pq))
        before = svc.stats.stored
        started = time.monotonic()
        pproc.start()
        while pproc.is_alive():
            await asyncio.sleep(0.1)
        out["paced_rate"] = (svc.stats.stored - before) / (time.monotonic() - started)
        await asyncio.sleep(1.0)  # the last markers reach the clients
    out["latency"] = live.latencies
    out["dropped"] = feed.stats.dropped
    return out


def print_report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    lat = r["latency"]
    p50, p95 = pct(lat, 0.50), pct(lat, 0.95)
    alone, with_clients = statistics.median(r["alone"]), statistics.median(r["with_clients"])
    cost = 1 - with_clients / alone if alone else float("nan")
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    print(f"dashboard benchmark: {args.clients} websocket clients, {args.rate:.0f} readings/s "
          f"for {args.seconds:.0f} s, bursts of {args.burst} readings")
    print(f"  paced ingest achieved        {r['paced_rate']:10.0f} readings/s")
    print(f"  published -> tile (markers)  n={len(lat)} p50 {p50 * 1000:7.1f} ms  "
          f"p95 {p95 * 1000:7.1f} ms  (goal p95 <= 1000 ms: {ok(p95 <= 1.0)})")
    runs = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
    print(f"  throughput, no clients       {alone:10.0f} readings/s (median of {runs(r['alone'])})")
    print(f"  throughput, {args.clients} clients       {with_clients:10.0f} readings/s (median of "
          f"{runs(r['with_clients'])})")
    print(f"  cost of the clients          {cost * 100:10.1f} %  (goal <= 5 %: {ok(cost <= 0.05)})")
    print(f"  messages dropped for slow clients: {r['dropped']}")
    if lat:
        print(f"  latency mean {statistics.mean(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings/s (paced)")
    parser.add_argument("--seconds", type=float, default=20.0, help="paced phase length")
    parser.add_argument("--burst", type=int, default=200_000,
                        help="readings per throughput run (at most 10x the Receive Maximum)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="ABBA rounds of throughput runs (4 bursts each)")
    args = parser.parse_args()
    from gateway.config import MqttConfig

    if args.burst // PER_MESSAGE > MqttConfig().receive_maximum:
        parser.error(f"--burst: at most {MqttConfig().receive_maximum * PER_MESSAGE} readings"
                     " (the receiver's intake holds a whole burst)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

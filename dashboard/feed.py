"""The live feed hub: ward state in memory, a snapshot, then numbered deltas to every client.

::

    service ──on_batch(batch)──────────┐          ┌─> client queue (bounded, drops oldest) ─> ws
    engine ──on_alert_events(events)───┼─> LiveFeed ─> client queue ─> ws
    heartbeat task ────────────────────┘          └─> backlog (last N deltas, for backfill)

Every delta carries the next sequence number (``seq``); heartbeats carry the current one, so a
client that missed a delta sees the gap and asks for a resync. A client reconnecting with
``since=<seq>`` and the same ``epoch`` (one per feed instance) gets the deltas it missed from
the backlog, or else a snapshot. ``on_batch`` and ``on_alert_events`` never block and never
await. ``on_batch`` only keeps the batch's latest-value columns; every ``push_interval_s`` the
feed merges what was kept into the state with a few frame operations and sends one ``vitals``
delta, so the cost of the live clients follows the number of clients, not the ingest rate.
Alert deltas go out at once. Each delta is serialized once and appended to every client's
queue. A client whose queue is full loses its oldest message; the drop is
counted and the client gets ``{"type": "resync"}`` and a fresh snapshot instead of the rest.

Message types (JSON text frames): ``snapshot``, ``vitals``, ``alerts``, ``news2``, ``plans``,
``heartbeat``, ``resync``. See ``docs/dashboard.md``. Call everything on the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import polars as pl

from alerts.lifecycle import Alert, AlertEvent
from dashboard.config import DashboardConfig
from pipeline.readings import ReadingBatch

__all__ = ["STATE_SCHEMA", "AlertSource", "FeedClient", "FeedStats", "LiveFeed", "alert_json"]

STATE_SCHEMA = pl.Schema(
    {"patient_id": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64, "t": pl.Int64,
     "ref_v": pl.Float64, "ref_t": pl.Int64, "mid_v": pl.Float64, "mid_t": pl.Int64,
     "delta": pl.Float64, "trend": pl.Int8}
)
"""Latest value per (patient, metric) with the trend anchors (``t`` device time, µs)."""

TREND_RELATIVE = 0.02
"""The arrow turns up or down when the value moved more than 2 % from the reference."""

_KEYS = ["patient_id", "metric"]


class AlertSource(Protocol):
    """What the feed reads from the alert engine (:class:`alerts.engine.AlertEngine`)."""

    def open_alerts(self, patient_id: str | None = None) -> list[Alert]: ...

    def news2_scores(self) -> pl.DataFrame: ...


def alert_json(alert: Alert) -> dict[str, Any]:
    """An open alert as the page shows it."""
    return alert.to_json()


@dataclass(slots=True)
class FeedStats:
    """Counters of the hub (all clients together)."""

    batches: int = 0
    readings: int = 0
    deltas: int = 0
    dropped: int = 0
    resyncs: int = 0
    connects: int = 0
    last_batch_us: int | None = None


class FeedClient:
    """One connected page: a bounded queue of serialized messages.

    Args:
        feed: The hub.
        user: Who is connected (for the stats).
        maxlen: Queue bound.
    """

    def __init__(self, feed: LiveFeed, user: str, maxlen: int) -> None:
        self.feed = feed
        self.user = user
        self.maxlen = maxlen
        self.dropped = 0
        self.resyncs = 0
        self.closed = False
        self._queue: deque[str] = deque()
        self._resync = False
        self._wakeup = asyncio.Event()

    def offer(self, message: str) -> None:
        """Queue a message; never blocks. A full queue drops its oldest and asks to resync."""
        if self.closed:
            return
        if len(self._queue) >= self.maxlen:
            self._queue.popleft()
            self.dropped += 1
            self.feed.stats.dropped += 1
            self._resync = True
        self._queue.append(message)
        self._wakeup.set()

    def request_resync(self) -> None:
        """Replace whatever is queued with a fresh snapshot (the client saw a gap)."""
        self._resync = True
        self._wakeup.set()

    def pending(self) -> int:
        """Messages queued."""
        return len(self._queue)

    def take_nowait(self) -> list[str]:
        """Everything queued (a resync notice and a snapshot when one is due)."""
        if self._resync:
            self._resync = False
            self._queue.clear()
            self.resyncs += 1
            self.feed.stats.resyncs += 1
            notice = orjson.dumps({"type": "resync", "dropped": self.dropped}).decode()
            return [notice, self.feed.snapshot_text()]
        out = list(self._queue)
        self._queue.clear()
        return out

    async def take(self) -> list[str]:
        """Wait for messages, then take them all; ``[]`` once the client is closed."""
        while not self._queue and not self._resync and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        return [] if self.closed else self.take_nowait()

    def close(self) -> None:
        """Stop queueing and wake the sender."""
        self.closed = True
        self._queue.clear()
        self._wakeup.set()


class LiveFeed:
    """Ward state and fan-out to live clients.

    Args:
        config: Queue bound, backlog, heartbeat, trend window, ingest staleness.
        engine: The alert engine, for open alerts and NEWS2 (optional; see :meth:`attach`).
        clock_us: Wall clock, UTC microseconds (injectable).
    """

    def __init__(self, config: DashboardConfig | None = None, *,
                 engine: AlertSource | None = None,
                 clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.config = config or DashboardConfig()
        self.engine = engine
        self.clock_us = clock_us
        self.epoch = secrets.token_hex(4)
        self.seq = 0
        self.stats = FeedStats()
        self.clients: set[FeedClient] = set()
        self._state = pl.DataFrame(schema=STATE_SCHEMA)
        self._patients: set[str] = set()
        self._alerts: dict[str, dict[str, Any]] = {}
        self._news2: dict[str, dict[str, Any]] = {}
        self._news2_frame: object = None
        self._plans: dict[str, int] = {}
        self._backlog: deque[tuple[int, str]] = deque(maxlen=self.config.backlog)
        self._snapshot: tuple[int, str] | None = None
        self._pending: list[pl.DataFrame] = []
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def attach(self, engine: AlertSource) -> None:
        """Read open alerts and NEWS2 from ``engine`` from now on."""
        self.engine = engine
        self._alerts = {a.alert_id: alert_json(a) for a in engine.open_alerts()}
        self._patients.update(a["patient_id"] for a in self._alerts.values())
        self._poll_news2(publish=False)
        self._snapshot = None

    def start(self) -> None:
        """Start the task that pushes vitals and heartbeats (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._push_loop(), name="dashboard-feed")

    async def stop(self) -> None:
        """Send what is pending, stop the push task and close every client. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush()
        for client in list(self.clients):
            client.close()
        self.clients.clear()

    async def __aenter__(self) -> LiveFeed:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- seeding -----------------------------------------------------------------------------

    def seed(self, latest: pl.DataFrame, patients: Iterable[str] = (),
             plans: dict[str, int] | None = None) -> None:
        """Initial state: ``latest`` has ``patient_id, metric, value, t`` (µs), e.g. from
        :func:`dashboard.queries.latest_vitals`; ``patients`` adds patients without readings."""
        frame = latest.select(
            pl.col("patient_id").cast(pl.Utf8), pl.col("metric").cast(pl.Utf8),
            pl.col("value").cast(pl.Float64), pl.col("t").cast(pl.Int64),
        )
        self._state = frame.with_columns(
            ref_v=pl.col("value"), ref_t=pl.col("t"), mid_v=pl.col("value"), mid_t=pl.col("t"),
            delta=pl.lit(0.0), trend=pl.lit(0, pl.Int8),
        ).select(STATE_SCHEMA.names())
        self._patients.update(frame["patient_id"].to_list())
        self._patients.update(patients)
        self._plans.update(plans or {})
        self._snapshot = None

    # -- inputs ------------------------------------------------------------------------------

    def on_batch(self, batch: ReadingBatch) -> None:
        """A committed, normalized batch: kept for the next ``vitals`` delta (sent at once
        when ``push_interval_s`` is 0)."""
        r = batch.readings
        self.stats.batches += 1
        self.stats.readings += r.height
        self.stats.last_batch_us = self.clock_us()
        if r.height:
            self._pending.append(r.select("patient_id", "metric", "value", "observed_at"))
        if self.config.push_interval_s == 0:
            self.flush()

    def flush(self) -> None:
        """Merge the kept readings into the state and send one ``vitals`` delta with the
        values that changed; then any NEWS2 changes."""
        if self._pending:
            pending, self._pending = self._pending, []
            rows = self._merge(pl.concat(pending, rechunk=False))
            if rows:
                self._publish("vitals", {"rows": rows})
        self._poll_news2()

    def _merge(self, readings: pl.DataFrame) -> list[tuple[Any, ...]]:
        agg = (
            readings.lazy()
            .filter(pl.col("patient_id").is_not_null() & pl.col("value").is_not_null())
            .group_by("patient_id", "metric")
            .agg(value=pl.col("value").get(pl.col("observed_at").arg_max()),
                 t=pl.col("observed_at").max().dt.epoch("us"))
            .with_columns(pl.col("metric").cast(pl.Utf8))
            .collect()
        )
        if agg.height == 0:
            return []
        old = self._state.select([*_KEYS, "t", "ref_v", "ref_t", "mid_v", "mid_t"])
        j = agg.join(old, on=_KEYS, how="left", suffix="_old")
        j = j.filter(pl.col("t_old").is_null() | (pl.col("t") > pl.col("t_old")))
        if j.height == 0:
            return []
        first = pl.col("t_old").is_null()
        roll = ~first & ((pl.col("t") - pl.col("mid_t")) >= round(self.config.trend_window_s * 1e6))
        j = j.with_columns(
            ref_v=pl.when(first).then(pl.col("value")).when(roll).then(pl.col("mid_v"))
            .otherwise(pl.col("ref_v")),
            ref_t=pl.when(first).then(pl.col("t")).when(roll).then(pl.col("mid_t"))
            .otherwise(pl.col("ref_t")),
            mid_v=pl.when(first | roll).then(pl.col("value")).otherwise(pl.col("mid_v")),
            mid_t=pl.when(first | roll).then(pl.col("t")).otherwise(pl.col("mid_t")),
        )
        delta = pl.col("value") - pl.col("ref_v")
        limit = pl.max_horizontal(pl.col("ref_v").abs() * TREND_RELATIVE, pl.lit(1e-9))
        j = j.with_columns(delta=delta).with_columns(
            trend=pl.when(pl.col("delta") > limit).then(1).when(pl.col("delta") < -limit)
            .then(-1).otherwise(0).cast(pl.Int8)
        ).select(STATE_SCHEMA.names())
        self._state = pl.concat([self._state.join(j, on=_KEYS, how="anti"), j])
        self._patients.update(j["patient_id"].unique().to_list())
        return j.select("patient_id", "metric", "value", "t", "delta", "trend").rows()

    def on_alert_events(self, events: Sequence[AlertEvent]) -> None:
        """Engine events (opened, acknowledged, resolved...): one ``alerts`` delta."""
        if not events:
            self._poll_news2()
            return
        open_now = ({a.alert_id: a for a in self.engine.open_alerts()}
                    if self.engine is not None else {})
        changed: list[dict[str, Any]] = []
        closed: list[str] = []
        for aid in dict.fromkeys(e.alert_id for e in events if e.alert_id):
            alert = open_now.get(aid)
            if alert is not None:
                body = alert_json(alert)
            elif self.engine is None and (ev := _last_event(events, aid)).to_state != "resolved":
                body = {**self._alerts.get(aid, {}), **_event_alert(ev)}
            else:
                self._alerts.pop(aid, None)
                closed.append(aid)
                continue
            self._alerts[aid] = body
            changed.append(body)
        for e in events:
            self._patients.add(e.patient_id)
            if e.plan_version and e.plan_version > self._plans.get(e.patient_id, 0):
                self._plans[e.patient_id] = e.plan_version
        self._publish("alerts", {"events": [e.to_json() for e in events], "alerts": changed,
                                 "closed": closed})
        self._poll_news2()

    def set_plan_version(self, patient_id: str, version: int) -> None:
        """A care plan version was put in force: one ``plans`` delta."""
        self._plans[patient_id] = version
        self._patients.add(patient_id)
        self._publish("plans", {"plans": {patient_id: version}})

    def add_patients(self, patients: Iterable[str]) -> None:
        """Patients to show even without readings (new assignments)."""
        new = set(patients) - self._patients
        if new:
            self._patients.update(new)
            self._publish("patients", {"patients": sorted(new)})

    def _poll_news2(self, publish: bool = True) -> None:
        if self.engine is None:
            return
        frame = self.engine.news2_scores()
        if frame is self._news2_frame:
            return
        self._news2_frame = frame
        changed = []
        for row in frame.iter_rows(named=True):  # one row per patient with a NEWS2 rule
            body = {"patient_id": row["patient_id"], "aggregate": row["aggregate"],
                    "risk_band": row["risk_band"], "complete": row["complete"],
                    "any_parameter_3": row["any_parameter_3"],
                    "missing": [m for m in (row["missing"] or "").split(",") if m],
                    "t_us": row["t"]}
            if self._news2.get(row["patient_id"]) != body:
                self._news2[row["patient_id"]] = body
                changed.append(body)
        if changed:
            self._patients.update(b["patient_id"] for b in changed)
            if publish:
                self._publish("news2", {"scores": changed})
            else:
                self._snapshot = None

    # -- output ------------------------------------------------------------------------------

    def _publish(self, kind: str, body: dict[str, Any]) -> None:
        self.seq += 1
        self.stats.deltas += 1
        text = orjson.dumps({"type": kind, "seq": self.seq, **body}).decode()
        self._backlog.append((self.seq, text))
        self._snapshot = None
        for client in self.clients:
            client.offer(text)

    def patients(self) -> list[dict[str, Any]]:
        """Every known patient with latest vitals, NEWS2, plan version and open alert ids."""
        self.flush()
        vitals: dict[str, dict[str, Any]] = {p: {} for p in self._patients}
        for pid, metric, value, t, delta, trend in self._state.select(
            "patient_id", "metric", "value", "t", "delta", "trend"
        ).iter_rows():
            vitals.setdefault(pid, {})[metric] = {"value": value, "t_us": t, "delta": delta,
                                                  "trend": trend}
        by_patient: dict[str, list[str]] = {}
        for aid, a in self._alerts.items():
            by_patient.setdefault(a["patient_id"], []).append(aid)
        return [
            {"patient_id": pid, "vitals": vitals[pid], "news2": self._news2.get(pid),
             "plan_version": self._plans.get(pid), "alerts": by_patient.get(pid, [])}
            for pid in sorted(vitals)
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Open alerts as last sent to clients."""
        return list(self._alerts.values())

    def snapshot(self) -> dict[str, Any]:
        """The whole ward as of :attr:`seq`."""
        self.flush()
        return {
            "type": "snapshot", "seq": self.seq, "epoch": self.epoch,
            "server_us": self.clock_us(), "last_batch_us": self.stats.last_batch_us,
            "heartbeat_s": self.config.heartbeat_s, "ingest_stale_s": self.config.ingest_stale_s,
            "patients": self.patients(), "alerts": self.alerts(),
        }  # fmt: skip

    def snapshot_text(self) -> str:
        """The snapshot serialized (cached until the next delta)."""
        self.flush()
        if self._snapshot is None or self._snapshot[0] != self.seq:
            self._snapshot = (self.seq, orjson.dumps(self.snapshot()).decode())
        return self._snapshot[1]

    def heartbeat(self) -> None:
        """Tell every client the server is alive, the current ``seq`` and the ingest age."""
        self.flush()
        now = self.clock_us()
        last = self.stats.last_batch_us
        text = orjson.dumps({
            "type": "heartbeat", "seq": self.seq, "epoch": self.epoch, "server_us": now,
            "last_batch_us": last, "ingest_age_s": None if last is None else (now - last) / 1e6,
        }).decode()  # fmt: skip
        for client in self.clients:
            client.offer(text)

    async def _push_loop(self) -> None:
        push = self.config.push_interval_s or self.config.heartbeat_s
        next_beat = time.monotonic() + self.config.heartbeat_s
        while True:
            await asyncio.sleep(min(push, max(next_beat - time.monotonic(), 0.0)))
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.config.heartbeat_s
                self.heartbeat()
            else:
                self.flush()

    # -- clients -----------------------------------------------------------------------------

    def connect(self, user: str, since: int | None = None, epoch: str | None = None) -> FeedClient:
        """A new client, with the deltas after ``since`` (same epoch, still in the backlog)
        or else a snapshot queued first."""
        client = FeedClient(self, user, self.config.client_queue)
        self.stats.connects += 1
        oldest = self._backlog[0][0] if self._backlog else self.seq + 1
        missed = self.seq - since if since is not None else None
        if (since is not None and epoch == self.epoch and missed is not None
                and 0 <= missed < self.config.client_queue and since + 1 >= oldest):
            for seq, text in self._backlog:
                if seq > since:
                    client.offer(text)
        else:
            client.offer(self.snapshot_text())
        self.clients.add(client)
        return client

    def disconnect(self, client: FeedClient) -> None:
        """Forget a client (idempotent)."""
        client.close()
        self.clients.discard(client)

    def client_stats(self) -> dict[str, Any]:
        """Counters for operators."""
        s = self.stats
        return {
            "clients": len(self.clients), "seq": self.seq, "epoch": self.epoch,
            "batches": s.batches, "readings": s.readings, "deltas": s.deltas,
            "dropped": s.dropped, "resyncs": s.resyncs, "connects": s.connects,
            "last_batch_us": s.last_batch_us,
            "queued": sum(c.pending() for c in self.clients),
        }  # fmt: skip


def _last_event(events: Sequence[AlertEvent], alert_id: str) -> AlertEvent:
    return [e for e in events if e.alert_id == alert_id][-1]


def _event_alert(ev: AlertEvent) -> dict[str, Any]:
    """The fields of an alert that an event carries (used without an engine)."""
    return {
        "alert_id": ev.alert_id, "patient_id": ev.patient_id, "rule_id": ev.rule_id,
        "side": ev.side, "category": ev.category, "predicted": ev.predicted,
        "priority": ev.priority, "level": ev.level, "state": ev.to_state,
        "trigger_value": ev.value, "trigger_limit": ev.limit, "plan_version": ev.plan_version,
        "message": ev.detail, "opened_at_us": ev.at_us,
    }  # fmt: skip

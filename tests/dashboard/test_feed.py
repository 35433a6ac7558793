"""The live feed hub: deltas with sequence numbers, bounded queues, resync, backfill, trend."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl

from alerts.lifecycle import AlertEvent
from dashboard.config import DashboardConfig
from dashboard.feed import LiveFeed
from tests.dashboard.support import batch

T0 = 1_700_000_000_000_000
S = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 1000 * S

    def __call__(self) -> int:
        return self.now


def make(**kw: object) -> tuple[LiveFeed, Clock]:
    """A feed that sends each batch's delta at once unless ``push_interval_s`` is given."""
    clock = Clock()
    kw.setdefault("push_interval_s", 0.0)
    return LiveFeed(DashboardConfig(**kw), clock_us=clock), clock  # type: ignore[arg-type]


def msgs(texts: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(t) for t in texts]


def event(seq: int, kind: str, to_state: str, alert_id: str = "P001/spo2/low/1") -> AlertEvent:
    return AlertEvent(seq, kind, alert_id, "P001", "spo2", "low", "physiological", False,
                      None, to_state, T0, "system", "", "high", 2, 84.0, 87.0, True, 3,
                      "spo2 84 % <= 87")


def test_snapshot_then_vitals_delta_with_next_seq() -> None:
    feed, _ = make()
    client = feed.connect("nurse")
    first = msgs(client.take_nowait())
    assert [m["type"] for m in first] == ["snapshot"]
    assert first[0]["seq"] == 0 and first[0]["patients"] == []
    feed.on_batch(batch([("P001", "heart_rate", 70.0, T0), ("P001", "heart_rate", 75.0, T0 + S),
                         ("P002", "spo2", 97.0, T0)]))
    (delta,) = msgs(client.take_nowait())
    assert delta["type"] == "vitals" and delta["seq"] == 1
    assert sorted(map(tuple, delta["rows"])) == [
        ("P001", "heart_rate", 75.0, T0 + S, 0.0, 0), ("P002", "spo2", 97.0, T0, 0.0, 0)]


def test_older_reading_is_not_sent_and_latest_wins() -> None:
    feed, _ = make()
    feed.on_batch(batch([("P001", "heart_rate", 80.0, T0 + 10 * S)]))
    client = feed.connect("nurse")
    client.take_nowait()
    feed.on_batch(batch([("P001", "heart_rate", 60.0, T0)]))  # late: older than the latest
    assert client.take_nowait() == []
    assert feed.seq == 1
    assert feed.patients()[0]["vitals"]["heart_rate"]["value"] == 80.0


def test_trend_compares_with_a_value_one_window_old() -> None:
    feed, _ = make(trend_window_s=60.0)
    feed.on_batch(batch([("P001", "heart_rate", 100.0, T0)]))
    feed.on_batch(batch([("P001", "heart_rate", 101.0, T0 + 30 * S)]))  # within 2 %: flat
    vitals = feed.patients()[0]["vitals"]["heart_rate"]
    assert (vitals["delta"], vitals["trend"]) == (1.0, 0)
    feed.on_batch(batch([("P001", "heart_rate", 110.0, T0 + 60 * S)]))  # window: rolls
    vitals = feed.patients()[0]["vitals"]["heart_rate"]
    assert (vitals["delta"], vitals["trend"]) == (10.0, 1)
    feed.on_batch(batch([("P001", "heart_rate", 90.0, T0 + 70 * S)]))  # ref still T0's 100
    vitals = feed.patients()[0]["vitals"]["heart_rate"]
    assert (vitals["delta"], vitals["trend"]) == (-10.0, -1)


def test_full_queue_drops_oldest_counts_and_resyncs_with_snapshot() -> None:
    feed, _ = make(client_queue=3)
    client = feed.connect("slow")
    for i in range(5):  # snapshot + 5 deltas into a queue of 3
        feed.on_batch(batch([("P001", "heart_rate", 60.0 + i, T0 + i * S)]))
    assert client.dropped == 3 and feed.stats.dropped == 3
    out = msgs(client.take_nowait())
    assert [m["type"] for m in out] == ["resync", "snapshot"]
    assert out[0]["dropped"] == 3
    assert out[1]["seq"] == 5
    assert out[1]["patients"][0]["vitals"]["heart_rate"]["value"] == 64.0
    assert feed.stats.resyncs == 1
    feed.on_batch(batch([("P001", "heart_rate", 70.0, T0 + 9 * S)]))
    assert [m["seq"] for m in msgs(client.take_nowait())] == [6]


def test_slow_client_never_holds_back_others() -> None:
    feed, _ = make(client_queue=2)
    slow = feed.connect("slow")
    fast = feed.connect("fast")
    for i in range(4):
        feed.on_batch(batch([("P001", "heart_rate", 60.0 + i, T0 + i * S)]))
        assert [m["seq"] for m in msgs(fast.take_nowait())][-1] == i + 1
    assert fast.dropped == 0 and slow.dropped == 3


def test_backfill_after_reconnect_same_epoch() -> None:
    feed, _ = make()
    for i in range(3):
        feed.on_batch(batch([("P001", "heart_rate", 60.0 + i, T0 + i * S)]))
    client = feed.connect("nurse", since=1, epoch=feed.epoch)
    assert [(m["type"], m["seq"]) for m in msgs(client.take_nowait())] == [
        ("vitals", 2), ("vitals", 3)]
    other = feed.connect("nurse", since=1, epoch="another-server")
    assert [m["type"] for m in msgs(other.take_nowait())] == ["snapshot"]
    ahead = feed.connect("nurse", since=99, epoch=feed.epoch)
    assert [m["type"] for m in msgs(ahead.take_nowait())] == ["snapshot"]


def test_backlog_too_short_gives_a_snapshot() -> None:
    feed, _ = make(backlog=2)
    for i in range(5):
        feed.on_batch(batch([("P001", "heart_rate", 60.0 + i, T0 + i * S)]))
    client = feed.connect("nurse", since=1, epoch=feed.epoch)
    assert [m["type"] for m in msgs(client.take_nowait())] == ["snapshot"]


def test_heartbeat_carries_current_seq_and_ingest_age() -> None:
    feed, clock = make()
    client = feed.connect("nurse")
    client.take_nowait()
    feed.on_batch(batch([("P001", "heart_rate", 60.0, T0)]))
    client.take_nowait()
    clock.now += 12 * S
    feed.heartbeat()
    (hb,) = msgs(client.take_nowait())
    assert hb["type"] == "heartbeat" and hb["seq"] == 1 and hb["ingest_age_s"] == 12.0
    assert feed.seq == 1  # heartbeats are not deltas


def test_alert_events_without_engine_open_and_close() -> None:
    feed, _ = make()
    client = feed.connect("nurse")
    client.take_nowait()
    feed.on_alert_events([event(1, "opened", "active")])
    (d,) = msgs(client.take_nowait())
    assert d["type"] == "alerts" and d["seq"] == 1 and d["closed"] == []
    assert d["alerts"][0]["state"] == "active" and d["alerts"][0]["trigger_value"] == 84.0
    assert feed.patients()[0]["alerts"] == ["P001/spo2/low/1"]
    assert feed.patients()[0]["plan_version"] == 3
    feed.on_alert_events([event(2, "resolved", "resolved")])
    (d,) = msgs(client.take_nowait())
    assert d["closed"] == ["P001/spo2/low/1"] and feed.alerts() == []


def test_seed_and_disconnect() -> None:
    feed, _ = make()
    latest = pl.DataFrame({"patient_id": ["P009"], "metric": ["spo2"], "value": [93.0],
                           "t": [T0]})
    feed.seed(latest, patients=["P010"], plans={"P009": 2})
    snap = feed.snapshot()
    assert [p["patient_id"] for p in snap["patients"]] == ["P009", "P010"]
    assert snap["patients"][0]["vitals"]["spo2"] == {"value": 93.0, "t_us": T0, "delta": 0.0,
                                                    "trend": 0}
    assert snap["patients"][0]["plan_version"] == 2
    client = feed.connect("x")
    feed.disconnect(client)
    feed.on_batch(batch([("P009", "spo2", 90.0, T0 + S)]))
    assert client.take_nowait() == [] and feed.clients == set()


def test_batches_between_pushes_make_one_delta_with_the_latest_values() -> None:
    feed, _ = make(push_interval_s=0.25)
    client = feed.connect("nurse")
    client.take_nowait()
    for i in range(20):  # 20 batches between two pushes
        feed.on_batch(batch([("P001", "heart_rate", 60.0 + i, T0 + i * S),
                             ("P002", "spo2", 90.0 + i % 3, T0 + i * S)]))
    assert client.take_nowait() == [] and feed.seq == 0
    feed.flush()
    (delta,) = msgs(client.take_nowait())
    assert delta["type"] == "vitals" and delta["seq"] == 1
    assert sorted((r[0], r[1], r[2], r[3]) for r in delta["rows"]) == [
        ("P001", "heart_rate", 79.0, T0 + 19 * S), ("P002", "spo2", 91.0, T0 + 19 * S)]
    feed.flush()  # nothing new: no delta
    assert client.take_nowait() == [] and feed.seq == 1


def test_pending_readings_are_in_the_snapshot_and_the_heartbeat_seq() -> None:
    feed, _ = make(push_interval_s=5.0)
    watcher = feed.connect("watcher")
    watcher.take_nowait()
    feed.on_batch(batch([("P001", "heart_rate", 88.0, T0)]))
    late = feed.connect("late")  # its snapshot includes the pending reading...
    (snap,) = msgs(late.take_nowait())
    assert snap["seq"] == 1
    assert snap["patients"][0]["vitals"]["heart_rate"]["value"] == 88.0
    assert [m["seq"] for m in msgs(watcher.take_nowait())] == [1]  # ...sent to the others too
    feed.on_batch(batch([("P001", "heart_rate", 90.0, T0 + S)]))
    feed.heartbeat()
    delta, hb = msgs(watcher.take_nowait())
    assert (delta["type"], delta["seq"], hb["type"], hb["seq"]) == ("vitals", 2, "heartbeat", 2)


async def test_push_task_sends_pending_vitals_on_its_cadence() -> None:
    import asyncio

    feed, _ = make(push_interval_s=0.05, heartbeat_s=60.0)
    async with feed:
        client = feed.connect("nurse")
        client.take_nowait()
        feed.on_batch(batch([("P001", "heart_rate", 70.0, T0)]))
        feed.on_batch(batch([("P001", "heart_rate", 71.0, T0 + S)]))
        assert client.pending() == 0
        (delta,) = msgs(await asyncio.wait_for(client.take(), 5.0))
        assert delta["type"] == "vitals" and delta["rows"][0][2] == 71.0
        feed.on_batch(batch([("P001", "heart_rate", 72.0, T0 + 2 * S)]))
    assert [m["rows"][0][2] for m in msgs(client.take_nowait())] == []  # closed on stop
    assert feed.patients()[0]["vitals"]["heart_rate"]["value"] == 72.0  # flushed on stop


def test_push_interval_is_validated() -> None:
    import pytest

    from gateway.errors import ConfigError

    for bad in (-0.1, float("nan"), 11.0, True, "1"):
        with pytest.raises(ConfigError, match=r"dashboard\.push_interval_s"):
            DashboardConfig(push_interval_s=bad)  # type: ignore[arg-type]
    assert DashboardConfig(push_interval_s=0).push_interval_s == 0

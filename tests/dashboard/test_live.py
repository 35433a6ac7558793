"""The websocket live stream against the real app under uvicorn: auth, snapshot, deltas,
resync, backfill, and a stalled client that never slows anything down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from dashboard.config import DashboardConfig
from tests.dashboard.support import Stack, batch, logged_in, running_stack

pytestmark = pytest.mark.integration

S = 1_000_000


def ws_url(stack: Stack, query: str = "") -> str:
    return stack.url.replace("http://", "ws://") + "/api/live" + query


async def token_of(stack: Stack, user: str = "nurse") -> str:
    async with logged_in(stack.url, user, token=True) as (c, _):
        return str(c.headers["Authorization"])


async def recv(ws: ClientConnection) -> dict[str, Any]:
    while True:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] != "heartbeat":
            return msg  # type: ignore[no-any-return]


async def closed_code(url: str, **kw: Any) -> int | None:
    async with websockets.connect(url, **kw) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code


async def test_refused_without_login_or_from_a_foreign_origin(stack: Stack) -> None:
    assert await closed_code(ws_url(stack)) == 4401
    assert await closed_code(ws_url(stack), additional_headers={
        "Authorization": "Bearer not-a-token"}) == 4401
    async with logged_in(stack.url, "nurse") as (c, _):
        cookie = f"vw_session={c.cookies['vw_session']}"
    assert await closed_code(ws_url(stack), additional_headers={
        "Cookie": cookie}, origin="http://evil.example") == 4403
    async with websockets.connect(ws_url(stack), additional_headers={"Cookie": cookie},
                                  origin=stack.url) as ws:  # type: ignore[arg-type]
        assert (await recv(ws))["type"] == "snapshot"


async def test_snapshot_deltas_alerts_and_resync(stack: Stack) -> None:
    auth = {"Authorization": await token_of(stack)}
    now = time.time_ns() // 1000
    async with websockets.connect(ws_url(stack), additional_headers=auth) as ws:
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and snap["epoch"] == stack.feed.epoch
        assert [p["patient_id"] for p in snap["patients"]] == ["P001", "P002", "P003"]
        seq = snap["seq"]
        await stack.push([("P002", "heart_rate", 77.0, now)])
        # The vitals delta comes on the feed's push cadence; the engine's sweep may send a
        # NEWS2 delta first. Either way the sequence has no gap.
        first = [await recv(ws)]
        while first[-1]["type"] != "vitals":
            first.append(await recv(ws))
        assert [m["seq"] for m in first] == list(range(seq + 1, seq + 1 + len(first)))
        assert {m["type"] for m in first[:-1]} <= {"news2"}
        assert first[-1]["rows"] == [["P002", "heart_rate", 77.0, now, 0.0, 0]]
        seq = first[-1]["seq"]
        await stack.push([("P001", "spo2", 84.0, now - (24 - i) * S) for i in range(25)])
        seen: list[dict[str, Any]] = []
        while not any(m["type"] == "alerts" for m in seen):
            seen.append(await recv(ws))
        assert [m["seq"] for m in seen] == list(range(seq + 1, seq + 1 + len(seen)))
        alert = next(m for m in seen if m["type"] == "alerts")
        assert alert["events"][0]["kind"] == "opened"
        assert alert["alerts"][0]["patient_id"] == "P001"
        assert alert["alerts"][0]["priority"] == "high"
        await ws.send(orjson.dumps({"type": "resync"}).decode())
        assert (await recv(ws))["type"] == "resync"
        again = await recv(ws)
        assert again["type"] == "snapshot" and again["seq"] == stack.feed.seq
        assert [a["rule_id"] for a in again["alerts"] if a["patient_id"] == "P001"] == ["spo2"]


async def test_reconnect_with_since_gets_the_missed_deltas(stack: Stack) -> None:
    auth = {"Authorization": await token_of(stack)}
    now = time.time_ns() // 1000
    async with websockets.connect(ws_url(stack), additional_headers=auth) as ws:
        snap = await recv(ws)
    await stack.push([("P001", "heart_rate", 61.0, now)])
    stack.feed.flush()  # each reading its own delta (the push task would merge them)
    await stack.push([("P001", "heart_rate", 62.0, now + S)])
    stack.feed.flush()
    query = f"?since={snap['seq']}&epoch={snap['epoch']}"
    async with websockets.connect(ws_url(stack, query), additional_headers=auth) as ws:
        # The engine's periodic sweep may publish a NEWS2 delta between the two readings:
        # every missed delta comes back, in order, with no gap in the sequence.
        missed = [await recv(ws)]
        while sum(d["type"] == "vitals" for d in missed) < 2:
            missed.append(await recv(ws))
    assert [d["seq"] for d in missed] == list(range(snap["seq"] + 1, snap["seq"] + 1 + len(missed)))
    first, second = [d for d in missed if d["type"] == "vitals"]
    assert (first["type"], first["rows"][0][2]) == ("vitals", 61.0)
    assert (second["type"], second["rows"][0][2]) == ("vitals", 62.0)
    assert {d["type"] for d in missed} <= {"vitals", "news2", "alerts"}


@pytest.fixture
async def small_queue_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # One delta per batch, so that a stalled client's queue fills within a few batches.
    async with running_stack(tmp_path, DashboardConfig(port=0, client_queue=8, heartbeat_s=30.0,
                                                       push_interval_s=0)) as s:
        yield s


async def test_stalled_client_drops_oldest_then_resyncs(small_queue_stack: Stack) -> None:
    stack = small_queue_stack
    auth = {"Authorization": await token_of(stack)}
    now = time.time_ns() // 1000
    # A client that stops reading (tiny receive queue): its socket fills up, then its queue.
    async with websockets.connect(ws_url(stack), additional_headers=auth, max_queue=1,
                                  ping_interval=None) as ws:
        snap = await recv(ws)
        rows = [(f"Q{i:04d}", "heart_rate", 60.0, now) for i in range(2000)]
        deadline = time.monotonic() + 60
        n = 0
        while stack.feed.stats.dropped == 0:
            assert time.monotonic() < deadline, "the stalled client never overflowed"
            n += 1
            started = time.perf_counter()
            stack.feed.on_batch(batch([(p, m, v + n, t + n) for p, m, v, t in rows]))
            assert time.perf_counter() - started < 5  # returns at once (not a timing claim)
            await asyncio.sleep(0)
        async with logged_in(stack.url, "nurse") as (c, _):
            assert (await c.get("/api/health")).status_code == 200  # still serving
            stats = (await c.get("/api/live/stats")).json()
        assert stats["dropped"] >= 1 and stats["clients"] == 1
        # Reading again: the backlog drains, then a resync notice and a fresh snapshot.
        seen = []
        while True:
            msg = await recv(ws)
            seen.append(msg["type"])
            if msg["type"] == "snapshot":
                break
        assert seen[-2:] == ["resync", "snapshot"]
        assert msg["seq"] >= n + snap["seq"]
        assert len(msg["patients"]) == 2003

"""MergedSource: messages of several receivers, acks back to the right one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.records import RawMessage
from gateway.sources import MergedSource


class ListReceiver:
    def __init__(self, name: str, n: int) -> None:
        self.items = [RawMessage(f"{name}/{i}", b"", i, "mqtt", f"{name}{i}") for i in range(n)]
        self.acked: list[object] = []

    async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
        if not self.items:
            await asyncio.sleep(timeout or 0)
            return []
        out, self.items = self.items[:max_items], self.items[max_items:]
        return out

    def ack(self, tokens: Sequence[object]) -> None:
        self.acked.extend(tokens)


async def test_merges_and_routes_acks() -> None:
    a, b = ListReceiver("a", 5), ListReceiver("b", 3)
    async with MergedSource([a, b], chunk=2) as src:
        got: list[RawMessage] = []
        while len(got) < 8:
            got += await src.receive(3, 1.0)
        assert sorted(m.topic for m in got) == sorted(
            [f"a/{i}" for i in range(5)] + [f"b/{i}" for i in range(3)]
        )
        assert [m.topic for m in got if m.topic[0] == "a"] == [f"a/{i}" for i in range(5)]
        src.ack([m.ack for m in got])
    assert a.acked == [f"a{i}" for i in range(5)]
    assert b.acked == [f"b{i}" for i in range(3)]


async def test_a_failed_receiver_surfaces() -> None:
    class Broken(ListReceiver):
        async def receive(self, max_items: int, timeout: float | None) -> list[RawMessage]:
            raise RuntimeError("link lost for good")

    async with MergedSource([ListReceiver("a", 0), Broken("x", 0)]) as src:
        with pytest.raises(RuntimeError, match="link lost"):
            for _ in range(5):
                await src.receive(10, 0.5)

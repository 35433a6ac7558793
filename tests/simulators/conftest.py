"""Shared fixtures of the simulator tests: a fake clock and a list publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

import pytest

T0 = 1_767_225_600_000_000
"""2026-01-01T00:00:00Z in UTC microseconds: the wall start of most tests."""

US = 1_000_000


class FakeClock:
    """A clock that jumps to whatever time is slept until."""

    def __init__(self, now_us: int) -> None:
        self.now = now_us
        self.sleeps: list[int] = []

    def now_us(self) -> int:
        return self.now

    async def sleep_until(self, t_us: int) -> None:
        self.sleeps.append(t_us)
        self.now = max(self.now, t_us)
        await asyncio.sleep(0)


class ListPublisher:
    """Records what it is asked to publish, with the clock time of each call."""

    def __init__(self, clock: FakeClock, *, fail_topics: frozenset[str] = frozenset()) -> None:
        self.clock = clock
        self.fail_topics = fail_topics
        self.published: list[tuple[int, str, bytes]] = []
        self.entered = 0
        self.exited = 0
        self.on_publish: Callable[[int], None] | None = None

    async def __aenter__(self) -> Self:
        self.entered += 1
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.exited += 1

    async def publish(self, topic: str, payload: bytes) -> bool:
        if topic in self.fail_topics:
            return False
        self.published.append((self.clock.now_us(), topic, payload))
        if self.on_publish is not None:
            self.on_publish(len(self.published))
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)

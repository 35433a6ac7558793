"""Fixtures: a running dashboard over a real store and alert engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.dashboard.support import Stack, running_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Store, engine (adult-ward plans for P001-P003), users, feed, uvicorn on a free port."""
    async with running_stack(tmp_path) as s:
        yield s

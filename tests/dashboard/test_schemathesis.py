"""Property-based run of the whole OpenAPI spec against the live server: no 5xx, ever.

Every operation gets a bounded number of generated requests (valid and invalid), sent with an
admin's bearer token so that the handlers run, not just the authentication.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.dashboard.support import USERS, Stack, running_stack

pytestmark = pytest.mark.integration

EXAMPLES = 12
SLOW = {"/api/auth/login": 4, "/api/users": 4, "/api/users/{username}/password": 3}
"""Fewer examples where every request hashes or checks a password (argon2 is slow on purpose)."""
SKIP = {("POST", "/api/auth/logout")}
"""Would end the token the run uses."""


@pytest.fixture
def live_stack(tmp_path: Path) -> Iterator[tuple[Stack, asyncio.AbstractEventLoop]]:
    """A dashboard stack on its own event loop in a thread (schemathesis calls are blocking)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        async with running_stack(tmp_path) as stack:
            box["stack"] = stack
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60), "the dashboard did not start"
    stack = box["stack"]
    assert isinstance(stack, Stack)
    try:
        yield stack, loop
    finally:
        stop = box["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def test_no_server_errors(live_stack: tuple[Stack, asyncio.AbstractEventLoop]) -> None:
    stack, loop = live_stack
    now = time.time_ns() // 1000
    rows = [("P001", "spo2", 84.0, now - (24 - i) * 1_000_000) for i in range(25)]
    asyncio.run_coroutine_threadsafe(stack.push(rows), loop).result(30)
    login = httpx.post(f"{stack.url}/api/auth/login", json={
        "username": "boss", "password": USERS["boss"][1], "issue_token": True})
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    schema = schemathesis.openapi.from_url(f"{stack.url}/api/openapi.json")
    failures: list[str] = []
    checked = 0
    for result in schema.get_all_operations():
        op: Any = result.ok()  # type: ignore[union-attr]
        if (op.method.upper(), op.path) in SKIP:
            continue
        checked += 1

        @given(case=op.as_strategy())
        @settings(max_examples=SLOW.get(op.path, EXAMPLES), deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=stack.url, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path}: {response.status_code} "
                                f"{response.text[:300]} for {case.as_curl_command()}")

        call()
    assert checked >= 25
    assert failures == []
    # The token still works: the run did not lock itself out.
    assert httpx.get(f"{stack.url}/api/auth/me", headers=headers).status_code == 200

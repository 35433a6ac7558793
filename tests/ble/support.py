"""Helpers of the BLE integration tests: an async poll and a virtual ward."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.formats import router as router_module
from gateway.formats.ble import DEFAULT_TOPIC, FORMAT, decode_ble
from gateway.formats.router import DEFAULT_ROUTES, Route

BLE_ROUTES = DEFAULT_ROUTES
"""The shipped routes, which include ``ble/{device_id}/{characteristic}``."""


def enable_ble_format() -> None:
    """Check that the router ships the ``ble`` format and its route."""
    assert router_module.BUILTIN_FORMATS[FORMAT] is decode_ble
    assert Route(DEFAULT_TOPIC, FORMAT) in DEFAULT_ROUTES


async def until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``cond`` on the event loop; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)

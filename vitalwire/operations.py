"""Data operations behind the ``devices``, ``quarantine`` and ``readings`` commands.

Each operation takes a :class:`DataContext` (an open store, the normalizer, and a hook to call
when the registry changed) and JSON-friendly arguments, and returns JSON-friendly results. The
command line runs them on a store it opens itself or, while a service holds the database,
inside that service through its control socket (:mod:`vitalwire.control`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from alerts import operations as alerts_operations
from dashboard import cli as users_cli
from gateway.errors import ConfigError
from pipeline import quarantine, registry
from pipeline.fhir import cli as fhir_cli
from pipeline.normalize import Normalizer
from pipeline.store import DuckDbStore

__all__ = ["OPERATIONS", "DataContext", "parse_time", "rows"]


@dataclass(frozen=True, slots=True)
class DataContext:
    """What an operation may touch."""

    store: DuckDbStore
    normalizer: Normalizer
    registry_changed: Callable[[], Awaitable[None]]
    clock_us: Callable[[], int] = lambda: time.time_ns() // 1000


def parse_time(text: str | None, option: str) -> datetime | None:
    """RFC 3339 with offset (``Z`` allowed) -> aware datetime; ``None`` passes through."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise ConfigError(f"{option}: {text!r} needs a UTC offset (e.g. Z or +01:00)")
    return dt


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-friendly dicts (times as RFC 3339 UTC, bytes as text)."""
    return [{k: _jsonable(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


async def devices_assign(
    ctx: DataContext,
    device: str,
    patient: str,
    valid_from: str | None = None,
    valid_to: str | None = None,
) -> dict[str, Any]:
    """Assign a device to a patient over [from, to)."""
    start = parse_time(valid_from, "--from")
    end = parse_time(valid_to, "--to")
    assignment_id = await asyncio.to_thread(registry.assign, ctx.store, device, patient, start, end)
    await ctx.registry_changed()
    return {"assignment_id": assignment_id, "device": device, "patient": patient}


async def devices_unassign(ctx: DataContext, device: str, at: str | None = None) -> dict[str, Any]:
    """Close the device's open assignment."""
    closed = await asyncio.to_thread(registry.unassign, ctx.store, device, parse_time(at, "--at"))
    await ctx.registry_changed()
    return {"device": device, "closed": closed}


async def devices_list(ctx: DataContext, device: str | None = None) -> list[dict[str, Any]]:
    """Assignments (all, or of one device), oldest first."""
    frame = await asyncio.to_thread(registry.list_assignments, ctx.store, device)
    return rows(frame)


async def quarantine_list(
    ctx: DataContext, reason: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Quarantined rows, newest first."""
    frame = await asyncio.to_thread(
        quarantine.list_quarantine, ctx.store, reason_code=reason, limit=limit
    )
    return rows(frame)


async def quarantine_summary(ctx: DataContext) -> list[dict[str, Any]]:
    """Counts per reason code."""
    return rows(await asyncio.to_thread(quarantine.quarantine_summary, ctx.store))


async def quarantine_replay(ctx: DataContext) -> dict[str, Any]:
    """Store the quarantined readings whose device now has an assignment covering them."""
    assignments = await ctx.store.assignments()
    stored = duplicates = requarantined = replayed = 0
    after = 0
    while True:
        batch, ids = await asyncio.to_thread(quarantine.replay_batch, ctx.store, after_id=after)
        if not ids:
            break
        out = ctx.normalizer(batch, assignments, ctx.clock_us())
        result = await ctx.store.write(out, replayed_ids=ids)
        stored += result.stored
        duplicates += result.duplicates
        requarantined += result.quarantined
        replayed += len(ids)
        after = max(ids)
    return {
        "replayed": replayed,
        "stored": stored,
        "duplicates": duplicates,
        "quarantined_again": requarantined,
    }


async def readings(
    ctx: DataContext, patient: str | None = None, metric: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest stored readings, optionally of one patient and metric."""
    where: list[str] = []
    params: list[object] = []
    if patient:
        where.append("patient_id = ?")
        params.append(patient)
    if metric:
        where.append("metric = ?")
        params.append(metric)
    sql = (
        "SELECT patient_id, device_id, metric, value, unit, observed_at, seq, quality "
        "FROM readings"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY observed_at DESC LIMIT ?"
    )
    params.append(int(limit))
    frame = await asyncio.to_thread(ctx.store.query, sql, params)
    return rows(frame)


OPERATIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    **fhir_cli.OPERATIONS,
    **alerts_operations.OPERATIONS,
    **users_cli.OPERATIONS,
    "devices.assign": devices_assign,
    "devices.unassign": devices_unassign,
    "devices.list": devices_list,
    "quarantine.list": quarantine_list,
    "quarantine.summary": quarantine_summary,
    "quarantine.replay": quarantine_replay,
    "readings": readings,
}

"""``vitalwire fhir status|retry|dead-letter``: the operator's view of the FHIR export.

The operations in :data:`OPERATIONS` take a context with a ``store`` attribute and
JSON-friendly arguments, like the service's other data operations, so that they run either on
a database opened here or inside a running service through its control socket: pass the
command line's ``run_data_op`` to :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pipeline.fhir import outbox, schema
from pipeline.fhir.errors import FhirConfigError
from pipeline.store import DEFAULT_DB_PATH, DuckDbStore, StoreConfig
from pipeline.text_table import print_table

__all__ = ["OPERATIONS", "add_arguments", "run"]

DEFAULT_DB = DEFAULT_DB_PATH


class HasStore(Protocol):
    """What an operation needs: the open store."""

    @property
    def store(self) -> DuckDbStore: ...


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def fhir_status(ctx: HasStore) -> dict[str, Any]:
    """Outbox size and age, deliveries, dead-letter counts, exporter state."""
    await ctx.store.call(schema.migrate)
    return await ctx.store.call(outbox.status)


async def fhir_retry(
    ctx: HasStore, ids: list[int] | None = None, reason: str | None = None
) -> dict[str, Any]:
    """Queue dead-lettered readings again."""
    await ctx.store.call(schema.migrate)
    n = await ctx.store.call(outbox.retry_dead_letter, tuple(ids or ()), reason)
    return {"requeued": n}


async def fhir_dead_letter(
    ctx: HasStore, reason: str | None = None, limit: int = 50, dead_id: int | None = None
) -> list[dict[str, Any]]:
    """Dead-lettered readings, newest first."""
    await ctx.store.call(schema.migrate)
    frame = await ctx.store.call(outbox.list_dead_letter, reason, limit, dead_id)
    return [{k: _jsonable(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


OPERATIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "fhir.status": fhir_status,
    "fhir.retry": fhir_retry,
    "fhir.dead_letter": fhir_dead_letter,
}
"""Data operations for the control socket (merge into ``vitalwire.operations.OPERATIONS``)."""

RunDataOp = Callable[..., Any]
"""``run_data_op(db, op, must_exist=True, **kwargs)`` of the command line."""


def add_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fhir`` with its actions to the ``vitalwire`` sub-command parsers."""
    fhir: argparse.ArgumentParser = subparsers.add_parser(
        "fhir", help="FHIR export: outbox status, dead letters, retry"
    )
    sub = fhir.add_subparsers(dest="action", required=True)

    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db", type=Path, default=None, help=f"DuckDB file (default: ./{DEFAULT_DB})"
        )

    db(sub.add_parser("status", help="outbox size and age, deliveries, dead letters, last error"))
    retry = sub.add_parser("retry", help="queue dead-lettered readings again")
    retry.add_argument("ids", nargs="*", type=int, help="dead-letter ids (default: all)")
    retry.add_argument("--reason", help="only this reason_code")
    db(retry)
    dead = sub.add_parser("dead-letter", help="list dead-lettered readings with their reasons")
    dead.add_argument("--reason", help="only this reason_code")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument(
        "--show",
        type=int,
        metavar="ID",
        help="print one entry's resource and OperationOutcome as JSON",
    )
    db(dead)
    return fhir


@dataclass(frozen=True, slots=True)
class _Ctx:
    store: DuckDbStore


def _local_op(db: Path, op: str, must_exist: bool = True, **kwargs: Any) -> Any:
    if must_exist and not db.exists():
        raise FhirConfigError(f"--db: no database at {db}")

    async def go() -> Any:
        async with DuckDbStore(StoreConfig(path=db, idle_checkpoint_s=0)) as store:
            return await OPERATIONS[op](_Ctx(store), **kwargs)

    return asyncio.run(go())


def _print_status(s: dict[str, Any]) -> None:
    state = s["state"]
    endpoint = state.get("endpoint") or "(none configured: readings wait in the outbox)"
    print(f"endpoint           {endpoint}")
    print(f"capability check   {state.get('capability') or '-'}")
    print(
        f"outbox             {s['pending']} readings waiting"
        + (
            f", oldest since {s['oldest_pending']}, up to {s['max_attempts']} attempts"
            if s["pending"]
            else ""
        )
    )
    print(
        f"delivered          {s['delivered_observations']} Observations"
        f" ({s['delivered_readings']} readings), last {s['last_delivered'] or '-'}"
    )
    dead = s["dead_letter"]
    total = sum(dead.values())
    detail = ", ".join(f"{k} {v}" for k, v in dead.items())
    print(f"dead letters       {total}" + (f" ({detail})" if detail else ""))
    if state.get("last_error"):
        print(f"last error         {state['last_error']} (at {state.get('last_error_at', '-')})")
    if state.get("last_success_at"):
        print(f"last success       {state['last_success_at']}")


def run(args: argparse.Namespace, run_data_op: RunDataOp | None = None) -> int:
    """Run ``vitalwire fhir <action>``; returns the exit code.

    Args:
        args: Parsed arguments (``action``, ``db`` and the action's options).
        run_data_op: The command line's runner (uses a running service's control socket when
            there is one); default opens the database here.
    """
    runner = run_data_op or _local_op
    db = Path(args.db) if getattr(args, "db", None) else DEFAULT_DB
    if args.action == "status":
        _print_status(runner(db, "fhir.status"))
    elif args.action == "retry":
        out = runner(db, "fhir.retry", ids=list(args.ids) or None, reason=args.reason)
        print(f"queued {out['requeued']} dead-lettered readings again")
    else:
        rows = runner(
            db,
            "fhir.dead_letter",
            reason=args.reason,
            limit=1 if args.show is not None else args.limit,
            dead_id=args.show,
        )
        if args.show is not None:
            if not rows:
                print(f"no dead letter with id {args.show}")
                return 1
            row = rows[0]
            for key in ("resource", "outcome"):
                if row.get(key):
                    row[key] = json.loads(row[key])
            print(json.dumps(row, indent=2, default=str))
            return 0
        print_table(
            rows,
            ["id", "failed_at", "reason_code", "patient_id", "device_id", "metric", "value",
             "reason"],
            empty="(no dead letters)",
        )
    return 0



"""``vitalwire users add|list|passwd``: dashboard users from the command line.

The password is read from standard input (asked twice on a terminal, else the first line), and
hashed here: only the argon2id hash travels to the database, or to a running service through its
control socket. The operations in :data:`OPERATIONS` take a context with a ``store`` and
JSON-friendly arguments, like the service's other data operations; pass the command line's
``run_data_op`` to :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from dashboard import schema
from dashboard.errors import UserError
from dashboard.users import ROLES, add_user, check_password, hash_password, list_users
from dashboard.users import set_password_hash as _set_hash
from pipeline.store import DEFAULT_DB_PATH, DuckDbStore, StoreConfig

__all__ = ["OPERATIONS", "add_arguments", "read_password", "run"]

DEFAULT_DB = DEFAULT_DB_PATH


class HasStore(Protocol):
    """What an operation needs: the open store."""

    @property
    def store(self) -> DuckDbStore: ...


async def users_add(ctx: HasStore, username: str, role: str, password_hash: str) -> dict[str, Any]:
    """Create a user from a ready hash."""
    await ctx.store.call(schema.migrate)
    return (await ctx.store.call(add_user, username, role, password_hash)).to_json()


async def users_list(ctx: HasStore) -> list[dict[str, Any]]:
    """Every user with role and dates."""
    await ctx.store.call(schema.migrate)
    return await ctx.store.call(list_users)


async def users_passwd(ctx: HasStore, username: str, password_hash: str) -> dict[str, Any]:
    """Replace a password (ends the user's sessions)."""
    await ctx.store.call(schema.migrate)
    await ctx.store.call(_set_hash, username, password_hash)
    return {"username": username}


OPERATIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "users.add": users_add,
    "users.list": users_list,
    "users.passwd": users_passwd,
}
"""Data operations for the control socket (merge into ``vitalwire.operations.OPERATIONS``)."""

RunDataOp = Callable[..., Any]


def add_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``users`` with ``add``, ``list`` and ``passwd`` to the sub-command parsers."""
    users: argparse.ArgumentParser = subparsers.add_parser(
        "users", help="dashboard users: add, list, change password")
    sub = users.add_subparsers(dest="action", required=True)

    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", type=Path, default=None,
                       help=f"DuckDB file (default: ./{DEFAULT_DB})")

    add = sub.add_parser("add", help="add USER with --role; password from standard input")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    db(add)
    db(sub.add_parser("list", help="list users and roles"))
    pw = sub.add_parser("passwd", help="set USER's password from standard input")
    pw.add_argument("username")
    db(pw)
    return users


def read_password(stream: TextIO | None = None) -> str:
    """The new password: asked twice on a terminal, else the first line of ``stream``."""
    stream = stream or sys.stdin
    if stream.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UserError("password: the two entries differ")
        return check_password(first)
    return check_password(stream.readline().rstrip("\r\n"))


@dataclass(frozen=True, slots=True)
class _Ctx:
    store: DuckDbStore


def _local_op(db: Path, op: str, must_exist: bool = True, **kwargs: Any) -> Any:
    if must_exist and not db.exists():
        raise UserError(f"--db: no database at {db}")

    async def go() -> Any:
        async with DuckDbStore(StoreConfig(path=db, idle_checkpoint_s=0)) as store:
            return await OPERATIONS[op](_Ctx(store), **kwargs)

    return asyncio.run(go())


def run(args: argparse.Namespace, run_data_op: RunDataOp | None = None,
        stdin: TextIO | None = None) -> int:
    """Run ``vitalwire users <action>``; returns the exit code.

    Raises:
        UserError: Bad name, role or password, or the user exists / does not exist.
    """
    runner = run_data_op or _local_op
    db = Path(args.db) if getattr(args, "db", None) else DEFAULT_DB
    if args.action == "list":
        rows = runner(db, "users.list")
        if not rows:
            print("(no users)")
        for r in rows:
            print(f"{r['username']:<32} {r['role']}")
        return 0
    password = read_password(stdin)
    digest = hash_password(password)
    if args.action == "add":
        out = runner(db, "users.add", must_exist=False, username=args.username, role=args.role,
                     password_hash=digest)
        print(f"added {out['username']} ({out['role']})")
    else:
        runner(db, "users.passwd", username=args.username, password_hash=digest)
        print(f"password of {args.username} changed; their sessions ended")
    return 0

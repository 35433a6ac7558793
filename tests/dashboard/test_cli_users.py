"""``vitalwire users add|list|passwd`` functions, on a database file."""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path

import pytest

from dashboard import cli
from dashboard.errors import UserError
from dashboard.users import get_user, verify_password
from pipeline.store import DuckDbStore, StoreConfig


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vitalwire")
    cli.add_arguments(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def stored(db: Path, name: str) -> tuple[str, str] | None:
    async def go() -> tuple[str, str] | None:
        async with DuckDbStore(StoreConfig(path=db, idle_checkpoint_s=0)) as store:
            found = await store.call(get_user, name)
            return None if found is None else (found[0].role, found[1])

    return asyncio.run(go())


def test_add_list_passwd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "u.duckdb"
    args = parse(["users", "add", "dr.lee", "--role", "coordinator", "--db", str(db)])
    assert cli.run(args, stdin=io.StringIO("first-password\n")) == 0
    assert capsys.readouterr().out == "added dr.lee (coordinator)\n"
    role, digest = stored(db, "dr.lee") or ("", "")
    assert role == "coordinator" and digest.startswith("$argon2id$")
    assert verify_password(digest, "first-password")
    assert cli.run(parse(["users", "list", "--db", str(db)])) == 0
    assert capsys.readouterr().out.split() == ["dr.lee", "coordinator"]
    args = parse(["users", "passwd", "dr.lee", "--db", str(db)])
    assert cli.run(args, stdin=io.StringIO("second-password\n")) == 0
    _, digest = stored(db, "dr.lee") or ("", "")
    assert verify_password(digest, "second-password")
    assert not verify_password(digest, "first-password")


def test_refusals_name_the_field(tmp_path: Path) -> None:
    db = tmp_path / "u.duckdb"
    with pytest.raises(UserError, match="password: expected 8-256 characters, got 5"):
        cli.run(parse(["users", "add", "ann", "--role", "admin", "--db", str(db)]),
                stdin=io.StringIO("short\n"))
    with pytest.raises(UserError, match="username: expected 2-32 characters"):
        cli.run(parse(["users", "add", "Ann Smith", "--role", "admin", "--db", str(db)]),
                stdin=io.StringIO("long-enough-pw\n"))
    cli.run(parse(["users", "add", "ann", "--role", "admin", "--db", str(db)]),
            stdin=io.StringIO("long-enough-pw\n"))
    with pytest.raises(UserError, match="'ann' already exists"):
        cli.run(parse(["users", "add", "ann", "--role", "clinician", "--db", str(db)]),
                stdin=io.StringIO("long-enough-pw\n"))
    with pytest.raises(UserError, match="no user 'bob'"):
        cli.run(parse(["users", "passwd", "bob", "--db", str(db)]),
                stdin=io.StringIO("long-enough-pw\n"))
    with pytest.raises(SystemExit):
        parse(["users", "add", "x1", "--role", "nurse"])

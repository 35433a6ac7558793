"""Users and roles: argon2id password hashes in DuckDB, and what each role may do.

Roles are cumulative::

    clinician    view everything, acknowledge, snooze and resolve alerts, enter observations
    coordinator  also edit care plans
    admin        also manage users, devices and assignments

Functions taking a connection run on the store's thread (``await store.call(fn, ...)``).
Hashing is deliberately slow (argon2id, ``argon2-cffi`` defaults): call :func:`hash_password`
and :func:`verify_password` off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import duckdb
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dashboard.errors import UserError

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "PERMISSIONS",
    "ROLES",
    "User",
    "add_user",
    "check_password",
    "check_role",
    "check_username",
    "get_user",
    "hash_password",
    "list_users",
    "set_password_hash",
    "verify_password",
]

ROLES = ("clinician", "coordinator", "admin")
PERMISSIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "clinician": frozenset({"view", "act"}),
        "coordinator": frozenset({"view", "act", "plans"}),
        "admin": frozenset({"view", "act", "plans", "admin"}),
    }
)
"""Role -> permissions: ``view``, ``act`` (alerts, observations), ``plans``, ``admin``."""

MIN_PASSWORD = 8
MAX_PASSWORD = 256
_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{1,31}")
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("vitalwire-dummy-password")


@dataclass(frozen=True, slots=True)
class User:
    """A dashboard user (never carries the hash)."""

    username: str
    role: str

    def can(self, permission: str) -> bool:
        """Whether the role includes ``permission``."""
        return permission in PERMISSIONS.get(self.role, frozenset())

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly fields, with the permissions."""
        return {"username": self.username, "role": self.role,
                "permissions": sorted(PERMISSIONS.get(self.role, frozenset()))}


def check_username(username: object) -> str:
    """The name when valid (2-32 of a-z 0-9 _ . -, starting with a letter or digit)."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise UserError(f"username: expected 2-32 characters of a-z, 0-9, _ . - starting with a "
                        f"letter or digit, got {username!r}")
    return username


def check_role(role: object) -> str:
    """The role when it is one of :data:`ROLES`."""
    if role not in ROLES:
        raise UserError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    return str(role)


def check_password(password: object) -> str:
    """The password when it is {MIN_PASSWORD}-{MAX_PASSWORD} characters."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        n = len(password) if isinstance(password, str) else "no"
        raise UserError(f"password: expected {MIN_PASSWORD}-{MAX_PASSWORD} characters, got {n}")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash of a valid password (slow: run it off the event loop)."""
    return _HASHER.hash(check_password(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; an unknown user (``None``) costs the same time."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def add_user(conn: duckdb.DuckDBPyConnection, username: str, role: str,
             password_hash: str) -> User:
    """Create a user.

    Raises:
        UserError: The name is invalid or taken, or the role unknown.
    """
    check_username(username)
    check_role(role)
    found = conn.execute("SELECT 1 FROM dashboard_users WHERE username = ?", [username]).fetchall()
    if found:
        raise UserError(f"username: {username!r} already exists (use passwd to change the "
                        "password)")
    conn.execute("INSERT INTO dashboard_users (username, role, password_hash) VALUES (?, ?, ?)",
                 [username, role, password_hash]).fetchall()
    return User(username, role)


def set_password_hash(conn: duckdb.DuckDBPyConnection, username: str, password_hash: str) -> None:
    """Replace a user's password and end every session of that user.

    Raises:
        UserError: No such user.
    """
    check_username(username)
    rows = conn.execute(
        "UPDATE dashboard_users SET password_hash = ?, password_changed_at = current_timestamp"
        " WHERE username = ? RETURNING username", [password_hash, username]).fetchall()
    if not rows:
        raise UserError(f"username: no user {username!r}")
    conn.execute("DELETE FROM dashboard_sessions WHERE username = ?", [username]).fetchall()


def get_user(conn: duckdb.DuckDBPyConnection, username: str) -> tuple[User, str] | None:
    """The user and password hash, or ``None``."""
    rows = conn.execute("SELECT username, role, password_hash FROM dashboard_users"
                        " WHERE username = ?", [username]).fetchall()
    if not rows:
        return None
    name, role, pw = rows[0]
    return User(str(name), str(role)), str(pw)


def list_users(conn: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every user: name, role, when created and when the password last changed."""
    rows = conn.execute(
        "SELECT username, role, epoch_us(created_at), epoch_us(password_changed_at)"
        " FROM dashboard_users ORDER BY username").fetchall()
    return [{"username": u, "role": r, "created_us": int(c), "password_changed_us": int(p)}
            for u, r, c, p in rows]

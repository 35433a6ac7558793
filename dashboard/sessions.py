"""Login sessions: random tokens with an expiry, kept hashed in DuckDB, cached in memory.

A login makes a 256-bit token (the session cookie, or a bearer token for API clients) and a
separate CSRF token. Only the token's SHA-256 is stored, so a copy of the database does not
hold usable sessions. Sessions survive a restart of the dashboard; changing a user's password
ends that user's sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from dashboard.errors import AuthError
from dashboard.users import User, get_user, verify_password
from pipeline.store import DuckDbStore

__all__ = ["Session", "SessionManager", "token_hash"]


def token_hash(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session.

    Attributes:
        user: Who is logged in.
        csrf_token: Must accompany every state-changing request authenticated by cookie.
        expires_us: End of the session (UTC microseconds).
    """

    user: User
    csrf_token: str
    expires_us: int

    def csrf_ok(self, given: str | None) -> bool:
        """Constant-time comparison with the session's CSRF token."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token.encode())


def _insert(conn: duckdb.DuckDBPyConnection, digest: str, username: str, csrf: str,
            now_us: int, expires_us: int) -> None:
    conn.execute("DELETE FROM dashboard_sessions WHERE expires_us <= ?", [now_us]).fetchall()
    conn.execute(
        "INSERT INTO dashboard_sessions (token_hash, username, csrf_token, created_us,"
        " expires_us) VALUES (?, ?, ?, ?, ?)", [digest, username, csrf, now_us, expires_us]
    ).fetchall()


def _lookup(conn: duckdb.DuckDBPyConnection, digest: str) -> tuple[str, str, str, int] | None:
    rows = conn.execute(
        "SELECT s.username, u.role, s.csrf_token, s.expires_us FROM dashboard_sessions s"
        " JOIN dashboard_users u USING (username) WHERE s.token_hash = ?", [digest]).fetchall()
    if not rows:
        return None
    name, role, csrf, expires = rows[0]
    return str(name), str(role), str(csrf), int(expires)


def _delete(conn: duckdb.DuckDBPyConnection, digest: str) -> None:
    conn.execute("DELETE FROM dashboard_sessions WHERE token_hash = ?", [digest]).fetchall()


class SessionManager:
    """Log in, look sessions up, log out.

    Sessions are cached in memory and checked against the store again after
    ``recheck_s``, so a session ended elsewhere (``vitalwire users passwd`` through the control
    socket) stops working within that time.

    Args:
        store: The open store (dashboard tables migrated).
        ttl_s: Session lifetime.
        clock_us: Wall clock, UTC microseconds (injectable).
        recheck_s: How long a cached session is trusted without a look in the store.
    """

    def __init__(self, store: DuckDbStore, ttl_s: float,
                 clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
                 recheck_s: float = 30.0) -> None:
        self.store = store
        self.ttl_us = round(ttl_s * 1e6)
        self.clock_us = clock_us
        self.recheck_us = round(recheck_s * 1e6)
        self._cache: dict[str, tuple[Session, int]] = {}

    async def login(self, username: str, password: str) -> tuple[str, Session]:
        """Check the password and open a session; returns ``(token, session)``.

        Raises:
            AuthError: Unknown user or wrong password (the same message for both).
        """
        found = await self.store.call(get_user, username)
        ok = await asyncio.to_thread(verify_password, found[1] if found else None, password)
        if not ok or found is None:
            raise AuthError("login: unknown user or wrong password")
        token = secrets.token_urlsafe(32)
        now = self.clock_us()
        session = Session(found[0], secrets.token_urlsafe(24), now + self.ttl_us)
        digest = token_hash(token)
        await self.store.call(_insert, digest, username, session.csrf_token, now,
                              session.expires_us)
        self._cache[digest] = (session, now)
        return token, session

    async def lookup(self, token: str | None) -> Session | None:
        """The live session of ``token``, or ``None`` (missing, unknown or expired)."""
        if not token or len(token) > 200:
            return None
        digest = token_hash(token)
        now = self.clock_us()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.recheck_us:
            session = cached[0]
        else:
            row = await self.store.call(_lookup, digest)
            if row is None:
                self._cache.pop(digest, None)
                return None
            name, role, csrf, expires = row
            session = Session(User(name, role), csrf, expires)
            self._cache[digest] = (session, now)
        if session.expires_us <= now:
            self._cache.pop(digest, None)
            return None
        return session

    async def logout(self, token: str | None) -> None:
        """End the session of ``token`` (nothing when there is none)."""
        if not token:
            return
        digest = token_hash(token)
        self._cache.pop(digest, None)
        await self.store.call(_delete, digest)

    def forget_user(self, username: str) -> None:
        """Drop cached sessions of ``username`` (its password changed; the rows are gone)."""
        for digest in [d for d, (s, _) in self._cache.items() if s.user.username == username]:
            del self._cache[digest]

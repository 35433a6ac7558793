"""Authentication for every route: session cookie or bearer token, CSRF, roles, login.

* ``POST /api/auth/login`` checks the password (argon2id) and sets the ``vw_session`` cookie
  (HttpOnly, SameSite=Strict, ``Secure`` when configured); with ``issue_token`` it also returns
  the token for ``Authorization: Bearer``. The answer carries the session's CSRF token.
* A state-changing request authenticated by the cookie must send that token in
  ``X-CSRF-Token``; bearer requests need none (browsers never attach them on their own).
* :func:`require` makes a dependency that admits only roles with a permission
  (:data:`dashboard.users.PERMISSIONS`).
* Five failed logins of one user name within five minutes lock that name for the rest of the
  window (HTTP 429).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from dashboard.errors import AuthError, CsrfError, DashboardError, Forbidden
from dashboard.models import LoginRequest
from dashboard.sessions import Session, SessionManager
from dashboard.users import User

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "LoginThrottle",
    "TooManyAttempts",
    "current_session",
    "current_user",
    "require",
    "router",
]

COOKIE = "vw_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

cookie_scheme = APIKeyCookie(name=COOKIE, auto_error=False,
                             description="Session cookie set by POST /api/auth/login; "
                                         "state-changing requests also need X-CSRF-Token.")
bearer_scheme = HTTPBearer(auto_error=False,
                           description="Token from POST /api/auth/login with issue_token.")


class TooManyAttempts(DashboardError):
    """Too many failed logins for one user name (HTTP 429)."""


class LoginThrottle:
    """Failed logins per user name over a sliding window.

    Args:
        limit: Failures allowed in the window.
        window_s: Window length.
        clock: Monotonic seconds (injectable).
    """

    def __init__(self, limit: int = 5, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def check(self, username: str) -> None:
        """Raise :class:`TooManyAttempts` while ``username`` is locked."""
        q = self._failures.get(username)
        now = self.clock()
        while q and now - q[0] > self.window_s:
            q.popleft()
        if q is not None and len(q) >= self.limit:
            wait = self.window_s - (now - q[0])
            raise TooManyAttempts(f"login: too many failed attempts for {username!r}; "
                                  f"try again in {wait:.0f} s")

    def failed(self, username: str) -> None:
        """Count one failure."""
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures.setdefault(username, deque()).append(self.clock())

    def succeeded(self, username: str) -> None:
        """Forget the failures of ``username``."""
        self._failures.pop(username, None)


async def current_session(
    request: Request,
    cookie: Annotated[str | None, Security(cookie_scheme)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> Session:
    """The caller's session (401 without one; 403 on a cookie change without CSRF token)."""
    sessions: SessionManager = request.app.state.ctx.sessions
    token = bearer.credentials if bearer is not None else cookie
    session = await sessions.lookup(token)
    if session is None:
        raise AuthError("authentication required: log in (session missing or expired)")
    if bearer is None and request.method not in SAFE_METHODS and not session.csrf_ok(
        request.headers.get(CSRF_HEADER)
    ):
        raise CsrfError(f"csrf: missing or wrong {CSRF_HEADER} header for a cookie session")
    request.state.user = session.user
    return session


async def current_user(session: Annotated[Session, Depends(current_session)]) -> User:
    """The caller (any role)."""
    return session.user


def require(permission: str) -> Callable[..., Awaitable[User]]:
    """A dependency admitting only users whose role has ``permission``."""

    async def dep(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.can(permission):
            raise Forbidden(f"role {user.role!r} may not do this (needs {permission!r})")
        return user

    return dep


router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/login", summary="Log in (public)")
async def login(body: LoginRequest, request: Request, response: Response) -> dict[str, Any]:
    """Check the password, open a session, set the cookie; returns the user and CSRF token."""
    ctx = request.app.state.ctx
    ctx.throttle.check(body.username)
    try:
        token, session = await ctx.sessions.login(body.username, body.password)
    except AuthError:
        ctx.throttle.failed(body.username)
        raise
    ctx.throttle.succeeded(body.username)
    response.set_cookie(COOKIE, token, max_age=round(ctx.config.session_ttl_s), httponly=True,
                        samesite="strict", secure=ctx.config.cookie_secure, path="/")
    await ctx.desk.audit(session.user, "login", session.user.username)
    out: dict[str, Any] = {"user": session.user.to_json(), "csrf_token": session.csrf_token,
                           "expires_us": session.expires_us}
    if body.issue_token:
        out["token"] = token
    return out


@router.post("/logout", summary="Log out")
async def logout(request: Request, response: Response,
                 session: Annotated[Session, Depends(current_session)]) -> dict[str, Any]:
    """End the session (cookie or bearer) and clear the cookie."""
    auth = request.headers.get("authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE)
    await request.app.state.ctx.sessions.logout(token)
    response.delete_cookie(COOKIE, path="/")
    await request.app.state.ctx.desk.audit(session.user, "logout", session.user.username)
    return {"ok": True}


@router.get("/me", summary="The logged-in user and the session's CSRF token")
async def me(session: Annotated[Session, Depends(current_session)]) -> dict[str, Any]:
    """Who is logged in, until when, and the CSRF token for changes."""
    return {"user": session.user.to_json(), "csrf_token": session.csrf_token,
            "expires_us": session.expires_us}

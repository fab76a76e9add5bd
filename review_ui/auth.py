"""Who is using the review UI, checked on the server in every handler and every request.

Gradio's login form calls `login_checker`, which asks `accounts.log_in` (our users table,
scrypt hashes, failed logins throttled per name and per client address, the same rule and
the same database state as the API's ``POST /auth/token``; a lockout answers 429). Gradio
then keeps the user's name behind a cookie, in a token map in this process's memory, and
hands it to each handler as ``gr.Request.username``.

That map is replaced by `SessionTokens`, which keeps each login as a database row and asks
the database each time Gradio looks a cookie up (every page, event and file request): any
process behind a load balancer knows a login made through another, and a session that was
logged out, expired, whose user was deactivated, or whose password changed after it logged
in, ends there, whichever process or CLI made the change. Gradio then treats the browser
as logged out (the next action is refused with 401 and a reload shows the login form).
Handlers also reload the user (`current_user`) and compare roles with `Role.may`, the same
rule the API's `require_role` uses. Hiding a tab is only convenience; these checks are the
access control.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import anyio
import gradio as gr
from fastapi import FastAPI, HTTPException, status
from sqlmodel import Session
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from inspect_app import accounts
from inspect_app.domain import Role
from inspect_app.login_throttle import LoginThrottled
from inspect_app.storage.tables import User
from review_ui.context import ReviewContext

logger = logging.getLogger(__name__)

# The address of the client whose login form is being checked: Gradio calls `login_checker`
# with the name and password only, so `SessionCookies` puts the address where it can see it.
_login_address: ContextVar[str | None] = ContextVar("review_ui_login_address", default=None)


class NotLoggedIn(gr.Error):
    """No user behind the request, or one that no longer exists or is deactivated."""

    TITLE = "Signed out"  # `review_ui.errors` answers 401 for it

    def __init__(self, message: str) -> None:
        super().__init__(
            html.escape(message), duration=None, title=self.TITLE, print_exception=False
        )


class AccessDenied(gr.Error):
    """The user's role may not do this; the message names the role it needs."""

    TITLE = "Not allowed"  # `review_ui.errors` answers 403 for it

    def __init__(self, message: str) -> None:
        super().__init__(
            html.escape(message), duration=None, title=self.TITLE, print_exception=False
        )


def login_checker(context: ReviewContext) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's ``auth=`` callable. Async, with scrypt in a worker thread: a login costs
    ~100 ms of CPU and must not stall every other inspector's events on the loop.

    A locked-out name or address gets 429 with ``Retry-After`` (Gradio passes the
    exception on as the login's answer; its form shows it as a failed login).
    """

    async def check(name: str, password: str) -> bool:
        address = _login_address.get()

        def attempt() -> bool:
            with context.session() as db:
                try:
                    accounts.log_in(
                        db,
                        name,
                        password,
                        address=address,
                        policy=context.throttle_policy,
                        now=context.now(),
                    )
                except accounts.LoginRefused:
                    return False
            return True

        try:
            ok = await anyio.to_thread.run_sync(attempt)
        except LoginThrottled as exc:
            logger.warning("review UI: login of %r from %s refused: %s", name, address, exc)
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=str(exc),
                headers={"Retry-After": str(exc.retry_after_seconds)},
            ) from exc
        if ok:
            logger.info("review UI: %s logged in", name)
        return ok

    return check


class SessionTokens(dict[str, str]):
    """Gradio's cookie token -> user name map, kept in the database (`UiSession` rows).

    Gradio keeps logins in process memory: it stores ``tokens[cookie] = name`` after a good
    login and looks the cookie up with ``tokens.get`` on every request (page, event, file);
    answering None there is how a session ends. Here the store writes a row
    (`accounts.open_ui_session`) and the look-up reads it (`accounts.ui_session_user`), so a
    login made through one process holds in every other (a load balancer needs no sticky
    sessions), and logout, expiry, deactivation and a password change end it everywhere from
    the next request. One indexed query per request (0.9 ms measured on SQLite on the 2-core
    development machine), on the event loop because Gradio's look-up is synchronous; not
    cached, so that an end holds from the very next request.

    The dict itself only remembers the logins made through this process, for Gradio's own
    logout loop over ``keys()``; `SessionCookies` ends the database rows on logout.
    """

    def __init__(self, context: ReviewContext) -> None:
        super().__init__()
        self._context = context

    @property
    def _ttl(self) -> timedelta:
        return timedelta(hours=self._context.settings.ui_session_hours)

    def __setitem__(self, token: str, name: str) -> None:
        with Session(self._context.engine) as db:
            try:
                accounts.open_ui_session(db, name, token, ttl=self._ttl, now=self._context.now())
            except accounts.UserNotFound:
                logger.warning("review UI: no session for unknown user %r", name)
                return
        super().__setitem__(token, name)

    def __delitem__(self, token: str) -> None:
        self._end(token)
        super().pop(token, None)

    def pop(self, token: Any, default: Any = None) -> Any:
        self._end(token)
        return super().pop(token, default)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.get(token) is not None

    def __getitem__(self, token: str) -> str:
        name = self.get(token)
        if name is None:
            raise KeyError(token)
        return name

    def get(self, token: Any, default: Any = None) -> Any:
        if not token or not isinstance(token, str):
            return default
        with Session(self._context.engine) as db:
            try:
                user = accounts.ui_session_user(db, token, now=self._context.now())
            except accounts.UiSessionEnded as ended:
                if super().pop(token, None) is not None:  # logged in here: say why it ended
                    logger.warning("review UI: a session ended: %s", ended)
                return default
        return user.name

    def _end(self, token: Any) -> None:
        if isinstance(token, str) and token:
            with Session(self._context.engine) as db:
                accounts.end_ui_session(db, token, now=self._context.now())


# Gradio names its login cookie ``access-token-<cookie_id>`` with a random id per process,
# so a cookie set by one process would mean nothing to another: every process uses this one.
COOKIE_ID = "inspect-review"
_LOGOUT_ALL = frozenset({"", "1", "true", "yes"})  # Gradio's `all_session`, true by default


class SessionCookies:
    """ASGI middleware on the review UI's login and logout requests: the client's address
    for `login_checker`'s throttling; on logout, the database session(s) ended before
    Gradio clears the cookie, so the logout holds in every process (Gradio itself forgets
    only the logins it made in the process that answers)."""

    def __init__(self, app: ASGIApp, path: str, context: ReviewContext) -> None:
        self.app = app
        self.login_path = f"{path.rstrip('/')}/login"
        self.logout_path = f"{path.rstrip('/')}/logout"
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = scope["path"].rstrip("/")
        if where == self.logout_path:
            await anyio.to_thread.run_sync(self._log_out, Request(scope))
        if where == self.login_path:
            client = scope.get("client")
            reset = _login_address.set(client[0] if client else None)
            try:
                await self.app(scope, receive, send)
            finally:
                _login_address.reset(reset)
            return
        await self.app(scope, receive, send)

    def _log_out(self, request: Request) -> None:
        cookie = request.cookies.get(f"access-token-{COOKIE_ID}") or request.cookies.get(
            f"access-token-unsecure-{COOKIE_ID}"
        )
        if not cookie:
            return
        every = request.query_params.get("all_session", "").lower() in _LOGOUT_ALL
        with self.context.session() as db:
            ended = accounts.end_ui_session(
                db, cookie, every_session_of_the_user=every, now=self.context.now()
            )
        logger.info("review UI: logout ended %d session(s)", ended)


def guard_sessions(app: FastAPI, context: ReviewContext, path: str) -> None:
    """After ``gr.mount_gradio_app(app, ..., path=path)``: logins kept in the database
    (`SessionTokens`) under one cookie name for every process, logouts ending them and
    login addresses seen (`SessionCookies`)."""
    mounted = [r for r in app.routes if isinstance(r, Mount) and r.path == path.rstrip("/")]
    if len(mounted) != 1 or not hasattr(mounted[0].app, "tokens"):
        raise RuntimeError(f"no Gradio app mounted at {path}")
    mounted[0].app.tokens = SessionTokens(context)  # type: ignore[attr-defined]
    mounted[0].app.cookie_id = COOKIE_ID  # type: ignore[attr-defined]
    app.add_middleware(SessionCookies, path=path, context=context)


def current_user(session: Session, request: gr.Request | None) -> User:
    """The logged-in, active user behind a Gradio event, or NotLoggedIn."""
    name = getattr(request, "username", None)
    if not name:
        raise NotLoggedIn("You are not logged in: reload the page and log in.")
    try:
        user = accounts.get_user(session, name)
    except accounts.UserNotFound:
        logger.warning("review UI: request from unknown user %r refused", name)
        raise NotLoggedIn(f"There is no user {name!r} any more: log in again.") from None
    if not user.active:
        logger.warning("review UI: request from deactivated user %r refused", name)
        raise NotLoggedIn(f"The account {name!r} is deactivated.")
    return user


def require_role(user: User, needed: Role, action: str) -> None:
    """Raise AccessDenied unless `user`'s role includes `needed` (roles nest)."""
    if not Role(user.role).may(needed):
        logger.warning(
            "review UI: %s (%s) refused: %s needs %s", user.name, user.role, action, needed.value
        )
        raise AccessDenied(
            f"{user.name} ({user.role}) may not {action}: {needed.value}s and above only."
        )

"""Who is using the review UI, checked on the server in every handler and every request.

Gradio's login form calls `login_checker`, which asks `accounts.log_in` (our users table,
scrypt hashes, failed logins throttled per name and per client address, the same rule and
the same database state as the API's ``POST /auth/token``; a lockout answers 429). Gradio
then keeps the user's name behind a cookie, in a token map in this process's memory, and
hands it to each handler as ``gr.Request.username``.

That map is replaced by `SessionTokens`, which asks the database each time Gradio looks a
cookie up (every page, event and file request): a session whose user was deactivated, or
whose password changed after the session logged in, ends there, whichever process or CLI
made the change. Gradio then treats the browser as logged out (the next action is refused
with 401 and a reload shows the login form). Handlers also reload the user
(`current_user`) and compare roles with `Role.may`, the same rule the API's
`require_role` uses. Hiding a tab is only convenience; these checks are the access control.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import anyio
import gradio as gr
from fastapi import FastAPI, HTTPException, status
from sqlmodel import Session
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from inspect_app import accounts
from inspect_app.domain import Role
from inspect_app.login_throttle import LoginThrottled
from inspect_app.storage.tables import User
from inspect_app.timeutil import as_utc
from review_ui.context import ReviewContext

logger = logging.getLogger(__name__)

# The address of the client whose login form is being checked: Gradio calls `login_checker`
# with the name and password only, so `LoginAddress` puts the address where it can see it.
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
    """Gradio's cookie token -> user name map, asking the database on every look-up.

    Gradio keeps logins in process memory and looks the cookie up with ``tokens.get`` on
    every request; answering None there is how a session ends. One indexed query per
    request (0.9 ms measured on SQLite on the 2-core development machine), run on the event
    loop because Gradio's look-up is synchronous; not cached, so that the end holds from
    the very next request.
    """

    def __init__(self, context: ReviewContext) -> None:
        super().__init__()
        self._context = context
        self._logged_in_at: dict[str, datetime] = {}

    def __setitem__(self, token: str, name: str) -> None:
        self._logged_in_at[token] = self._context.now()
        super().__setitem__(token, name)

    def __delitem__(self, token: str) -> None:
        self._logged_in_at.pop(token, None)
        super().__delitem__(token)

    def get(self, token: Any, default: Any = None) -> Any:
        name = super().get(token)
        if name is None:
            return default
        ended = self._why_ended(token, name)
        if ended is None:
            return name
        logger.warning("review UI: the session of %s ended: %s", name, ended)
        self.pop(token, None)
        self._logged_in_at.pop(token, None)
        return default

    def _why_ended(self, token: str, name: str) -> str | None:
        with Session(self._context.engine) as db:
            try:
                user = accounts.get_user(db, name)
            except accounts.UserNotFound:
                return "the user no longer exists"
        if not user.active:
            return "the account was deactivated"
        changed = as_utc(user.password_changed_at)
        logged_in = self._logged_in_at.get(token, datetime.min.replace(tzinfo=UTC))
        if changed is not None and changed > logged_in:
            return "the password was changed after this session logged in"
        return None


class LoginAddress:
    """ASGI middleware: the client's address, for `login_checker`'s throttling, on the
    review UI's login requests."""

    def __init__(self, app: ASGIApp, login_path: str) -> None:
        self.app = app
        self.login_path = login_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == self.login_path:
            client = scope.get("client")
            reset = _login_address.set(client[0] if client else None)
            try:
                await self.app(scope, receive, send)
            finally:
                _login_address.reset(reset)
            return
        await self.app(scope, receive, send)


def guard_sessions(app: FastAPI, context: ReviewContext, path: str) -> None:
    """After ``gr.mount_gradio_app(app, ..., path=path)``: sessions checked against the
    database (`SessionTokens`) and login addresses seen (`LoginAddress`)."""
    mounted = [r for r in app.routes if isinstance(r, Mount) and r.path == path.rstrip("/")]
    if len(mounted) != 1 or not hasattr(mounted[0].app, "tokens"):
        raise RuntimeError(f"no Gradio app mounted at {path}")
    mounted[0].app.tokens = SessionTokens(context)  # type: ignore[attr-defined]
    app.add_middleware(LoginAddress, login_path=f"{path.rstrip('/')}/login")


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

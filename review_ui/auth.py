"""Who is using the review UI, checked on the server in every handler.

Gradio's login form calls `login_checker`, which asks `accounts.authenticate` (our users
table, scrypt hashes); Gradio then keeps the user's name behind a cookie and hands it to
each handler as ``gr.Request.username``. That name is all a handler trusts: it reloads the
user (a deactivated account stops working at once, not at the next login) and compares
roles with `Role.may`, the same rule the API's `require_role` uses. Hiding a tab is only
convenience; these checks are the access control.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable

import anyio
import gradio as gr
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app import accounts
from inspect_app.domain import Role
from inspect_app.storage.tables import User

logger = logging.getLogger(__name__)


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


def login_checker(engine_of: Callable[[], Engine]) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's ``auth=`` callable. Async, with scrypt in a worker thread: a login costs
    ~100 ms of CPU and must not stall every other inspector's events on the loop."""

    async def check(name: str, password: str) -> bool:
        def authenticate() -> bool:
            with Session(engine_of()) as session:
                return accounts.authenticate(session, name, password) is not None

        ok = await anyio.to_thread.run_sync(authenticate)
        if ok:
            logger.info("review UI: %s logged in", name)
        return ok

    return check


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

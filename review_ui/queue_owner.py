"""A Gradio session's queue belongs to the user who opened it.

Gradio streams each browser tab's results (`/gradio_api/queue/data?session_hash=...`) to
whoever names that tab's session hash and holds *any* valid login: the hash is the only
key. The hash is random, but it travels in URLs, proxy logs and the page's own requests, so
an inspector who learns another's (a shared screen, a log line) could read that person's
parts, labels and a supervisor's figures as they arrive, or cancel their events.

`QueueOwner` binds a session hash to the user who first joined the queue with it and
refuses (403, JSON) every later request naming that hash under another login: joining,
reading the stream, the heartbeat, cancelling, media streams. It runs before Gradio sees
the request and changes nothing for the owner. The binding lives in this process's memory
like Gradio's queue itself (a stream is only ever served by the process that queued it);
the oldest bindings are forgotten past `MAX_SESSIONS`, which at worst lets a forgotten
hash be claimed afresh by the next user to join with it.

The review UI's page itself no longer joins the queue (`review_ui.app.unqueue`: each event
is one request any process answers); gradio_client still does, and this check covers it.
For the page's events the same rule holds across processes through the desk's database
row, which answers only the user who opened it (`review_ui.desk.DeskStore`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

MAX_SESSIONS = 50_000  # bindings kept; a tab is one, a shift of 20 inspectors a few hundred
JSON = [(b"content-type", b"application/json")]


class SessionOwners:
    """Session hash -> the user who opened it, oldest forgotten first (thread-safe: the
    middleware runs on the loop, tests call it from threads)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._max = max_sessions
        self._lock = threading.Lock()

    def owner(self, session_hash: str) -> str | None:
        with self._lock:
            return self._owners.get(session_hash)

    def claim(self, session_hash: str, user: str) -> str:
        """Bind `session_hash` to `user` unless someone holds it; returns who holds it."""
        with self._lock:
            holder = self._owners.setdefault(session_hash, user)
            self._owners.move_to_end(session_hash)
            while len(self._owners) > self._max:
                self._owners.popitem(last=False)
            return holder


class QueueOwner:
    """ASGI middleware over the review UI's Gradio routes under `prefix` (``/review/
    gradio_api``); `user_of` names the logged-in user behind a request's cookies (None:
    not logged in, which Gradio refuses itself)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str,
        user_of: Callable[[dict[str, str]], str | None],
        owners: SessionOwners | None = None,
    ) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.user_of = user_of
        self.owners = owners or SessionOwners()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
            return
        route = path[len(self.prefix) :].rstrip("/")
        if route in ("/queue/join", "/cancel") and scope.get("method") == "POST":
            body, receive = await _read_body(receive)
            session_hash = _body_session_hash(body)
            join = route == "/queue/join"
        elif route == "/queue/data":
            values = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            session_hash = (values.get("session_hash") or [None])[0]
            join = False
        elif route.startswith("/heartbeat/") or route.startswith("/stream/"):
            session_hash = route.split("/")[2] or None
            join = False
        else:
            await self.app(scope, receive, send)
            return
        user = self.user_of(_cookies(scope))
        if session_hash and user is not None:
            holder = (
                self.owners.claim(session_hash, user) if join else self.owners.owner(session_hash)
            )
            if holder is not None and holder != user:
                logger.warning(
                    "review UI: %s refused %s of a session opened by %s", user, route, holder
                )
                await _answer(send, 403, "this session belongs to another user: reload the page")
                return
        await self.app(scope, receive, send)


def _cookies(scope: Scope) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key:
                    cookies[key] = val
    return cookies


def _body_session_hash(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("session_hash")
    except (ValueError, AttributeError):  # not JSON, or not an object: Gradio answers 422
        return None
    return value if isinstance(value, str) and value else None


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that hands it on again. The service's `BodyGuard`,
    the outermost middleware, has already bounded it (`inspect_app.api.app.create_app`)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _answer(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": JSON})
    await send({"type": "http.response.body", "body": payload})

"""A refusal in a review-UI handler answers 4xx, not 500.

Gradio answers its direct routes (``/gradio_api/run/<name>``, ``/gradio_api/api/<name>``,
which the page uses for the quick, unqueued events) with 500 for any exception a handler
raises, `gr.Error` included: ``gradio.routes`` catches it and returns
``JSONResponse(error_payload(...), status_code=500)``. The queued routes report it inside the
event stream instead. A `gr.Error` is, by Gradio's own use, a refusal of the input (a number
out of range, a choice not offered) and by ours a refusal of the user (signed out, not
allowed): the caller's fault, not the server's.

`RefusalStatus` rewrites exactly those answers: a 500 whose body is the payload of a
`gr.Error` (it carries a ``title``; a crash's payload does not) gets the status of the
refusal, keyed by its title; any other 500 stays a 500. The body is unchanged, and the page
shows ``error`` for any status that is not 200, so it behaves as before.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from review_ui.auth import AccessDenied, NotLoggedIn

REFUSAL_STATUS_BY_TITLE = {NotLoggedIn.TITLE: 401, AccessDenied.TITLE: 403}
DEFAULT_REFUSAL_STATUS = 422  # the input was refused


def refusal_status(body: bytes) -> int | None:
    """The status for a 500 answer with this body: a refusal's, or None (a real failure)."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or "title" not in payload:
        return None
    return REFUSAL_STATUS_BY_TITLE.get(payload["title"], DEFAULT_REFUSAL_STATUS)


class RefusalStatus:
    """Pure ASGI middleware over the paths starting with one of `prefixes`."""

    def __init__(self, app: ASGIApp, *, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def send_refusal_status(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 500:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            status = refusal_status(body)
            await send({**held, "status": status} if status is not None else held)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_refusal_status)

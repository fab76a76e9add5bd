"""How the API refuses: one error body per kind of refusal, declared in the schema, and the
guards that make sure a refusal never turns into a 500.

- `ErrorBody` (``{"detail": "..."}``) for every refusal a route raises itself;
  `ValidationErrorBody` for 422, which is either the list of field problems (request
  validation) or one sentence (a rule of the service, e.g. an empty window).
- `error_responses` builds a route's ``responses=`` from status codes, so each route declares
  exactly the statuses it answers, with these bodies.
- `validation_error_handler` renders a `RequestValidationError` with a bounded, JSON-safe copy
  of the input it echoes: FastAPI's own handler fails on NaN, bytes or a 20 MB string.
- `BodyGuard` refuses a body over the limit (413, from ``Content-Length`` or while it streams)
  and a JSON body with NaN, Infinity or a number out of range (422), before any route parses
  it: Python's ``json`` takes ``NaN`` and ``1e999``, which then break validation's echo.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ECHOED_CHARS = 200  # of an input or a message quoted back in a refusal
MAX_ISSUES = 20  # field problems listed in one 422


class ErrorBody(BaseModel):
    detail: str = Field(description="what was wrong, in a sentence")


class ValidationIssue(BaseModel):
    type: str = Field(description="the kind of problem, e.g. missing, string_too_long")
    loc: list[str | int] = Field(description="where: body, query, path or header, then names")
    msg: str
    input: Any = Field(default=None, description="the value given (scalars only, truncated)")
    ctx: dict[str, Any] | None = Field(default=None, description="the limit that was broken")


class ValidationErrorBody(BaseModel):
    detail: list[ValidationIssue] | str = Field(
        description="the field problems, or one sentence for a rule the service applies"
    )


_DESCRIPTIONS = {
    400: "malformed request",
    401: "no valid credentials",
    403: "the credentials do not allow this",
    404: "no such resource",
    409: "conflicts with the current state",
    410: "existed, but was removed for good",
    413: "the body is over the size limit",
    415: "unsupported media type",
    422: "invalid input: field problems, or a rule of the service",
    429: "too many attempts; wait for Retry-After",
    503: "cannot serve right now; try again",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each code with its body model and a description;
    ``descriptions`` overrides one, keyed ``_404="no such line"``."""
    return {
        code: {
            "model": ValidationErrorBody if code == 422 else ErrorBody,
            "description": descriptions.get(f"_{code}", _DESCRIPTIONS[code]),
        }
        for code in codes
    }


# -- rendering validation errors -------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ECHOED_CHARS else text[:MAX_ECHOED_CHARS] + "…"


def _json_safe(value: Any) -> Any:
    """A scalar as JSON can carry it, or None: containers are the request itself echoed back,
    which the client already has (and which may hold a password)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else _clip(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, bytes):
        return _clip(value.decode("utf-8", "replace"))
    return None


def _safe_ctx(ctx: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not ctx:
        return None
    safe = {}
    for key, value in list(ctx.items())[:MAX_ISSUES]:
        plain = _json_safe(value)
        safe[str(key)] = plain if plain is not None else _clip(str(value))
    return safe


def render_issues(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The issues of a validation error as `ValidationIssue` dicts, bounded and JSON-safe."""
    issues = []
    for error in list(errors)[:MAX_ISSUES]:
        issue: dict[str, Any] = {
            "type": str(error.get("type", "invalid")),
            "loc": [
                part if isinstance(part, int) else _clip(str(part)) for part in error.get("loc", ())
            ],
            "msg": _clip(str(error.get("msg", ""))),
        }
        echoed = _json_safe(error.get("input"))
        if echoed is not None:
            issue["input"] = echoed
        ctx = _safe_ctx(error.get("ctx"))
        if ctx is not None:
            issue["ctx"] = ctx
        issues.append(issue)
    return issues


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": render_issues(exc.errors())}, status_code=422)


def _path_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)))


def allowed_methods(openapi: Mapping[str, Any], path: str) -> list[str]:
    """Every method the schema documents for `path`, across all its routes."""
    methods = {
        method.upper()
        for template, operations in openapi.get("paths", {}).items()
        if _path_regex(template).fullmatch(path)
        for method in operations
    }
    return sorted(methods)


async def method_not_allowed_handler(request: Request, exc: Exception) -> JSONResponse:
    """405 with an ``Allow`` naming every method of the path: Starlette names only those of
    the first route that matched it (GET, for a path that also takes POST)."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    methods = allowed_methods(request.app.openapi(), request.url.path)
    if methods:
        headers["Allow"] = ", ".join(methods)
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


# -- the body guard --------------------------------------------------------------------------


class _NotFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{_clip(text)} is out of range for a number")
    return value


def non_finite_json(body: bytes) -> str | None:
    """Why `body` is JSON that the service will not take (NaN, Infinity, 1e999, a number of
    thousands of digits), or None: well-formed, or malformed in a way the route reports."""
    try:
        json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite as exc:
        return str(exc)
    except json.JSONDecodeError:
        return None  # the route's parser says where
    except (ValueError, RecursionError) as exc:  # int digit limit, nesting
        return _clip(str(exc))
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class BodyGuard:
    """Pure ASGI middleware: bodies of at most `limit` bytes, JSON bodies only finite.

    Paths matching one of `exempt` (e.g. the image upload, which reads its own larger body
    with its own limit) pass through untouched. A body is buffered (at most `limit` bytes)
    and replayed to the app, so routes read it as usual.
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Iterable[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = [re.compile(pattern) for pattern in exempt]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(p.match(scope["path"]) for p in self.exempt):
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope["headers"]}
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(scope, receive, send, 400, "Content-Length is not a number")
                return
            if length > self.limit:
                await self._too_large(scope, receive, send, f"the body is {length} bytes, ")
                return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app will see it
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._too_large(scope, receive, send, "the body is ")
                return
            if not message.get("more_body", False):
                break
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if _is_json(content_type):
            problem = non_finite_json(b"".join(m.get("body", b"") for m in messages))
            if problem is not None:
                issue = {"type": "json_invalid", "loc": ["body"], "msg": problem}
                await self._refuse(scope, receive, send, 422, [issue])
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, start: str) -> None:
        detail = f"{start}over the limit of {self.limit} bytes for this route"
        await self._refuse(scope, receive, send, 413, detail)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, detail: str | list[Any]
    ) -> None:
        response = JSONResponse({"detail": detail}, status_code=status)
        await response(scope, receive, send)

"""The line camera's one call: post an image, get the line's decision.

Two ways to send the image, both documented in the OpenAPI schema:

- the raw body, with ``Content-Type: image/jpeg | image/png | image/bmp``
  (``application/octet-stream`` or no type: the format is sniffed from the bytes);
- ``multipart/form-data`` with the image in the file field ``image``.

The capture's metadata (``capture_id``, ``part_serial``, ``captured_at``) goes in query
parameters; a multipart upload may put them in form fields instead (giving one in both
places with different values is refused). The body is read with a limit, so a 1 GB upload is
refused after ``max_image_bytes`` bytes rather than read into memory.

Checks run in this order: camera key (401), the line exists (404), the key is that line's
(403), then the request and the image (400, 409, 413, 415, 422).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from inspect_app.api.deps import (
    EngineDep,
    SettingsDep,
    camera_key_scheme,
    get_camera_for_path_line,
)
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    DATE_TIME_YEAR_PATTERN,
    MAX_TAG_CHARS,
    TEXT_PATTERN,
    LineIdPath,
    TimeOutOfRange,
    check_time_text,
)
from inspect_app.api.pipeline_deps import PipelineDep
from inspect_app.api.routes.inspections import InspectionPublic, inspection_public
from inspect_app.domain import LinePolicy
from inspect_app.imaging import ImageRejected, format_for_content_type
from inspect_app.lookups import CameraAnswer, line_lookups
from inspect_app.pipeline import ImageSubmission, IngestError
from inspect_app.timeutil import as_utc

router = APIRouter(prefix="/api/v1", tags=["images"])

# The one route that reads a body larger than the app's JSON limit, with its own limit.
IMAGE_UPLOAD_PATH = r"^/api/v1/lines/[^/]+/images/?$"

# Room for the multipart boundaries, part headers and the small metadata fields.
_MULTIPART_OVERHEAD = 64 * 1024
_METADATA_FIELDS = ("capture_id", "part_serial", "captured_at")
# A '+' in a query string decodes to a space: "12:00:00 02:00" was meant as "+02:00".
_SPACE_FOR_PLUS_OFFSET = re.compile(r"T.* (\d\d(:?\d\d)?)$")

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "The image: the raw bytes, or a multipart form with the file in `image`.",
    "content": {
        "image/jpeg": _BINARY,
        "image/png": _BINARY,
        "image/bmp": _BINARY,
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "capture_id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TAG_CHARS,
                        "pattern": TEXT_PATTERN,
                    },
                    "part_serial": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_TAG_CHARS,
                        "pattern": TEXT_PATTERN,
                    },
                    "captured_at": {
                        "type": "string",
                        "format": "date-time",
                        "pattern": DATE_TIME_YEAR_PATTERN,
                    },
                },
            }
        },
    },
}


def parse_captured_at(value: str | None) -> datetime | None:
    """ISO 8601 (``2024-05-01T12:30:00Z``, ``...+02:00``) as an aware UTC time; a time without
    an offset is UTC. Refused (422) unless its year is one `params.check_time_text` takes,
    here, before the model runs: the pipeline converts it to UTC after inference."""
    if value is None:
        return None
    text = value.strip()
    match = _SPACE_FOR_PLUS_OFFSET.search(text)
    if match:
        text = text[: match.start(1) - 1] + "+" + match.group(1)
    try:
        return as_utc(datetime.fromisoformat(check_time_text(text, "captured_at")))
    except TimeOutOfRange as exc:
        raise IngestError(422, str(exc)) from None
    except ValueError:
        raise IngestError(
            422,
            f"captured_at {value[:64]!r} is not an ISO 8601 time (for example "
            "2024-05-01T12:30:00Z)",
        ) from None


@dataclass(frozen=True)
class CameraUpload:
    """The request's line, its camera key checked, and the line's policy as that lookup found
    it (handed to the pipeline, which then looks nothing up again)."""

    line_id: str
    policy: LinePolicy


def _look_up_camera(engine: Engine, key: str, line: str) -> CameraAnswer:
    # a short session of its own, for the reason given in `deps.get_camera_line`
    with Session(engine) as session:
        return line_lookups(engine).current(session).camera_for_line(key, line)


async def require_camera_for_line(
    line: LineIdPath,
    engine: EngineDep,
    key: Annotated[str | None, Depends(camera_key_scheme)],
) -> CameraUpload:
    """The path's line, when the camera key in ``X-Api-Key`` is that line's: 401 (no valid
    key), 404 (no such line), 403 (another line's key), in that order. Answered on the event
    loop from the cache when it holds both answers and is fresh (`inspect_app.lookups`: no
    I/O, no thread hop); otherwise in one worker thread, with at most one revision read."""
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="a camera key is required in X-Api-Key"
        )
    answer = line_lookups(engine).peek_camera_for_line(key, line)
    if answer is None:
        answer = await asyncio.to_thread(_look_up_camera, engine, key, line)
    if answer.camera_line is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="the camera key is unknown or revoked"
        )
    if answer.policy is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown line {line!r}")
    get_camera_for_path_line(line, answer.camera_line)  # 403 for another line's key
    return CameraUpload(line_id=line, policy=answer.policy)


CameraForKnownLine = Annotated[CameraUpload, Depends(require_camera_for_line)]


async def read_limited_body(request: Request, limit: int, what: str = "") -> bytes:
    """The request body, refused with 413 as soon as it is over `limit` bytes; `what` explains
    the limit in the refusal."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_length = int(declared)
        except ValueError:
            raise IngestError(400, f"Content-Length {declared!r} is not a number") from None
        if declared_length > limit:
            raise IngestError(
                413, f"the body is {declared_length} bytes, over the limit of {limit}{what}"
            )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise IngestError(413, f"the body is over the limit of {limit} bytes{what}")
    return bytes(body)


async def parse_multipart(
    request: Request, body: bytes
) -> tuple[bytes, str | None, dict[str, str]]:
    """(image bytes, the part's content type, the text fields) of a buffered multipart body."""

    async def replay() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(
        request.headers, replay(), max_files=1, max_fields=len(_METADATA_FIELDS), max_part_size=1024
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise IngestError(400, f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get("image")
        if upload is None:
            raise IngestError(422, "the multipart body has no file field 'image'")
        if not isinstance(upload, UploadFile):
            raise IngestError(422, "the multipart field 'image' must be a file, not text")
        data = await upload.read()
        fields = {
            name: value
            for name, value in form.multi_items()
            if isinstance(value, str) and name in _METADATA_FIELDS
        }
        return data, upload.content_type, fields
    finally:
        await form.close()


def _merge(name: str, query_value: str | None, form_value: str | None) -> str | None:
    """The query's value (checked by FastAPI) or the form field's, checked here the same way."""
    if query_value is not None and form_value is not None and query_value != form_value:
        raise IngestError(
            422, f"{name} is given twice with different values (query and form field)"
        )
    if query_value is not None or form_value is None:
        return query_value
    if name != "captured_at" and (len(form_value) > MAX_TAG_CHARS or "\x00" in form_value):
        raise IngestError(
            422, f"the form field {name} must be at most {MAX_TAG_CHARS} characters, no NUL"
        )
    return form_value


# No response_class: with a response model and the default class, FastAPI serializes the
# answer straight to JSON bytes in pydantic-core, the fastest encoding it supports (this
# answer: 61 us, against 86 us for ORJSONResponse's orjson of a dict and 189 us for stdlib
# json, on the loaded 2-core machine).
@router.post(
    "/lines/{line}/images",
    status_code=status.HTTP_201_CREATED,
    response_model=InspectionPublic,
    summary="Post a camera image; get the line's decision",
    description=(
        "Inspects one image of one part and answers with the decision: `pass`, `fail`, or "
        "`pending` (a human decides; poll `GET /api/v1/inspections/{id}`). Send the image as "
        "the raw body (`Content-Type: image/jpeg`, `image/png` or `image/bmp`) or as the "
        "multipart file field `image`. `capture_id`, `part_serial` and `captured_at` go in "
        "the query string; a multipart upload may send them as form fields instead. "
        "Authenticate with the line's camera key in "
        "`X-Api-Key`. The answer comes after the image and the inspection are stored "
        "durably. The model's output is included only where the line's level shows it."
    ),
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        200: {
            "model": InspectionPublic,
            "description": "capture_id seen before, same image: the existing inspection",
        },
        **error_responses(
            400,
            401,
            403,
            404,
            409,
            413,
            415,
            422,
            503,
            _400="empty or malformed body",
            _401="missing or unknown camera key",
            _403="the camera key belongs to another line",
            _404="unknown line",
            _409="capture_id already used for a different image",
            _413="over the byte or pixel limit",
            _415="not a JPEG, PNG or BMP image",
            _422="truncated or corrupt image, or malformed metadata",
            _503="the model cannot inspect right now; send it again",
        ),
    },
)
async def post_image(
    request: Request,
    response: Response,
    pipeline: PipelineDep,
    settings: SettingsDep,
    camera: CameraForKnownLine,
    capture_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_TAG_CHARS,
            pattern=TEXT_PATTERN,
            description="Idempotency key, unique per line: posting the same capture_id and "
            "image again returns the same inspection (200); a different image is refused (409).",
        ),
    ] = None,
    part_serial: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_TAG_CHARS,
            pattern=TEXT_PATTERN,
            description="The part's serial number",
        ),
    ] = None,
    captured_at: Annotated[
        str | None,
        Query(
            description="When the camera took the image, ISO 8601 (2024-05-01T12:30:00Z); "
            "without an offset it is taken as UTC. The year must be from 1970 to 2999.",
            json_schema_extra={"format": "date-time", "pattern": DATE_TIME_YEAR_PATTERN},
        ),
    ] = None,
) -> InspectionPublic:
    line_id = camera.line_id
    content_type = request.headers.get("content-type")
    multipart = (content_type or "").lower().startswith("multipart/form-data")
    try:
        if multipart:
            body = await read_limited_body(
                request,
                settings.max_image_bytes + _MULTIPART_OVERHEAD,
                f" (an image of at most {settings.max_image_bytes} bytes plus 64 KiB of "
                "multipart envelope)",
            )
            data, content_type, fields = await parse_multipart(request, body)
        else:
            format_for_content_type(content_type)  # 415 before reading a body of that type
            data = await read_limited_body(request, settings.max_image_bytes)
            fields = {}
        submission = ImageSubmission(
            line_id=line_id,
            data=data,
            content_type=content_type,
            capture_id=_merge("capture_id", capture_id, fields.get("capture_id")),
            part_serial=_merge("part_serial", part_serial, fields.get("part_serial")),
            captured_at=parse_captured_at(
                _merge("captured_at", captured_at, fields.get("captured_at"))
            ),
            source="http",
            policy=camera.policy,
        )
    except ImageRejected as exc:
        pipeline.record_rejection(line_id, "http", IngestError(exc.status_code, exc.detail))
        raise IngestError(exc.status_code, exc.detail) from None
    except IngestError as exc:
        pipeline.record_rejection(line_id, "http", exc)
        raise
    outcome = await pipeline.submit(submission)
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    return inspection_public(outcome.inspection)

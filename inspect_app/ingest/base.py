"""The one small interface every camera source implements (after LeRobot's ``Camera``).

A source only *captures*: it hands out ``CapturedImage``s and is told afterwards whether
ingestion committed or refused each one. Validation, storage, the model and routing are the
pipeline's job, so an image from a camera goes exactly the way an HTTP upload goes.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self
from urllib.parse import urlsplit, urlunsplit

from inspect_app.settings import CameraSourceConfig

log = logging.getLogger(__name__)

# The formats ingestion accepts; anything else is sent without a type so the pipeline sniffs
# the bytes and names the problem in its refusal.
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
}

MAX_CAPTURE_ID = 128  # storage.tables.Inspection.capture_id


class CameraSourceError(Exception):
    """The source cannot work as configured (missing file or folder, unopenable device)."""


@dataclass(frozen=True)
class CapturedImage:
    """One image as the camera produced it, before ingestion has looked at it."""

    data: bytes
    content_type: str | None  # None: unknown, the pipeline sniffs the magic bytes
    capture_id: str | None  # idempotency key per line: a re-sent capture is not inspected twice
    part_serial: str | None
    captured_at: datetime
    true_class: str | None = None  # known truth (replay only), for evaluation
    origin: str = ""  # where it came from (file, frame), for the log; never sent on


class CameraSource(ABC):
    """Lifecycle: ``connect()`` once, ``read()`` until stopped or ``finished``, ``disconnect()``.

    ``read()`` never blocks for long: ``None`` means "nothing new right now"; the runner waits
    ``idle_seconds`` and asks again, so a stop request is honoured promptly.
    """

    kind: ClassVar[str]

    def __init__(self, config: CameraSourceConfig) -> None:
        if config.kind != self.kind:
            raise ValueError(
                f"a {type(self).__name__} needs kind={self.kind!r}, got {config.kind!r}"
            )
        self.config = config
        self.finished = False  # True when the source has nothing more, ever (a video file ended)

    @property
    def name(self) -> str:
        """How logs name this source: its line, kind and (credential-free) address."""
        return f"{self.config.line}/{self.kind}:{redact_uri(self.config.uri)}"

    @property
    def idle_seconds(self) -> float:
        """How long the runner waits after ``read()`` returned None before asking again."""
        return 0.05

    @abstractmethod
    def connect(self) -> None:
        """Open the device, stream or folder; raises ``CameraSourceError`` if it cannot."""

    @abstractmethod
    def read(self) -> CapturedImage | None:
        """The next captured image, or None when there is nothing new right now."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device; safe to call twice or after a failed connect."""

    def ingested(self, image: CapturedImage) -> None:  # noqa: B027 (optional hook)
        """The pipeline committed `image` (or already had it under its capture_id)."""

    def rejected(self, image: CapturedImage, reason: str, *, permanent: bool) -> None:  # noqa: B027
        """Ingestion refused `image`: `permanent` for bad input, else a transient failure
        (service stopping, database down) after which the source may offer it again."""

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()


def content_type_for(path: Path) -> str | None:
    """The image content type a file's suffix promises, or None to let the pipeline sniff."""
    suffix = path.suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed if guessed and guessed.startswith("image/") else None


def capture_key(*parts: object) -> str:
    """An idempotency key from its parts, kept within the column's 128 characters: a long
    part is shortened and a digest of the whole keeps the key unique."""
    key = ":".join(str(p) for p in parts)
    if len(key) <= MAX_CAPTURE_ID:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: MAX_CAPTURE_ID - len(digest) - 1]}~{digest}"


def redact_uri(uri: str) -> str:
    """The URI without its secret, so camera credentials never reach a log or an id."""
    parts = urlsplit(uri)
    if not parts.scheme or "@" not in parts.netloc:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    # user:password keeps the user (which account is configured); a lone user may be a token
    hidden = f"{parts.username}:***" if parts.password is not None else "***"
    return urlunsplit(parts._replace(netloc=f"{hidden}@{host}"))

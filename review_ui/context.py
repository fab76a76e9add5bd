"""What the review UI takes from the running service, looked up when a handler runs.

The UI is mounted while `create_app` builds the app, before its lifespan has opened the
database or loaded the model, so nothing here is read at mount time: every property goes
to ``app.state`` on use. Images are turned into ``data:`` URIs here because the page then
needs no second, separately authorised request to show a part.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import cv2
import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.login_throttle import ThrottlePolicy
from inspect_app.settings import Settings
from inspect_app.storage.images import ImageStore, open_image_store
from inspect_app.timeutil import utcnow

logger = logging.getLogger(__name__)

_MIME = {"jpeg": "image/jpeg", "png": "image/png", "bmp": "image/bmp"}


class HasState(Protocol):
    """A FastAPI app (or anything with the same ``state``)."""

    state: Any


def data_uri(data: bytes, image_format: str) -> str:
    mime = _MIME.get(image_format)
    if mime is None:
        raise ValueError(f"unknown image format {image_format!r}: one of {', '.join(_MIME)}")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_jpeg_uri(
    image_bgr: np.ndarray, *, max_side: int | None = None, quality: int = 90
) -> str:
    """A BGR image as a JPEG data URI, shrunk to `max_side` if given (thumbnails)."""
    if max_side is not None:
        h, w = image_bgr.shape[:2]
        scale = max_side / max(h, w)
        if scale < 1:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the image as JPEG")
    return data_uri(buf.tobytes(), "jpeg")


class ReviewContext:
    """The app's settings, database, image store and model, as the UI's handlers use them."""

    def __init__(self, app: HasState) -> None:
        self._app = app

    @property
    def settings(self) -> Settings:
        return self._app.state.settings

    @property
    def engine(self) -> Engine:
        engine = getattr(self._app.state, "engine", None)
        if engine is None:
            raise RuntimeError("the service has not started: no database engine yet")
        return engine

    @property
    def image_store(self) -> ImageStore:
        store = getattr(self._app.state, "image_store", None)
        return store if store is not None else open_image_store(self.settings, self.engine)

    @property
    def predictor(self) -> Any | None:
        """models.predictor.Predictor, or None where the service runs without one."""
        return getattr(self._app.state, "predictor", None)

    @property
    def rollout(self) -> Any | None:
        """inspect_app.rollout.serving.Rollout (the deployments this process follows, the
        loaded versions), or None before the service has started."""
        return getattr(self._app.state, "rollout", None)

    @property
    def lease_seconds(self) -> float:
        return self.settings.review_lease_seconds

    @property
    def throttle_policy(self) -> ThrottlePolicy:
        return ThrottlePolicy.from_settings(self.settings)

    def now(self) -> datetime:
        """The time, from ``app.state.clock`` where a test set one (as the API's `get_now`)."""
        clock: Callable[[], datetime] = getattr(self._app.state, "clock", utcnow)
        return clock()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def image_bytes(self, sha256: str) -> bytes:
        return self.image_store.get(sha256)

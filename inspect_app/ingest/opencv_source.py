"""A camera read through OpenCV: a USB device index, an RTSP/HTTP stream, or a video file.

Every Nth frame is taken and JPEG-encoded, so ingestion sees exactly what an HTTP camera
would post. A live stream that drops is reopened with exponential backoff; a video file that
ends finishes the source. Frames of a file get capture ids from the file's identity and the
frame index, so restarting the service on the same file does not inspect a frame twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from inspect_app.ingest.base import (
    CameraSource,
    CameraSourceError,
    CapturedImage,
    capture_key,
    redact_uri,
)
from inspect_app.settings import CameraSourceConfig

log = logging.getLogger(__name__)


class OpenCVSource(CameraSource):
    kind = "opencv"

    def __init__(
        self,
        config: CameraSourceConfig,
        *,
        jpeg_quality: int = 95,  # high: the model must see scratches, not JPEG artefacts
        timeout_s: float = 10.0,  # open/read timeout of a stream, so a dead camera cannot hang us
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        super().__init__(config)
        if config.every_nth < 1:
            raise ValueError(f"every_nth must be at least 1, got {config.every_nth}")
        uri = config.uri.strip()
        if not uri:
            raise ValueError("an opencv camera needs a uri: a device index, a stream URL or a file")
        self._device: int | None = int(uri) if uri.isdigit() else None
        self._is_stream = self._device is None and "://" in uri
        self._file: Path | None = None if self._device is not None or self._is_stream else Path(uri)
        self._jpeg_quality = jpeg_quality
        self._timeout_ms = int(timeout_s * 1000)
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s

        self._capture: cv2.VideoCapture | None = None
        self._connected = False
        self._source_tag = ""  # identity of the file / device / stream in capture ids
        self._session = ""  # live sources: when this connection opened (frame numbers restart)
        self._frame_index = 0  # frames grabbed on this connection (a file: position in the file)
        self._taken = 0
        self._backoff_s = initial_backoff_s
        self._retry_at = 0.0

    @property
    def is_live(self) -> bool:
        """A device or stream: frames are not replayable and a drop is worth reconnecting."""
        return self._file is None

    def connect(self) -> None:
        if self._file is not None:
            if not self._file.is_file():
                raise CameraSourceError(f"video file {self._file} does not exist")
            stat = self._file.stat()
            identity = f"{self._file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
            self._source_tag = f"{self._file.name}@{digest}"
            capture = self._open_capture()
            if not capture.isOpened():
                capture.release()
                raise CameraSourceError(f"OpenCV cannot read video file {self._file}")
            self._capture = capture
            self._frame_index = 0
            log.info(
                "%s: opened video file, taking every %d. frame", self.name, self.config.every_nth
            )
        else:
            self._source_tag = self._live_tag()
            # A camera that is off now may come up later: keep trying instead of failing.
            self._open_live()
        self._connected = True

    def read(self) -> CapturedImage | None:
        if not self._connected:
            raise CameraSourceError(f"{self.name}: read() before connect()")
        if self.finished:
            return None
        if self._capture is None and not self._open_live():
            return None
        capture = self._capture
        assert capture is not None
        while True:
            index = self._frame_index
            # grab() without retrieve() skips a frame without decoding it
            if not capture.grab():
                self._on_no_frame()
                return None
            self._frame_index += 1
            if index % self.config.every_nth:
                continue
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                log.warning("%s: frame %d could not be decoded; skipped", self.name, index)
                continue
            self._backoff_s = self._initial_backoff_s  # the stream works again
            self._taken += 1
            return CapturedImage(
                data=self._encode(frame, index),
                content_type="image/jpeg",
                capture_id=self._capture_id(index),
                part_serial=None,
                captured_at=datetime.now(UTC),
                origin=f"frame {index}",
            )

    def disconnect(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        if self._connected:
            log.info("%s: disconnected after %d frames taken", self.name, self._taken)
        self._connected = False

    @property
    def idle_seconds(self) -> float:
        if self._capture is None and not self.finished:
            return min(1.0, max(0.05, self._retry_at - time.monotonic()))
        return 0.05

    def _open_capture(self) -> cv2.VideoCapture:
        """The OpenCV handle; streams get timeouts so a dead camera cannot hang the thread."""
        if self._device is not None:
            return cv2.VideoCapture(self._device)
        if self._is_stream:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                self._timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                self._timeout_ms,
            ]
            return cv2.VideoCapture(self.config.uri, cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(str(self._file))

    def _open_live(self) -> bool:
        """(Re)open a device or stream when its backoff has passed; True when it is open."""
        if time.monotonic() < self._retry_at:
            return False
        capture = self._open_capture()
        if not capture.isOpened():
            capture.release()
            self._schedule_retry("could not be opened")
            return False
        self._capture = capture
        self._frame_index = 0
        self._session = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        log.info(
            "%s: connected (session %s), taking every %d. frame",
            self.name,
            self._session,
            self.config.every_nth,
        )
        return True

    def _on_no_frame(self) -> None:
        if self.is_live:
            if self._capture is not None:
                self._capture.release()
                self._capture = None
            self._schedule_retry(f"dropped after {self._frame_index} frames")
            return
        self.finished = True
        log.info(
            "%s: video file ended after %d frames, %d taken; source stops",
            self.name,
            self._frame_index,
            self._taken,
        )

    def _schedule_retry(self, what: str) -> None:
        delay = self._backoff_s
        self._retry_at = time.monotonic() + delay
        self._backoff_s = min(self._max_backoff_s, max(self._backoff_s * 2, 0.001))
        log.warning("%s: stream %s; reconnecting in %.1f s", self.name, what, delay)

    def _encode(self, frame: np.ndarray, index: int) -> bytes:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])
        if not ok:
            raise CameraSourceError(f"{self.name}: frame {index} could not be JPEG-encoded")
        return buf.tobytes()

    def _capture_id(self, index: int) -> str:
        if self.is_live:
            return capture_key("opencv", self._source_tag, self._session, f"f{index}")
        return capture_key("opencv", self._source_tag, f"f{index}")

    def _live_tag(self) -> str:
        if self._device is not None:
            return f"dev{self._device}"
        uri = redact_uri(self.config.uri)
        digest = hashlib.sha256(uri.encode()).hexdigest()[:8]
        return f"{urlsplit(uri).hostname or 'stream'}~{digest}"

"""A hot folder: the camera's own software drops image files, we ingest each one once.

A file is taken only when it is complete: temp names (``.part``, ``.tmp``, ...) and hidden
files are ignored, and a file's size and modification time must be the same on two scans
a poll interval apart. After the pipeline committed it, the file moves to ``processed/``;
when ingestion refuses it (a corrupt image, say), it moves to ``failed/`` with a
``<name>.error.txt`` beside it that says why. The capture id is the file's name, size and
modification time, so a crash between the commit and the move does not inspect it twice:
on restart the pipeline recognises the capture id and the file simply moves.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from inspect_app.ingest.base import (
    CameraSource,
    CameraSourceError,
    CapturedImage,
    capture_key,
    content_type_for,
)
from inspect_app.settings import CameraSourceConfig

log = logging.getLogger(__name__)

PROCESSED_DIR = "processed"
FAILED_DIR = "failed"
# Names that copy tools, browsers and camera software use while a file is still being written
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".download")

_Observation = tuple[int, int]  # (size, mtime_ns)


def is_temporary(name: str) -> bool:
    """Files that are not (yet) a camera image: hidden, temp-suffixed, or our error notes."""
    lower = name.lower()
    return (
        name.startswith((".", "~")) or lower.endswith(TEMP_SUFFIXES) or lower.endswith(".error.txt")
    )


class FolderSource(CameraSource):
    kind = "folder"

    def __init__(
        self,
        config: CameraSourceConfig,
        *,
        poll_seconds: float = 1.0,  # also the settle time: a file must not change for this long
        max_attempts: int = 5,  # transient failures of one file before it goes to failed/
    ) -> None:
        super().__init__(config)
        if poll_seconds < 0:
            raise ValueError(f"poll_seconds must not be negative, got {poll_seconds}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.folder = Path(config.uri)
        self.processed_dir = self.folder / PROCESSED_DIR
        self.failed_dir = self.folder / FAILED_DIR
        self._poll_seconds = poll_seconds
        self._max_attempts = max_attempts
        self._last_scan = float("-inf")
        self._seen: dict[str, _Observation] = {}  # name -> what the previous scan saw
        self._ready: deque[str] = deque()
        self._offered: dict[str, Path] = {}  # capture id -> file handed out, not yet resolved
        self._stuck: set[str] = set()  # capture ids we could not move away; not offered again
        self._attempts: dict[str, int] = {}
        self._connected = False

    def connect(self) -> None:
        if not self.folder.is_dir():
            raise CameraSourceError(f"hot folder {self.folder} does not exist or is not a folder")
        self.processed_dir.mkdir(exist_ok=True)
        self.failed_dir.mkdir(exist_ok=True)
        self._connected = True
        log.info("%s: watching hot folder (poll %.1f s)", self.name, self._poll_seconds)

    def disconnect(self) -> None:
        if self._connected:
            log.info("%s: stopped watching hot folder", self.name)
        self._connected = False
        self._ready.clear()
        self._offered.clear()

    @property
    def idle_seconds(self) -> float:
        return max(0.05, self._poll_seconds)

    def read(self) -> CapturedImage | None:
        if not self._connected:
            raise CameraSourceError(f"{self.name}: read() before connect()")
        if not self._ready:
            if time.monotonic() - self._last_scan < self._poll_seconds:
                return None
            self._scan()
        while self._ready:
            path = self.folder / self._ready.popleft()
            try:
                stat = path.stat()
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # removed by someone else since the scan
            capture_id = _file_capture_id(path.name, stat.st_size, stat.st_mtime_ns)
            if capture_id in self._stuck or capture_id in self._offered:
                continue
            self._offered[capture_id] = path
            return CapturedImage(
                data=data,
                content_type=content_type_for(path),
                capture_id=capture_id,
                part_serial=None,
                captured_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                origin=str(path),
            )
        return None

    def ingested(self, image: CapturedImage) -> None:
        path = self._resolve(image)
        if path is None:
            return
        target = self._move(path, self.processed_dir, image)
        if target is not None:
            log.info("%s: %s ingested, moved to %s", self.name, path.name, target)

    def rejected(self, image: CapturedImage, reason: str, *, permanent: bool) -> None:
        path = self._resolve(image)
        if path is None:
            return
        capture_id = image.capture_id or ""
        if not permanent:
            attempts = self._attempts.get(capture_id, 0) + 1
            self._attempts[capture_id] = attempts
            if attempts < self._max_attempts:
                log.warning(
                    "%s: %s not ingested (attempt %d of %d), will retry: %s",
                    self.name,
                    path.name,
                    attempts,
                    self._max_attempts,
                    reason,
                )
                return
            reason = f"gave up after {attempts} attempts; last error: {reason}"
        target = self._move(path, self.failed_dir, image)
        if target is None:
            return
        note = target.with_name(target.name + ".error.txt")
        note.write_text(
            f"file: {path.name}\ncapture_id: {capture_id}\n"
            f"failed_at: {datetime.now(UTC).isoformat()}\nreason: {reason}\n",
            encoding="utf-8",
        )
        log.warning("%s: %s refused, moved to %s: %s", self.name, path.name, target, reason)

    def _scan(self) -> None:
        """Queue the files unchanged since the previous scan, oldest first."""
        self._last_scan = time.monotonic()
        current: dict[str, _Observation] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_temporary(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
                current[entry.name] = (stat.st_size, stat.st_mtime_ns)
        stable = [
            name
            for name, seen in current.items()
            if seen[0] > 0 and self._seen.get(name) == seen and name not in self._ready
        ]
        stable.sort(key=lambda name: (current[name][1], name))
        self._ready.extend(stable)
        self._seen = current

    def _resolve(self, image: CapturedImage) -> Path | None:
        path = self._offered.pop(image.capture_id or "", None)
        if path is None:
            log.warning("%s: told about %s, which it did not hand out", self.name, image.origin)
        return path

    def _move(self, path: Path, folder: Path, image: CapturedImage) -> Path | None:
        """Move `path` into `folder` without overwriting an earlier file of the same name."""
        target = folder / path.name
        n = 1
        while target.exists():
            target = folder / f"{path.stem}.{n}{path.suffix}"
            n += 1
        try:
            os.replace(path, target)
        except OSError as exc:
            # Leaving it in place would re-offer it forever; remember it and tell the operator.
            self._stuck.add(image.capture_id or "")
            log.error("%s: could not move %s to %s: %s", self.name, path, folder, exc)
            return None
        self._attempts.pop(image.capture_id or "", None)
        return target


def _file_capture_id(name: str, size: int, mtime_ns: int) -> str:
    return capture_key("folder", name, size, mtime_ns)

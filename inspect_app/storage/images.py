"""Content-addressed image store: the bytes a camera sent, named by their SHA-256.

Content addressing makes a write idempotent (a retried upload writes nothing new) and lets
an inspection row point at its image by hash. A write is durable before it returns: temp
file, fsync, atomic rename, fsync of the directory, so an image whose inspection was
acknowledged survives a crash of the process or the machine.

A file without an inspection row (the rare loser of a capture_id race, or a write whose
commit failed) is left in place by the request: another request may be about to commit a row
pointing at the same bytes, and deleting under it would lose an acknowledged image. The
retention sweep (`inspect_app.storage.retention`) removes such orphans once they are old.
To make "old" safe, `put` refreshes the modification time of a file that is already there,
and `remove_if_idle` refuses a file written or refreshed since a given time: a request that
is about to commit a row for these bytes has always just refreshed them.

A full disk (``ENOSPC``, ``EDQUOT``) is `ImageStoreFull`, so the service can answer 503 and
the camera retries; the temp file of the failed write is removed, never left half-written.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
TEMP_PREFIX = ".tmp-"  # an unfinished write (mkstemp's name); never an image
TRASH_PREFIX = ".trash-"  # a file the retention sweep is removing: `.trash-<sha256>`
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class ImageStoreFull(OSError):
    """The store's disk (or the service user's quota) is full: nothing was stored."""


@dataclass(frozen=True)
class Leftover:
    """A file in the store that is not an image: an unfinished write or an unfinished removal."""

    path: Path
    kind: str  # "temp" | "trash"
    sha256: str | None  # trash: the image it was
    size: int
    mtime: float


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> list[Path]:
    """mkdir -p that returns the directories it created, deepest first."""
    missing = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    directory.mkdir(parents=True, exist_ok=True)
    return missing


class ImageStore:
    """Files under ``root/<first two hex digits>/<sha256>``, so no directory grows too large."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        # The hash also comes from URLs and rows: check it so it can never name another path.
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        """Store `data` durably and return its SHA-256; storing the same bytes twice writes
        nothing (it refreshes the file's time, see the module's docstring).

        Raises `ImageStoreFull` when the disk is full; nothing is left behind then."""
        sha256 = sha256_of(data)
        target = self.path(sha256)
        try:
            os.utime(target)  # already stored: now "written just now" for the sweep
            return sha256
        except FileNotFoundError:
            pass
        try:
            self._write(target, data)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                # strerror is what a client may be told; the folder is only in the filename
                raise ImageStoreFull(
                    exc.errno, f"the image store's disk is full ({exc.strerror})", str(self.root)
                ) from exc
            raise
        logger.debug("stored image %s (%d bytes)", sha256, len(data))
        return sha256

    @staticmethod
    def _write(target: Path, data: bytes) -> None:
        directory = target.parent
        created = _make_dirs(directory)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(directory)
        for new_dir in created:  # a new directory's own entry must reach the disk too
            _fsync_dir(new_dir.parent)

    def get(self, sha256: str) -> bytes:
        """The stored bytes; FileNotFoundError when there is no such image."""
        return self.path(sha256).read_bytes()

    def stored(self) -> list[str]:
        """Every stored image's hash (temp files of unfinished writes are not images)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.glob("??/*") if p.is_file() and _SHA256.fullmatch(p.name)
        )

    def stat(self, sha256: str) -> os.stat_result | None:
        """The stored file's size and times, or None when it is not stored."""
        try:
            return self.path(sha256).stat()
        except FileNotFoundError:
            return None

    def remove_if_idle(self, sha256: str, idle_since: float) -> int | None:
        """Remove the image unless it was written or refreshed at or after `idle_since` (a
        POSIX time); returns the bytes freed (0: it was not stored), or None when it stays.

        The file is first renamed out of the way and its time read again, so a `put` that
        refreshed it a moment before is seen and the file is put back; a `put` that comes
        after the rename finds no file and writes it again."""
        target = self.path(sha256)
        trash = target.with_name(TRASH_PREFIX + sha256)
        try:
            if target.stat().st_mtime >= idle_since:
                return None
            os.replace(target, trash)
        except FileNotFoundError:
            return 0
        try:
            moved = trash.stat()
        except FileNotFoundError:  # another sweep running at the same time took it
            return 0
        if moved.st_mtime >= idle_since:
            os.replace(trash, target)  # identical bytes even if a put has written it anew
            return None
        trash.unlink()
        logger.debug("removed image %s (%d bytes)", sha256, moved.st_size)
        return moved.st_size

    def leftovers(self) -> list[Leftover]:
        """Temp files of writes that never finished (a process killed mid-write) and trash of
        removals that never finished (a sweep killed mid-removal)."""
        if not self.root.is_dir():
            return []
        found = []
        for p in sorted(self.root.glob("??/.*")):
            if p.name.startswith(TEMP_PREFIX):
                kind, sha256 = "temp", None
            elif p.name.startswith(TRASH_PREFIX) and _SHA256.fullmatch(p.name[len(TRASH_PREFIX) :]):
                kind, sha256 = "trash", p.name[len(TRASH_PREFIX) :]
            else:
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            found.append(Leftover(p, kind, sha256, st.st_size, st.st_mtime))
        return found

    def restore(self, leftover: Leftover) -> None:
        """Put a trashed image back: its removal was interrupted and it is still needed."""
        if leftover.kind != "trash" or leftover.sha256 is None:
            raise ValueError(f"{leftover.path} is not a trashed image")
        os.replace(leftover.path, self.path(leftover.sha256))

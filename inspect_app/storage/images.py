"""Content-addressed image store: the bytes a camera sent, named by their SHA-256.

Content addressing makes a write idempotent (a retried upload writes nothing new) and lets
an inspection row point at its image by hash. A write is durable before it returns: temp
file, fsync, atomic rename, fsync of the directory, so an image whose inspection was
acknowledged survives a crash of the process or the machine.

A file without an inspection row (the rare loser of a capture_id race) is left in place
rather than deleted: another request may be about to commit a row pointing at the same
bytes, and deleting under it would lose an acknowledged image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        """Store `data` durably and return its SHA-256; storing the same bytes twice is a no-op."""
        sha256 = sha256_of(data)
        target = self.path(sha256)
        if target.is_file():
            return sha256
        directory = target.parent
        created = _make_dirs(directory)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=directory)
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
        logger.debug("stored image %s (%d bytes)", sha256, len(data))
        return sha256

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

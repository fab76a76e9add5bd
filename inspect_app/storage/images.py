"""Content-addressed image store: the bytes a camera sent, named by their SHA-256.

Content addressing makes a write idempotent (a retried upload writes nothing new) and lets
an inspection row point at its image by hash. Every reader (the API's image route, the
review UI, export, retention, monitoring's responsible images) goes through `ImageStore`,
and `open_image_store` picks the implementation from the settings (``INSPECT_IMAGE_STORE``):

- ``local`` (`LocalImageStore`): files in a folder (``INSPECT_IMAGE_PATH``, default the data
  folder's ``images/``). The default for the embedded SQLite database, one process. Pointed
  at a shared mount (NFS, CephFS, ...) every process reaches, it is the shared-filesystem
  store: nothing else changes, provided the mount honours fsync and atomic rename.
- ``database`` (`DatabaseImageStore`): the bytes in the ``imageblob`` table (``bytea`` on
  PostgreSQL, ``BLOB`` on SQLite), written in the same transaction as the inspection row, so
  a row and its image commit or vanish together and every process on the database reads
  them. The default when the database is PostgreSQL (several processes): it needs no shared
  mount and cannot leave an orphan or a row without its image. Images a process stored in
  its folder before (a deployment upgraded from ``local``) are still read from there.

Local store: a write is durable before it returns (temp file, fsync, atomic rename, fsync of
the directory), so an image whose inspection was acknowledged survives a crash of the process
or the machine. A file without an inspection row (the rare loser of a capture_id race, or a
write whose commit failed) is left in place by the request: another request may be about to
commit a row pointing at the same bytes, and deleting under it would lose an acknowledged
image. The retention sweep (`inspect_app.storage.retention`) removes such orphans once they
are old. To make "old" safe, `put` refreshes the modification time of a file that is already
there, and `remove_if_idle` refuses a file written or refreshed since a given time: a request
that is about to commit a row for these bytes has always just refreshed them. The database
store keeps the same rule with its ``stored_at`` column, refreshed by an upsert that locks
the row until the inspection commits.

A full disk (``ENOSPC``, ``EDQUOT``, or the database's own disk-full error) is
`ImageStoreFull`, so the service can answer 503 and the camera retries; the temp file of the
failed write is removed, never left half-written.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from inspect_app.storage.db import database_disk_full
from inspect_app.storage.tables import ImageBlob
from inspect_app.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from inspect_app.settings import Settings

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


class ImageStat(NamedTuple):
    """A stored image's size and when it was last written or refreshed (POSIX time)."""

    st_size: int
    st_mtime: float


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


def _check_sha256(sha256: str) -> str:
    # The hash also comes from URLs and rows: check it so it can never name another image.
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return sha256


class ImageStore(ABC):
    """Where image bytes live, by SHA-256: the one interface every reader and writer uses."""

    kind: str  # "local" | "database", as in the settings

    @abstractmethod
    def put(self, data: bytes, session: Session | None = None) -> str:
        """Store `data` and return its SHA-256; storing the same bytes twice writes nothing
        new (it refreshes their time, see the module's docstring).

        `session`: the transaction that will commit the row pointing at the bytes. The
        local store has the file durable before it returns, whatever the session; the
        database store writes in `session`, so the bytes commit with the row (without a
        session it commits them on its own). Raises `ImageStoreFull` when the disk is full."""

    @abstractmethod
    def get(self, sha256: str) -> bytes:
        """The stored bytes; FileNotFoundError when there is no such image."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def stored(self) -> list[str]:
        """Every stored image's hash, sorted."""

    @abstractmethod
    def stat(self, sha256: str) -> ImageStat | None:
        """The stored image's size and last write, or None when it is not stored."""

    @abstractmethod
    def remove_if_idle(self, sha256: str, idle_since: float) -> int | None:
        """Remove the image unless it was written or refreshed at or after `idle_since` (a
        POSIX time); returns the bytes freed (0: it was not stored), or None when it stays."""

    def leftovers(self) -> list[Leftover]:
        """Unfinished writes and removals a killed process left (none in a transaction)."""
        return []

    def restore(self, leftover: Leftover) -> None:
        """Put a trashed image back: its removal was interrupted and it is still needed."""
        raise ValueError(f"{leftover.path} is not a trashed image of this store")


class LocalImageStore(ImageStore):
    """Files under ``root/<first two hex digits>/<sha256>``, so no directory grows too large."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / _check_sha256(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes, session: Session | None = None) -> str:
        # `session` is not needed: the file is durable before the row's transaction commits.
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
        return self.path(sha256).read_bytes()

    def stored(self) -> list[str]:
        # temp files of unfinished writes are not images
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.glob("??/*") if p.is_file() and _SHA256.fullmatch(p.name)
        )

    def stat(self, sha256: str) -> ImageStat | None:
        try:
            st = self.path(sha256).stat()
        except FileNotFoundError:
            return None
        return ImageStat(st.st_size, st.st_mtime)

    def remove_if_idle(self, sha256: str, idle_since: float) -> int | None:
        """The file is first renamed out of the way and its time read again, so a `put` that
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
        if leftover.kind != "trash" or leftover.sha256 is None:
            raise ValueError(f"{leftover.path} is not a trashed image")
        os.replace(leftover.path, self.path(leftover.sha256))


class DatabaseImageStore(ImageStore):
    """Image bytes in the ``imageblob`` table, written in the transaction of their row.

    Every process on the database reads what any process wrote, with no shared mount. The
    cost (measured by ``bench/image_store.py``) is the bytes travelling to the database
    and its write-ahead log; the gain is one commit for the row and its bytes."""

    kind = "database"

    def __init__(self, engine: Engine, *, earlier: LocalImageStore | None = None) -> None:
        self.engine = engine
        # The folder this process stored images in before the database store (an upgraded
        # deployment): read when an image is not in the table, never written or swept here.
        self.earlier = earlier

    def put(self, data: bytes, session: Session | None = None) -> str:
        sha256 = sha256_of(data)
        if session is None:
            with Session(self.engine) as own:
                self._upsert(own, sha256, data)
                self._commit(own)
        else:
            self._upsert(session, sha256, data)
        logger.debug("stored image %s (%d bytes) in the database", sha256, len(data))
        return sha256

    @staticmethod
    def _upsert(session: Session, sha256: str, data: bytes) -> None:
        # The same bytes already stored: refresh `stored_at` instead. The upsert locks the
        # row until the caller's commit, so a retention sweep's delete waits for it and then
        # sees the fresh time (see the module's docstring).
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        else:
            raise RuntimeError(f"the database image store does not support {dialect}")
        now = utcnow()
        statement = insert(ImageBlob.__table__).values(  # type: ignore[attr-defined]
            sha256=sha256, data=data, size=len(data), stored_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["sha256"], set_={"stored_at": now}
        )
        try:
            session.execute(statement)
        except OperationalError as exc:
            if database_disk_full(exc):
                session.rollback()
                raise ImageStoreFull(
                    errno.ENOSPC, "the database's disk is full", "imageblob"
                ) from exc
            raise

    @staticmethod
    def _commit(session: Session) -> None:
        try:
            session.commit()
        except OperationalError as exc:
            if database_disk_full(exc):
                session.rollback()
                raise ImageStoreFull(
                    errno.ENOSPC, "the database's disk is full", "imageblob"
                ) from exc
            raise

    def get(self, sha256: str) -> bytes:
        with Session(self.engine) as session:
            data = session.execute(
                select(ImageBlob.data).where(ImageBlob.sha256 == _check_sha256(sha256))  # type: ignore[arg-type]
            ).scalar_one_or_none()
        if data is None:
            if self.earlier is not None and self.earlier.exists(sha256):
                return self.earlier.get(sha256)
            raise FileNotFoundError(f"image {sha256} is not in the database")
        return bytes(data)

    def exists(self, sha256: str) -> bool:
        return self.stat(sha256) is not None

    def stored(self) -> list[str]:
        with Session(self.engine) as session:
            return list(
                session.execute(select(ImageBlob.sha256).order_by(ImageBlob.sha256)).scalars()  # type: ignore[arg-type]
            )

    def stat(self, sha256: str) -> ImageStat | None:
        with Session(self.engine) as session:
            found = session.execute(
                select(ImageBlob.size, ImageBlob.stored_at).where(
                    ImageBlob.sha256 == _check_sha256(sha256)  # type: ignore[arg-type]
                )
            ).first()
        if found is None:
            return None
        stored_at = as_utc(found.stored_at)
        assert stored_at is not None
        return ImageStat(found.size, stored_at.timestamp())

    def remove_if_idle(self, sha256: str, idle_since: float) -> int | None:
        idle = datetime.fromtimestamp(idle_since, UTC)
        with Session(self.engine) as session:
            freed = session.execute(
                delete(ImageBlob)
                .where(ImageBlob.sha256 == _check_sha256(sha256))  # type: ignore[arg-type]
                .where(ImageBlob.stored_at < idle)  # type: ignore[arg-type]
                .returning(ImageBlob.size)
            ).scalar_one_or_none()
            session.commit()
        if freed is not None:
            logger.debug("removed image %s (%d bytes) from the database", sha256, freed)
            return int(freed)
        return None if self.exists(sha256) else 0


def open_image_store(settings: Settings, engine: Engine | None = None) -> ImageStore:
    """The store the settings choose (`Settings.resolved_image_store`); the database store
    needs the service's `engine`."""
    if settings.resolved_image_store == "database":
        if engine is None:
            raise ValueError("the database image store needs the database engine")
        earlier = LocalImageStore(settings.image_dir)
        return DatabaseImageStore(engine, earlier=earlier if earlier.root.is_dir() else None)
    return LocalImageStore(settings.image_dir)

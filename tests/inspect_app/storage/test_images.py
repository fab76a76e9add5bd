"""The image stores (files, database) keep exactly the bytes they were given, under their
hash, idempotently; the database store commits them with the row or not at all."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.settings import Settings
from inspect_app.storage.images import (
    DatabaseImageStore,
    ImageStoreFull,
    LocalImageStore,
    open_image_store,
)


def test_put_then_get_returns_the_same_bytes(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    data = b"\x89PNG fake but opaque bytes"
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.get(sha) == data
    assert store.path(sha) == tmp_path / "images" / sha[:2] / sha
    assert store.stored() == [sha]


def test_storing_the_same_bytes_twice_keeps_one_file(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    first = store.put(b"abc")
    second = store.put(b"abc")
    assert first == second
    assert store.stored() == [first]
    assert not list(tmp_path.rglob(".tmp-*"))  # no temp files left behind


def test_a_missing_image_is_a_file_not_found(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)
    assert not store.exists("0" * 64)
    assert store.stored() == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "g" * 64, "0" * 63])
def test_a_hash_can_never_name_another_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        LocalImageStore(tmp_path).path(bad)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_image_store_full_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = LocalImageStore(tmp_path)

    def full(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("inspect_app.storage.images.os.fsync", full)
    with pytest.raises(ImageStoreFull) as refused:
        store.put(b"the image")
    assert refused.value.errno == code
    assert str(tmp_path) not in (refused.value.strerror or "")  # what a client may be told
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written


def test_storing_the_same_bytes_again_refreshes_the_file(tmp_path: Path) -> None:
    """So the retention sweep, which removes only files idle for a while, never removes
    bytes an upload is about to commit a row for."""
    store = LocalImageStore(tmp_path)
    sha = store.put(b"abc")
    os.utime(store.path(sha), (1_000_000, 1_000_000))
    assert store.remove_if_idle(sha, idle_since=2_000_000) is not None
    assert store.put(b"abc") == sha  # written anew
    os.utime(store.path(sha), (1_000_000, 1_000_000))
    store.put(b"abc")
    assert store.path(sha).stat().st_mtime > 2_000_000
    assert store.remove_if_idle(sha, idle_since=2_000_000) is None
    assert store.get(sha) == b"abc"


# -- the database store ---------------------------------------------------------------------


def test_the_database_store_keeps_the_bytes_under_their_hash(engine: Engine) -> None:
    store = DatabaseImageStore(engine)
    data = bytes(range(256)) * 4  # every byte value: bytea/BLOB, not text
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.get(sha) == data and store.exists(sha)
    assert store.put(data) == sha  # the same bytes again: one row
    assert store.stored() == [sha]
    stat = store.stat(sha)
    assert stat is not None and stat.st_size == len(data)
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)
    assert store.stat("0" * 64) is None and not store.exists("0" * 64)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


def test_database_bytes_commit_with_the_row_or_not_at_all(engine: Engine) -> None:
    """Written in the caller's session: a rolled-back inspection leaves no bytes behind."""
    store = DatabaseImageStore(engine)
    with Session(engine) as session:
        lost = store.put(b"the row's transaction fails", session=session)
        if engine.dialect.name == "postgresql":  # (in-memory SQLite shares one connection)
            assert not store.exists(lost)  # no other process sees it before the commit
        session.rollback()
    assert not store.exists(lost)
    with Session(engine) as session:
        kept = store.put(b"the row commits", session=session)
        session.commit()
    assert store.get(kept) == b"the row commits"


def test_a_database_image_refreshed_since_is_not_removed(engine: Engine) -> None:
    store = DatabaseImageStore(engine)
    sha = store.put(b"bytes")
    stat = store.stat(sha)
    assert stat is not None
    assert store.remove_if_idle(sha, idle_since=stat.st_mtime - 60) is None  # written since
    assert store.exists(sha)
    assert store.remove_if_idle(sha, idle_since=stat.st_mtime + 60) == len(b"bytes")
    assert not store.exists(sha)
    assert store.remove_if_idle(sha, idle_since=stat.st_mtime + 60) == 0


def test_the_settings_choose_the_store(tmp_path: Path, engine: Engine) -> None:
    sqlite = Settings(data_dir=tmp_path)
    assert sqlite.resolved_image_store == "local"
    assert isinstance(open_image_store(sqlite, engine), LocalImageStore)
    postgres = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://h/db")
    assert postgres.resolved_image_store == "database"
    assert isinstance(open_image_store(postgres, engine), DatabaseImageStore)
    shared = Settings(
        data_dir=tmp_path, database_url="postgresql+psycopg://h/db", image_store="local",
        image_path=tmp_path / "nfs" / "images",
    )  # fmt: skip
    store = open_image_store(shared, engine)
    assert isinstance(store, LocalImageStore) and store.root == tmp_path / "nfs" / "images"
    with pytest.raises(ValueError, match="engine"):
        open_image_store(postgres)


def test_the_database_store_still_reads_what_the_folder_held_before(
    tmp_path: Path, engine: Engine
) -> None:
    """A deployment upgraded to the database store loses no image stored before it."""
    before = LocalImageStore(tmp_path / "images")
    old = before.put(b"stored by the local store last week")
    store = open_image_store(Settings(data_dir=tmp_path, image_store="database"), engine)
    assert isinstance(store, DatabaseImageStore)
    assert store.get(old) == b"stored by the local store last week"
    new = store.put(b"stored in the database")
    assert store.stored() == [new]  # the folder is read, never listed or swept from here
    assert not before.exists(new)

"""The image store keeps exactly the bytes it was given, under their hash, idempotently."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from inspect_app.storage.images import ImageStore, ImageStoreFull


def test_put_then_get_returns_the_same_bytes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    data = b"\x89PNG fake but opaque bytes"
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.get(sha) == data
    assert store.path(sha) == tmp_path / "images" / sha[:2] / sha
    assert store.stored() == [sha]


def test_storing_the_same_bytes_twice_keeps_one_file(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    first = store.put(b"abc")
    second = store.put(b"abc")
    assert first == second
    assert store.stored() == [first]
    assert not list(tmp_path.rglob(".tmp-*"))  # no temp files left behind


def test_a_missing_image_is_a_file_not_found(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)
    assert not store.exists("0" * 64)
    assert store.stored() == []


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "g" * 64, "0" * 63])
def test_a_hash_can_never_name_another_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        ImageStore(tmp_path).path(bad)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_image_store_full_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    store = ImageStore(tmp_path)

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
    store = ImageStore(tmp_path)
    sha = store.put(b"abc")
    os.utime(store.path(sha), (1_000_000, 1_000_000))
    assert store.remove_if_idle(sha, idle_since=2_000_000) is not None
    assert store.put(b"abc") == sha  # written anew
    os.utime(store.path(sha), (1_000_000, 1_000_000))
    store.put(b"abc")
    assert store.path(sha).stat().st_mtime > 2_000_000
    assert store.remove_if_idle(sha, idle_since=2_000_000) is None
    assert store.get(sha) == b"abc"

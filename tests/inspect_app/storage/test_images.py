"""The image store keeps exactly the bytes it was given, under their hash, idempotently."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from inspect_app.storage.images import ImageStore


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

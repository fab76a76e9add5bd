"""The hot-folder source: complete files once, temp files never, outcomes moved aside."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from inspect_app.ingest.base import CameraSourceError, CapturedImage
from inspect_app.ingest.folder import FolderSource, is_temporary
from inspect_app.settings import CameraSourceConfig


def drop(folder: Path, name: str, data: bytes, mtime: int) -> Path:
    path = folder / name
    path.write_bytes(data)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))  # the order the camera wrote them
    return path


def folder_source(folder: Path) -> FolderSource:
    # poll 0: every read() scans, so "stable across two polls" is two read() calls
    return FolderSource(
        CameraSourceConfig(line="line-1", kind="folder", uri=str(folder)), poll_seconds=0
    )


def read_pending(source: FolderSource) -> list[CapturedImage]:
    """Everything the folder offers now, resolving each as ingested, like the runner does."""
    images = []
    while (image := source.read()) is not None:
        images.append(image)
        source.ingested(image)
    return images


def test_a_file_is_taken_once_it_is_stable_and_then_moved_to_processed(
    tmp_path: Path, make_jpeg: Callable[..., bytes]
) -> None:
    drop(tmp_path, "b.jpg", make_jpeg(1), mtime=1_000)
    drop(tmp_path, "a.png", b"\x89PNG fake", mtime=2_000)
    with folder_source(tmp_path) as source:
        assert source.read() is None  # first sight: not yet known to be complete
        images = read_pending(source)
        assert [Path(img.origin).name for img in images] == ["b.jpg", "a.png"]  # oldest first
        assert [img.content_type for img in images] == ["image/jpeg", "image/png"]
        assert images[0].data == make_jpeg(1)
        assert images[0].captured_at.timestamp() == 1_000
        assert read_pending(source) == []
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == ["a.png", "b.jpg"]
    assert not (tmp_path / "b.jpg").exists()


def test_a_file_still_being_written_waits(tmp_path: Path, make_jpeg: Callable[..., bytes]) -> None:
    with folder_source(tmp_path) as source:
        path = drop(tmp_path, "frame.jpg", make_jpeg(128)[:100], mtime=1_000)
        assert source.read() is None
        path.write_bytes(make_jpeg(128))  # the camera is still writing
        assert source.read() is None
        images = read_pending(source)
    assert [img.data for img in images] == [make_jpeg(128)]


def test_temp_files_and_empty_files_are_ignored(
    tmp_path: Path, make_jpeg: Callable[..., bytes]
) -> None:
    drop(tmp_path, "frame.jpg.part", make_jpeg(128), mtime=1_000)
    drop(tmp_path, "frame2.tmp", make_jpeg(128), mtime=1_000)
    drop(tmp_path, ".hidden.jpg", make_jpeg(128), mtime=1_000)
    drop(tmp_path, "empty.jpg", b"", mtime=1_000)
    with folder_source(tmp_path) as source:
        assert source.read() is None
        assert read_pending(source) == []
    assert (tmp_path / "frame.jpg.part").exists()
    assert list((tmp_path / "processed").iterdir()) == []


def test_a_refused_file_goes_to_failed_with_the_reason(tmp_path: Path) -> None:
    drop(tmp_path, "corrupt.jpg", b"\xff\xd8 not really a jpeg", mtime=1_000)
    with folder_source(tmp_path) as source:
        source.read()
        image = source.read()
        assert image is not None
        source.rejected(image, "422: the image cannot be decoded", permanent=True)
        assert source.read() is None
    assert (tmp_path / "failed" / "corrupt.jpg").exists()
    note = (tmp_path / "failed" / "corrupt.jpg.error.txt").read_text()
    assert "422: the image cannot be decoded" in note
    assert image.capture_id in note


def test_a_transient_failure_is_retried_then_given_up(
    tmp_path: Path, make_jpeg: Callable[..., bytes]
) -> None:
    drop(tmp_path, "a.jpg", make_jpeg(128), mtime=1_000)
    source = FolderSource(
        CameraSourceConfig(line="line-1", kind="folder", uri=str(tmp_path)),
        poll_seconds=0,
        max_attempts=2,
    )
    with source:
        source.read()
        first = source.read()
        assert first is not None
        source.rejected(first, "the pipeline did not answer in time", permanent=False)
        assert (tmp_path / "a.jpg").exists()
        again = source.read()
        assert again is not None and again.capture_id == first.capture_id
        source.rejected(again, "the pipeline did not answer in time", permanent=False)
    note = (tmp_path / "failed" / "a.jpg.error.txt").read_text()
    assert "gave up after 2 attempts" in note


def test_the_capture_id_names_the_file_so_a_restart_reuses_it(
    tmp_path: Path, make_jpeg: Callable[..., bytes]
) -> None:
    drop(tmp_path, "a.jpg", make_jpeg(128), mtime=1_000)
    ids = []
    for _ in range(2):  # a crash after the commit, before the move: the file is still there
        with folder_source(tmp_path) as source:
            source.read()
            image = source.read()
            assert image is not None
            ids.append(image.capture_id)
    assert ids[0] == ids[1]
    assert "a.jpg" in ids[0]


def test_a_name_reused_by_the_camera_does_not_overwrite_processed(
    tmp_path: Path, make_jpeg: Callable[..., bytes]
) -> None:
    with folder_source(tmp_path) as source:
        for level in (1, 2):
            drop(tmp_path, "frame.jpg", make_jpeg(level), mtime=1_000 + level)
            source.read()
            assert len(read_pending(source)) == 1
    processed = sorted((tmp_path / "processed").iterdir())
    assert [p.name for p in processed] == ["frame.1.jpg", "frame.jpg"]
    assert processed[1].read_bytes() == make_jpeg(1)


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    source = folder_source(tmp_path / "nope")
    with pytest.raises(CameraSourceError, match="does not exist"):
        source.connect()


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        ("a.jpg", False),
        ("a.jpg.part", True),
        ("A.TMP", True),
        ("~a.jpg", True),
        ("a.jpg.error.txt", True),
    ],
)
def test_temporary_names(name: str, temporary: bool) -> None:
    assert is_temporary(name) is temporary

"""Helpers every source shares: bounded capture ids, credential-free names, content types."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspect_app.ingest.base import MAX_CAPTURE_ID, capture_key, content_type_for, redact_uri


def test_capture_keys_stay_within_the_column_and_unique() -> None:
    assert capture_key("folder", "a.jpg", 10, 99) == "folder:a.jpg:10:99"
    long_a = capture_key("folder", "x" * 300 + "a.jpg")
    long_b = capture_key("folder", "x" * 300 + "b.jpg")
    assert len(long_a) == len(long_b) == MAX_CAPTURE_ID
    assert long_a != long_b
    assert long_a == capture_key("folder", "x" * 300 + "a.jpg")  # stable across restarts


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("rtsp://admin:hunter2@10.0.0.7:554/live", "rtsp://admin:***@10.0.0.7:554/live"),
        ("http://token@cam.local/mjpg", "http://***@cam.local/mjpg"),
        ("rtsp://10.0.0.7/live", "rtsp://10.0.0.7/live"),
        ("0", "0"),
        ("/var/cams/line1.avi", "/var/cams/line1.avi"),
    ],
)
def test_camera_credentials_never_reach_a_log(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("a.JPG", "image/jpeg"), ("a.jpeg", "image/jpeg"), ("a.png", "image/png"),
     ("a.bmp", "image/bmp"), ("a.raw", None), ("noext", None)],
)  # fmt: skip
def test_content_type_from_the_file_name(name: str, content_type: str | None) -> None:
    assert content_type_for(Path(name)) == content_type

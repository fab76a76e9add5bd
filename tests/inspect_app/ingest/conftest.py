"""Fixtures of the camera-source tests: a small labeled dataset, as load_dataset reads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest


def jpeg_bytes(level: int, size: int = 32) -> bytes:
    """A flat grey JPEG; `level` makes each image's bytes (and sha256) different."""
    ok, buf = cv2.imencode(".jpg", np.full((size, size, 3), level, np.uint8))
    assert ok
    return buf.tobytes()


def write_video(path: Path, n_frames: int) -> Path:
    """An MJPG .avi whose frame i is a flat grey of level 20*i (so a frame says which it was)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture
def make_video() -> Callable[[Path, int], Path]:
    return write_video


@pytest.fixture
def make_jpeg() -> Callable[..., bytes]:
    return jpeg_bytes


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """One folder per class with a few tiny JPEGs each (6 images, 3 classes)."""
    root = tmp_path / "dataset"
    level = 0
    for label, n in {"ok": 3, "scratch": 2, "crack": 1}.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            level += 30
            (root / label / f"{label}_{i}.jpg").write_bytes(jpeg_bytes(level))
    return root

"""The OpenCV source on a real video file written by the test (MJPG in .avi)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspect_app.ingest.base import CameraSourceError
from inspect_app.ingest.opencv_source import OpenCVSource
from inspect_app.settings import CameraSourceConfig

N_FRAMES = 10


def frame_level(jpeg: bytes) -> int:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    return round(float(image.mean()) / 20)


def read_all(source: OpenCVSource) -> list:
    images = []
    while not source.finished:
        image = source.read()
        if image is not None:
            images.append(image)
    return images


@pytest.fixture
def video(tmp_path: Path, make_video: Callable[[Path, int], Path]) -> Path:
    return make_video(tmp_path / "line-cam.avi", N_FRAMES)


def config(uri: str, every_nth: int = 1) -> CameraSourceConfig:
    return CameraSourceConfig(line="line-1", kind="opencv", uri=uri, every_nth=every_nth)


def test_takes_every_nth_frame_as_jpeg_until_the_file_ends(video: Path) -> None:
    with OpenCVSource(config(str(video), every_nth=3)) as source:
        images = read_all(source)
        assert source.read() is None  # finished stays finished
    assert [frame_level(img.data) for img in images] == [0, 3, 6, 9]
    assert all(img.content_type == "image/jpeg" and img.data[:2] == b"\xff\xd8" for img in images)
    assert [img.capture_id.rsplit(":", 1)[1] for img in images] == ["f0", "f3", "f6", "f9"]


def test_capture_ids_survive_a_restart_on_the_same_file(video: Path) -> None:
    with OpenCVSource(config(str(video), every_nth=2)) as source:
        first = [img.capture_id for img in read_all(source)]
    with OpenCVSource(config(str(video), every_nth=2)) as source:
        second = [img.capture_id for img in read_all(source)]
    assert first == second
    assert len(set(first)) == len(first) == N_FRAMES // 2


def test_a_different_file_of_the_same_name_gets_other_capture_ids(
    tmp_path: Path, make_video: Callable[[Path, int], Path]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = make_video(tmp_path / "a" / "cam.avi", N_FRAMES)
    other = make_video(tmp_path / "b" / "cam.avi", 4)
    with OpenCVSource(config(str(one))) as source:
        ids_one = {img.capture_id for img in read_all(source)}
    with OpenCVSource(config(str(other))) as source:
        ids_other = {img.capture_id for img in read_all(source)}
    assert not ids_one & ids_other


def test_a_missing_video_file_is_a_clear_error(tmp_path: Path) -> None:
    source = OpenCVSource(config(str(tmp_path / "nope.avi")))
    with pytest.raises(CameraSourceError, match=r"nope\.avi does not exist"):
        source.connect()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="every_nth"):
        OpenCVSource(config("0", every_nth=0))
    with pytest.raises(ValueError, match="kind"):
        OpenCVSource(CameraSourceConfig(line="l", kind="folder", uri="0"))


class FlakyStream(OpenCVSource):
    """A "stream" whose connection drops after each video's worth of frames.

    An RTSP server cannot run in a test, so the stream is the real video file opened under a
    stream URL; everything after OpenCV's handle is the real source code."""

    def __init__(self, video: Path, *, fail_opens: int = 0) -> None:
        super().__init__(
            config("rtsp://operator:secret@cam-7.plant/stream", every_nth=5),
            initial_backoff_s=0.0,
        )
        self.video = video
        self.fail_opens = fail_opens
        self.opens = 0

    def _open_capture(self) -> cv2.VideoCapture:
        self.opens += 1
        if self.opens <= self.fail_opens:
            return cv2.VideoCapture()  # not opened: the camera is off
        return cv2.VideoCapture(str(self.video))


def test_a_dropped_stream_reconnects_and_keeps_capture_ids_unique(video: Path) -> None:
    source = FlakyStream(video, fail_opens=1)
    images = []
    with source:
        assert source.is_live
        while len(images) < 6:
            image = source.read()
            if image is not None:
                images.append(image)
        assert not source.finished  # a live stream never "ends"
    # open 1 failed; opens 2, 3 and 4 each delivered frames 0 and 5 of the video
    assert source.opens == 4
    assert [frame_level(img.data) for img in images] == [0, 5, 0, 5, 0, 5]
    assert len({img.capture_id for img in images}) == 6
    assert all("secret" not in img.capture_id for img in images)
    assert "secret" not in source.name

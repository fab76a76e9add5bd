"""The replay camera: a labeled dataset, in a fixed order, with each image's true class."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspect_app.ingest.base import CameraSourceError, CapturedImage
from inspect_app.ingest.replay import ReplaySource
from inspect_app.settings import CameraSourceConfig


def replay(root: Path, *, loop: bool = False, rate: float = 1e6, **kwargs: object) -> ReplaySource:
    config = CameraSourceConfig(line="line-1", kind="replay", uri=str(root), rate=rate, loop=loop)
    return ReplaySource(config, **kwargs)  # type: ignore[arg-type]


def take(source: ReplaySource, n: int) -> list[CapturedImage]:
    images: list[CapturedImage] = []
    while len(images) < n and not source.finished:
        image = source.read()
        if image is not None:
            images.append(image)
    return images


def origin(image: CapturedImage) -> str:
    return Path(image.origin).name


def test_every_image_once_with_its_true_class_then_finished(dataset: Path) -> None:
    with replay(dataset) as source:
        images = take(source, 100)
        assert source.finished
    assert len(images) == len(list(dataset.rglob("*.jpg")))
    assert sorted(origin(img) for img in images) == sorted(p.name for p in dataset.rglob("*.jpg"))
    for img in images:
        assert img.true_class == Path(img.origin).parent.name
        assert img.data == Path(img.origin).read_bytes()
        assert img.content_type == "image/jpeg"
    assert len({img.capture_id for img in images}) == len(images)
    assert len({img.part_serial for img in images}) == len(images)


def test_the_order_is_the_same_on_every_run_and_mixes_the_classes(dataset: Path) -> None:
    with replay(dataset) as source:
        first = [origin(img) for img in take(source, 100)]
    with replay(dataset) as source:
        second = [origin(img) for img in take(source, 100)]
    assert first == second
    assert first != sorted(first)  # shuffled, so a demo does not show one class after another
    with replay(dataset, seed=1) as source:
        assert [origin(img) for img in take(source, 100)] != first


def test_unshuffled_replay_follows_the_dataset_paths(dataset: Path) -> None:
    with replay(dataset, shuffle=False) as source:
        names = [f"{Path(img.origin).parent.name}/{origin(img)}" for img in take(source, 100)]
    assert names == sorted(names)


def test_looping_starts_over_in_the_same_order_as_new_captures(dataset: Path) -> None:
    n = len(list(dataset.rglob("*.jpg")))
    with replay(dataset, loop=True) as source:
        images = take(source, 2 * n + 1)
        assert not source.finished
    assert [origin(img) for img in images[n : 2 * n]] == [origin(img) for img in images[:n]]
    assert len({img.capture_id for img in images}) == len(images)


def test_images_come_no_faster_than_the_rate(dataset: Path) -> None:
    with replay(dataset, rate=1e-3) as source:  # one image every 1000 s
        assert source.read() is not None
        assert source.read() is None
        assert source.idle_seconds > 0


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate"):
        replay(tmp_path, rate=0)
    with pytest.raises(CameraSourceError, match="does not exist"):
        replay(tmp_path / "nope").connect()

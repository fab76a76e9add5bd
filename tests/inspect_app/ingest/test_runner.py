"""Camera sources feeding a real service: create_app's pipeline, the tiny model, SQLite."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from data.dataset import load_dataset
from inspect_app.accounts import add_user
from inspect_app.api.app import create_app
from inspect_app.ingest import CameraSourceGroup, start_camera_sources
from inspect_app.ingest.folder import FolderSource
from inspect_app.ingest.replay import replay_order
from inspect_app.ingest.runner import (
    CameraWorker,
    QueueLimit,
    build_camera_source,
    is_permanent_refusal,
)
from inspect_app.lines import add_line
from inspect_app.pipeline import ImageSubmission, IngestError, InspectionPipeline
from inspect_app.review_queue import claim_next_task, queue_depth, submit_label
from inspect_app.settings import CameraSourceConfig, Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection

HANG_GUARD_S = 120.0  # only fails a test that would otherwise hang; never a speed check


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def inspections(client: TestClient, source: str) -> list[Inspection]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        query = select(Inspection).where(Inspection.source == source).order_by(Inspection.id)
        return list(session.exec(query).all())


def run_to_end(group: CameraSourceGroup) -> None:
    """Wait for sources that finish by themselves (a video file, a non-looping replay)."""
    for worker in group.workers:
        worker.join(HANG_GUARD_S)
        assert not worker.is_alive(), f"camera {worker.source.name} did not finish"
    group.stop()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_video_frames_are_inspected_once_even_after_a_restart(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    tmp_path: Path,
    make_video: Callable[[Path, int], Path],
) -> None:
    add_line_with_camera("line-1", "shadow")
    video = make_video(tmp_path / "cam.avi", 10)
    config = CameraSourceConfig(line="line-1", kind="opencv", uri=str(video), every_nth=3)
    pipeline = client.app.state.pipeline  # type: ignore[attr-defined]

    first = start_camera_sources([config], pipeline)
    run_to_end(first)
    rows = inspections(client, "opencv")
    assert len(rows) == 4  # frames 0, 3, 6, 9
    assert [r.capture_id.rsplit(":", 1)[1] for r in rows] == ["f0", "f3", "f6", "f9"]
    assert all(r.image_format == "jpeg" and r.model_version for r in rows)
    assert all(r.decision == "pending" and r.route == "review" for r in rows)  # shadow
    (stats,) = first.stats.values()
    assert (stats.ingested, stats.duplicates, stats.refused) == (4, 0, 0)

    restarted = start_camera_sources([config], pipeline)
    run_to_end(restarted)
    (stats,) = restarted.stats.values()
    assert (stats.ingested, stats.duplicates) == (0, 4)
    assert len(inspections(client, "opencv")) == 4


def test_hot_folder_moves_good_files_to_processed_and_a_corrupt_one_to_failed(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    tmp_path: Path,
    make_jpeg: Callable[..., bytes],
) -> None:
    add_line_with_camera("line-1", "shadow")
    folder = tmp_path / "hot"
    folder.mkdir()
    (folder / "part-001.jpg").write_bytes(make_jpeg(60))
    (folder / "part-002.jpg").write_bytes(make_jpeg(120))
    (folder / "part-003.jpg").write_bytes(make_jpeg(180)[:200])  # cut off in transfer
    (folder / "part-004.jpg.part").write_bytes(make_jpeg(240))  # still being copied
    config = CameraSourceConfig(line="line-1", kind="folder", uri=str(folder))
    group = start_camera_sources([config], client.app.state.pipeline)  # type: ignore[attr-defined]
    try:
        wait_until(
            lambda: (
                (folder / "failed" / "part-003.jpg.error.txt").exists()
                and len(list((folder / "processed").iterdir())) == 2
            ),
            "the folder's three files to be handled",
        )
    finally:
        group.stop()

    assert sorted(p.name for p in (folder / "processed").iterdir()) == [
        "part-001.jpg",
        "part-002.jpg",
    ]
    note = (folder / "failed" / "part-003.jpg.error.txt").read_text()
    assert "reason: 422: " in note and "JPEG" in note  # the pipeline's own refusal
    assert (folder / "part-004.jpg.part").exists()
    rows = inspections(client, "folder")
    assert [r.capture_id.split(":")[1] for r in rows] == ["part-001.jpg", "part-002.jpg"]
    assert {r.image_sha256 for r in rows} == {sha256(make_jpeg(60)), sha256(make_jpeg(120))}


def test_a_crash_between_commit_and_move_does_not_inspect_a_file_twice(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    tmp_path: Path,
    make_jpeg: Callable[..., bytes],
) -> None:
    add_line_with_camera("line-1", "shadow")
    (tmp_path / "part-001.jpg").write_bytes(make_jpeg(90))
    pipeline: InspectionPipeline = client.app.state.pipeline  # type: ignore[attr-defined]
    config = CameraSourceConfig(line="line-1", kind="folder", uri=str(tmp_path))

    def ingest_once() -> bool:
        with FolderSource(config, poll_seconds=0) as source:
            source.read()
            image = source.read()
            assert image is not None
            outcome = pipeline.submit_blocking(
                ImageSubmission(
                    line_id="line-1",
                    data=image.data,
                    content_type=image.content_type,
                    capture_id=image.capture_id,
                    source="folder",
                ),
                timeout=HANG_GUARD_S,
            )
            # no source.ingested(image): the process "dies" before moving the file
            return outcome.created

    assert ingest_once() is True
    assert ingest_once() is False  # the restarted source finds the same capture
    assert len(inspections(client, "folder")) == 1


def test_replay_camera_from_the_settings_feeds_its_line_with_true_classes(
    app_settings: Settings, dataset: Path
) -> None:
    # The line exists before the service starts its cameras, as in a plant.
    app_settings.data_dir.mkdir(parents=True)
    engine = make_engine(app_settings.resolved_database_url)
    upgrade_database(engine)
    with Session(engine) as session:
        add_line(session, "line-1", "shadow")
    engine.dispose()
    camera = CameraSourceConfig(
        line="line-1", kind="replay", uri=str(dataset), rate=1000.0, loop=False
    )
    settings = app_settings.model_copy(update={"cameras": [camera]})

    with TestClient(create_app(settings)) as client:
        group: CameraSourceGroup = client.app.state.camera_sources  # type: ignore[attr-defined]
        for worker in group.workers:
            worker.join(HANG_GUARD_S)
        rows = inspections(client, "replay")

    expected = replay_order(load_dataset(dataset), shuffle=True, seed=0)
    assert [r.image_sha256 for r in rows] == [sha256(Path(i.path).read_bytes()) for i in expected]
    assert [r.true_class for r in rows] == [str(i.label) for i in expected]
    assert all(r.part_serial and r.capture_id for r in rows)


def test_refused_images_are_logged_and_the_camera_keeps_going(
    client: TestClient, dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    camera = CameraSourceConfig(line="no-such-line", kind="replay", uri=str(dataset), rate=1000.0)
    camera = camera.model_copy(update={"loop": False})
    with caplog.at_level(logging.WARNING, logger="inspect_app.ingest.runner"):
        group = start_camera_sources([camera], client.app.state.pipeline)  # type: ignore[attr-defined]
        run_to_end(group)
    (stats,) = group.stats.values()
    n = len(list(dataset.rglob("*.jpg")))
    assert (stats.refused, stats.ingested) == (n, 0)
    refusals = [r for r in caplog.records if r.name == "inspect_app.ingest.runner"]
    assert len(refusals) == n
    assert "404: unknown line 'no-such-line'" in refusals[0].getMessage()


def test_stop_ends_a_camera_that_would_run_forever(
    client: TestClient, add_line_with_camera: Callable[..., str], dataset: Path
) -> None:
    add_line_with_camera("line-1", "shadow")
    camera = CameraSourceConfig(line="line-1", kind="replay", uri=str(dataset), rate=0.001)
    group = start_camera_sources([camera], client.app.state.pipeline)  # type: ignore[attr-defined]
    wait_until(lambda: len(inspections(client, "replay")) == 1, "the first replayed image")
    group.stop(timeout=HANG_GUARD_S)
    assert not any(worker.is_alive() for worker in group.workers)
    assert len(inspections(client, "replay")) == 1


def test_an_unknown_kind_stops_the_start_before_any_camera_runs(client: TestClient) -> None:
    cameras = [
        CameraSourceConfig(line="line-1", kind="replay", uri="data/samples"),
        CameraSourceConfig(line="line-1", kind="usb", uri="0"),
    ]
    with pytest.raises(ValueError, match=r"unknown kind 'usb' \(known: folder, opencv, replay\)"):
        start_camera_sources(cameras, client.app.state.pipeline)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (404, True), (409, True), (415, True), (422, True),
     (408, False), (429, False), (503, False)],
)  # fmt: skip
def test_bad_input_is_refused_for_good_but_an_overloaded_service_is_retried(
    status: int, permanent: bool
) -> None:
    assert is_permanent_refusal(IngestError(status, "why")) is permanent


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def queue_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "inspect_app.ingest.runner" and "review queue at" in r.getMessage()
    ]


def test_a_queue_limit_asks_the_depth_at_most_once_a_second_and_logs_each_change_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    depths = iter([1, 2, 3, 2, 1])
    asked: list[int] = []

    def depth() -> int:
        asked.append(next(depths))
        return asked[-1]

    clock = FakeClock()
    limit = QueueLimit("line-1", 2, depth, clock=clock)
    with caplog.at_level(logging.INFO, logger="inspect_app.ingest.runner"):
        assert limit.holds() is False  # 1 < 2
        clock.advance(0.5)
        assert limit.holds() is False  # the answer of 0.5 s ago stands
        assert asked == [1]
        seen = []
        for _ in range(4):  # depths 2, 3, 2, 1
            clock.advance(1.0)
            seen.append(limit.holds())
    assert seen == [True, True, True, False]
    assert asked == [1, 2, 3, 2, 1]
    assert queue_messages(caplog) == [
        "line line-1: review queue at 2 unlabeled tasks (limit 2); its camera pauses",
        "line line-1: review queue at 1 unlabeled tasks (limit 2); its camera resumes",
    ]
    with pytest.raises(ValueError, match="max_queue"):
        QueueLimit("line-1", 0, depth)


def test_a_replay_camera_with_a_queue_limit_waits_for_the_inspectors(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    dataset: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_line_with_camera("line-1", "shadow")  # shadow: every part waits for a human
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine, expire_on_commit=False) as db:
        inspector = add_user(db, "ines", "inspector", "a long test password")
    camera = CameraSourceConfig(
        line="line-1", kind="replay", uri=str(dataset), rate=1e6, max_queue=2
    )
    clock = FakeClock()
    # Not started: the test turns the camera's loop itself, a second of the clock per turn.
    worker = CameraWorker(
        build_camera_source(camera),
        client.app.state.pipeline,  # type: ignore[attr-defined]
        threading.Event(),
        clock=clock,
    )

    def turns(n: int) -> list[float | None]:
        waits = []
        for _ in range(n):
            waits.append(worker.step())
            clock.advance(1.0)
        return waits

    def depth() -> int:
        with Session(engine) as db:
            return queue_depth(db, "line-1")

    def label_one() -> None:
        with Session(engine, expire_on_commit=False) as db:
            task = claim_next_task(db, inspector, lease_seconds=60)
            assert task is not None
            submit_label(db, task.task_id, inspector, "ok")

    worker.source.connect()
    with caplog.at_level(logging.INFO, logger="inspect_app.ingest.runner"):
        assert turns(2) == [0.0, 0.0]  # two parts in, and the queue is full
        assert (worker.stats.ingested, depth()) == (2, 2)
        waits = turns(3)
        assert all(w is not None and w > 0 for w in waits)  # waiting, not reading
        assert (worker.stats.ingested, depth()) == (2, 2)

        label_one()
        assert turns(2)[0] == 0.0  # room for one: it goes on, then waits again
        assert (worker.stats.ingested, depth()) == (3, 2)
        label_one()
        label_one()
        waits = turns(3)  # the queue is empty: two parts in, then it waits again
        assert waits[:2] == [0.0, 0.0] and waits[2] is not None and waits[2] > 0
        assert (worker.stats.ingested, depth()) == (5, 2)
    worker.source.disconnect()
    assert queue_messages(caplog) == [
        "line line-1: review queue at 2 unlabeled tasks (limit 2); its camera pauses",
        "line line-1: review queue at 1 unlabeled tasks (limit 2); its camera resumes",
        "line line-1: review queue at 2 unlabeled tasks (limit 2); its camera pauses",
        "line line-1: review queue at 0 unlabeled tasks (limit 2); its camera resumes",
        "line line-1: review queue at 2 unlabeled tasks (limit 2); its camera pauses",
    ]

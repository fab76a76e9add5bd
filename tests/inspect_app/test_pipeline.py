"""The pipeline as camera sources use it: submit_blocking from their threads, and its refusals."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from inspect_app.pipeline import ImageSubmission, IngestError, InspectionPipeline
from inspect_app.storage.tables import Inspection


def png(value: int) -> bytes:
    image = np.full((48, 64, 3), value, dtype=np.uint8)
    cv2.rectangle(image, (10, 10), (40, 30), (255 - value, 90, 30), -1)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def pipeline_of(client: TestClient) -> InspectionPipeline:
    return client.app.state.pipeline  # type: ignore[attr-defined]


def inspections(client: TestClient) -> int:
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        return db.exec(select(func.count()).select_from(Inspection)).one()


def test_camera_threads_submit_through_the_same_pipeline(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    pipeline = pipeline_of(client)
    outcomes = []
    lock = threading.Lock()

    def camera(n: int) -> None:
        outcome = pipeline.submit_blocking(
            ImageSubmission(
                line_id="line-1",
                data=png(n * 40),
                capture_id=f"replay-{n}",
                captured_at=datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
                source="replay",
                true_class="scratch",
            ),
            timeout=60,
        )
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=camera, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(outcomes) == 4
    assert all(o.created for o in outcomes)
    assert len({o.inspection.id for o in outcomes}) == 4
    row = outcomes[0].inspection
    assert row.source == "replay"
    assert row.true_class == "scratch"
    assert row.captured_at is not None
    assert row.captured_at.utcoffset() == timedelta(0)  # stored as UTC
    assert row.captured_at.hour == 10
    # the truth is kept for evaluation but never shown, to the line or anyone else
    body = client.get(f"/api/v1/inspections/{row.id}", headers={"X-Api-Key": key}).json()
    assert "scratch" not in body.values()
    assert "true_class" not in body
    assert pipeline.batcher.announced == 0  # each image ended its announcement when queued


def test_a_replayed_capture_is_not_inspected_twice(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    add_line_with_camera()
    pipeline = pipeline_of(client)
    submission = ImageSubmission(line_id="line-1", data=png(7), capture_id="c1", source="folder")
    first = pipeline.submit_blocking(submission, timeout=60)
    second = pipeline.submit_blocking(submission, timeout=60)
    assert (first.created, second.created) == (True, False)
    assert second.inspection.id == first.inspection.id
    assert pipeline.batcher.announced == 0  # the replay never reached the model: withdrawn


@pytest.mark.parametrize(
    ("submission", "status", "detail"),
    [
        (ImageSubmission(line_id="nowhere", data=png(1)), 404, "unknown line"),
        (ImageSubmission(line_id="line-1", data=png(1), source="fax"), 422, "unknown source"),
        (ImageSubmission(line_id="line-1", data=png(1), capture_id="x" * 129), 422, "capture_id"),
        (ImageSubmission(line_id="line-1", data=png(1), part_serial=""), 422, "part_serial"),
        (ImageSubmission(line_id="line-1", data=b""), 400, "empty"),
        (ImageSubmission(line_id="line-1", data=png(1)[:-20]), 422, "truncated PNG"),
    ],
)
def test_refusals_carry_their_status_and_store_nothing(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    submission: ImageSubmission,
    status: int,
    detail: str,
) -> None:
    add_line_with_camera()
    with pytest.raises(IngestError) as refused:
        pipeline_of(client).submit_blocking(submission, timeout=60)
    assert refused.value.status_code == status
    assert detail in refused.value.detail
    assert inspections(client) == 0
    assert pipeline_of(client).store.stored() == []
    # the refused image's announcement is withdrawn: the batcher waits for no image
    assert pipeline_of(client).batcher.announced == 0


def test_after_the_batcher_stops_images_are_refused_as_unavailable(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    pipeline_of(client).batcher.stop()
    response = client.post(
        "/api/v1/lines/line-1/images",
        content=png(3),
        headers={"X-Api-Key": key, "Content-Type": "image/png"},
    )
    assert response.status_code == 503
    assert "shutting down" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"
    assert inspections(client) == 0
    assert pipeline_of(client).store.stored() == []
    # the refused image's announcement is withdrawn: the batcher waits for no image
    assert pipeline_of(client).batcher.announced == 0
    assert client.get("/readyz").status_code == 503

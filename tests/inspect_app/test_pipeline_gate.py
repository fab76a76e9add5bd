"""The image gate in the pipeline: with the bundled weights and their reference profile, a
frame that is not a picture of a phone is never decided by the model, whatever the level."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, col

from data.off_distribution import off_distribution_frames
from inspect_app.accounts import add_camera_key
from inspect_app.api.app import create_app
from inspect_app.lines import add_line
from inspect_app.review_queue import claim_next_task
from inspect_app.settings import SAMPLES_DIR, Settings
from inspect_app.storage.tables import Line, User
from models import DEFAULT_WEIGHTS


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def gated_client(app_settings: Settings) -> Iterator[TestClient]:
    settings = app_settings.model_copy(update={"weights": DEFAULT_WEIGHTS})
    with TestClient(create_app(settings)) as client:
        yield client


def partial_line(client: TestClient, line_id: str = "line-1") -> str:
    """A line at partial with thresholds any confident call clears (set directly: the gate
    for a raise is not what these tests are about)."""
    with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
        add_line(db, line_id, "shadow")
        key = add_camera_key(db, line_id)
        db.exec(
            update(Line)
            .where(col(Line.id) == line_id)
            .values(level="partial", pass_threshold=0.6, fail_threshold=0.6, audit_rate=0.0)
        )
        db.commit()
    return key


def post(client: TestClient, key: str, data: bytes) -> dict:
    response = client.post(
        "/api/v1/lines/line-1/images",
        content=data,
        headers={"X-Api-Key": key, "Content-Type": "image/png"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def sample(name: str) -> np.ndarray:
    path = next(Path(SAMPLES_DIR).glob(f"{name}/*.png"))
    image = cv2.imread(str(path))
    assert image is not None
    return image


def half_phone(_: np.ndarray) -> np.ndarray:
    """A half of a dark phone on a dark belt, stretched to fill the frame: within every input
    metric's range and the embedding's, refused by its edge layout alone."""
    return off_distribution_frames("held_out", 11, seed=31, sources=("crop/half",))[10].image


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (lambda s: np.zeros_like(s), None),  # lamp off
        (lambda s: np.full_like(s, 255), None),  # overexposed to white
        (lambda s: np.full_like(s, 128), None),  # empty fixture, mid grey
        (lambda s: np.random.default_rng(0).integers(0, 256, s.shape, dtype=np.uint8), None),
        (lambda s: cv2.GaussianBlur(s, (0, 0), 12), "blurred"),
        (lambda s: cv2.resize(s[: s.shape[0] // 3, : s.shape[1] // 3], s.shape[1::-1]), None),
        (half_phone, "layout"),
    ],
    ids=["black", "white", "grey", "noise", "defocused", "zoomed-crop", "half-phone"],
)
def test_a_frame_that_is_not_a_usable_phone_picture_goes_to_a_human_with_the_reason(
    gated_client: TestClient, frame, code: str | None
) -> None:
    key = partial_line(gated_client)
    answer = post(gated_client, key, png(frame(sample("ok"))))
    assert answer["decision"] == "pending"
    assert answer["route"] == "review"
    assert answer["gate_codes"], answer
    if code is not None:
        assert code in answer["gate_codes"]
    assert answer["gate_reason"]
    assert answer["predicted_class"] is None  # the model's output on such a frame means nothing
    metrics = gated_client.get("/metrics").text
    assert 'inspect_gate_refusals_total{line="line-1"' in metrics

    with Session(gated_client.app.state.engine) as db:  # type: ignore[attr-defined]
        inspector = User(name="ins", role="inspector", password_hash="x")
        db.add(inspector)
        db.commit()
        task = claim_next_task(db, inspector, lease_seconds=60)
    assert task is not None
    assert task.inspection_id == answer["inspection_id"]
    assert task.gate_reason == answer["gate_reason"]


def test_clean_parts_pass_the_gate_and_the_model_decides(gated_client: TestClient) -> None:
    key = partial_line(gated_client)
    for name in ("ok", "crack", "pit"):
        answer = post(gated_client, key, png(sample(name)))
        assert answer["gate_codes"] == [], answer["gate_reason"]
        assert answer["gate_reason"] is None

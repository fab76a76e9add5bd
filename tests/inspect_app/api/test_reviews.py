"""The review queue over HTTP through the real app, fed by the real ingestion pipeline."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.storage.tables import Label


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def camera(add_line_with_camera: Callable[..., str]) -> str:
    return add_line_with_camera("line-1", "shadow")


@pytest.fixture
def inspector(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("inspector"))


def _inspect(client: TestClient, key: str, seed: int = 0) -> int:
    """A part through the camera API; at shadow every part waits for a human."""
    response = client.post(
        "/api/v1/lines/line-1/images",
        content=_png(seed),
        headers={"X-Api-Key": key, "Content-Type": "image/png"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["decision"] == "pending"
    return response.json()["inspection_id"]


def test_an_empty_queue_answers_204(client: TestClient, camera: str, inspector: dict) -> None:
    assert client.post("/api/v1/reviews/claim", headers=inspector).status_code == 204


def test_claim_fetch_the_image_label_and_the_line_sees_the_decision(
    client: TestClient, camera: str, inspector: dict[str, str]
) -> None:
    inspection_id = _inspect(client, camera, seed=1)
    response = client.post("/api/v1/reviews/claim", headers=inspector)
    assert response.status_code == 200, response.text
    task = response.json()
    assert (task["inspection_id"], task["line_id"], task["reason"]) == (
        inspection_id, "line-1", "decide"
    )  # fmt: skip
    assert task["predicted_class"] is None and task["probabilities"] is None  # shadow: blind
    assert "true_class" not in task
    image = client.get(task["image_url"], headers=inspector)
    assert image.status_code == 200 and image.content == _png(1)

    labeled = client.post(
        f"/api/v1/reviews/{task['task_id']}/label",
        json={"label": "crack", "note": "top left", "duration_ms": 2100},
        headers=inspector,
    )
    assert labeled.status_code == 200, labeled.text
    assert labeled.json()["decision"] == "fail"
    state = client.get(f"/api/v1/inspections/{inspection_id}", headers={"X-Api-Key": camera})
    assert (state.json()["decision"], state.json()["decided_by"]) == ("fail", "human")


def test_label_errors_are_clear(
    client: TestClient, camera: str, inspector: dict[str, str], user_token: Callable[[str], str]
) -> None:
    _inspect(client, camera)
    task_id = client.post("/api/v1/reviews/claim", headers=inspector).json()["task_id"]
    unknown_class = client.post(
        f"/api/v1/reviews/{task_id}/label", json={"label": "dent"}, headers=inspector
    )
    assert unknown_class.status_code == 422
    assert "scratch" in str(unknown_class.json()["detail"])
    unknown_task = client.post("/api/v1/reviews/999/label", json={"label": "ok"}, headers=inspector)
    assert unknown_task.status_code == 404
    assert unknown_task.json()["detail"] == "no review task 999"
    other = _auth(user_token("inspector"))
    not_mine = client.post(f"/api/v1/reviews/{task_id}/label", json={"label": "ok"}, headers=other)
    assert not_mine.status_code == 409 and "not claimed by" in not_mine.json()["detail"]
    done = client.post(f"/api/v1/reviews/{task_id}/label", json={"label": "ok"}, headers=inspector)
    assert done.status_code == 200
    again = client.post(f"/api/v1/reviews/{task_id}/label", json={"label": "ok"}, headers=inspector)
    assert again.status_code == 409 and "already labeled" in again.json()["detail"]


def test_two_inspectors_get_different_parts_and_a_line_filter_works(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    camera: str,
    inspector: dict[str, str],
    user_token: Callable[[str], str],
) -> None:
    first = _inspect(client, camera, seed=1)
    second = _inspect(client, camera, seed=2)
    add_line_with_camera("line-2")
    other = _auth(user_token("inspector"))
    a = client.post("/api/v1/reviews/claim", headers=inspector).json()
    b = client.post("/api/v1/reviews/claim", headers=other).json()
    assert {a["inspection_id"], b["inspection_id"]} == {first, second}
    # the same inspector claiming again gets the part already held
    assert client.post("/api/v1/reviews/claim", headers=inspector).json()["task_id"] == a["task_id"]
    empty = client.post("/api/v1/reviews/claim", params={"line": "line-2"}, headers=_auth(
        user_token("inspector")))  # fmt: skip
    assert empty.status_code == 204
    missing = client.post("/api/v1/reviews/claim", params={"line": "nope"}, headers=inspector)
    assert missing.status_code == 404


def test_renew_release_escalate_and_relabel(
    client: TestClient, camera: str, inspector: dict[str, str], user_token: Callable[[str], str]
) -> None:
    inspection_id = _inspect(client, camera)
    task = client.post("/api/v1/reviews/claim", headers=inspector).json()
    task_id = task["task_id"]
    renewed = client.post(f"/api/v1/reviews/{task_id}/renew", headers=inspector)
    assert renewed.status_code == 200
    assert renewed.json()["lease_expires_at"] >= task["lease_expires_at"]
    assert client.post(f"/api/v1/reviews/{task_id}/release", headers=inspector).status_code == 204
    assert client.post(f"/api/v1/reviews/{task_id}/renew", headers=inspector).status_code == 409

    client.post("/api/v1/reviews/claim", headers=inspector)
    escalated = client.post(
        f"/api/v1/reviews/{task_id}/escalate", json={"note": "glare"}, headers=inspector
    )
    assert escalated.status_code == 204
    assert client.post("/api/v1/reviews/claim", headers=inspector).status_code == 204
    supervisor = _auth(user_token("supervisor"))
    held = client.post("/api/v1/reviews/claim", headers=supervisor).json()
    assert (held["task_id"], held["escalated"], held["note"]) == (task_id, True, "glare")
    client.post(f"/api/v1/reviews/{task_id}/label", json={"label": "ok"}, headers=supervisor)

    relabeled = client.post(
        f"/api/v1/inspections/{inspection_id}/relabel",
        json={"label": "pit", "note": "second look"},
        headers=supervisor,
    )
    assert relabeled.status_code == 200 and relabeled.json()["decision"] == "fail"
    refused = client.post(
        f"/api/v1/inspections/{inspection_id}/relabel", json={"label": "ok"}, headers=inspector
    )
    assert refused.status_code == 403
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        labels = db.exec(select(Label).where(Label.inspection_id == inspection_id)).all()
    assert sorted((x.label, x.superseded) for x in labels) == [("ok", True), ("pit", False)]

"""POST /api/v1/lines/{line}/images through the real app: the tiny model, SQLite, the store."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import Session, func, select

from inspect_app.review_queue import claim_next_task, submit_label
from inspect_app.settings import Settings
from inspect_app.storage.tables import Inspection, Line, ReviewTask, User


def phone_image(seed: int = 0, ext: str = ".jpg", size: tuple[int, int] = (96, 128)) -> bytes:
    """A small grey phone body on a dark fixture; `seed` makes distinct images."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.full((height, width, 3), 30, dtype=np.uint8)
    image[10 : height - 10, 30 : width - 30] = (120 + seed % 50, 120, 125)
    image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def post_raw(
    client: TestClient,
    key: str,
    data: bytes,
    *,
    line: str = "line-1",
    content_type: str = "image/jpeg",
    **params: str,
):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/lines/{line}/images",
        content=data,
        headers={"X-Api-Key": key, "Content-Type": content_type},
        params=params,
    )


def count(client: TestClient, table: type) -> int:
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        return db.exec(select(func.count()).select_from(table)).one()


def stored_images(client: TestClient) -> list[str]:
    return client.app.state.image_store.stored()  # type: ignore[attr-defined]


def set_level(client: TestClient, line_id: str, **columns: object) -> None:
    """Test set-up only: partial/full need evidence the API would ask for."""
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        line = db.get(Line, line_id)
        assert line is not None
        for name, value in columns.items():
            setattr(line, name, value)
        db.add(line)
        db.commit()


# Small limits, so the over-the-limit cases stay small; the test images are 128 x 96.
MAX_BYTES = 200_000
MAX_PIXELS = 20_000


@pytest.fixture
def app_settings(app_settings: Settings) -> Settings:
    return app_settings.model_copy(
        update={"max_image_bytes": MAX_BYTES, "max_image_pixels": MAX_PIXELS}
    )


MODEL_FIELDS = ("model_version", "predicted_class", "confidence", "probabilities")


def test_a_raw_jpeg_is_inspected_stored_and_answered(
    client: TestClient, add_line_with_camera: Callable[..., str], user_token: Callable[[str], str]
) -> None:
    key = add_line_with_camera("line-1", "shadow")
    data = phone_image()
    response = post_raw(client, key, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["line"] == "line-1"
    assert body["decision"] == "pending"
    assert body["decided_by"] is None
    assert body["route"] == "review"
    assert body["level"] == "shadow"
    assert body["image_format"] == "jpeg"
    assert (body["width"], body["height"]) == (128, 96)
    assert body["image_sha256"] == hashlib.sha256(data).hexdigest()
    assert body["received_at"].endswith(("Z", "+00:00"))
    # shadow is blind: the line's answer carries no model output...
    assert all(body[field] is None for field in MODEL_FIELDS)
    # ...but the model ran and its output is kept for the agreement statistics
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        row = db.get(Inspection, body["inspection_id"])
        assert row is not None
        assert row.model_version is not None
        assert row.probabilities is not None
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        task = db.exec(select(ReviewTask).where(ReviewTask.inspection_id == row.id)).one()
        assert (task.reason, task.priority, task.show_model) == ("decide", 0, False)
    assert stored_images(client) == [body["image_sha256"]]

    again = client.get(f"/api/v1/inspections/{body['inspection_id']}", headers={"X-Api-Key": key})
    assert again.status_code == 200
    assert again.json() == body

    image = client.get(
        f"/api/v1/inspections/{body['inspection_id']}/image",
        headers={"Authorization": f"Bearer {user_token('inspector')}"},
    )
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content == data


def test_multipart_with_metadata_fields(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    data = phone_image(ext=".png")
    response = client.post(
        "/api/v1/lines/line-1/images",
        headers={"X-Api-Key": key},
        files={"image": ("part.png", data, "image/png")},
        data={
            "capture_id": "cap-0001",
            "part_serial": "SN-42",
            "captured_at": "2024-05-01T12:30:00+02:00",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["capture_id"] == "cap-0001"
    assert body["part_serial"] == "SN-42"
    assert datetime.fromisoformat(body["captured_at"]) == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert body["image_format"] == "png"
    assert body["source"] == "http"


def test_query_metadata_with_a_raw_body_and_a_plus_offset_decoded_as_space(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    # an unencoded '+' in a query string arrives as a space
    response = client.post(
        "/api/v1/lines/line-1/images?captured_at=2024-05-01T12:30:00+02:00&part_serial=SN-1",
        content=phone_image(),
        headers={"X-Api-Key": key, "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 201, response.text
    captured = datetime.fromisoformat(response.json()["captured_at"])
    assert captured == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)


def test_the_same_capture_id_and_image_return_the_same_inspection(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    data = phone_image()
    first = post_raw(client, key, data, capture_id="cap-7")
    second = post_raw(client, key, data, capture_id="cap-7")
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert count(client, Inspection) == 1
    assert count(client, ReviewTask) == 1
    # the same bytes under another capture_id are another part
    third = post_raw(client, key, data, capture_id="cap-8")
    assert third.status_code == 201
    assert third.json()["inspection_id"] != first.json()["inspection_id"]
    assert len(stored_images(client)) == 1  # content-addressed: stored once


def test_assist_shows_the_model_and_human_only_does_not_run_it(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    assist_key = add_line_with_camera("line-a", "assist")
    human_key = add_line_with_camera("line-h", "human_only")
    assisted = post_raw(client, assist_key, phone_image(1), line="line-a").json()
    assert assisted["route"] == "review"
    assert assisted["decision"] == "pending"
    assert assisted["predicted_class"] in assisted["probabilities"]
    assert assisted["confidence"] == pytest.approx(max(assisted["probabilities"].values()))

    human = post_raw(client, human_key, phone_image(2), line="line-h").json()
    assert human["route"] == "review"
    assert all(human[field] is None for field in MODEL_FIELDS)
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        row = db.get(Inspection, human["inspection_id"])
        assert row is not None
        assert row.model_version is None  # the model did not run
        assert row.probabilities is None


def test_full_decides_and_an_audit_is_blind(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera("line-f", "assist")
    set_level(client, "line-f", level="full", audit_rate=0.0)
    auto = post_raw(client, key, phone_image(3), line="line-f").json()
    assert auto["route"] == "auto"
    assert auto["decision"] in ("pass", "fail")
    assert auto["decided_by"] == "model"
    assert auto["decided_at"] is not None
    assert auto["predicted_class"] is not None
    assert (auto["decision"] == "pass") == (auto["probabilities"]["ok"] >= 0.5)

    set_level(client, "line-f", audit_rate=1.0)
    audited = post_raw(client, key, phone_image(4), line="line-f").json()
    assert audited["route"] == "audit"
    assert audited["decision"] in ("pass", "fail")
    assert audited["decided_by"] == "model"
    assert all(audited[field] is None for field in MODEL_FIELDS)
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        tasks = db.exec(select(ReviewTask)).all()
    assert [(t.inspection_id, t.reason, t.priority, t.show_model) for t in tasks] == [
        (audited["inspection_id"], "audit", 1, False)
    ]


def test_partial_sends_an_uncertain_part_to_a_human_with_the_model_shown(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera("line-p", "assist")
    # thresholds no probability reaches: every part is uncertain
    set_level(client, "line-p", level="partial", pass_threshold=1.0, fail_threshold=1.0)
    body = post_raw(client, key, phone_image(5), line="line-p").json()
    assert body["route"] == "review"
    assert body["decision"] == "pending"
    assert body["predicted_class"] is not None  # an uncertain part is reviewed like assist
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        task = db.exec(select(ReviewTask)).one()
    assert (task.reason, task.priority, task.show_model) == ("decide", 0, True)


def test_a_pending_decision_follows_the_human_label(
    client: TestClient, add_line_with_camera: Callable[..., str], user_token: Callable[[str], str]
) -> None:
    key = add_line_with_camera()
    token = user_token("inspector")
    inspection_id = post_raw(client, key, phone_image()).json()["inspection_id"]
    with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
        inspector = db.exec(select(User)).one()
        claimed = claim_next_task(db, inspector, lease_seconds=60)
        assert claimed is not None
        assert claimed.inspection_id == inspection_id
        submit_label(db, claimed.task_id, inspector, "scratch")
    for headers in ({"X-Api-Key": key}, {"Authorization": f"Bearer {token}"}):
        state = client.get(f"/api/v1/inspections/{inspection_id}", headers=headers)
        assert state.status_code == 200
        assert state.json()["decision"] == "fail"
        assert state.json()["decided_by"] == "human"


def test_reading_an_inspection_needs_its_lines_key_or_a_user(
    client: TestClient, add_line_with_camera: Callable[..., str], user_token: Callable[[str], str]
) -> None:
    key = add_line_with_camera("line-1")
    other_key = add_line_with_camera("line-2")
    inspection_id = post_raw(client, key, phone_image()).json()["inspection_id"]
    url = f"/api/v1/inspections/{inspection_id}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-Api-Key": "cam_wrong"}).status_code == 401
    forbidden = client.get(url, headers={"X-Api-Key": other_key})
    assert forbidden.status_code == 403
    assert "line-2" in forbidden.json()["detail"]
    assert client.get("/api/v1/inspections/999999", headers={"X-Api-Key": key}).status_code == 404
    # the image is for inspectors and up, not for cameras
    assert client.get(f"{url}/image", headers={"X-Api-Key": key}).status_code == 401
    supervisor = {"Authorization": f"Bearer {user_token('supervisor')}"}
    assert client.get(f"{url}/image", headers=supervisor).status_code == 200


def test_every_kind_of_bad_input_is_refused_and_stores_nothing(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera("line-1")
    other_key = add_line_with_camera("line-2")
    assert post_raw(client, key, phone_image(0), capture_id="used").status_code == 201
    inspections_before = count(client, Inspection)
    tasks_before = count(client, ReviewTask)
    images_before = stored_images(client)

    jpeg = phone_image(1)
    cases: list[tuple[str, int, Callable[[], Response], str]] = [
        ("empty body", 400, lambda: post_raw(client, key, b""), "empty"),
        (
            "not an image",
            415,
            lambda: post_raw(client, key, b"%PDF-1.4 not an image", content_type="image/png"),
            "not a JPEG, PNG or BMP",
        ),
        ("truncated JPEG", 422, lambda: post_raw(client, key, jpeg[: len(jpeg) // 2]), "truncated"),
        (
            "over the byte limit",
            413,
            lambda: post_raw(client, key, b"\xff\xd8\xff" + b"\0" * MAX_BYTES),
            "over the limit",
        ),
        (
            "over the pixel limit",
            413,
            lambda: post_raw(client, key, phone_image(1, size=(200, 200))),
            "pixels",
        ),
        (
            "unsupported content type",
            415,
            lambda: post_raw(client, key, jpeg, content_type="image/gif"),
            "unsupported content type",
        ),
        ("unknown line", 404, lambda: post_raw(client, key, jpeg, line="line-9"), "line-9"),
        (
            "missing camera key",
            401,
            lambda: client.post(
                "/api/v1/lines/line-1/images", content=jpeg, headers={"Content-Type": "image/jpeg"}
            ),
            "camera key",
        ),
        ("wrong camera key", 401, lambda: post_raw(client, "cam_not_a_key", jpeg), "camera key"),
        ("another line's key", 403, lambda: post_raw(client, other_key, jpeg), "line-2"),
        (
            "malformed captured_at",
            422,
            lambda: post_raw(client, key, jpeg, captured_at="yesterday at noon"),
            "captured_at",
        ),
        (
            "capture_id reused for another image",
            409,
            lambda: post_raw(client, key, jpeg, capture_id="used"),
            "different image",
        ),
        (
            "multipart without the image field",
            422,
            lambda: client.post(
                "/api/v1/lines/line-1/images",
                headers={"X-Api-Key": key},
                files={"picture": ("a.jpg", jpeg, "image/jpeg")},
            ),
            "'image'",
        ),
        (
            "multipart image over the byte limit",
            413,
            lambda: client.post(
                "/api/v1/lines/line-1/images",
                headers={"X-Api-Key": key},
                files={"image": ("a.jpg", b"\xff\xd8\xff" + b"\0" * MAX_BYTES, "image/jpeg")},
            ),
            "over the limit",
        ),
    ]
    for name, status, send, detail in cases:
        response = send()
        assert response.status_code == status, (name, response.status_code, response.text)
        assert detail in response.json()["detail"], (name, response.json())

    assert count(client, Inspection) == inspections_before
    assert count(client, ReviewTask) == tasks_before
    assert stored_images(client) == images_before
    assert not list(client.app.state.image_store.root.rglob(".tmp-*"))  # type: ignore[attr-defined]
    # and the service still inspects a good image
    assert post_raw(client, key, phone_image(2)).status_code == 201
    rejected_415 = client.app.state.metrics.sample(  # type: ignore[attr-defined]
        "inspect_ingest_rejections_total", {"line": "line-1", "status": "415"}
    )
    assert rejected_415 == 2


def test_concurrent_posts_get_distinct_inspections(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    results: dict[int, int] = {}
    errors: list[str] = []

    def post(n: int) -> None:
        response = post_raw(client, key, phone_image(n), capture_id=f"c-{n}")
        if response.status_code != 201:
            errors.append(response.text)
        else:
            results[n] = response.json()["inspection_id"]

    # More clients than the connection pool holds (5 + 10 overflow): no request may keep a
    # connection while it waits for the model, or a burst of cameras exhausts the pool.
    n_clients = 24
    threads = [threading.Thread(target=post, args=(n,)) for n in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert len(results) == n_clients
    assert len(set(results.values())) == n_clients
    assert count(client, Inspection) == n_clients
    assert len(stored_images(client)) == n_clients


def test_concurrent_retries_of_one_capture_make_one_inspection(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    data = phone_image(9)
    statuses: list[int] = []
    ids: set[int] = set()
    lock = threading.Lock()

    def post() -> None:
        response = post_raw(client, key, data, capture_id="retried")
        with lock:
            statuses.append(response.status_code)
            ids.add(response.json()["inspection_id"])

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] * 5 + [201]
    assert len(ids) == 1
    assert count(client, Inspection) == 1
    assert count(client, ReviewTask) == 1


def test_operations_endpoints_and_metrics(
    client: TestClient, add_line_with_camera: Callable[..., str]
) -> None:
    key = add_line_with_camera()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    post_raw(client, key, phone_image())
    text = client.get("/metrics").text
    assert 'inspect_decisions_total{decision="pending",line="line-1",route="review"} 1.0' in text
    assert 'inspect_review_queue_depth{line="line-1"} 1.0' in text
    for name in (
        "inspect_stage_seconds_bucket",
        "inspect_model_batch_size_bucket",
        "inspect_input_brightness_bucket",
        "inspect_input_contrast_bucket",
        "inspect_input_sharpness_bucket",
        "inspect_model_confidence_bucket",
    ):
        assert name in text
    for stage in ("decode", "queue_wait", "model", "persist", "total"):
        assert f'inspect_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    # the process's own figures (design: memory and CPU among the software metrics)
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line.startswith("process_")}  # fmt: skip
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_resident_memory_bytes"] > 0


def test_the_openapi_schema_documents_the_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/api/v1/lines/{line}/images"]["post"]
    content = post["requestBody"]["content"]
    assert {"image/jpeg", "image/png", "image/bmp", "multipart/form-data"} <= set(content)
    assert {p["name"] for p in post["parameters"]} >= {"capture_id", "part_serial", "captured_at"}
    for path in (
        "/api/v1/inspections/{inspection_id}",
        "/api/v1/inspections/{inspection_id}/image",
        "/metrics",
        "/healthz",
        "/readyz",
    ):
        assert path in schema["paths"]

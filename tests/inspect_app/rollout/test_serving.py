"""Several versions served at once, in the real app: shadow runs hidden, blue-green switches
and rolls back for the next image while a camera posts, a version that cannot load is
refused before traffic moves, and a failing candidate is rolled back on its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlmodel import Session, col, select

import inspect_app.rollout.serving as serving
from inspect_app.accounts import add_camera_key, add_user
from inspect_app.api.app import create_app
from inspect_app.lines import add_line
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest, RolloutRefused
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.registry import get_version, register_model
from inspect_app.settings import Settings
from inspect_app.storage.tables import Event, Inspection, ModelFile, ModelPrediction, User
from inspect_app.timeutil import utcnow

CHAMPION = "defect-cnn-tiny-test"
CANDIDATE = "defect-cnn-tiny-candidate"
POST_RATE = 20.0  # images per second, as the issue asks


def _png(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def service(app_settings: Settings, tiny_candidate: Path) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(app_settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        with Session(engine, expire_on_commit=False) as db:
            add_line(db, "line-1", "shadow")
            key = add_camera_key(db, "line-1")
            supervisor = add_user(db, "sam", "supervisor", "a long test password")
            register_model(db, tiny_candidate, app_settings.data_dir, registered_by="sam")
        yield {
            "client": client,
            "engine": engine,
            "key": key,
            "supervisor": supervisor,
            "rollout": client.app.state.rollout,  # type: ignore[attr-defined]
            "pipeline": client.app.state.pipeline,  # type: ignore[attr-defined]
        }


def _post(world: dict[str, Any], seed: int) -> dict[str, Any]:
    response = world["client"].post(
        "/api/v1/lines/line-1/images",
        content=_png(seed),
        headers={"X-Api-Key": world["key"], "Content-Type": "image/png"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def _deploy(world: dict[str, Any], mode: Mode, candidate: str | None = CANDIDATE) -> None:
    rollout = world["rollout"]
    with Session(world["engine"]) as db:
        actor = db.get(User, world["supervisor"].id)
        assert actor is not None
        deployments.set_deployment(
            db,
            "line-1",
            DeploymentRequest(candidate=candidate, mode=mode),
            actor=actor,
            reason=f"test: {mode}",
            default_version=rollout.default_version,
            warm=rollout.warm,
        )
    rollout.refresh()


def _predictions(engine: Any, inspection_id: int) -> dict[str, str]:
    with Session(engine) as db:
        rows = db.exec(
            select(ModelPrediction).where(ModelPrediction.inspection_id == inspection_id)
        ).all()
        return {r.model_version: r.role for r in rows}


def test_the_configured_model_is_registered_at_start_and_names_its_decisions(
    service: dict[str, Any],
) -> None:
    with Session(service["engine"]) as db:
        assert get_version(db, CHAMPION).registered_by == "system"
    body = _post(service, 1)
    assert _predictions(service["engine"], body["inspection_id"]) == {CHAMPION: "decided"}


def test_a_shadow_candidate_runs_hidden_on_every_part_and_decides_none(
    service: dict[str, Any],
) -> None:
    _deploy(service, Mode.SHADOW)
    ids = [_post(service, seed)["inspection_id"] for seed in range(5)]
    service["pipeline"].settle_blocking(60)  # hidden runs follow each part's answer
    with Session(service["engine"]) as db:
        rows = db.exec(select(Inspection).where(col(Inspection.id).in_(ids))).all()
        assert {(r.model_version, r.arm, r.assignment_p) for r in rows} == {
            (CHAMPION, "champion", 1.0)
        }
    for inspection_id in ids:
        assert _predictions(service["engine"], inspection_id) == {
            CHAMPION: "decided",
            CANDIDATE: "shadow",
        }


def test_blue_green_switches_and_rolls_back_for_the_next_image_while_the_camera_posts(
    service: dict[str, Any],
) -> None:
    """A camera posts at 20 images/s through a switch and a rollback: no request fails,
    every inspection names its version, and every image received after a change returned
    is decided by the version that change chose."""
    results: list[tuple[int, int]] = []  # (status, inspection id)
    stop = threading.Event()

    def camera() -> None:
        seed = 0
        while not stop.is_set():
            began = time.monotonic()
            response = service["client"].post(
                "/api/v1/lines/line-1/images",
                content=_png(seed),
                headers={"X-Api-Key": service["key"], "Content-Type": "image/png"},
            )
            results.append((response.status_code, response.json().get("inspection_id", -1)))
            seed += 1
            time.sleep(max(0.0, 1 / POST_RATE - (time.monotonic() - began)))

    thread = threading.Thread(target=camera)
    thread.start()
    try:
        while len(results) < 10:
            time.sleep(0.05)
        _deploy(service, Mode.BLUE_GREEN)
        switched = utcnow()
        green = service["rollout"].state("line-1").revision
        before = len(results)
        while len(results) < before + 10:
            time.sleep(0.05)
        with Session(service["engine"]) as db:
            deployments.rollback_by(
                db, "line-1", actor=db.get(User, service["supervisor"].id), reason="test: back"
            )  # type: ignore[arg-type]
        service["rollout"].refresh()
        rolled_back = utcnow()
        back = service["rollout"].state("line-1").revision
        before = len(results)
        while len(results) < before + 10:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()

    assert all(status == 201 for status, _ in results), results
    with Session(service["engine"]) as db:
        rows = db.exec(select(Inspection).order_by(col(Inspection.id))).all()
    assert len(rows) == len(results)
    # Each part records the deployment revision it was assigned under: a part received after
    # a change returned is assigned under it (or a later one), and each revision's parts were
    # decided by the version it chose. (A part received just before a change may be assigned
    # just after it: the revision, not the arrival time, says which held.)
    by_revision = {green: CANDIDATE, back: CHAMPION}
    for row in rows:
        assert row.model_version == by_revision.get(row.deployment_revision, CHAMPION), row
        if row.received_at > rolled_back:
            assert row.deployment_revision == back, row
        elif row.received_at > switched:
            assert row.deployment_revision in (green, back), row
    assert any(r.deployment_revision == green for r in rows)
    # the champion stays loaded and runs hidden beside the candidate (after each answer)
    service["pipeline"].settle_blocking(60)
    deciding = [r for r in rows if r.model_version == CANDIDATE]
    assert deciding and all(
        _predictions(service["engine"], r.id) == {CANDIDATE: "decided", CHAMPION: "shadow"}  # type: ignore[arg-type]
        for r in deciding
    )


def test_a_version_that_cannot_load_is_refused_before_any_traffic_moves(
    service: dict[str, Any], app_settings: Settings
) -> None:
    with Session(service["engine"]) as db:
        row = get_version(db, CANDIDATE)
        (app_settings.data_dir / row.path).unlink()
        db.exec(delete(ModelFile).where(col(ModelFile.sha256) == row.sha256))  # type: ignore[call-overload]
        db.commit()
    with pytest.raises(RolloutRefused, match="could not be loaded"):
        _deploy(service, Mode.BLUE_GREEN)
    _post(service, 3)
    with Session(service["engine"]) as db:
        assert db.exec(select(Inspection.model_version)).all() == [CHAMPION]
        assert not db.exec(select(Event).where(Event.kind == "deployment_change")).all()


def test_a_candidate_that_keeps_failing_is_rolled_back_and_the_line_keeps_its_answers(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_load = serving._load_predictor

    class Failing:
        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.version = inner.version

        def predict(self, images: Any, **kw: Any) -> Any:  # the warm-up passes
            return self._inner.predict(images, **kw)

        def predict_with_embeddings(self, images: Any, **kw: Any) -> Any:
            raise RuntimeError("simulated inference failure")

    monkeypatch.setattr(serving, "_load_predictor", lambda path: Failing(real_load(path)))
    pool = service["rollout"].pool
    monkeypatch.setattr(pool, "loader", serving._load_predictor)
    _deploy(service, Mode.BLUE_GREEN)
    limit = service["rollout"].max_errors
    bodies = [_post(service, seed) for seed in range(limit + 3)]
    assert all(body["decision"] in ("pass", "fail", "pending") for body in bodies)
    deadline = time.monotonic() + 30  # the rollback runs in a worker thread
    while time.monotonic() < deadline and not service["rollout"].state("line-1").quarantined:
        time.sleep(0.05)
    with Session(service["engine"]) as db:
        decided = db.exec(select(Inspection.model_version)).all()
        event = db.exec(select(Event).where(Event.kind == "rollout_rollback")).one()
    assert set(decided) == {CHAMPION}  # the champion answered every image
    assert event.actor == "system" and "errors" in event.reason
    assert event.details["automatic"] is True


def test_versions_are_served_by_onnx_runtime_by_default_and_by_torch_by_setting(
    service: dict[str, Any], app_settings: Settings
) -> None:
    configured = service["client"].app.state.predictor
    assert configured.runtime == "onnxruntime"
    assert service["rollout"].pool.warm(CANDIDATE).predictor.runtime == "onnxruntime"
    # the heatmap (the review UI's) still works under the ONNX default, through torch
    image = cv2.imdecode(np.frombuffer(_png(7), np.uint8), cv2.IMREAD_COLOR)
    (prediction,) = configured.predict([image], heatmap=True)
    assert prediction.heatmap is not None and prediction.heatmap.shape == image.shape[:2]
    torch_pool = serving.ModelPool(
        service["engine"], app_settings.data_dir / "torch", inference_runtime="torch"
    )
    try:
        assert torch_pool.warm(CANDIDATE).predictor.runtime == "torch"
    finally:
        torch_pool.stop()


def test_the_service_serves_torch_when_the_setting_asks(app_settings: Settings) -> None:
    settings = app_settings.model_copy(update={"inference_runtime": "torch"})
    with TestClient(create_app(settings)) as client:
        assert client.app.state.predictor.runtime == "torch"  # type: ignore[attr-defined]

"""The model registry over HTTP through the real app: register, list, show; a file the service
could not serve is refused with the loader's reason; the same file twice is one version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.storage.tables import Event
from models.checkpoint import load_checkpoint, save_checkpoint
from models.defect_cnn import DefectCNNConfig, build_model

CONFIGURED = "defect-cnn-tiny-test"  # the tiny checkpoint the test app serves
CANDIDATE = "defect-cnn-tiny-candidate"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def supervisor(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("supervisor"))


def _resave(source: Path, target: Path, *, temperature: float, version: str | None) -> Path:
    """`source`'s weights again, with another temperature: other bytes."""
    base = load_checkpoint(source)
    save_checkpoint(
        target,
        base.model,
        config=base.config,
        class_names=base.class_names,
        preprocessing=base.preprocessing,
        temperature=temperature,
        metrics={"note": "recalibrated", "validation": {"binary_accuracy": 0.5}},
        data_seed=3,
        version=version,
    )
    return target


def test_register_list_and_show_round_trip(
    client: TestClient,
    supervisor: dict[str, str],
    tiny_candidate: Path,
    add_line_with_camera: Callable[..., str],
) -> None:
    add_line_with_camera("line-1")
    listed = client.get("/api/v1/models", headers=supervisor).json()
    assert [m["version"] for m in listed] == [CONFIGURED]  # registered when the app started
    assert listed[0]["registered_by"] == "system"
    assert listed[0]["lines"] == [{"line_id": "line-1", "role": "champion"}]

    created = client.post(
        "/api/v1/models",
        json={"path": str(tiny_candidate), "notes": "wider augmentations"},
        headers=supervisor,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["created"] is True
    assert body["version"] == CANDIDATE
    assert body["registered_by"].startswith("supervisor-")
    assert body["notes"] == "wider augmentations"
    assert body["class_names"][0] == "ok" and body["temperature"] == 1.0
    # the checkpoint's card, plus the serving runtime's parity check made at registration
    assert body["metrics"]["onnx"]["accepted"] is True
    assert {k: v for k, v in body["metrics"].items() if k != "onnx"} == {
        "note": "tiny random candidate"
    }
    assert body["architecture"]["width_mult"] == 0.1
    assert body["lineage"]["source_file"] == str(tiny_candidate.resolve())
    assert body["has_profile"] is False and body["lines"] == []
    assert len(body["sha256"]) == 64

    shown = client.get(f"/api/v1/models/{CANDIDATE}", headers=supervisor).json()
    assert shown == {k: v for k, v in body.items() if k != "created"}
    assert [m["version"] for m in client.get("/api/v1/models", headers=supervisor).json()] == [
        CANDIDATE,
        CONFIGURED,
    ]

    again = client.post("/api/v1/models", json={"path": str(tiny_candidate)}, headers=supervisor)
    assert again.status_code == 200
    assert again.json()["created"] is False and again.json()["version"] == CANDIDATE
    assert again.json()["notes"] == "wider augmentations"  # the first registration's

    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        events = db.exec(select(Event).where(Event.kind == "model_registered")).all()
    assert sorted((e.details or {})["version"] for e in events) == [CANDIDATE, CONFIGURED]
    (event,) = (e for e in events if (e.details or {})["version"] == CANDIDATE)
    assert event.actor == body["registered_by"] and event.reason == "wider augmentations"


def test_a_child_names_its_parent_and_the_parent_must_be_registered(
    client: TestClient, supervisor: dict[str, str], tiny_checkpoint: Path, tmp_path: Path
) -> None:
    child = _resave(tiny_checkpoint, tmp_path / "child.pt", temperature=1.5, version=None)
    unknown = client.post(
        "/api/v1/models",
        json={"path": str(child), "parent_version": "defect-cnn-never-registered"},
        headers=supervisor,
    )
    assert unknown.status_code == 422
    assert (
        "parent version defect-cnn-never-registered is not registered" in unknown.json()["detail"]
    )

    made = client.post(
        "/api/v1/models",
        json={"path": str(child), "parent_version": CONFIGURED},
        headers=supervisor,
    )
    assert made.status_code == 201, made.text
    assert made.json()["parent_version"] == CONFIGURED
    assert made.json()["temperature"] == 1.5 and made.json()["data_seed"] == 3


def test_files_the_service_could_not_serve_are_refused_with_the_reason(
    client: TestClient, supervisor: dict[str, str], tmp_path: Path
) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("definitely not a model")
    bare = tmp_path / "state_dict.pt"
    torch.save(build_model(DefectCNNConfig(width_mult=0.1)).state_dict(), bare)
    foreign = tmp_path / "other.pt"
    torch.save({"model": "something else", "epoch": 3}, foreign)
    cases = {
        text: "is not a readable checkpoint",
        bare: "holds a bare state_dict",
        foreign: "is not a defect-model checkpoint",
        tmp_path / "absent.pt": "no checkpoint file at",
        tmp_path: "no checkpoint file at",  # a folder
        tmp_path / ("x" * 300): "",  # a name longer than the file system allows
    }
    for path, reason in cases.items():
        refused = client.post("/api/v1/models", json={"path": str(path)}, headers=supervisor)
        assert refused.status_code == 422, (path, refused.text)
        assert reason in refused.json()["detail"], refused.json()
    listed = client.get("/api/v1/models", headers=supervisor).json()
    assert [m["version"] for m in listed] == [CONFIGURED]


def test_a_taken_name_with_other_bytes_is_a_conflict(
    client: TestClient, supervisor: dict[str, str], tiny_candidate: Path, tmp_path: Path
) -> None:
    assert client.post(
        "/api/v1/models", json={"path": str(tiny_candidate)}, headers=supervisor
    ).is_success
    impostor = _resave(tiny_candidate, tmp_path / "impostor.pt", temperature=2.0, version=CANDIDATE)
    refused = client.post("/api/v1/models", json={"path": str(impostor)}, headers=supervisor)
    assert refused.status_code == 409
    assert (
        f"version {CANDIDATE} is already registered from a different file"
        in (refused.json()["detail"])
    )
    shown = client.get(f"/api/v1/models/{CANDIDATE}", headers=supervisor).json()
    assert shown["temperature"] == 1.0  # versions never change


def test_the_registry_is_for_supervisors(
    client: TestClient, user_token: Callable[[str], str], tiny_candidate: Path
) -> None:
    inspector = _auth(user_token("inspector"))
    body = {"path": str(tiny_candidate)}
    assert client.get("/api/v1/models").status_code == 401
    assert client.post("/api/v1/models", json=body).status_code == 401
    for response in (
        client.get("/api/v1/models", headers=inspector),
        client.get(f"/api/v1/models/{CONFIGURED}", headers=inspector),
        client.post("/api/v1/models", json=body, headers=inspector),
    ):
        assert response.status_code == 403
        assert "supervisor" in response.json()["detail"]
    admin = _auth(user_token("admin"))
    assert client.post("/api/v1/models", json=body, headers=admin).status_code == 201
    missing = client.get("/api/v1/models/defect-cnn-nothing", headers=admin)
    assert missing.status_code == 404
    assert "no registered model version 'defect-cnn-nothing'" in missing.json()["detail"]

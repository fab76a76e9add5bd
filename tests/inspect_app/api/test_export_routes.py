"""The line export over HTTP: supervisors get a tar.gz the dataset loader reads; others do not."""

from __future__ import annotations

import csv
import io
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from data.dataset import load_dataset
from inspect_app.accounts import add_user

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LABELS = ["ok", "scratch", None, "crack", "ok"]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def parts(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    add_plant_parts: Callable[..., list[int]],
) -> list[int]:
    add_line_with_camera("line-1")
    with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
        inspector = add_user(db, "ina", "inspector", "a long test password")
        assert inspector.id is not None
        return add_plant_parts(
            db, client.app.state.image_store, "line-1", LABELS, user_id=inspector.id, start=START
        )


def test_a_supervisor_downloads_the_archive(
    client: TestClient, user_token: Callable[[str], str], parts: list[int], tmp_path: Path
) -> None:
    response = client.get(
        "/api/v1/lines/line-1/export",
        params={"labeled_only": "true", "since": "2026-03-01T08:01:00Z"},
        headers=_auth(user_token("supervisor")),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert "line-1-export.tar.gz" in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "line-1-export"
    items = load_dataset(root)
    assert sorted(item.label for item in items) == ["crack", "ok", "scratch"]
    with (root / "manifest.csv").open(newline="") as f:
        exported = [int(row["inspection_id"]) for row in csv.DictReader(f)]
    assert exported == [parts[1], parts[3], parts[4]]  # since minute 1, labeled only
    assert (root / "export.json").is_file() and (root / "missing.csv").is_file()


def test_an_inspector_is_refused(
    client: TestClient, user_token: Callable[[str], str], parts: list[int]
) -> None:
    response = client.get("/api/v1/lines/line-1/export", headers=_auth(user_token("inspector")))
    assert response.status_code == 403
    assert client.get("/api/v1/lines/line-1/export").status_code == 401


def test_bad_requests_are_plain_errors(
    client: TestClient, user_token: Callable[[str], str], parts: list[int]
) -> None:
    supervisor = _auth(user_token("supervisor"))
    missing = client.get("/api/v1/lines/line-9/export", headers=supervisor)
    assert missing.status_code == 404 and "line-9" in missing.json()["detail"]
    backwards = client.get(
        "/api/v1/lines/line-1/export",
        params={"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        headers=supervisor,
    )
    assert backwards.status_code == 422 and "until" in str(backwards.json()["detail"])
    garbled = client.get(
        "/api/v1/lines/line-1/export", params={"labeled_only": "maybe"}, headers=supervisor
    )
    assert garbled.status_code == 422

"""The app factory: each app its own world; the demo's replay camera feeds line-1."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app import demo
from inspect_app.api.app import create_app
from inspect_app.settings import Settings
from inspect_app.storage.tables import Inspection

FEED_LIMIT_S = 120  # a bound for failing, not a measurement


def test_two_apps_do_not_share_state(tmp_path: Path, app_settings: Settings) -> None:
    other = app_settings.model_copy(update={"data_dir": tmp_path / "other"})
    with TestClient(create_app(app_settings)) as first, TestClient(create_app(other)) as second:
        assert first.app.state.metrics.registry is not second.app.state.metrics.registry  # type: ignore[attr-defined]
        assert first.app.state.engine.url != second.app.state.engine.url  # type: ignore[attr-defined]
        assert first.get("/readyz").status_code == 200
        assert second.get("/readyz").status_code == 200


def test_an_api_only_process_serves_the_api_and_no_review_ui(app_settings: Settings) -> None:
    api_only = app_settings.model_copy(update={"review_ui": False})
    with TestClient(create_app(api_only)) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/v1/lines").status_code == 401  # the API is there, and guarded
        assert client.get("/review/").status_code == 404
    with TestClient(create_app(api_only.model_copy(update={"review_ui": True}))) as client:
        assert client.get("/review/").status_code == 200  # Gradio's login page


def test_the_demo_seeds_line_1_and_its_replay_camera_feeds_it(
    tmp_path: Path, app_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = tmp_path / "samples"
    for label, value in (("ok", 140), ("scratch", 90)):
        (samples / label).mkdir(parents=True)
        image = np.full((64, 80, 3), value, dtype=np.uint8)
        cv2.imwrite(str(samples / label / f"{label}_0.png"), image)
    monkeypatch.setattr(demo, "SAMPLES_DIR", samples)
    settings = app_settings.model_copy(update={"demo": True})

    with TestClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        deadline = time.monotonic() + FEED_LIMIT_S
        rows: list[Inspection] = []
        while not rows and time.monotonic() < deadline:
            with Session(engine) as db:
                rows = list(db.exec(select(Inspection)))
            time.sleep(0.1)
        assert rows, "the replay camera fed nothing to line-1"
        row = rows[0]
        assert row.line_id == "line-1"
        assert row.source == "replay"
        assert row.level == "shadow"
        assert row.true_class in ("ok", "scratch")
        assert row.route == "review"
        assert (settings.data_dir / demo.CREDENTIALS_FILE).is_file()
    # leaving the block ran the shutdown: cameras first, then the batcher
    assert not client.app.state.batcher.running  # type: ignore[attr-defined]
    assert all(not worker.is_alive() for worker in client.app.state.camera_sources.workers)  # type: ignore[attr-defined]

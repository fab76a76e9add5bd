"""An acknowledged image survives SIGKILL: the real server, real HTTP, a real crash."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from sqlmodel import Session

from inspect_app.accounts import add_camera_key, add_user, issue_token
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database

pytestmark = pytest.mark.slow


def test_an_acknowledged_image_survives_sigkill(
    tmp_path: Path, tiny_checkpoint: Path, running_service: Callable[..., Any]
) -> None:
    data_dir = tmp_path / "service"
    settings = Settings(data_dir=data_dir)
    data_dir.mkdir()
    engine = make_engine(settings.resolved_database_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        camera_key = add_camera_key(db, "line-1")
        token = issue_token(db, add_user(db, "ines", "inspector", "a long test password"))
    engine.dispose()

    image = np.full((120, 160, 3), 90, dtype=np.uint8)
    cv2.circle(image, (80, 60), 30, (200, 180, 170), -1)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    data = buf.tobytes()
    log = tmp_path / "service.log"

    with running_service(data_dir, weights=tiny_checkpoint, log=log) as service:
        process = service.process
        response = httpx.post(
            f"{service.url}/api/v1/lines/line-1/images",
            content=data,
            headers={"X-Api-Key": camera_key, "Content-Type": "image/png"},
            params={"capture_id": "before-the-crash"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        acknowledged = response.json()
        process.send_signal(signal.SIGKILL)  # no shutdown, no flush: only what was fsync'd
        process.wait(30)
        assert process.returncode == -signal.SIGKILL

    with running_service(data_dir, weights=tiny_checkpoint, log=log) as service:
        base = f"{service.url}/api/v1/inspections/{acknowledged['inspection_id']}"
        state = httpx.get(base, headers={"X-Api-Key": camera_key}, timeout=30)
        assert state.status_code == 200, state.text
        assert state.json() == acknowledged
        stored = httpx.get(
            f"{base}/image", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert stored.status_code == 200
        assert hashlib.sha256(stored.content).hexdigest() == hashlib.sha256(data).hexdigest()
        # the line's software, unsure whether its post made it, retries: same inspection
        retry = httpx.post(
            f"{service.url}/api/v1/lines/line-1/images",
            content=data,
            headers={"X-Api-Key": camera_key, "Content-Type": "image/png"},
            params={"capture_id": "before-the-crash"},
            timeout=60,
        )
        assert retry.status_code == 200
        assert retry.json()["inspection_id"] == acknowledged["inspection_id"]

"""An acknowledged image survives SIGKILL: the real server, real HTTP, a real crash; on
SQLite with the image in a file, and on PostgreSQL with the image in the database (read back
through a process with another, empty data folder)."""

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


@pytest.fixture(
    params=["sqlite, local files", pytest.param("postgresql, database", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the data folder's SQLite (images in files); else PostgreSQL (images in it)."""
    return (
        None
        if request.param.startswith("sqlite")
        else request.getfixturevalue("fresh_postgres_url")
    )


def test_an_acknowledged_image_survives_sigkill(
    tmp_path: Path,
    tiny_checkpoint: Path,
    running_service: Callable[..., Any],
    database_url: str | None,
) -> None:
    data_dir = tmp_path / "service"
    settings = Settings(data_dir=data_dir, database_url=database_url)
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

    with running_service(
        data_dir, weights=tiny_checkpoint, log=log, database_url=database_url
    ) as service:
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

    # On PostgreSQL the process after the crash has a data folder of its own: the image
    # must come from the database, as it would for any other process.
    after = data_dir if database_url is None else tmp_path / "another-process"
    with running_service(
        after, weights=tiny_checkpoint, log=log, database_url=database_url
    ) as service:
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

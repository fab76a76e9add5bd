"""An acknowledged image survives SIGKILL: the real server, real HTTP, a real crash."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sqlmodel import Session

from inspect_app.accounts import add_camera_key, add_user, issue_token
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.db import init_db, make_engine

pytestmark = pytest.mark.slow

STARTUP_LIMIT_S = 180  # a generous bound on a loaded machine; not a measurement


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(
    data_dir: Path, port: int, weights: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "INSPECT_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "inspect_app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(data_dir)]
    with log.open("ab") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the service exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the service did not get ready:\n{log.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_an_acknowledged_image_survives_sigkill(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data_dir = tmp_path / "service"
    settings = Settings(data_dir=data_dir)
    data_dir.mkdir()
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
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

    port = free_port()
    with running_service(data_dir, port, tiny_checkpoint, log) as process:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/lines/line-1/images",
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

    port = free_port()
    with running_service(data_dir, port, tiny_checkpoint, log):
        base = f"http://127.0.0.1:{port}/api/v1/inspections/{acknowledged['inspection_id']}"
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
            f"http://127.0.0.1:{port}/api/v1/lines/line-1/images",
            content=data,
            headers={"X-Api-Key": camera_key, "Content-Type": "image/png"},
            params={"capture_id": "before-the-crash"},
            timeout=60,
        )
        assert retry.status_code == 200
        assert retry.json()["inspection_id"] == acknowledged["inspection_id"]

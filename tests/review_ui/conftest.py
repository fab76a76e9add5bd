"""Fixtures for the review UI: a real service (create_app, with the UI mounted) served by
uvicorn on a free port, users, lines and review tasks with real stored images."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.settings import Settings

PASSWORD = "a long test password"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def part_image(seed: int, size: int = 96) -> bytes:
    """A small PNG that differs per seed (a grey 'phone' on a darker fixture)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 60, np.uint8)
    cv2.rectangle(
        image, (size // 4, size // 8), (3 * size // 4, 7 * size // 8), (150, 150, 150), -1
    )
    image = np.clip(image + rng.integers(0, 25, image.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def add_parts(seed_review_task: Callable[..., int]) -> Callable[..., list[int]]:
    """Add review tasks whose inspections point at real images in the image store."""
    from inspect_app.storage.images import LocalImageStore
    from inspect_app.storage.tables import Inspection, ReviewTask

    def add(
        engine: Engine, store_root: Path, line_id: str, n: int, *, first_seed: int = 0, **kw: object
    ) -> list[int]:
        store = LocalImageStore(store_root)
        ids = []
        with Session(engine, expire_on_commit=False) as db:
            for i in range(n):
                task_id = seed_review_task(db, line_id, **kw)
                task = db.get(ReviewTask, task_id)
                assert task is not None
                inspection = db.get(Inspection, task.inspection_id)
                assert inspection is not None
                inspection.image_sha256 = store.put(part_image(first_seed + i))
                inspection.image_format = "png"
                db.add(inspection)
                db.commit()
                ids.append(task_id)
        return ids

    return add


def add_people(engine: Engine, *people: tuple[str, str]) -> None:
    from inspect_app.accounts import add_user

    with Session(engine, expire_on_commit=False) as db:
        for name, role in people:
            add_user(db, name, role, PASSWORD)


def add_lines(engine: Engine, *lines: tuple[str, str]) -> None:
    from inspect_app.lines import add_line

    with Session(engine, expire_on_commit=False) as db:
        for line_id, level in lines:
            add_line(db, line_id, level)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveService:
    url: str  # http://127.0.0.1:PORT
    app: FastAPI

    @property
    def review_url(self) -> str:
        return f"{self.url}/review/"

    @property
    def engine(self) -> Engine:
        return self.app.state.engine

    @property
    def settings(self) -> Settings:
        return self.app.state.settings


def serve(settings: Settings) -> Iterator[LiveService]:
    """The whole service, as `inspect-app serve` runs it, in a thread of this process."""
    from inspect_app.api.app import create_app

    app = create_app(settings)
    port = _free_port()
    # A gradio_client session keeps its heartbeat stream open: at the end the server closes
    # what is still open after 2 s instead of waiting for clients that will never hang up.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="review-ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test service did not start")
        time.sleep(0.05)
    try:
        yield LiveService(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def app_settings(app_settings: Settings) -> Settings:
    """The suite's settings with the review UI mounted, as every test here needs."""
    return with_review_ui(app_settings)


def with_review_ui(settings: Settings) -> Settings:
    return settings.model_copy(update={"review_ui": True})


@pytest.fixture
def live_service(app_settings: Settings) -> Iterator[LiveService]:
    yield from serve(with_review_ui(app_settings))


def review_client(review_url: str, name: str, password: str = PASSWORD) -> Any:
    """A `gradio_client` session logged in as `name`. Its HTTP timeout is a hang guard for
    a cold service on a busy machine (the first login hashes with scrypt while the process
    still warms up), not a limit the test measures."""
    from gradio_client import Client

    return Client(
        review_url,
        auth=(name, password),
        verbose=False,
        download_files=False,
        analytics_enabled=False,
        httpx_kwargs={"timeout": 120.0},
    )

"""Two service processes (`inspect-app serve`, real HTTP) on one PostgreSQL database follow a
deployment change made elsewhere (here: through the use case, as the CLI does) within
seconds, load the candidate from the registry's bytes in the database, and switch; then
both follow the rollback."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from sqlmodel import Session

from inspect_app.accounts import add_camera_key, add_user
from inspect_app.lines import add_line
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.registry import register_model
from inspect_app.storage.db import make_engine, upgrade_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHAMPION = "defect-cnn-tiny-test"
CANDIDATE = "defect-cnn-tiny-candidate"
FOLLOW_GUARD_S = 60.0  # a guard against a hang, not a measure: the poll is every second


def _png(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def _decided_by(url: str, key: str, seed: int) -> str:
    response = httpx.post(
        f"{url}/api/v1/lines/line-1/images",
        content=_png(seed),
        headers={"X-Api-Key": key, "Content-Type": "image/png"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["model_version"])


def _until_all_decide(urls: list[str], key: str, version: str) -> None:
    deadline = time.monotonic() + FOLLOW_GUARD_S
    pending = set(urls)
    seed = 0
    while pending:
        assert time.monotonic() < deadline, f"{pending} never switched to {version}"
        for url in list(pending):
            seed += 1
            if _decided_by(url, key, seed) == version:
                pending.discard(url)
        time.sleep(0.2)


def test_both_processes_follow_a_switch_and_a_rollback(
    fresh_postgres_url: str, tiny_candidate: Path, tmp_path: Path, two_services: list[str]
) -> None:
    engine = make_engine(fresh_postgres_url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1", "assist")  # assist shows the deciding version in the answer
        key = add_camera_key(db, "line-1")
        supervisor = add_user(db, "sam", "supervisor", "a long test password")
        # registered through a third data folder: the services get the bytes from the database
        register_model(db, tiny_candidate, tmp_path / "cli", registered_by="sam")
    assert {_decided_by(url, key, i) for i, url in enumerate(two_services)} == {CHAMPION}

    with Session(engine) as db:
        deployments.set_deployment(
            db,
            "line-1",
            DeploymentRequest(candidate=CANDIDATE, mode=Mode.BLUE_GREEN),
            actor=supervisor,
            reason="switch both processes",
            default_version=CHAMPION,
        )
    _until_all_decide(two_services, key, CANDIDATE)

    with Session(engine) as db:
        deployments.rollback_by(db, "line-1", actor=supervisor, reason="back on both")
    _until_all_decide(two_services, key, CHAMPION)
    engine.dispose()

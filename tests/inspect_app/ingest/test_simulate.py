"""`inspect-app simulate` against a live `inspect-app serve` process, over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from inspect_app.accounts import add_camera_key
from inspect_app.cli import app as cli
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.db import init_db, make_engine
from inspect_app.storage.tables import Inspection

pytestmark = pytest.mark.slow
START_GUARD_S = 180.0  # the service loads torch and the model; only a hang guard


@dataclass(frozen=True)
class LiveService:
    url: str
    key: str
    settings: Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_service(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path
) -> Iterator[LiveService]:
    """`inspect-app serve` in its own process on a free port, line-1 (shadow) with a key."""
    data_dir = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=data_dir, weights=tiny_checkpoint)
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    with Session(engine) as session:
        add_line(session, "line-1", "shadow")
        key = add_camera_key(session, "line-1")
    engine.dispose()

    port = _free_port()
    env = {**os.environ, "INSPECT_WEIGHTS": str(tiny_checkpoint), "OMP_NUM_THREADS": "1"}
    log = (data_dir / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "inspect_app.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_GUARD_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}: {_tail(data_dir)}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not become ready: {_tail(data_dir)}")
            time.sleep(0.2)
        yield LiveService(url=url, key=key, settings=settings)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _tail(data_dir: Path) -> str:
    return (data_dir / "serve.log").read_text()[-3000:]


def http_inspections(settings: Settings) -> list[Inspection]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine) as session:
            query = select(Inspection).where(Inspection.source == "http")
            return list(session.exec(query.order_by(Inspection.id)).all())
    finally:
        engine.dispose()


def simulate(service: LiveService, dataset: Path, *extra: str, key: str | None = None):  # type: ignore[no-untyped-def]
    args = ["simulate", "--line", "line-1", "--rate", "50", "--data", str(dataset),
            "--url", service.url, "--key", key or service.key, *extra]  # fmt: skip
    return CliRunner().invoke(cli, args)


def test_simulated_camera_images_are_accepted_and_inspected(
    live_service: LiveService, dataset: Path
) -> None:
    before = len(http_inspections(live_service.settings))
    result = simulate(live_service, dataset, "--count", "8", "--concurrency", "3")
    assert result.exit_code == 0, result.output
    assert "sent      8" in result.output
    assert "accepted  8" in result.output
    assert "decisions pending 8" in result.output  # shadow: a human decides every part
    assert "errors    0" in result.output
    assert "p50" in result.output and "p99" in result.output
    rows = http_inspections(live_service.settings)[before:]
    assert len(rows) == 8
    assert len({r.capture_id for r in rows}) == 8
    assert all(r.part_serial and r.part_serial.startswith("SIM-") for r in rows)
    # 8 images cycle through the 6 of the dataset
    assert len({r.image_sha256 for r in rows}) == len(list(dataset.rglob("*.jpg")))


def test_a_wrong_camera_key_is_reported_not_accepted(
    live_service: LiveService, dataset: Path
) -> None:
    result = simulate(live_service, dataset, "--count", "2", key="not-a-key")
    assert result.exit_code == 1
    assert "accepted  0" in result.output
    assert "HTTP 401 x2" in result.output


def test_an_empty_dataset_is_a_clear_error(live_service: LiveService, tmp_path: Path) -> None:
    result = simulate(live_service, tmp_path)
    assert result.exit_code != 0
    assert "no labeled images" in result.output

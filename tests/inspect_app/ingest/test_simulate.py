"""`inspect-app simulate` against a live `inspect-app serve` process, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from inspect_app.accounts import add_camera_key
from inspect_app.cli import app as cli
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class LiveService:
    url: str
    key: str
    settings: Settings


@pytest.fixture(scope="module")
def live_service(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoint: Path,
    running_service: Callable[..., AbstractContextManager[Any]],
) -> Iterator[LiveService]:
    """`inspect-app serve` in its own process on a free port, line-1 (shadow) with a key."""
    data_dir = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=data_dir, weights=tiny_checkpoint)
    engine = make_engine(settings.resolved_database_url)
    upgrade_database(engine)
    with Session(engine) as session:
        add_line(session, "line-1", "shadow")
        key = add_camera_key(session, "line-1")
    engine.dispose()

    with running_service(data_dir, weights=tiny_checkpoint, log=data_dir / "serve.log") as live:
        yield LiveService(url=live.url, key=key, settings=settings)


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

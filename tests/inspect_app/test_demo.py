"""The demo world is created once; a restart keeps its credentials instead of minting new ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app import demo
from inspect_app.accounts import authenticate, line_for_camera_key, list_camera_keys
from inspect_app.lines import get_line
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import User


@pytest.fixture
def sqlite_engine() -> Iterator[Engine]:
    engine = make_engine("sqlite://")
    upgrade_database(engine)
    yield engine
    engine.dispose()


def read_credentials(path: Path) -> tuple[dict[str, str], str]:
    passwords: dict[str, str] = {}
    key = ""
    for line in path.read_text().splitlines():
        words = line.split()
        if line.startswith("user "):
            passwords[words[1]] = words[3]
        elif line.startswith("camera key"):
            key = words[-1]
    return passwords, key


def test_the_first_start_seeds_everything_and_a_restart_keeps_it(
    tmp_path: Path, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = tmp_path / "samples"
    (samples / "ok").mkdir(parents=True)
    (samples / "ok" / "a.png").write_bytes(b"not read here")
    monkeypatch.setattr(demo, "SAMPLES_DIR", samples)
    settings = Settings(data_dir=tmp_path / "data")

    cameras = demo.seed_demo(sqlite_engine, settings)
    assert [(c.line, c.kind, c.uri, c.rate, c.max_queue) for c in cameras] == [
        ("line-1", "replay", str(samples), 1.0, 50)  # waits while 50 parts wait for a human
    ]
    path = demo.credentials_path(settings)
    assert path.stat().st_mode & 0o077 == 0  # only its owner may read it
    passwords, key = read_credentials(path)
    assert set(passwords) == {"inspector", "supervisor", "admin"}
    with Session(sqlite_engine) as db:
        assert get_line(db, "line-1").level == "shadow"
        for name, password in passwords.items():
            user = authenticate(db, name, password)
            assert user is not None
            assert user.role == name  # the demo names its users after their roles
        assert line_for_camera_key(db, key) == "line-1"

    written = path.read_text()
    demo.seed_demo(sqlite_engine, settings)  # a restart
    assert path.read_text() == written
    with Session(sqlite_engine) as db:
        assert len(db.exec(select(User)).all()) == 3
        assert len(list_camera_keys(db, "line-1")) == 1


def test_no_samples_means_no_replay_camera(
    tmp_path: Path, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "SAMPLES_DIR", tmp_path / "missing")
    assert demo.seed_demo(sqlite_engine, Settings(data_dir=tmp_path)) == []


def test_the_demo_camera_waits_at_the_queue_depth_the_environment_sets(
    tmp_path: Path, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = tmp_path / "samples"
    (samples / "ok").mkdir(parents=True)
    (samples / "ok" / "a.png").write_bytes(b"not read here")
    monkeypatch.setattr(demo, "SAMPLES_DIR", samples)
    monkeypatch.setenv("INSPECT_DEMO_MAX_QUEUE", "3")
    (camera,) = demo.seed_demo(sqlite_engine, Settings(data_dir=tmp_path / "data"))
    assert camera.max_queue == 3
    monkeypatch.setenv("INSPECT_DEMO_MAX_QUEUE", "0")
    with pytest.raises(ValueError, match="demo_max_queue"):
        Settings(data_dir=tmp_path / "data")

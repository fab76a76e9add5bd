"""A full disk under the service: the camera gets a 503 it can retry, never a 500; no
half-written file, no row without its image; and the service takes images again as soon as
there is room.

The disk is real: a 4 MB tmpfs mounted as the service's image folder, or as its whole data
folder so that SQLite's commits fail too (needs root, as the test machines run; skipped with
the reason otherwise).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.settings import Settings
from inspect_app.storage.images import ImageStore
from inspect_app.storage.retention import RetentionPolicy, sweep_images
from inspect_app.storage.tables import Inspection
from inspect_app.timeutil import utcnow
from tests.inspect_app.api.test_images import post_raw

# The service's own start takes ~1.2 MB of a data folder (the registered model's checkpoint
# and ONNX graph, as files and as rows in SQLite's WAL); the filler leaves well under 1 MB.
DISK_BYTES = 4 * 1024 * 1024
FILLER_BYTES = 2 * 1024 * 1024  # takes half the disk; deleting it is "space returns"


def noisy_png(seed: int) -> bytes:
    """~50 KB that do not compress, so a few dozen fill the disk."""
    image = np.random.default_rng(seed).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture(params=["images", "data dir"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A 4 MB filesystem of its own, mounted where the service keeps its images: its image
    folder only (the database elsewhere), or its whole data folder (SQLite's file too)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the image folder needs root")
    mount_point = tmp_path / "service"
    if request.param == "images":
        mount_point = mount_point / "images"
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.fixture
def app_settings(app_settings: Settings, small_disk: Path) -> Settings:
    assert small_disk in (app_settings.image_dir, app_settings.data_dir)
    return app_settings


def test_a_full_disk_is_503_and_the_service_recovers_when_space_returns(
    client: TestClient, add_line_with_camera: Callable[..., str], small_disk: Path
) -> None:
    key = add_line_with_camera("line-1")
    filler = small_disk / "filler"
    filler.write_bytes(os.urandom(FILLER_BYTES))
    store: ImageStore = client.app.state.image_store  # type: ignore[attr-defined]
    engine = client.app.state.engine  # type: ignore[attr-defined]

    accepted: dict[int, str] = {}
    refused = 0
    for seed in range(200):  # ~40 images fit in the whole disk: the loop ends long before
        answer = post_raw(client, key, noisy_png(seed), content_type="image/png")
        assert answer.status_code in (201, 503), answer.text
        if answer.status_code == 201:
            accepted[answer.json()["inspection_id"]] = answer.json()["image_sha256"]
            continue
        refused += 1
        assert answer.headers["Retry-After"]
        assert "disk" in answer.json()["detail"]
        assert str(small_disk) not in answer.text  # the server's folders stay its own
        if refused == 3:
            break
    assert accepted and refused == 3, "the disk never filled up"

    with Session(engine) as session:
        rows = {row.id: row.image_sha256 for row in session.exec(select(Inspection))}
    assert rows == accepted  # a row for every 201, none for a 503
    assert all(store.get(sha) for sha in rows.values())  # every row has its image
    assert not list(small_disk.rglob(".tmp-*"))  # no half-written file left

    filler.unlink()  # space returns
    # A refused commit (the database's disk full) leaves its image an orphan: the sweep's
    # (which records what it removed, so it needs room itself).
    later = utcnow() + timedelta(hours=2)
    sweep_images(engine, store, RetentionPolicy.from_settings(Settings()), now=later)
    assert sorted(store.stored()) == sorted(accepted.values())
    again = post_raw(client, key, noisy_png(1000), content_type="image/png")
    assert again.status_code == 201, again.text
    assert store.exists(again.json()["image_sha256"])


def test_a_database_that_cannot_grow_is_503_and_no_row(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """SQLite's "database or disk is full", made exactly with ``max_page_count`` (no root
    needed): the commit is refused, the camera is told 503, and no row is left."""
    from sqlalchemy import event

    from inspect_app.accounts import add_camera_key
    from inspect_app.api.app import create_app
    from inspect_app.lines import add_line

    settings = Settings(
        data_dir=tmp_path / "service", weights=tiny_checkpoint, cameras=[], demo=False
    )
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        with Session(engine) as db:
            add_line(db, "line-1", "shadow")
            key = add_camera_key(db, "line-1")
        assert post_raw(client, key, noisy_png(0), content_type="image/png").status_code == 201
        with engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

        def cannot_grow(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

        event.listen(engine, "connect", cannot_grow)
        engine.dispose()  # every connection from now on has the limit
        statuses = []
        for seed in range(1, 40):
            answer = post_raw(client, key, noisy_png(seed), content_type="image/png")
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.headers["Retry-After"]
                assert "cannot store inspections" in answer.json()["detail"]
                break
        assert set(statuses) <= {201, 503} and statuses[-1] == 503
        with Session(engine) as db:
            rows = db.exec(select(Inspection)).all()
        assert len(rows) == statuses.count(201) + 1

        event.remove(engine, "connect", cannot_grow)
        engine.dispose()
        answer = post_raw(client, key, noisy_png(1000), content_type="image/png")
        assert answer.status_code == 201, answer.text

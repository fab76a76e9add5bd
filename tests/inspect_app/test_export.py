"""Exporting a line's labeled parts as a dataset folder that `data.dataset` reads back."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from data.dataset import load_dataset
from inspect_app.accounts import add_user
from inspect_app.export import (
    MANIFEST_COLUMNS,
    ExportError,
    ExportRequest,
    export_to_folder,
    stream_export_tar,
)
from inspect_app.lines import LineNotFound, add_line
from inspect_app.review_queue import relabel
from inspect_app.storage.images import ImageStore, LocalImageStore
from inspect_app.storage.tables import Inspection, User
from inspect_app.timeutil import utcnow

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
LABELS = ["ok", "scratch", "ok", "crack", None, "pit", "ok", "scratch"]


@pytest.fixture
def world(
    session: Session, tmp_path: Path, add_plant_parts: Callable[..., list[int]]
) -> tuple[ImageStore, User, list[int]]:
    store = LocalImageStore(tmp_path / "images")
    add_line(session, "line-1")
    add_line(session, "line-2")
    inspector = add_user(session, "ina", "inspector", "a long test password")
    assert inspector.id is not None
    ids = add_plant_parts(session, store, "line-1", LABELS, user_id=inspector.id, start=START)
    # another line's parts never leak into line-1's export
    add_plant_parts(session, store, "line-2", ["ok"], user_id=inspector.id, start=START, seed=99)
    return store, inspector, ids


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_export_round_trips_through_the_dataset_loader(
    session: Session, tmp_path: Path, world: tuple[ImageStore, User, list[int]]
) -> None:
    store, _, ids = world
    out = tmp_path / "export"
    summary = export_to_folder(session, store, ExportRequest("line-1"), out)

    items = load_dataset(out)
    rows = {int(r["inspection_id"]): r for r in _manifest(out)}
    labeled = {i: lab for i, lab in zip(ids, LABELS, strict=True) if lab is not None}
    assert {int(r["inspection_id"]): r["class"] for r in rows.values()} == labeled
    assert len(items) == len(labeled)
    for item in items:  # same image bytes as the store, under the folder of its label
        row = next(r for r in rows.values() if out / r["file"] == item.path)
        assert item.label == row["class"] == item.path.parent.name
        assert item.path.read_bytes() == store.get(row["image_sha256"])
    assert list(rows[ids[0]].keys()) == list(MANIFEST_COLUMNS)
    first = rows[ids[0]]
    assert first["labeled_by"] == "ina" and first["blind"] == "true"
    assert first["label_route"] == "review" and first["relabeled"] == "false"
    assert first["model_version"] == "defect-cnn-tiny-test" and first["predicted_class"] == "ok"
    assert datetime.fromisoformat(first["received_at"]) == START
    assert float(first["brightness"]) == 138.0
    # the unlabeled part is kept aside, listed, never in the manifest
    unlabeled = list(csv.DictReader((out / "unlabeled.csv").open()))
    assert [int(r["inspection_id"]) for r in unlabeled] == [ids[4]]
    assert (out / unlabeled[0]["file"]).is_file()
    assert summary.per_class == {"ok": 3, "scratch": 2, "crack": 1, "pit": 1}
    assert summary.labelers == {"ina": 7} and summary.unlabeled == 1 and not summary.missing
    recorded = json.loads((out / "export.json").read_text())
    assert recorded["manifest_sha256"] == summary.manifest_sha256
    assert recorded["request"]["line"] == "line-1"


def test_labeled_only_and_the_time_window(
    session: Session, tmp_path: Path, world: tuple[ImageStore, User, list[int]]
) -> None:
    store, _, ids = world
    request = ExportRequest(
        "line-1",
        since=START + timedelta(minutes=2),
        until=START + timedelta(minutes=6),
        labeled_only=True,
    )
    summary = export_to_folder(session, store, request, tmp_path / "window")
    exported = [int(r["inspection_id"]) for r in _manifest(tmp_path / "window")]
    assert exported == [ids[2], ids[3], ids[5]]  # minute 4 is unlabeled: left out
    assert summary.unlabeled == 0
    assert _manifest(tmp_path / "window")[0]["file"].startswith("ok/")


def test_superseded_labels_are_excluded(
    session: Session, tmp_path: Path, world: tuple[ImageStore, User, list[int]]
) -> None:
    store, _, ids = world
    supervisor = add_user(session, "sam", "supervisor", "a long test password")
    relabel(session, ids[1], supervisor, "crack")  # was scratch
    export_to_folder(session, store, ExportRequest("line-1"), tmp_path / "relabeled")
    rows = {int(r["inspection_id"]): r for r in _manifest(tmp_path / "relabeled")}
    assert rows[ids[1]]["class"] == "crack" and rows[ids[1]]["file"].startswith("crack/")
    assert rows[ids[1]]["labeled_by"] == "sam" and rows[ids[1]]["relabeled"] == "true"
    assert rows[ids[1]]["labels_given"] == "2"
    assert rows[ids[0]]["relabeled"] == "false"
    assert len(rows) == 7  # one row per part, not one per label
    assert not list((tmp_path / "relabeled" / "scratch").glob(f"line-1-{ids[1]}.*"))


def test_a_removed_image_is_listed_as_missing(
    session: Session, tmp_path: Path, world: tuple[ImageStore, User, list[int]]
) -> None:
    store, _, ids = world
    removed = session.get(Inspection, ids[3])
    lost = session.get(Inspection, ids[5])
    assert removed is not None and lost is not None
    store.path(removed.image_sha256).unlink()  # what the retention sweep does
    removed.image_removed_at = utcnow()
    store.path(lost.image_sha256).unlink()  # gone without the sweep: data loss
    session.add(removed)
    session.commit()

    summary = export_to_folder(session, store, ExportRequest("line-1"), tmp_path / "gaps")
    load_dataset(tmp_path / "gaps")  # the manifest still loads
    exported = {int(r["inspection_id"]) for r in _manifest(tmp_path / "gaps")}
    assert ids[3] not in exported and ids[5] not in exported
    missing = list(csv.DictReader((tmp_path / "gaps" / "missing.csv").open()))
    reasons = {int(r["inspection_id"]): (r["class"], r["missing_reason"]) for r in missing}
    assert reasons[ids[3]][0] == "crack" and reasons[ids[3]][1].startswith("removed by retention")
    assert reasons[ids[5]][0] == "pit" and reasons[ids[5]][1].startswith("lost")
    assert [m["inspection_id"] for m in summary.missing] == [ids[3], ids[5]]
    assert any("missing images: 2 (1 removed by retention, 1 lost)" in x for x in summary.lines())


def test_bad_requests_are_refused_before_writing(
    session: Session, tmp_path: Path, world: tuple[ImageStore, User, list[int]]
) -> None:
    store, _, _ = world
    with pytest.raises(LineNotFound):
        export_to_folder(session, store, ExportRequest("line-9"), tmp_path / "a")
    with pytest.raises(ExportError, match="until must be after since"):
        export_to_folder(session, store, ExportRequest("line-1", START, START), tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "old.txt").write_text("someone's files")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_to_folder(session, store, ExportRequest("line-1"), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_tar_stream_holds_the_same_layout(
    session: Session, tmp_path: Path, world: tuple[ImageStore, User, list[int]]
) -> None:
    import io
    import tarfile

    store, _, _ = world
    engine = session.get_bind()
    data = b"".join(stream_export_tar(engine, store, ExportRequest("line-1")))  # type: ignore[arg-type]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    root = tmp_path / "unpacked" / "line-1-export"
    assert len(load_dataset(root)) == 7
    export_to_folder(session, store, ExportRequest("line-1"), tmp_path / "folder")
    folder = tmp_path / "folder"
    assert (root / "manifest.csv").read_bytes() == (folder / "manifest.csv").read_bytes()

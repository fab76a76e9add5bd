"""Batch inspection of a folder: one row per image file, broken images as error rows, other
files skipped and counted, never a crash."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inspect_app.batch import run_batch_inspection
from inspect_app.domain import CLASS_NAMES


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "line-a" / "day2").mkdir(parents=True)
    for i in range(3):
        image = rng.integers(0, 256, (60 + i, 70, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "line-a" / f"img_{i}.png"), image)
    ok, jpeg = cv2.imencode(".jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert ok
    (root / "line-a" / "day2" / "good.jpg").write_bytes(jpeg.tobytes())
    (root / "line-a" / "day2" / "cut_off.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (root / "notes.txt").write_text("not an image\n")
    (root / "README.md").write_text("# what these are\n")
    (root / "empty.png").write_bytes(b"")
    (root / "line-a" / "frame-0042").write_bytes(jpeg.tobytes())  # a camera's unnamed file
    (root / "renamed.txt").write_bytes(jpeg.tobytes()[:100])  # starts as a JPEG: a broken one


def test_every_file_gets_one_row(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "in"
    _folder(root)
    out = tmp_path / "results.csv"
    summary = run_batch_inspection(root, out, checkpoint=tiny_checkpoint, batch_size=2)

    rows = list(csv.DictReader(out.open()))
    files = [r["file"] for r in rows]
    assert files == sorted(files)
    assert files == [
        "empty.png",
        "line-a/day2/cut_off.jpg",
        "line-a/day2/good.jpg",
        "line-a/frame-0042",
        "line-a/img_0.png",
        "line-a/img_1.png",
        "line-a/img_2.png",
        "renamed.txt",
    ]  # not notes.txt, README.md: not images by name or by their bytes
    by_file = {r["file"]: r for r in rows}
    assert "truncated JPEG" in by_file["line-a/day2/cut_off.jpg"]["error"]
    assert "corrupt JPEG" in by_file["renamed.txt"]["error"]
    assert by_file["empty.png"]["error"]
    for name in ("line-a/day2/good.jpg", "line-a/img_0.png", "line-a/frame-0042"):
        row = by_file[name]
        assert row["error"] == ""
        assert row["predicted_class"] in CLASS_NAMES
        probs = [float(row[f"p_{c}"]) for c in CLASS_NAMES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert float(row["p_defect"]) == pytest.approx(1 - float(row["p_ok"]), abs=1e-5)
        # the tiny random model is never confident, so a partial line would ask a human
        assert row["decision_if_automated"] == "pending"
        assert row["model_version"] == "defect-cnn-tiny-test"
    for name in ("renamed.txt", "empty.png"):
        assert by_file[name]["predicted_class"] == ""
    assert (summary.files, summary.inspected, summary.errors, summary.skipped) == (8, 5, 3, 2)
    assert summary.decisions == {"pending": 5}


def test_a_missing_folder_is_an_error(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(NotADirectoryError):
        run_batch_inspection(tmp_path / "absent", tmp_path / "r.csv", checkpoint=tiny_checkpoint)

"""The loader: both layouts, and a clear refusal for every kind of bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.dataset import DatasetError, LabeledImage, load_dataset
from data.synth import generate_dataset
from inspect_app.domain import DEFECT_CLASSES
from inspect_app.settings import SAMPLES_DIR


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), np.full((8, 8, 3), 127, np.uint8))
    assert ok, path
    return path


def _csv(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text(text, encoding="utf-8")
    return root


def test_generated_manifest_loads_with_labels_and_boxes(tmp_path: Path) -> None:
    generate_dataset(tmp_path, n=6, seed=5)
    items = load_dataset(tmp_path)
    assert len(items) == 6
    assert [i.path.as_posix() for i in items] == sorted(i.path.as_posix() for i in items)
    for item in items:
        assert item.path.is_file()
        assert item.path.parent.name == item.label
        assert (item.boxes == ()) == (item.label == "ok")
        assert all(isinstance(b, tuple) and len(b) == 4 for b in item.boxes)


def test_plant_manifest_with_only_file_and_class(tmp_path: Path) -> None:
    _image(tmp_path / "imgs" / "a.jpg")
    _image(tmp_path / "imgs" / "b.png")
    _csv(tmp_path, "file,class\r\nimgs/b.png, Scratch \r\nimgs/a.jpg,OK\r\n\r\n")
    items = load_dataset(tmp_path)
    assert items == [
        LabeledImage(tmp_path / "imgs" / "a.jpg", "ok"),
        LabeledImage(tmp_path / "imgs" / "b.png", "scratch"),
    ]


def test_manifest_with_byte_order_mark_and_windows_paths(tmp_path: Path) -> None:
    _image(tmp_path / "pit" / "x.bmp")
    (tmp_path / "manifest.csv").write_bytes(
        b'\xef\xbb\xbffile,class,boxes\npit\\x.bmp,pit,"[[1, 2, 5, 6]]"\n'
    )
    (item,) = load_dataset(tmp_path)
    assert item.path == tmp_path / "pit" / "x.bmp"
    assert item.boxes == ((1, 2, 5, 6),)


def test_manifest_wins_over_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "ok" / "listed.png")
    _image(tmp_path / "ok" / "unlisted.png")
    _csv(tmp_path, "file,class\nok/listed.png,ok\n")
    assert [i.path.name for i in load_dataset(tmp_path)] == ["listed.png"]


def test_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "ok" / "2.png")
    _image(tmp_path / "ok" / "1.JPG")
    _image(tmp_path / "crack" / "c.jpeg")
    _image(tmp_path / "pit" / "p.bmp")
    (tmp_path / "pit" / "notes.txt").write_text("not an image")
    (tmp_path / "README.md").write_text("loose files are not classes")
    _image(tmp_path / ".thumbnails" / "t.png")
    items = load_dataset(tmp_path)
    assert [(i.path.relative_to(tmp_path).as_posix(), i.label) for i in items] == [
        ("crack/c.jpeg", "crack"),
        ("ok/1.JPG", "ok"),
        ("ok/2.png", "ok"),
        ("pit/p.bmp", "pit"),
    ]
    assert all(i.boxes == () for i in items)


def test_committed_samples_hold_every_class() -> None:
    items = load_dataset(SAMPLES_DIR)
    counts = Counter(i.label for i in items)
    assert len(items) == 50
    assert counts["ok"] >= 1
    assert all(counts[c] >= 6 for c in DEFECT_CLASSES)
    assert all(i.boxes for i in items if i.label != "ok")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("file,class\na.png,dent\n", "line 2.*unknown class 'dent'"),
        ("file,class\nmissing.png,ok\n", "line 2.*not found.*missing.png"),
        ("file,label\na.png,ok\n", "missing column.*class"),
        ("file,class\na.png,ok,extra\n", "line 2.*malformed row"),
        ("file,class\na.png\n", "line 2.*malformed row"),
        ("file,class\n,ok\n", "line 2.*empty 'file'"),
        ("file,class\na.png,ok\na.png,ok\n", "line 3.*listed twice.*line 2"),
        ('file,class,boxes\na.png,pit,"[[1,2,3]"\n', "line 2.*not valid JSON"),
        ('file,class,boxes\na.png,pit,"[[5,2,3,4]]"\n', "line 2.*bad box"),
        ('file,class,boxes\na.png,pit,"{""x"": 1}"\n', "line 2.*JSON list"),
        ('file,class,boxes\na.png,ok,"[[1,2,3,4]]"\n', "line 2.*ok cannot have defect boxes"),
        ("file,class\n", "no labeled images"),
    ],
)
def test_bad_manifest_is_refused_with_where(tmp_path: Path, manifest: str, message: str) -> None:
    _image(tmp_path / "a.png")
    _csv(tmp_path, manifest)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_unknown_class_folder_is_refused(tmp_path: Path) -> None:
    _image(tmp_path / "ok" / "a.png")
    _image(tmp_path / "dents" / "b.png")
    with pytest.raises(DatasetError, match=r"dents.*unknown class"):
        load_dataset(tmp_path)


def test_empty_and_missing_datasets_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    with pytest.raises(DatasetError, match="no labeled images"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset folder"):
        load_dataset(tmp_path / "nowhere")


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)

"""The generator: determinism, the ok twin, the manifest, the knobs."""

from __future__ import annotations

import csv
import functools
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.synth import (
    IMAGE_SIZE,
    MANIFEST_COLUMNS,
    SynthConfig,
    class_schedule,
    generate_dataset,
    image_seeds,
    render_sample,
)
from inspect_app.domain import CLASS_NAMES, DEFECT_CLASSES
from inspect_app.settings import SAMPLES_DIR

SEEDS = (3, 17, 2024, 90210)


@functools.cache
def _twin_diff(seed: int, defect: str) -> tuple[np.ndarray, list[tuple[int, int, int, int]], int]:
    ok = render_sample(seed, "ok")
    bad = render_sample(seed, defect)
    diff = np.any(ok.image != bad.image, axis=2)
    return diff, bad.boxes, int(bad.params["blur_radius"])


def test_same_seed_gives_identical_image_and_params() -> None:
    a = render_sample(11, "crack")
    b = render_sample(11, "crack")
    assert a.image.tobytes() == b.image.tobytes()
    assert a.params == b.params
    assert a.boxes == b.boxes


def test_different_seeds_give_different_images() -> None:
    a = render_sample(11, "ok")
    b = render_sample(12, "ok")
    assert not np.array_equal(a.image, b.image)
    assert a.params != b.params


@pytest.mark.parametrize("label", CLASS_NAMES)
def test_sample_shape_label_and_params(label: str) -> None:
    sample = render_sample(5, label)
    assert sample.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert sample.image.dtype == np.uint8
    assert sample.label == label
    assert json.loads(json.dumps(sample.params)) == sample.params  # JSON round trip is lossless
    for key in ("model", "colour", "face", "angle_deg", "brightness", "blur_sigma", "read_noise"):
        assert key in sample.params
    if label == "ok":
        assert sample.boxes == []
        assert sample.params["severity"] is None
    else:
        assert sample.boxes
        assert 0.0 <= sample.params["severity"] <= 1.0
        for x0, y0, x1, y1 in sample.boxes:
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE


def test_scene_does_not_depend_on_the_class() -> None:
    scene_keys = lambda p: {k: v for k, v in p.items() if k not in ("severity", "defect")}  # noqa: E731
    params = [render_sample(42, c).params for c in CLASS_NAMES]
    assert all(scene_keys(p) == scene_keys(params[0]) for p in params)


@pytest.mark.parametrize("defect", DEFECT_CLASSES)
@pytest.mark.parametrize("seed", SEEDS)
def test_ok_twin_differs_only_inside_the_boxes(defect: str, seed: int) -> None:
    diff, boxes, _ = _twin_diff(seed, defect)
    assert diff.any(), "the defect left no trace"
    inside = np.zeros_like(diff)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    outside = np.argwhere(diff & ~inside)
    assert outside.size == 0, (
        f"pixels changed outside every box, e.g. (y, x) {outside[:3].tolist()}"
    )


@pytest.mark.parametrize("defect", DEFECT_CLASSES)
@pytest.mark.parametrize("seed", SEEDS)
def test_boxes_are_tight(defect: str, seed: int) -> None:
    """Each box holds changed pixels, which reach to within the blur radius of its every edge."""
    diff, boxes, blur_radius = _twin_diff(seed, defect)
    slack = blur_radius + 2  # the blur's faint tail rounds away; a pixel of anti-aliasing
    for x0, y0, x1, y1 in boxes:
        ys, xs = np.nonzero(diff[y0:y1, x0:x1])
        assert ys.size, f"box {(x0, y0, x1, y1)} holds no change"
        assert xs.min() <= slack and ys.min() <= slack
        assert (x1 - x0 - 1) - xs.max() <= slack and (y1 - y0 - 1) - ys.max() <= slack


def test_severity_follows_the_faint_share() -> None:
    faint = SynthConfig(faint_share=1.0)
    strong = SynthConfig(faint_share=0.0)
    for seed in range(4):
        assert render_sample(seed, "pit", faint).params["severity"] <= faint.faint_severity[1]
        assert render_sample(seed, "pit", strong).params["severity"] >= strong.strong_severity[0]


def test_contrast_scale_makes_defects_fainter() -> None:
    ok = render_sample(8, "ok").image.astype(int)
    full = np.abs(render_sample(8, "scratch").image.astype(int) - ok).sum()
    faint = np.abs(render_sample(8, "scratch", SynthConfig(contrast_scale=0.3)).image - ok).sum()
    assert 0 < faint < full


@pytest.mark.parametrize(
    "kwargs",
    [
        {"class_mix": {"ok": 1.0, "dent": 1.0}},
        {"class_mix": {"ok": 0.0}},
        {"faint_share": 1.5},
        {"blur_sigma": (1.0, 0.5)},
        {"strong_severity": (0.5, 1.5)},
        {"contrast_scale": 0.0},
        {"phone_height_frac": (0.7, 0.95)},
    ],
)
def test_config_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**kwargs)


def test_render_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown defect class"):
        render_sample(1, "dent")
    with pytest.raises(ValueError, match="non-negative"):
        render_sample(-1, "ok")


def test_class_schedule_has_exact_proportions() -> None:
    counts = Counter(class_schedule(50, 90210, SynthConfig().class_mix))
    assert sum(counts.values()) == 50
    assert counts["ok"] == 20
    assert all(7 <= counts[c] <= 8 for c in DEFECT_CLASSES)


def test_image_seeds_are_disjoint_across_dataset_seeds_and_extend() -> None:
    assert not set(image_seeds(200, 1)) & set(image_seeds(200, 2))
    assert image_seeds(5, 1) == image_seeds(10, 1)[:5]
    assert len(set(image_seeds(200, 1))) == 200


def test_generate_dataset_writes_files_matching_the_manifest(tmp_path: Path) -> None:
    out = tmp_path / "set"
    manifest = generate_dataset(out, n=10, seed=7)
    assert manifest == out / "manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert len(rows) == 10
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert sorted(r["file"] for r in rows) == written
    for index, row in enumerate(rows):
        cls = row["class"]
        assert row["file"] == f"{cls}/{cls}_{index:06d}.png"
        image = cv2.imread(str(out / row["file"]), cv2.IMREAD_COLOR)
        again = render_sample(int(row["seed"]), cls)  # the row says how to make the file again
        assert np.array_equal(image, again.image)
        assert json.loads(row["boxes"]) == [list(b) for b in again.boxes]
        assert json.loads(row["params"]) == again.params


def test_generate_dataset_refuses_to_mix_with_an_existing_dataset(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("a note may stay")
    generate_dataset(tmp_path, n=1, seed=1)
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        generate_dataset(tmp_path, n=1, seed=2)
    with pytest.raises(FileExistsError, match="not a folder"):
        generate_dataset(tmp_path / "README.md", n=1, seed=2)


def test_generate_dataset_other_formats_and_bad_format(tmp_path: Path) -> None:
    manifest = generate_dataset(tmp_path / "jpg", n=2, seed=3, image_format="jpg")
    files = [r["file"] for r in csv.DictReader(manifest.open(encoding="utf-8"))]
    assert all(f.endswith(".jpg") and (manifest.parent / f).is_file() for f in files)
    with pytest.raises(ValueError, match="image_format"):
        generate_dataset(tmp_path / "tif", n=1, seed=3, image_format="tif")


def test_datasets_with_different_seeds_share_no_image(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", n=3, seed=1)
    b = generate_dataset(tmp_path / "b", n=3, seed=2)
    seeds_a = {r["seed"] for r in csv.DictReader(a.open(encoding="utf-8"))}
    seeds_b = {r["seed"] for r in csv.DictReader(b.open(encoding="utf-8"))}
    assert not seeds_a & seeds_b


def test_committed_samples_are_what_the_documented_command_makes() -> None:
    """data/samples/README.md's command must still make the committed files.

    Pixels are compared loosely (mean difference under one grey level) so that a new OpenCV
    rounding an anti-aliased edge differently does not fail the suite; a change to the generator
    moves whole objects and fails it.
    """
    with (SAMPLES_DIR / "manifest.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows] == [str(s) for s in image_seeds(len(rows), 90210)]
    assert [r["class"] for r in rows] == class_schedule(len(rows), 90210, SynthConfig().class_mix)
    for row in rows[::10]:
        image = cv2.imread(str(SAMPLES_DIR / row["file"]), cv2.IMREAD_COLOR)
        again = render_sample(int(row["seed"]), row["class"])
        assert json.loads(row["params"]) == again.params
        assert np.abs(image.astype(np.int16) - again.image).mean() < 1.0, row["file"]

"""Model maintenance from the command line: `inspect-app export` a line's labels, then
`inspect-app train --init-from` a registered version on base + plant data, registered with
its lineage and started in shadow."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from sqlmodel import Session
from typer.testing import CliRunner

from inspect_app.accounts import add_user
from inspect_app.cli import app
from inspect_app.rollout.registry import get_version, register_model
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.tables import Deployment
from models.profile import profile_path

PARENT = "defect-cnn-tiny-test"
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
PLANT_LABELS = ["ok", "scratch"] * 30  # 60 labeled parts, a minute apart


@pytest.fixture
def plant(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_checkpoint: Path,
    add_plant_parts: Callable[..., list[int]],
    toy_png: Callable[..., bytes],
):  # type: ignore[no-untyped-def]
    """A plant's data folder: line-1, a supervisor and an inspector, the tiny model
    registered, 60 labeled parts with images; and a small base dataset folder."""
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    monkeypatch.setenv("INSPECT_WEIGHTS", str(tiny_checkpoint))
    torch.set_num_threads(1)
    data_dir = tmp_path / "var"
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
        assert result.exit_code == code, result.output
        return result.output

    invoke("lines", "add", "line-1")  # makes the database
    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as db:
        add_user(db, "sam", "supervisor", "a long test password")
        inspector = add_user(db, "ina", "inspector", "a long test password")
        register_model(db, tiny_checkpoint, data_dir, registered_by="system")
        add_plant_parts(
            db, LocalImageStore(settings.image_dir), "line-1", PLANT_LABELS,
            user_id=inspector.id, start=START, seed=1000,
        )  # fmt: skip
    base = tmp_path / "base"
    for label in ("ok", "scratch"):
        (base / label).mkdir(parents=True)
        for i in range(24):
            (base / label / f"{label}_{i:03d}.png").write_bytes(toy_png(label, i))
    invoke.engine = engine  # type: ignore[attr-defined]
    invoke.base = base  # type: ignore[attr-defined]
    yield invoke
    engine.dispose()


def test_export_then_fine_tune_register_and_shadow(plant, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    export = tmp_path / "export"
    summary = plant("export", "--line", "line-1", "--labeled-only", "--out", str(export))
    assert "labeled images: 60 (ok 30, scratch 30)" in summary
    assert "missing images: 0" in summary and "labelers: ina 60" in summary
    manifest_sha = json.loads((export / "export.json").read_text())["manifest_sha256"]

    out = tmp_path / "new" / "retrained.pt"
    output = plant(
        "train", "--init-from", PARENT, "--data", str(plant.base), "--data", str(export),
        "--out", str(out), "--epochs", "2", "--batch-size", "8", "--threads", "1",
        "--plant-weight", "2.5", "--data-seed", "7", "--shadow-on", "line-1", "--as", "sam",
    )  # fmt: skip
    assert "registered defect-cnn-" in output and f"parent {PARENT}" in output

    saved = torch.load(out, weights_only=True)
    version = saved["metrics"]["lineage"]
    with Session(plant.engine) as db:
        row = get_version(db, saved["version"])
        assert row.parent_version == PARENT and row.registered_by == "sam"
        lineage = row.lineage or {}
        assert lineage["exports"] == [{"path": str(export), "manifest_sha256": manifest_sha}]
        assert lineage["base_data_seed"] == 7 and lineage["plant_weight"] == 2.5
        assert lineage["distill_weight"] == 1.0 and "base data" in lineage["class_mix"]
        assert lineage["parent_version"] == PARENT and version["parent_version"] == PARENT
        deployment = db.get(Deployment, "line-1")
        assert deployment is not None
        assert deployment.candidate == row.version and deployment.mode == "shadow"
    # the card's figures: the whole validation split, the plant's newest parts and the base
    # data's validation images on their own
    subsets = saved["metrics"]["validation_subsets"]
    ((name, figures),) = [(k, v) for k, v in subsets.items() if str(export) in k]
    assert "received_at" in name and figures["n"] >= 1
    ((base_name, base_figures),) = [(k, v) for k, v in subsets.items() if str(plant.base) in k]
    assert "stratified" in base_name and base_figures["n"] >= 1
    # validation (early stopping, the card) and calibration (the temperature, the profile)
    # hold both distributions, base and plant
    by_source = saved["metrics"]["splits_by_source"]
    assert set(by_source) == {str(plant.base), str(export)}
    assert all(n["val"] >= 1 and n["calib"] >= 1 and n["train"] >= 1 for n in by_source.values())
    assert saved["metrics"]["train_config"]["keep_prior"] is True  # the default
    # rehearsal by default with an export: 3 of every 4 images of a batch are base images
    assert saved["metrics"]["train_config"]["base_share"] == 0.75 == lineage["base_share"]
    card = out.with_suffix(".md").read_text()
    assert "newest" in card and PARENT in card and manifest_sha in card
    assert profile_path(out).is_file()  # recomputed on the new training distribution
    assert row.profile_sha256 is not None


def test_refusals_come_before_training(plant, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "never.pt"
    base = str(plant.base)
    unknown = plant("train", "--init-from", "no-such-version", "--data", base, "--out", str(out),
                    code=1)  # fmt: skip
    assert "no-such-version" in unknown
    inspector = plant("train", "--data", base, "--out", str(out), "--register", "--as", "ina",
                      code=1)  # fmt: skip
    assert "supervisors" in inspector
    no_line = plant("train", "--data", base, "--out", str(out), "--shadow-on", "line-9",
                    code=1)  # fmt: skip
    assert "line-9" in no_line
    share = plant("train", "--data", base, "--out", str(out), "--base-share", "1", code=2)
    assert "--base-share" in share and "below 1" in " ".join(share.replace("│", " ").split())
    assert not out.exists()


def test_a_small_data_set_is_refused_before_any_image_is_loaded(  # type: ignore[no-untyped-def]
    plant, tmp_path: Path, toy_png: Callable[..., bytes]
) -> None:
    """The reference profile needs 10 calibration images: a first small export (60 parts
    here, 6 of them calibration) with a small base set fails at once, saying so."""
    export = tmp_path / "export"
    plant("export", "--line", "line-1", "--labeled-only", "--out", str(export))
    small = tmp_path / "small-base"
    for label in ("ok", "scratch"):
        (small / label).mkdir(parents=True)
        for i in range(5):
            (small / label / f"{label}_{i}.png").write_bytes(toy_png(label, i))
    out = tmp_path / "never.pt"
    refused = plant(
        "train", "--init-from", PARENT, "--data", str(small), "--data", str(export),
        "--out", str(out), "--epochs", "1", "--threads", "1", code=2,
    )  # fmt: skip
    said = " ".join(refused.replace("│", " ").split())  # typer's error box, unwrapped
    assert "too few images" in said and "at least 2, 1 and 10" in said
    assert "reference profile" in said
    assert not out.exists()

"""The checkpoint file: round trip, and clear refusals of files that are not ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inspect_app.domain import CLASS_NAMES
from models.checkpoint import CheckpointError, load_checkpoint, make_version, save_checkpoint
from models.defect_cnn import DefectCNNConfig, build_model
from models.preprocess import Preprocessing

PREP = Preprocessing(input_size=64, mean=(0.4, 0.45, 0.5), std=(0.2, 0.21, 0.22))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _save(
    path: Path, *, class_names: tuple[str, ...] = CLASS_NAMES, seed: int = 0
) -> torch.nn.Module:
    config = DefectCNNConfig(width_mult=0.1)
    torch.manual_seed(seed)
    model = build_model(config)
    # move batch-norm statistics off their defaults so a lost buffer would show in the outputs
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))
    model.eval()
    save_checkpoint(
        path, model, config=config, class_names=class_names, preprocessing=PREP,
        temperature=1.7, metrics={"binary_accuracy": 0.97, "per_class": {"ok": {"recall": 1.0}}},
        data_seed=11,
    )  # fmt: skip
    return model


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    model = _save(path)
    loaded = load_checkpoint(path)
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.class_names == CLASS_NAMES
    assert loaded.preprocessing == PREP
    assert loaded.temperature == pytest.approx(1.7)
    assert loaded.metrics["per_class"]["ok"]["recall"] == 1.0
    assert loaded.data_seed == 11
    assert loaded.config == DefectCNNConfig(width_mult=0.1)
    assert not loaded.model.training


def test_version_names_the_weights(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    _save(a, seed=0)
    _save(b, seed=1)
    va, vb = load_checkpoint(a).version, load_checkpoint(b).version
    assert va.startswith("defect-cnn-") and vb.startswith("defect-cnn-")
    assert va != vb  # different weights, different version
    model = load_checkpoint(a).model
    assert make_version(model.state_dict()).split("-")[-1] == va.split("-")[-1]


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    path.write_bytes(b"definitely not a model")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_bare_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(build_model(DefectCNNConfig(width_mult=0.1)).state_dict(), path)
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(path)


def test_other_class_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _save(path, class_names=("ok", "dent", "crack", "pit", "discoloration"))
    with pytest.raises(CheckpointError, match="predicts classes"):
        load_checkpoint(path)
    assert load_checkpoint(path, expected_class_names=None).class_names[1] == "dent"


def test_foreign_dict_and_missing_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"model": "something else", "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not a defect-model checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _save(path)
    raw = torch.load(path, weights_only=True)
    raw["config"]["width_mult"] = 0.5
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "x", "obj": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)

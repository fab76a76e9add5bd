"""The evaluation figures on hand-made predictions with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.evaluate import evaluate_probabilities


def _onehot(cls: int, p: float) -> list[float]:
    rest = (1 - p) / 4
    return [p if i == cls else rest for i in range(5)]


def test_binary_figures_and_confident_share() -> None:
    probs = np.array(
        [
            _onehot(0, 0.99),  # ok, right, confident
            _onehot(0, 0.99),  # ok, right, confident
            _onehot(1, 0.60),  # ok called scratch: a false reject, not confident
            _onehot(1, 0.99),  # scratch, right, confident
            _onehot(2, 0.97),  # scratch called crack: binary right, class wrong, confident
            _onehot(0, 0.96),  # pit called ok: an escape, confident
        ]
    )
    labels = np.array([0, 0, 0, 1, 1, 3])
    r = evaluate_probabilities(probs, labels)
    assert r.n == 6
    assert r.accuracy == pytest.approx(3 / 6)
    assert r.binary_accuracy == pytest.approx(4 / 6)
    assert r.defect_recall == pytest.approx(2 / 3)
    assert r.false_reject_rate == pytest.approx(1 / 3)
    assert r.confident_count == 5
    assert r.confident_share == pytest.approx(5 / 6)
    assert r.confident_binary_errors == 1
    assert r.confident_binary_error == pytest.approx(1 / 5)
    assert r.per_class["scratch"].precision == pytest.approx(1 / 2)
    assert r.per_class["scratch"].recall == pytest.approx(1 / 2)
    assert r.per_class["discoloration"].recall is None  # no such images
    assert r.confusion[3][0] == 1
    lo, hi = r.binary_accuracy_ci95
    assert lo < 4 / 6 < hi
    assert "defect recall" in r.summary()
    assert r.to_dict()["per_class"]["ok"]["support"] == 3


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        evaluate_probabilities(np.zeros((3, 4)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError):
        evaluate_probabilities(np.zeros((0, 5)), np.zeros(0, dtype=int))


def test_evaluate_command_prints_and_writes_the_figures(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    import json

    import cv2
    from typer.testing import CliRunner

    from inspect_app.cli import app

    rng = np.random.default_rng(0)
    for cls in ("ok", "pit"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / "set" / cls / f"{i}.png"), image)
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--data", str(tmp_path / "set"), "--checkpoint", str(tiny_checkpoint),
         "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "binary accuracy" in result.output and "defect recall" in result.output
    figures = json.loads(out.read_text())
    assert figures["n"] == 6 and figures["model_version"] == "defect-cnn-tiny-test"
    assert set(figures["per_class"]) == {"ok", "scratch", "crack", "pit", "discoloration"}

"""The predictor as the service uses it, on the tiny test checkpoint."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from inspect_app.domain import CLASS_NAMES
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.predictor import Predictor


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (100, 80), (37, 120)]
    return [rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8) for i in range(n)]


def test_predictions_are_calibrated_distributions(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    assert predictor.class_names == CLASS_NAMES
    assert predictor.input_size == 64
    predictions = predictor.predict(_images(5))
    assert len(predictions) == 5
    for p in predictions:
        assert list(p.probabilities) == list(CLASS_NAMES)
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
        assert p.model_version == predictor.version
        assert p.heatmap is None
    assert predictor.predict([]) == []


def test_predict_tensor_matches_predict(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    images = _images(4)
    probs = predictor.predict_tensor(predictor.preprocess(images))
    assert probs.shape == (4, len(CLASS_NAMES))
    listed = [[p.probabilities[c] for c in CLASS_NAMES] for p in predictor.predict(images)]
    assert np.allclose(probs, listed)


def test_temperature_is_applied(tiny_checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(tiny_checkpoint)
    hot = tmp_path / "hot.pt"
    save_checkpoint(
        hot, loaded.model, config=loaded.config, class_names=loaded.class_names,
        preprocessing=loaded.preprocessing, temperature=4.0, metrics={}, data_seed=None,
    )  # fmt: skip
    x = Predictor.from_checkpoint(tiny_checkpoint).preprocess(_images(3))
    with torch.inference_mode():
        logits = loaded.model(x).double()
    expected = torch.softmax(logits / 4.0, dim=1).numpy()
    assert np.allclose(Predictor.from_checkpoint(hot).predict_tensor(x), expected)


def test_heatmaps_come_at_each_images_size(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    images = _images(3)
    with_maps = predictor.predict(images, heatmap=True)
    without = predictor.predict(images)
    for image, p, q in zip(images, with_maps, without, strict=True):
        assert p.heatmap is not None
        assert p.heatmap.shape == image.shape[:2] and p.heatmap.dtype == np.float32
        assert p.heatmap.min() >= 0.0 and p.heatmap.max() <= 1.0
        assert p.probabilities == pytest.approx(q.probabilities)


def test_concurrent_calls_give_the_same_answers(tiny_checkpoint: Path) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    batches = [_images(3, seed=s) for s in range(8)]
    sequential = [predictor.predict(b, heatmap=s % 2 == 0) for s, b in enumerate(batches)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(predictor.predict, b, heatmap=s % 2 == 0) for s, b in enumerate(batches)
        ]
        concurrent = [f.result() for f in futures]
    for seq, con in zip(sequential, concurrent, strict=True):
        for a, b in zip(seq, con, strict=True):
            assert a.probabilities == pytest.approx(b.probabilities)
            if a.heatmap is not None:
                assert np.allclose(a.heatmap, b.heatmap)


def test_other_class_names_are_an_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(tiny_checkpoint)
    other = tmp_path / "other.pt"
    save_checkpoint(
        other, loaded.model, config=loaded.config,
        class_names=("ok", "scratch", "crack", "dent", "discoloration"),
        preprocessing=loaded.preprocessing, temperature=1.0, metrics={}, data_seed=None,
    )  # fmt: skip
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(other)


def test_embeddings_come_from_the_same_pass_with_or_without_heatmaps(
    tiny_checkpoint: Path,
) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    images = _images(4)
    plain, embeddings = predictor.predict_with_embeddings(images)
    mapped, mapped_embeddings = predictor.predict_with_embeddings(images, heatmap=True)
    assert embeddings.shape == (4, predictor._model.embedding_size)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(mapped_embeddings, embeddings, rtol=1e-5, atol=1e-6)
    for a, b in zip(plain, mapped, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities)
    assert [p.probabilities for p in predictor.predict(images)] == [p.probabilities for p in plain]
    # one image's embedding does not depend on its batch-mates (eval-mode batch norm)
    alone = predictor.predict_with_embeddings(images[1:2])[1]
    np.testing.assert_allclose(alone[0], embeddings[1], rtol=1e-4, atol=1e-5)
    empty, none = predictor.predict_with_embeddings([])
    assert empty == [] and none.shape == (0, embeddings.shape[1])

"""The serving runtime: the ONNX export of a checkpoint answers as torch does (the parity
check says by how much), a graph that answers otherwise is refused and torch serves, and the
heatmap keeps working under ONNX Runtime."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.onnx_export import (
    PARITY_IMAGES,
    PARITY_TOLERANCE,
    OnnxExportError,
    export_checked,
    onnx_path,
    parity_images,
    read_export,
    record_path,
    write_export,
)
from models.onnx_predictor import OnnxPredictor
from models.predictor import Predictor
from models.runtime import load_predictor


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (100, 80), (37, 120)]
    return [rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8) for i in range(n)]


def _probabilities(predictions: list) -> np.ndarray:
    return np.array([list(p.probabilities.values()) for p in predictions])


def test_the_export_beside_a_checkpoint_states_its_parity_figure(tiny_checkpoint: Path) -> None:
    found = read_export(tiny_checkpoint)  # written by the session fixture, as at build
    assert found is not None
    graph, record = found
    assert graph is not None and record.accepted
    assert record.model_version == "defect-cnn-tiny-test"
    assert record.parity is not None
    assert record.parity.max_abs_diff <= PARITY_TOLERANCE
    assert record.parity.n_images == PARITY_IMAGES
    assert "seed" in record.parity.images and record.runtime["onnxruntime"]
    on_disk = json.loads(record_path(tiny_checkpoint).read_text())
    assert on_disk["parity"]["max_abs_diff"] == record.parity.max_abs_diff


def test_onnx_runtime_answers_as_torch_at_any_batch_size(tiny_checkpoint: Path) -> None:
    served = load_predictor(tiny_checkpoint)
    assert isinstance(served, OnnxPredictor) and served.runtime == "onnxruntime"
    reference = Predictor.from_checkpoint(tiny_checkpoint)
    assert (served.version, served.class_names, served.input_size, served.temperature) == (
        reference.version,
        reference.class_names,
        reference.input_size,
        reference.temperature,
    )
    for n in (1, 3, 7):  # the graph's batch dimension is dynamic
        images = _images(n, seed=n)
        got, got_emb = served.predict_with_embeddings(images)
        want, want_emb = reference.predict_with_embeddings(images)
        assert [p.model_version for p in got] == [reference.version] * n
        np.testing.assert_allclose(_probabilities(got), _probabilities(want), atol=PARITY_TOLERANCE)
        assert got_emb.dtype == np.float32 and got_emb.shape == want_emb.shape
        np.testing.assert_allclose(got_emb, want_emb, atol=1e-4)
    assert served.predict([]) == []
    x = served.preprocess(_images(2))
    np.testing.assert_allclose(
        served.predict_tensor(x), reference.predict_tensor(x), atol=PARITY_TOLERANCE
    )


def test_the_heatmap_works_under_onnx_runtime(tiny_checkpoint: Path) -> None:
    served = load_predictor(tiny_checkpoint)
    assert isinstance(served, OnnxPredictor)
    images = _images(2)
    with_heat = served.predict(images, heatmap=True)
    for prediction, image in zip(with_heat, images, strict=True):
        assert prediction.heatmap is not None
        assert prediction.heatmap.shape == image.shape[:2]
        assert prediction.heatmap.min() >= 0.0 and prediction.heatmap.max() <= 1.0
    np.testing.assert_allclose(
        _probabilities(with_heat), _probabilities(served.predict(images)), atol=PARITY_TOLERANCE
    )


def test_a_graph_that_answers_otherwise_is_refused_and_torch_serves(
    tiny_checkpoint: Path,
    tiny_candidate: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = read_export(tiny_candidate)  # the graph of other weights
    assert found is not None and found[0] is not None
    path = tmp_path / "tiny.pt"
    shutil.copyfile(tiny_checkpoint, path)
    graph, record = export_checked(path, onnx_model=found[0])
    assert graph is None and not record.accepted
    assert record.parity is not None and record.parity.max_abs_diff > PARITY_TOLERANCE
    assert "above the limit" in record.reason
    write_export(path, graph, record)
    assert not onnx_path(path).exists()
    with caplog.at_level(logging.WARNING, logger="models.runtime"):
        served = load_predictor(path)
    assert isinstance(served, Predictor) and served.runtime == "torch"
    assert "served by torch" in caplog.text and "above the limit" in caplog.text


def test_a_broken_graph_or_a_tighter_tolerance_is_refused_with_its_reason(
    tiny_checkpoint: Path,
) -> None:
    graph, record = export_checked(tiny_checkpoint, onnx_model=b"not an onnx graph")
    assert graph is None and not record.accepted and record.parity is None
    assert "does not run" in record.reason
    found = read_export(tiny_checkpoint)
    assert found is not None
    images, source = parity_images()
    graph, record = export_checked(
        tiny_checkpoint, onnx_model=found[0], images=images[:4], images_source=source,
        tolerance=-1.0,  # injected: no difference is small enough
    )  # fmt: skip
    assert graph is None and not record.accepted and "above the limit" in record.reason


def test_an_export_made_for_other_bytes_is_not_trusted(
    tiny_checkpoint: Path, tiny_candidate: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.pt"
    shutil.copyfile(tiny_checkpoint, path)
    shutil.copyfile(record_path(tiny_candidate), record_path(path))
    shutil.copyfile(onnx_path(tiny_candidate), onnx_path(path))
    with pytest.raises(OnnxExportError, match="another checkpoint"):
        read_export(path)
    # serving does not use it: it exports and checks this checkpoint's own graph
    served = load_predictor(path)
    assert isinstance(served, OnnxPredictor)
    images = _images(3)
    np.testing.assert_allclose(
        _probabilities(served.predict(images)),
        _probabilities(Predictor.from_checkpoint(path).predict(images)),
        atol=PARITY_TOLERANCE,
    )


def test_torch_is_served_when_the_setting_asks(tiny_checkpoint: Path) -> None:
    assert load_predictor(tiny_checkpoint, runtime="torch").runtime == "torch"
    with pytest.raises(ValueError, match="unknown inference runtime"):
        load_predictor(tiny_checkpoint, runtime="tensorrt")

"""Inputs prepared one image at a time where the image is decoded give exactly what the
predictor gives for the images themselves, under both runtimes, and through the batcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from inspect_app.inference import MicroBatcher
from models.runtime import load_predictor


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    shapes = [(120, 160, 3), (48, 64, 3), (300, 200, 3), (64, 64)]  # the last one grey
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_prepared_inputs_predict_exactly_as_the_images(tiny_checkpoint: Path, runtime: str) -> None:
    predictor = load_predictor(tiny_checkpoint, runtime=runtime)
    images = _images()
    expected, expected_embeddings = predictor.predict_with_embeddings(images)
    prepared = [predictor.prepare(image) for image in images]
    assert all(x.shape == (3, predictor.input_size, predictor.input_size) for x in prepared)
    assert all(x.dtype == np.float32 and x.flags.c_contiguous for x in prepared)
    got, embeddings = predictor.predict_prepared(np.stack(prepared))
    assert [p.probabilities for p in got] == [p.probabilities for p in expected]
    assert np.array_equal(embeddings, expected_embeddings)

    batcher = MicroBatcher(predictor, max_batch=8, max_wait_ms=50)
    assert batcher.prepare_key == predictor.preprocessing
    batcher.start()
    try:

        async def both() -> list:
            return await asyncio.gather(
                *(batcher.predict(im, x) for im, x in zip(images, prepared, strict=True))
            )

        batched = asyncio.run(both())
    finally:
        batcher.stop()
    assert [b.prediction.probabilities for b in batched] == [p.probabilities for p in expected]

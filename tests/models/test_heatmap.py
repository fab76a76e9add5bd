"""The heatmap as an array and as an overlay, independent of the trained weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_checkpoint
from models.heatmap import heatmap, logits_and_heatmaps, overlay


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_heatmap_is_a_unit_map_at_input_size(tiny_checkpoint: Path) -> None:
    model = load_checkpoint(tiny_checkpoint).model
    x = torch.randn(2, 3, 64, 64)
    logits, maps = logits_and_heatmaps(model, x)
    assert logits.shape == (2, 5) and maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    single = heatmap(model, x[0])
    assert np.allclose(single, maps[0], atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(model(x), logits, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # the model is left untouched


def test_overlay_keeps_cold_pixels_and_colours_hot_ones() -> None:
    image = np.full((40, 50, 3), 100, np.uint8)
    heat = np.zeros((20, 25), np.float32)
    heat[5:10, 5:10] = 1.0
    out = overlay(image, heat, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[0, 40], image[0, 40])  # cold: the photo itself
    assert not np.array_equal(out[15, 15], image[15, 15])  # hot: tinted
    with pytest.raises(ValueError):
        overlay(image.astype(np.float32), heat)
    with pytest.raises(ValueError):
        overlay(image, heat, alpha=1.5)

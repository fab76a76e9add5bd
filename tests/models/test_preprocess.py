"""Decoded camera images -> model input, identical in training and serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.preprocess import Preprocessing, channel_stats, normalize, stack_uint8

PREP = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_any_size_and_channel_layout_becomes_a_square_rgb_batch() -> None:
    bgr = np.zeros((40, 60, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in BGR
    grey = np.full((10, 10), 128, np.uint8)
    bgra = np.zeros((32, 32, 4), np.uint8)
    x = stack_uint8([bgr, grey, bgra], 32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8
    assert x[0, 2].min() == 255 and x[0, 0].max() == 0  # blue ends up in the RGB blue channel
    assert torch.all(x[1] == 128)


def test_normalize_uses_the_stored_statistics() -> None:
    x = torch.full((1, 3, 4, 4), 191, dtype=torch.uint8)
    y = normalize(x, PREP)
    assert torch.allclose(y, torch.full_like(y, (191 / 255 - 0.5) / 0.25))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 2), np.uint8), np.zeros((0, 8, 3), np.uint8)],
)
def test_bad_images_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        stack_uint8([bad], 32)


def test_channel_stats_match_a_direct_computation() -> None:
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=2)
    ref = x.double() / 255
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).numpy())
    assert np.allclose(std, ref.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-6)


def test_preprocessing_round_trips_through_a_dict() -> None:
    assert Preprocessing.from_dict(PREP.to_dict()) == PREP
    with pytest.raises(ValueError):
        Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.0, 1.0, 1.0))

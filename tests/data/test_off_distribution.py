"""The off-distribution frames: deterministic, every source present, parts kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from data.off_distribution import PARTS, SOURCES, off_distribution_frames


@pytest.mark.parametrize("part", PARTS)
def test_every_source_gives_camera_like_frames(part: str) -> None:
    frames = off_distribution_frames(part, 1, seed=0)
    assert [f.source for f in frames] == list(SOURCES[part])
    for frame in frames:
        assert frame.image.dtype == np.uint8
        assert frame.image.ndim == 3 and frame.image.shape[2] == 3, frame.source
        assert frame.image.flags["C_CONTIGUOUS"], frame.source
    families = {f.family for f in frames}
    assert {"blank", "noise", "photo", "crop", "scene", "pose", "exposure", "focus"} <= families


def test_frames_are_deterministic_by_seed_and_independent_of_the_selection() -> None:
    sources = ("blank/dark", "noise/gaussian", "crop/corner", "photo/china")
    first = off_distribution_frames("tuning", 2, seed=7, sources=sources)
    again = off_distribution_frames("tuning", 2, seed=7, sources=sources)
    other = off_distribution_frames("tuning", 2, seed=8, sources=sources)
    alone = off_distribution_frames("tuning", 2, seed=7, sources=("crop/corner",))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    assert np.array_equal(alone[1].image, first[5].image)  # crop/corner's second frame
    assert not np.array_equal(first[0].image, first[1].image)  # frames of a source differ


def test_held_out_part_shares_no_source_with_tuning() -> None:
    tuning, held_out = set(SOURCES["tuning"]), set(SOURCES["held_out"])
    assert not tuning & held_out
    # every bundled matplotlib photo is held out; scikit-learn's china alone is for tuning
    assert {s for s in tuning if s.startswith("photo/")} == {"photo/china"}
    assert {"photo/grace_hopper", "photo/flower"} <= held_out


def test_blank_frames_are_what_they_say() -> None:
    black, white, grey = off_distribution_frames(
        "held_out", 1, seed=0, sources=("blank/black", "blank/white", "blank/grey")
    )
    assert black.image.max() == 0 and white.image.min() == 255
    assert grey.image.min() == grey.image.max()


def test_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="part must be one of"):
        off_distribution_frames("training", 1, seed=0)

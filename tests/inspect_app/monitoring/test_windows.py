from __future__ import annotations

import numpy as np
import pytest

from inspect_app.monitoring.drift import embedding_drift, input_drift
from inspect_app.monitoring.windows import CountWindow


def test_the_window_keeps_the_last_parts_only() -> None:
    window = CountWindow(3)
    for i in range(5):
        window.add(f"insp-{i}", {"brightness": float(i)})
    assert len(window) == 3 and window.full and window.seen == 5
    assert window.keys() == ["insp-2", "insp-3", "insp-4"]
    np.testing.assert_array_equal(window.metrics()["brightness"], [2.0, 3.0, 4.0])
    window.clear()
    assert len(window) == 0 and window.seen == 0 and not window.full


def test_missing_values_are_nan_and_parts_without_embeddings_are_left_out() -> None:
    window = CountWindow(4)
    window.add(1, {"brightness": 100.0, "sharpness": 50.0}, embedding=[0.0, 1.0])
    window.add(2, {"brightness": 90.0})  # the gate refused it: no embedding, no sharpness
    window.add(3, {"brightness": 95.0, "sharpness": 40.0}, embedding=[1.0, 0.0])
    values = window.metrics()
    np.testing.assert_array_equal(values["sharpness"], [50.0, np.nan, 40.0])
    keys, matrix = window.embeddings()
    assert keys == [1, 3]
    np.testing.assert_array_equal(matrix, [[0.0, 1.0], [1.0, 0.0]])
    window.add(4, {}, embedding=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="different sizes"):
        window.embeddings()


def test_an_empty_window_has_no_embeddings_and_size_must_be_positive() -> None:
    keys, matrix = CountWindow(2).embeddings()
    assert keys == [] and matrix.shape == (0, 0)
    with pytest.raises(ValueError):
        CountWindow(0)


def test_the_window_feeds_the_drift_tests_and_maps_images_back() -> None:
    rng = np.random.default_rng(0)
    reference = {"brightness": rng.normal(110.0, 10.0, 400)}
    window = CountWindow(40)
    for i in range(40):
        dark = i >= 20  # the lamp dimmed half-way through the window
        window.add(
            f"insp-{i}",
            {"brightness": (0.6 if dark else 1.0) * rng.normal(110.0, 10.0)},
            embedding=rng.normal(size=4) + (3.0 if dark else 0.0),
        )
    assert input_drift(reference, window.metrics()).drifted == ("brightness",)
    keys, matrix = window.embeddings()
    report = embedding_drift(rng.normal(size=(200, 4)), matrix, n_permutations=99)
    assert all(keys[i] >= "insp-20" for i in report.most_responsible)

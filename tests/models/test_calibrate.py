"""Temperature scaling and the calibration error, on toy logits with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibrate import (
    calibrated_probabilities,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def _calibrated_toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (calibrated at T = 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, 5))
    probs = calibrated_probabilities(logits, 1.0)
    labels = np.array([rng.choice(5, p=p) for p in probs])
    return logits, labels


def test_temperature_undoes_overconfidence() -> None:
    logits, labels = _calibrated_toy(4000, seed=0)
    overconfident = 3.0 * logits  # what a network trained too long looks like
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    before = negative_log_likelihood(overconfident, labels)
    after = negative_log_likelihood(overconfident, labels, t)
    assert after < before - 0.1
    ece_before = expected_calibration_error(calibrated_probabilities(overconfident, 1.0), labels)
    ece_after = expected_calibration_error(calibrated_probabilities(overconfident, t), labels)
    assert ece_after < ece_before / 2


def test_underconfidence_gives_temperature_below_one() -> None:
    logits, labels = _calibrated_toy(4000, seed=1)
    assert fit_temperature(0.5 * logits, labels) == pytest.approx(0.5, rel=0.15)


def test_ece_of_known_bins() -> None:
    # two bins: confidence 0.9 with 8/10 right (gap 0.1), confidence 0.6 with 6/10 right (gap 0)
    probs = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.05)


def test_ece_is_near_zero_when_calibrated() -> None:
    logits, labels = _calibrated_toy(20000, seed=2)
    assert expected_calibration_error(calibrated_probabilities(logits, 1.0), labels) < 0.02


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        (np.zeros((0, 5)), np.zeros(0, dtype=int)),
        (np.zeros((3, 5)), np.array([0, 1, 5])),
        (np.array([[np.nan, 0.0]]), np.array([0])),
        (np.zeros(5), np.array([0])),
    ],
)
def test_bad_input_is_refused(logits: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        fit_temperature(logits, labels)

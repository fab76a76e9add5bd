"""Temperature scaling and calibration error: pure functions on arrays.

A network trained with cross-entropy is over-confident; one temperature T, fitted on
held-out images by minimising the negative log-likelihood of softmax(logits / T), makes
"P = 0.98" mean that ~98 of 100 such parts are what the model says. The line's
thresholds rely on that, so T is stored in the checkpoint and applied at every prediction.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

log = logging.getLogger(__name__)

# T outside this range means the held-out logits are degenerate (e.g. all identical).
T_MIN, T_MAX = 0.05, 20.0


def _check(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"expected logits (N, C) and labels (N,), got {logits.shape}, {labels.shape}"
        )
    if logits.shape[0] == 0:
        raise ValueError("no samples")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError("labels out of range of the logits' classes")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or infinity")
    return logits, labels


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) logits -> (N, C) probabilities softmax(logits / T)."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean NLL of the true class under softmax(logits / T)."""
    logits, labels = _check(logits, labels)
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising held-out NLL (a 1-D bounded search on log T).

    Searching log T keeps the problem well-scaled: halving and doubling T are the same
    distance apart. The NLL is convex in 1/T, so the bounded search finds the optimum.
    """
    logits, labels = _check(logits, labels)

    def nll_at(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, float(np.exp(log_t)))

    result = minimize_scalar(
        nll_at, bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded", options={"xatol": 1e-4}
    )
    temperature = float(np.exp(result.x))
    log.info(
        "fitted temperature %.3f on %d held-out samples (NLL %.4f -> %.4f)",
        temperature,
        len(labels),
        nll_at(0.0),
        result.fun,
    )
    return temperature


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: the sample-weighted gap between confidence and accuracy, over
    `n_bins` equal-width confidence bins in (0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],) or probs.shape[0] == 0:
        raise ValueError(
            f"expected probs (N, C) and labels (N,), got {probs.shape}, {labels.shape}"
        )
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds confidences in (edges[i], edges[i+1]]; the first also holds exactly 0
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)

"""Agreement of the model with the human labels: confusion matrices, kappa, and the rates
a supervisor reads (accuracy, defect recall, escape and false-reject rates).

A confusion matrix has the human's label in the rows and the model's prediction in the
columns: the human is the reference, the product measures the model against people.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from inspect_app.domain import CLASS_NAMES, DefectClass
from inspect_app.evidence.intervals import RateEstimate, rate_estimate


def cohen_kappa(matrix: ArrayLike) -> float | None:
    """Agreement beyond chance for a square confusion matrix (raters in rows and columns).

    kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement, p_e the agreement expected
    from the two raters' marginal frequencies alone. None when p_e == 1 (both raters used a
    single, identical class): kappa is undefined there, not perfect.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"kappa needs a square matrix, got shape {m.shape}")
    total = m.sum()
    if total == 0:
        return None
    observed = np.trace(m) / total
    expected = float(m.sum(axis=1) @ m.sum(axis=0)) / total**2
    if math.isclose(expected, 1.0):
        return None
    return float((observed - expected) / (1.0 - expected))


@dataclass(frozen=True)
class BinaryConfusion:
    """Ok vs defect, named for what each cell costs the plant."""

    ok_passed: int  # human ok, model ok
    false_rejects: int  # human ok, model defect
    escapes: int  # human defect, model ok
    defects_caught: int  # human defect, model defect

    def as_matrix(self) -> list[list[int]]:
        """Rows human (ok, defect), columns model (ok, defect)."""
        return [[self.ok_passed, self.false_rejects], [self.escapes, self.defects_caught]]


@dataclass(frozen=True)
class AgreementFigures:
    """Model against human for one set of labeled inspections.

    The model's class is its most probable class (`Prediction.predicted_class`), so the binary
    matrix is the per-class matrix collapsed to ok vs any defect. The escape and false-reject
    rates here are those of the model's plain answer; the rates at a line's thresholds come
    from `what_if`.
    """

    n: int
    classes: list[str]
    class_matrix: list[list[int]]  # rows: human label, columns: model prediction
    binary: BinaryConfusion
    accuracy: RateEstimate  # same class
    binary_accuracy: RateEstimate  # same ok/defect verdict
    kappa: float | None  # over classes
    binary_kappa: float | None
    defect_recall: RateEstimate  # of the parts humans call defective, the share the model flags
    escape_rate: RateEstimate  # of the parts the model calls ok, the share humans call defective
    false_reject_rate: RateEstimate  # of the parts the model flags, the share humans call ok


def agreement_figures(
    human: Sequence[str], model: Sequence[str], classes: Sequence[str] = CLASS_NAMES
) -> AgreementFigures:
    if len(human) != len(model):
        raise ValueError(f"{len(human)} human labels but {len(model)} model predictions")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({c for c in (*human, *model) if c not in index})
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; expected one of {list(classes)}")
    size = len(classes)
    matrix = np.zeros((size, size), dtype=np.int64)
    if human:
        np.add.at(matrix, ([index[c] for c in human], [index[c] for c in model]), 1)

    ok = index[DefectClass.OK]
    ok_passed = int(matrix[ok, ok])
    false_rejects = int(matrix[ok].sum() - ok_passed)
    escapes = int(matrix[:, ok].sum() - ok_passed)
    n = int(matrix.sum())
    defects_caught = n - ok_passed - false_rejects - escapes
    binary = BinaryConfusion(ok_passed, false_rejects, escapes, defects_caught)
    human_defects = escapes + defects_caught
    model_ok = ok_passed + escapes
    return AgreementFigures(
        n=n,
        classes=list(classes),
        class_matrix=matrix.tolist(),
        binary=binary,
        accuracy=rate_estimate(int(np.trace(matrix)), n),
        binary_accuracy=rate_estimate(ok_passed + defects_caught, n),
        kappa=cohen_kappa(matrix),
        binary_kappa=cohen_kappa(binary.as_matrix()),
        defect_recall=rate_estimate(defects_caught, human_defects),
        escape_rate=rate_estimate(escapes, model_ok),
        false_reject_rate=rate_estimate(false_rejects, n - model_ok),
    )

"""Agreement figures: kappa against a hand-worked example, every cell counted."""

from __future__ import annotations

import pytest

from inspect_app.evidence import agreement_figures, cohen_kappa


def test_cohen_kappa_hand_worked_example() -> None:
    # Rows: human, columns: model; classes (ok, scratch, crack).
    matrix = [
        [20, 5, 0],  # human ok: 25
        [3, 10, 2],  # human scratch: 15
        [1, 0, 9],  # human crack: 10
    ]
    # n = 50. Observed agreement p_o = (20 + 10 + 9) / 50 = 39/50 = 0.78.
    # Model column totals: ok 24, scratch 15, crack 11.
    # Chance agreement p_e = (25*24 + 15*15 + 10*11) / 50^2 = (600 + 225 + 110) / 2500
    #                      = 935 / 2500 = 0.374.
    # kappa = (0.78 - 0.374) / (1 - 0.374) = 0.406 / 0.626 = 0.648562...
    assert cohen_kappa(matrix) == pytest.approx(0.406 / 0.626, abs=1e-12)
    assert cohen_kappa(matrix) == pytest.approx(0.6485623, abs=1e-7)


def test_kappa_is_undefined_when_both_raters_use_one_class() -> None:
    assert cohen_kappa([[7, 0], [0, 0]]) is None
    assert cohen_kappa([[0, 0], [0, 0]]) is None
    assert cohen_kappa([[5, 0], [0, 5]]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="square"):
        cohen_kappa([[1, 2, 3]])


def test_agreement_figures_count_every_cell() -> None:
    human = ["ok", "ok", "ok", "ok", "scratch", "scratch", "crack", "pit"]
    model = ["ok", "ok", "ok", "crack", "ok", "scratch", "scratch", "pit"]
    figures = agreement_figures(human, model)
    assert figures.n == 8
    # Binary: human ok & model ok 3, human ok & model defect 1 (false reject),
    # human defect & model ok 1 (escape), human defect & model defect 3.
    assert figures.binary.as_matrix() == [[3, 1], [1, 3]]
    assert figures.accuracy.count == 5  # ok x3, scratch, pit
    assert figures.binary_accuracy.count == 6
    assert figures.escape_rate.count == 1 and figures.escape_rate.n == 4  # model said ok 4x
    assert figures.false_reject_rate.count == 1 and figures.false_reject_rate.n == 4
    assert figures.defect_recall.count == 3 and figures.defect_recall.n == 4
    assert figures.class_matrix[2][1] == 1  # human crack, model scratch
    assert figures.binary_kappa == pytest.approx(0.5)  # p_o 0.75, p_e 0.5
    assert figures.escape_rate.lower <= 0.25 <= figures.escape_rate.upper


def test_agreement_refuses_unknown_classes_and_ragged_input() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        agreement_figures(["ok"], ["dent"])
    with pytest.raises(ValueError, match="model predictions"):
        agreement_figures(["ok", "ok"], ["ok"])

"""The pure core: accuracy figures, their intervals and the flag rule."""

from __future__ import annotations

import pytest
from scipy.stats import beta

from inspect_app.reference.accuracy import (
    Answer,
    below_accuracy,
    inspector_accuracy,
    pooled_error_rates,
)


def _answers(pairs: list[tuple[str, str, int]]) -> list[Answer]:
    return [Answer(expected=e, given=g) for e, g, times in pairs for _ in range(times)]


def test_binary_per_class_and_error_rates_with_clopper_pearson_intervals() -> None:
    answers = _answers(
        [("ok", "ok", 30), ("ok", "scratch", 2), ("scratch", "scratch", 8), ("scratch", "ok", 2),
         ("crack", "pit", 3), ("crack", "crack", 5)]
    )  # fmt: skip
    figures = inspector_accuracy("ann", answers)
    assert figures.answers == 50
    # binary: crack called pit is still a defect: wrong only for ok<->defect swaps
    assert (figures.binary.count, figures.binary.n) == (46, 50)
    assert (figures.exact.count, figures.exact.n) == (43, 50)
    assert (figures.missed_defects.count, figures.missed_defects.n) == (2, 18)
    assert (figures.false_rejects.count, figures.false_rejects.n) == (2, 32)
    assert figures.per_class["crack"].count == 5 and figures.per_class["crack"].n == 8
    assert set(figures.per_class) == {"ok", "scratch", "crack"}
    # the two-sided 95% Clopper-Pearson interval of 46/50
    assert figures.binary.lower == pytest.approx(beta.ppf(0.025, 46, 5))
    assert figures.binary.upper == pytest.approx(beta.ppf(0.975, 47, 4))


def test_flag_needs_enough_answers_and_an_upper_bound_below_the_level() -> None:
    few = inspector_accuracy("ann", _answers([("ok", "scratch", 5)]))
    assert not few.flagged  # all wrong, but only 5 answers
    bad = inspector_accuracy("bob", _answers([("ok", "ok", 15), ("ok", "scratch", 10)]))
    assert bad.flagged and bad.binary.upper < 0.95
    good = inspector_accuracy("cy", _answers([("ok", "ok", 24), ("ok", "scratch", 1)]))
    assert not good.flagged  # 24/25: the interval still reaches 0.95
    assert below_accuracy(bad.binary, min_accuracy=0.5, min_answers=20) is False


def test_pooled_errors_and_no_answers_is_no_rate() -> None:
    missed, false_rejects = pooled_error_rates(_answers([("pit", "ok", 1), ("pit", "pit", 3)]))
    assert (missed.count, missed.n, missed.rate) == (1, 4, 0.25)
    assert false_rejects.n == 0 and false_rejects.rate is None
    empty = inspector_accuracy("ann", [])
    assert empty.binary.rate is None and not empty.flagged

"""The Evidence page's table of inspectors on reference parts (pure HTML from figures)."""

from __future__ import annotations

from inspect_app.evidence.intervals import rate_estimate
from inspect_app.reference.accuracy import Answer, inspector_accuracy
from review_ui.evidence_views import reference_accuracy_html


def test_inspectors_error_rates_stand_beside_the_models() -> None:
    ann = inspector_accuracy(
        "ann", [Answer("ok", "ok")] * 20 + [Answer("pit", "ok")] * 5 + [Answer("pit", "pit")] * 5
    )
    page = reference_accuracy_html(
        [ann],
        ann.missed_defects,
        ann.false_rejects,
        model_escape=rate_estimate(2, 400),
        model_false_reject=rate_estimate(1, 50),
    )
    assert 'id="error-rates"' in page and 'id="reference-accuracy"' in page
    assert "50.00%" in page  # ann misses 5 of 10 defects
    assert "0.50%" in page  # the model's escape rate, 2 / 400, beside it
    assert "cannot be certified" in page
    assert "<b>flagged</b>" in page  # 25/30 with an upper bound below 0.95


def test_no_answers_yet_says_so() -> None:
    none = rate_estimate(0, 0)
    page = reference_accuracy_html([], none, none, none, none)
    assert "No answers on reference parts yet." in page

"""Per-inspector accuracy on reference parts, and when an inspector is flagged. Pure.

Each answer is a pair (the verified class, the inspector's class). The binary figure asks
what the line asks (ok versus any defect); per class it is the share of that class's
reference parts the inspector named correctly. Every rate carries its count and its 95%
Clopper-Pearson interval (`evidence.intervals.rate_estimate`), the same binomial model the
gate uses, so an inspector's error rate and the model's escape bound can be read side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inspect_app.domain import CLASS_NAMES, DefectClass
from inspect_app.evidence.intervals import RateEstimate, rate_estimate

# An inspector is flagged when the upper bound of their binary accuracy is below this (they
# are clearly worse than it, not merely unlucky), once they have at least MIN_ANSWERS.
MIN_ACCURACY = 0.95
MIN_ANSWERS = 20


@dataclass(frozen=True)
class Answer:
    expected: str  # the reference's verified class
    given: str  # the inspector's class


@dataclass(frozen=True)
class InspectorAccuracy:
    inspector: str
    answers: int
    binary: RateEstimate  # correct ok/defect calls over all answers
    exact: RateEstimate  # the exact class right
    # P(said ok | truly defective): the inspector's own escape rate on reference parts
    missed_defects: RateEstimate
    # P(said defect | truly ok)
    false_rejects: RateEstimate
    per_class: dict[str, RateEstimate]  # class -> correct / reference parts of that class
    flagged: bool

    def as_dict(self) -> dict[str, object]:
        def plain(r: RateEstimate) -> dict[str, object]:
            return {"count": r.count, "n": r.n, "rate": r.rate, "lower": r.lower, "upper": r.upper}

        return {
            "inspector": self.inspector,
            "answers": self.answers,
            "binary": plain(self.binary),
            "exact": plain(self.exact),
            "missed_defects": plain(self.missed_defects),
            "false_rejects": plain(self.false_rejects),
            "per_class": {c: plain(r) for c, r in self.per_class.items()},
            "flagged": self.flagged,
        }


def _defect(name: str) -> bool:
    return name != DefectClass.OK.value


def below_accuracy(
    binary: RateEstimate, *, min_accuracy: float = MIN_ACCURACY, min_answers: int = MIN_ANSWERS
) -> bool:
    """Flag rule: enough answers, and even the interval's upper end is below the level."""
    return binary.n >= min_answers and binary.upper < min_accuracy


def inspector_accuracy(
    inspector: str,
    answers: Sequence[Answer],
    *,
    min_accuracy: float = MIN_ACCURACY,
    min_answers: int = MIN_ANSWERS,
) -> InspectorAccuracy:
    n = len(answers)
    binary_right = sum(_defect(a.expected) == _defect(a.given) for a in answers)
    exact_right = sum(a.expected == a.given for a in answers)
    defective = [a for a in answers if _defect(a.expected)]
    good = [a for a in answers if not _defect(a.expected)]
    per_class = {}
    for name in CLASS_NAMES:
        of_class = [a for a in answers if a.expected == name]
        if of_class:
            per_class[name] = rate_estimate(sum(a.given == name for a in of_class), len(of_class))
    binary = rate_estimate(binary_right, n)
    return InspectorAccuracy(
        inspector=inspector,
        answers=n,
        binary=binary,
        exact=rate_estimate(exact_right, n),
        missed_defects=rate_estimate(sum(not _defect(a.given) for a in defective), len(defective)),
        false_rejects=rate_estimate(sum(_defect(a.given) for a in good), len(good)),
        per_class=per_class,
        flagged=below_accuracy(binary, min_accuracy=min_accuracy, min_answers=min_answers),
    )


def pooled_error_rates(answers: Iterable[Answer]) -> tuple[RateEstimate, RateEstimate]:
    """All inspectors together: (missed defects, false rejects), for the gate's page beside
    the model's escape and false-reject bounds."""
    listed = list(answers)
    defective = [a for a in listed if _defect(a.expected)]
    good = [a for a in listed if not _defect(a.expected)]
    return (
        rate_estimate(sum(not _defect(a.given) for a in defective), len(defective)),
        rate_estimate(sum(_defect(a.given) for a in good), len(good)),
    )

"""The evidence gate: what a policy would have done with the labeled parts (what-if), and
whether that supports raising a line to it.

The gate's bounds are one-sided 95% Clopper-Pearson upper bounds: the largest rate under
which seeing as few errors as we saw still has at least a 5% chance.

One-sided partial automation: a side whose threshold is None ("never", `domain.NEVER`)
automates nothing, so it is not gated: its count is 0 by construction and must not fail the
gate. Only the side that automates must meet its target over `min_labels` parts. A policy
that automates neither side is refused: at partial it would decide nothing (that is assist).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from inspect_app.domain import AutomationLevel, Threshold, threshold_text
from inspect_app.evidence.intervals import CONFIDENCE, clopper_pearson_upper, labels_needed

# At `full` the model decides every part: routing passes it when P(ok) >= 0.5 and fails it
# otherwise, whatever thresholds the line holds (see `inspect_app.routing`). The gate for `full`
# therefore judges exactly those two sides.
FULL_AUTOMATION_CUT = 0.5


# --------------------------------------------------------------------------------------------
# What-if: which labeled parts a policy would have automated


def automated_masks(
    p_ok: ArrayLike,
    level: AutomationLevel,
    pass_threshold: float | None,
    fail_threshold: float | None,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(auto-passed, auto-failed) for each part, by the same rule as `routing.route_inspection`.

    At `partial` a part confident both ways (thresholds below 0.5) goes to a human, and a side
    whose threshold is None (never) decides nothing; at `full` every part is decided at
    P(ok) = 0.5 and the thresholds play no part; below `partial` nothing is automated.
    """
    p = np.asarray(p_ok, dtype=np.float64)
    p_defect = 1.0 - p  # the same arithmetic as Prediction.p_defect, so ties fall alike
    if level is AutomationLevel.FULL:
        passed = p >= FULL_AUTOMATION_CUT
        return passed, ~passed
    if level is AutomationLevel.PARTIAL:
        never = np.zeros(p.shape, dtype=bool)
        confident_ok = never if pass_threshold is None else p >= pass_threshold
        confident_defect = never if fail_threshold is None else p_defect >= fail_threshold
        return confident_ok & ~confident_defect, confident_defect & ~confident_ok
    nothing = np.zeros(p.shape, dtype=bool)
    return nothing, nothing.copy()


@dataclass(frozen=True)
class SideEvidence:
    """One side of a policy: the labeled parts it would have auto-decided, and the errors."""

    side: Literal["pass", "fail"]
    n: int  # labeled parts on this side
    errors: int  # pass side: humans said defect (escapes); fail side: humans said ok
    share: float  # n / all labeled parts (this side's coverage)
    rate: float | None
    upper_bound: float  # one-sided 95% Clopper-Pearson; 1.0 when n == 0


def side_evidence(
    side: Literal["pass", "fail"], errors: int, n: int, n_labeled: int
) -> SideEvidence:
    return SideEvidence(
        side=side,
        n=int(n),
        errors=int(errors),
        share=n / n_labeled if n_labeled else 0.0,
        rate=errors / n if n else None,
        upper_bound=clopper_pearson_upper(errors, n),
    )


@dataclass(frozen=True)
class WhatIf:
    level: AutomationLevel
    pass_threshold: Threshold  # None: never auto-pass (one-sided partial)
    fail_threshold: Threshold  # None: never auto-fail
    n_labeled: int
    coverage: float  # share of labeled parts the policy would have auto-decided
    auto_pass: SideEvidence  # errors = escapes
    auto_fail: SideEvidence  # errors = false rejects
    to_human: int


def as_labeled_arrays(
    p_ok: ArrayLike, human_defect: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Validated arrays for the what-if and the recommendation, which must read the same parts."""
    p = np.asarray(p_ok, dtype=np.float64)
    d = np.asarray(human_defect, dtype=bool)
    if p.shape != d.shape or p.ndim != 1:
        raise ValueError(f"p_ok {p.shape} and human_defect {d.shape} must be equal 1-D arrays")
    if np.any((p < 0.0) | (p > 1.0)) or np.any(np.isnan(p)):
        raise ValueError("P(ok) must lie in [0, 1]")
    return p, d


def what_if(
    p_ok: ArrayLike,
    human_defect: ArrayLike,
    *,
    level: AutomationLevel,
    pass_threshold: float | None,
    fail_threshold: float | None,
) -> WhatIf:
    """What a policy would have done with the labeled parts, and what humans said about them."""
    p, defect = as_labeled_arrays(p_ok, human_defect)
    passed, failed = automated_masks(p, level, pass_threshold, fail_threshold)
    n = int(p.size)
    n_pass, n_fail = int(passed.sum()), int(failed.sum())
    return WhatIf(
        level=level,
        pass_threshold=None if pass_threshold is None else float(pass_threshold),
        fail_threshold=None if fail_threshold is None else float(fail_threshold),
        n_labeled=n,
        coverage=(n_pass + n_fail) / n if n else 0.0,
        auto_pass=side_evidence("pass", int((passed & defect).sum()), n_pass, n),
        auto_fail=side_evidence("fail", int((failed & ~defect).sum()), n_fail, n),
        to_human=n - n_pass - n_fail,
    )


# --------------------------------------------------------------------------------------------
# The evidence gate


@dataclass(frozen=True)
class GateTargets:
    max_escape_rate: float
    max_false_reject_rate: float
    min_labels: int  # labeled parts needed on each side
    confidence: float = CONFIDENCE

    def __post_init__(self) -> None:
        for name in ("max_escape_rate", "max_false_reject_rate"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
        if self.min_labels < 0:
            raise ValueError(f"min_labels must not be negative, got {self.min_labels}")


@dataclass(frozen=True)
class SideCheck:
    """One side of the gate: the figure, its target, and what is missing when it falls short."""

    figure: Literal["escape_rate", "false_reject_rate"]
    n: int
    errors: int
    rate: float | None
    upper_bound: float
    target: float
    min_labels: int
    passed: bool
    bound_excess: float  # upper_bound - target where positive, else 0
    labels_short: int  # min_labels - n where positive, else 0
    # More labeled parts on this side, and overall, for the bound to reach the target if errors
    # keep coming at the observed rate (none seen: assumes none will be). None where no number
    # of labels can do it at this rate (the observed rate is at or above the target), or where
    # no labeled part lands on this side yet, so its share of the stream is unknown.
    more_on_side_needed: int | None
    more_labels_needed: int | None
    # False where the policy never decides this side (threshold "never"): nothing to gate, so
    # the side passes with no parts and its bound means nothing.
    automated: bool = True


def check_side(
    figure: Literal["escape_rate", "false_reject_rate"],
    side: SideEvidence,
    target: float,
    min_labels: int,
    confidence: float = CONFIDENCE,
    *,
    automated: bool = True,
) -> SideCheck:
    if not automated:
        return SideCheck(
            figure=figure,
            n=side.n,
            errors=side.errors,
            rate=side.rate,
            upper_bound=side.upper_bound,
            target=target,
            min_labels=min_labels,
            passed=True,
            bound_excess=0.0,
            labels_short=0,
            more_on_side_needed=0,
            more_labels_needed=0,
            automated=False,
        )
    passed = side.n >= min_labels and side.upper_bound <= target
    more_on_side: int | None = 0
    more_overall: int | None = 0
    if not passed:
        needed = labels_needed(side.errors / side.n if side.n else 0.0, target, confidence)
        if needed is None:
            more_on_side = more_overall = None
        else:
            more_on_side = max(needed, min_labels, side.n) - side.n
            more_overall = math.ceil(more_on_side / side.share) if side.share > 0 else None
    return SideCheck(
        figure=figure,
        n=side.n,
        errors=side.errors,
        rate=side.rate,
        upper_bound=side.upper_bound,
        target=target,
        min_labels=min_labels,
        passed=passed,
        bound_excess=max(0.0, side.upper_bound - target),
        labels_short=max(0, min_labels - side.n),
        more_on_side_needed=more_on_side,
        more_labels_needed=more_overall,
    )


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str  # one sentence a supervisor reads
    what_if: WhatIf
    escape: SideCheck
    false_reject: SideCheck


def percent(x: float) -> str:
    """A rate as the gate's and the recommendation's sentences print it."""
    return f"{100 * x:.2f}%"


_SIDE_WORDS = {
    "escape_rate": ("escape rate", "would-be auto-passed", "escapes"),
    "false_reject_rate": ("false-reject rate", "would-be auto-failed", "false rejects"),
}


def _shortfall(check: SideCheck) -> str:
    name, parts, errors = _SIDE_WORDS[check.figure]
    seen = f"{check.n:,} {parts} parts, {check.errors:,} {errors}"
    problems = []
    if check.labels_short:
        problems.append(f"only {check.n:,} of the {check.min_labels:,} required {parts} parts")
    if check.upper_bound > check.target:
        problems.append(
            f"the {name} bound is {percent(check.upper_bound)}, {percent(check.bound_excess)} above"
            f" the {percent(check.target)} target ({seen})"
        )
    if check.more_labels_needed is not None:
        need = f"about {check.more_labels_needed:,} more labeled parts needed at the current rates"
    elif check.more_on_side_needed is None:
        need = "more labels will not help at the observed rate: stricter thresholds are needed"
    else:
        need = f"{check.more_on_side_needed:,} more {parts} parts needed"
    return f"{' and '.join(problems)} ({need})"


def automates(level: AutomationLevel, threshold: float | None) -> bool:
    """Does a side of a policy at `level` decide any part? Only partial has a "never"."""
    return not (level is AutomationLevel.PARTIAL and threshold is None)


def _met(check: SideCheck) -> str:
    _, parts, _ = _SIDE_WORDS[check.figure]
    bound = "escape-rate" if check.figure == "escape_rate" else "false-reject"
    return (
        f"{bound} bound {percent(check.upper_bound)} <= {percent(check.target)}"
        f" over {check.n:,} {parts} parts"
    )


def check_gate(result: WhatIf, targets: GateTargets) -> GateResult:
    """Each side that automates must have `min_labels` parts and an upper bound within
    target; a side that never automates is not gated; a policy automating neither fails."""
    pass_side = automates(result.level, result.pass_threshold)
    fail_side = automates(result.level, result.fail_threshold)
    escape = check_side(
        "escape_rate",
        result.auto_pass,
        targets.max_escape_rate,
        targets.min_labels,
        targets.confidence,
        automated=pass_side,
    )
    false_reject = check_side(
        "false_reject_rate",
        result.auto_fail,
        targets.max_false_reject_rate,
        targets.min_labels,
        targets.confidence,
        automated=fail_side,
    )
    policy = f"{result.level}" + (
        f" at pass {threshold_text(result.pass_threshold)}"
        f" / fail {threshold_text(result.fail_threshold)}"
        if result.level is AutomationLevel.PARTIAL
        else ""
    )
    passed = (pass_side or fail_side) and escape.passed and false_reject.passed
    never = [
        f"nothing is auto-{side} (never)"
        for side, automated in (("passed", pass_side), ("failed", fail_side))
        if not automated
    ]
    if not (pass_side or fail_side):
        reason = (
            f"Nothing to gate for {policy}: with both sides never the model decides no part;"
            " that is assist, or give a threshold for at least one side."
        )
    elif passed:
        met = [_met(c) for c in (escape, false_reject) if c.automated]
        reason = (
            f"The evidence supports {policy}: "
            + " and ".join(met)
            + "".join(f"; {n}" for n in never)
            + f" (coverage {percent(result.coverage)})."
        )
    else:
        shortfalls = [_shortfall(c) for c in (escape, false_reject) if not c.passed]
        reason = (
            f"Not enough evidence for {policy}: "
            + "; ".join(shortfalls)
            + "".join(f"; {n}" for n in never)
            + "."
        )
    return GateResult(
        passed=passed,
        reason=reason,
        what_if=result,
        escape=escape,
        false_reject=false_reject,
    )

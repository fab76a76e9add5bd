"""The statistics behind trusting the model: agreement, what-if, the evidence gate, the
threshold recommendation and the live audit test that demotes a line (design.md section 4).

Pure: arrays and counts in, frozen dataclasses out; no database, no clock. The queries that
turn labeled inspections into these inputs live in `inspect_app.agreement`; the decisions
that act on the results (raise, demote) live in `inspect_app.automation`.

Conventions, so every figure means one thing everywhere:

* A confusion matrix has the human's label in the rows and the model's prediction in the
  columns. The human is the reference: the product measures the model against people.
* Every rate is a `RateEstimate`: its count, its denominator and a two-sided 95%
  Clopper-Pearson interval. Clopper-Pearson (exact, conservative) rather than Wilson, so the
  intervals shown to a supervisor and the one-sided bounds the gate uses come from the same
  binomial model and can never disagree about a count of zero.
* The gate's bounds are one-sided 95% Clopper-Pearson upper bounds: the largest rate under
  which seeing as few errors as we saw still has at least a 5% chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import beta

from inspect_app.domain import CLASS_NAMES, AutomationLevel, DefectClass

CONFIDENCE = 0.95

# At `full` the model decides every part: routing passes it when P(ok) >= 0.5 and fails it
# otherwise, whatever thresholds the line holds (see `inspect_app.routing`). The gate for `full`
# therefore judges exactly those two sides.
FULL_AUTOMATION_CUT = 0.5

# The predeclared candidate thresholds, strictest first. The same grid serves both sides (P(ok)
# for auto-pass, P(defect) for auto-fail). It is fixed in advance, never chosen from the data,
# which is what lets the fixed-sequence walk keep its 95% guarantee. It stops above 0.5
# because a line refuses thresholds of 0.5 or below (`inspect_app.lines`).
THRESHOLD_GRID: tuple[float, ...] = (
    0.9999,
    0.9995,
    0.999,
    0.998,
    0.997,
    0.996,
    0.995,
    0.993,
    0.99,
    0.985,
    0.98,
    0.975,
    0.97,
    0.96,
    0.95,
    0.94,
    0.93,
    0.92,
    0.9,
    0.875,
    0.85,
    0.8,
    0.75,
    0.7,
    0.65,
    0.6,
    0.55,
    0.51,
)

# Live audit test (see `audit_alarm`): the rate it is tuned to catch, as a multiple of the
# target, and the chance of a false alarm at the target rate over a whole settings era.
DEMOTION_ALTERNATIVE_FACTOR = 3.0
DEMOTION_FALSE_ALARM = 0.05


# --------------------------------------------------------------------------------------------
# Binomial bounds


def _check_counts(k: NDArray[np.float64], n: NDArray[np.float64]) -> None:
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"counts must satisfy 0 <= errors <= n (got errors={k}, n={n})")


def clopper_pearson_upper_array(
    errors: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE
) -> NDArray[np.float64]:
    """One-sided upper bound for every (errors, n) pair; 1.0 where nothing was seen.

    `errors` may be fractional: `labels_needed` asks what the bound would be at an expected
    count, and the beta quantile is defined there too.
    """
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    _check_counts(k, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(confidence, k + 1.0, m - k)
    return np.where((m == 0) | (k >= m), 1.0, bound)


def clopper_pearson_lower_array(
    errors: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE
) -> NDArray[np.float64]:
    """One-sided lower bound for every (errors, n) pair; 0.0 where no error was seen."""
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    _check_counts(k, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(1.0 - confidence, k, m - k + 1.0)
    return np.where(k <= 0, 0.0, bound)


def clopper_pearson_upper(errors: float, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper bound of a rate after `errors` in `n` (zero errors: 1 - alpha**(1/n))."""
    return float(clopper_pearson_upper_array(errors, n, confidence))


def clopper_pearson_lower(errors: float, n: int, confidence: float = CONFIDENCE) -> float:
    return float(clopper_pearson_lower_array(errors, n, confidence))


def clopper_pearson_interval(
    errors: int, n: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Two-sided interval: each tail gets half of 1 - confidence."""
    tail = (1.0 + confidence) / 2.0
    return clopper_pearson_lower(errors, n, tail), clopper_pearson_upper(errors, n, tail)


def zero_error_sample_size(target: float, confidence: float = CONFIDENCE) -> int:
    """The fewest parts whose upper bound can reach `target` at all (with no error seen).

    1 - (1 - confidence)**(1/n) <= target  <=>  n >= ln(1 - confidence) / ln(1 - target).
    For a 0.5% target at 95% that is 598 parts: fewer can never pass, whatever they show.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"a target rate must lie strictly between 0 and 1, got {target}")
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target) - 1e-9)


def labels_needed(
    rate: float, target: float, confidence: float = CONFIDENCE, *, cap: int = 10**9
) -> int | None:
    """The fewest parts at which the upper bound reaches `target` if errors keep coming at `rate`.

    None when `rate >= target`: no number of labels can show a rate below the target when the
    observed rate is not below it (stricter thresholds are needed instead).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a rate must lie in [0, 1], got {rate}")
    if rate >= target:
        return None
    if rate == 0.0:
        return zero_error_sample_size(target, confidence)

    def reaches(n: int) -> bool:
        return clopper_pearson_upper(rate * n, n, confidence) <= target

    low, high = 1, zero_error_sample_size(target, confidence)
    while not reaches(high):
        low, high = high, high * 2
        if high > cap:
            return None
    while low < high:  # the bound falls as n grows at a fixed rate: bisect for the first n
        mid = (low + high) // 2
        if reaches(mid):
            high = mid
        else:
            low = mid + 1
    return high


@dataclass(frozen=True)
class RateEstimate:
    """A rate with the count behind it and its two-sided 95% Clopper-Pearson interval."""

    count: int
    n: int
    rate: float | None  # None when n == 0: no data is not a rate of zero
    lower: float
    upper: float


def rate_estimate(count: int, n: int, confidence: float = CONFIDENCE) -> RateEstimate:
    lower, upper = clopper_pearson_interval(count, n, confidence)
    return RateEstimate(
        count=int(count),
        n=int(n),
        rate=count / n if n else None,
        lower=lower,
        upper=upper,
    )


# --------------------------------------------------------------------------------------------
# Agreement


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


# --------------------------------------------------------------------------------------------
# What-if: which labeled parts a policy would have automated


def automated_masks(
    p_ok: ArrayLike, level: AutomationLevel, pass_threshold: float, fail_threshold: float
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(auto-passed, auto-failed) for each part, by the same rule as `routing.route_inspection`.

    At `partial` a part confident both ways (thresholds below 0.5) goes to a human; at `full`
    every part is decided at P(ok) = 0.5 and the thresholds play no part; below `partial`
    nothing is automated.
    """
    p = np.asarray(p_ok, dtype=np.float64)
    p_defect = 1.0 - p  # the same arithmetic as Prediction.p_defect, so ties fall alike
    if level is AutomationLevel.FULL:
        passed = p >= FULL_AUTOMATION_CUT
        return passed, ~passed
    if level is AutomationLevel.PARTIAL:
        confident_ok = p >= pass_threshold
        confident_defect = p_defect >= fail_threshold
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
    pass_threshold: float
    fail_threshold: float
    n_labeled: int
    coverage: float  # share of labeled parts the policy would have auto-decided
    auto_pass: SideEvidence  # errors = escapes
    auto_fail: SideEvidence  # errors = false rejects
    to_human: int


def _as_labeled_arrays(
    p_ok: ArrayLike, human_defect: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
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
    pass_threshold: float,
    fail_threshold: float,
) -> WhatIf:
    """What a policy would have done with the labeled parts, and what humans said about them."""
    p, defect = _as_labeled_arrays(p_ok, human_defect)
    passed, failed = automated_masks(p, level, pass_threshold, fail_threshold)
    n = int(p.size)
    n_pass, n_fail = int(passed.sum()), int(failed.sum())
    return WhatIf(
        level=level,
        pass_threshold=float(pass_threshold),
        fail_threshold=float(fail_threshold),
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


def check_side(
    figure: Literal["escape_rate", "false_reject_rate"],
    side: SideEvidence,
    target: float,
    min_labels: int,
    confidence: float = CONFIDENCE,
) -> SideCheck:
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


def _pct(x: float) -> str:
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
            f"the {name} bound is {_pct(check.upper_bound)}, {_pct(check.bound_excess)} above"
            f" the {_pct(check.target)} target ({seen})"
        )
    if check.more_labels_needed is not None:
        need = f"about {check.more_labels_needed:,} more labeled parts needed at the current rates"
    elif check.more_on_side_needed is None:
        need = "more labels will not help at the observed rate: stricter thresholds are needed"
    else:
        need = f"{check.more_on_side_needed:,} more {parts} parts needed"
    return f"{' and '.join(problems)} ({need})"


def check_gate(result: WhatIf, targets: GateTargets) -> GateResult:
    """Both sides must have `min_labels` parts and an upper bound within target."""
    escape = check_side(
        "escape_rate",
        result.auto_pass,
        targets.max_escape_rate,
        targets.min_labels,
        targets.confidence,
    )
    false_reject = check_side(
        "false_reject_rate",
        result.auto_fail,
        targets.max_false_reject_rate,
        targets.min_labels,
        targets.confidence,
    )
    policy = f"{result.level}" + (
        f" at pass {result.pass_threshold:g} / fail {result.fail_threshold:g}"
        if result.level is AutomationLevel.PARTIAL
        else ""
    )
    if escape.passed and false_reject.passed:
        reason = (
            f"The evidence supports {policy}: escape-rate bound {_pct(escape.upper_bound)} <="
            f" {_pct(escape.target)} over {escape.n:,} would-be auto-passed parts and"
            f" false-reject bound {_pct(false_reject.upper_bound)} <= {_pct(false_reject.target)}"
            f" over {false_reject.n:,} would-be auto-failed parts"
            f" (coverage {_pct(result.coverage)})."
        )
    else:
        shortfalls = [_shortfall(c) for c in (escape, false_reject) if not c.passed]
        reason = f"Not enough evidence for {policy}: " + "; ".join(shortfalls) + "."
    return GateResult(
        passed=escape.passed and false_reject.passed,
        reason=reason,
        what_if=result,
        escape=escape,
        false_reject=false_reject,
    )


# --------------------------------------------------------------------------------------------
# Threshold recommendation: fixed-sequence testing from strictest to loosest


def side_counts(
    scores: ArrayLike, errors: ArrayLike, grid: Sequence[float]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Parts with score >= each grid threshold, and the errors among them.

    `scores` and `errors` have shape (..., parts); the result has shape (..., len(grid)).
    Leading dimensions are independent repetitions, so a simulation of thousands of streams is
    one call. `grid` may be in any order; results follow it.
    """
    s = np.asarray(scores, dtype=np.float64)
    e = np.asarray(errors, dtype=bool)
    if s.shape != e.shape:
        raise ValueError(f"scores {s.shape} and errors {e.shape} differ in shape")
    g = np.asarray(grid, dtype=np.float64)
    order = np.argsort(g)
    ascending = g[order]
    # bins[i] = how many thresholds part i clears (threshold <= score)
    bins = np.searchsorted(ascending, s, side="right")
    lead = s.shape[:-1]
    reps = int(np.prod(lead)) if lead else 1
    flat_bins = bins.reshape(reps, -1) + (len(g) + 1) * np.arange(reps)[:, None]
    size = reps * (len(g) + 1)
    hist_n = np.bincount(flat_bins.ravel(), minlength=size).reshape(reps, len(g) + 1)
    hist_e = np.bincount(
        flat_bins.ravel(), weights=e.reshape(reps, -1).ravel().astype(np.float64), minlength=size
    ).reshape(reps, len(g) + 1)
    # parts clearing ascending[j] are those with bin > j: a reversed cumulative sum
    n_asc = np.cumsum(hist_n[:, ::-1], axis=1)[:, ::-1][:, 1:]
    e_asc = np.cumsum(hist_e[:, ::-1], axis=1)[:, ::-1][:, 1:]
    n_out = np.empty_like(n_asc)
    e_out = np.empty_like(e_asc)
    n_out[:, order] = n_asc
    e_out[:, order] = e_asc
    return n_out.reshape((*lead, len(g))), np.rint(e_out).astype(np.int64).reshape((*lead, len(g)))


# The outcome of each candidate in the walk
PASSED, FAILED, SKIPPED, NOT_REACHED = "passed", "failed", "skipped", "not_reached"


def fixed_sequence_walk(
    n: ArrayLike,
    errors: ArrayLike,
    target: float,
    min_labels: int,
    confidence: float = CONFIDENCE,
) -> tuple[NDArray[np.int64], NDArray[np.int8]]:
    """Walk candidates strictest to loosest; stop at the first that fails. Vectorised.

    `n`, `errors` have shape (..., candidates) in the predeclared order. Returns the index of
    the chosen (loosest passing) candidate, -1 where none passed, and a status code per
    candidate (0 passed, 1 failed, 2 skipped, 3 not reached).

    Why the guarantee holds: candidate j's claim "rate <= target" is tested at 5%, and the
    walk only reaches j after every earlier claim was accepted. If the first false claim in
    the order is j0, accepting any false claim requires accepting j0, which happens with
    probability <= 5%; so the chosen candidate is within target with >= 95% probability,
    however fine the grid. A candidate is skipped, not tested, when it holds fewer parts than
    `min_labels` or than any zero-error bound could accept: that depends only on the model's
    scores, never on the human labels, so given the scores the order of tests is still fixed
    in advance and the guarantee stands. Skipping them matters because the strictest
    thresholds hold the fewest parts and would otherwise end every walk at its first step.
    """
    m = np.asarray(n, dtype=np.int64)
    k = np.asarray(errors, dtype=np.int64)
    floor = max(min_labels, zero_error_sample_size(target, confidence))
    tested = m >= floor
    ok = clopper_pearson_upper_array(k, m, confidence) <= target
    failed = tested & ~ok
    count = m.shape[-1]
    position = np.arange(count)
    stop = np.where(failed.any(axis=-1), failed.argmax(axis=-1), count)[..., None]
    reached = position <= stop
    passed = tested & ok & (position < stop)
    chosen = np.where(
        passed.any(axis=-1), count - 1 - passed[..., ::-1].argmax(axis=-1), -1
    ).astype(np.int64)
    status = np.full(m.shape, 3, dtype=np.int8)
    status[reached & ~tested] = 2
    status[failed & reached] = 1
    status[passed] = 0
    return chosen, status


_STATUS_NAMES = (PASSED, FAILED, SKIPPED, NOT_REACHED)


@dataclass(frozen=True)
class CurvePoint:
    """One candidate threshold on one side: the coverage-versus-risk curve, for plotting."""

    threshold: float
    n: int
    errors: int
    share: float  # this side's coverage: n / all labeled parts
    rate: float | None
    upper_bound: float
    status: str  # passed | failed | skipped | not_reached


@dataclass(frozen=True)
class Recommendation:
    """The thresholds with the most coverage that pass the gate, found by fixed-sequence tests.

    A side with no passing candidate gets threshold None (nothing can be automated on that
    side yet) and `gate` is None: the pair cannot be raised to `partial`.
    """

    pass_threshold: float | None
    fail_threshold: float | None
    gate: GateResult | None  # the gate at the recommended pair
    full: GateResult  # whether the evidence would support `full` as well
    pass_curve: list[CurvePoint]
    fail_curve: list[CurvePoint]
    n_labeled: int
    reason: str


def _curve(
    grid: Sequence[float], n: NDArray[np.int64], e: NDArray[np.int64], status: NDArray, total: int
) -> list[CurvePoint]:
    upper = clopper_pearson_upper_array(e, n)
    return [
        CurvePoint(
            threshold=float(t),
            n=int(n[i]),
            errors=int(e[i]),
            share=int(n[i]) / total if total else 0.0,
            rate=int(e[i]) / int(n[i]) if n[i] else None,
            upper_bound=float(upper[i]),
            status=_STATUS_NAMES[int(status[i])],
        )
        for i, t in enumerate(grid)
    ]


def _why_no_threshold(
    side: str, curve: list[CurvePoint], target: float, targets: GateTargets
) -> str:
    failed = [p for p in curve if p.status == FAILED]
    if failed:
        point = failed[0]
        return (
            f"{side} stops at its first tested threshold {point.threshold:g}, whose bound"
            f" {_pct(point.upper_bound)} exceeds the {_pct(target)} target"
            f" ({point.errors:,} errors in {point.n:,} parts)"
        )
    floor = max(targets.min_labels, zero_error_sample_size(target, targets.confidence))
    most = max((p.n for p in curve), default=0)
    return (
        f"{side} needs at least {floor:,} labeled parts beyond a threshold to be tested"
        f" against its {_pct(target)} target, and has at most {most:,}"
    )


def recommend_thresholds(
    p_ok: ArrayLike,
    human_defect: ArrayLike,
    targets: GateTargets,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> Recommendation:
    """Walk each side's grid separately (the two errors have separate targets and separate
    guarantees) and report the loosest threshold each walk accepts."""
    if list(grid) != sorted(grid, reverse=True):
        raise ValueError("the threshold grid must run from strictest (highest) to loosest")
    p, defect = _as_labeled_arrays(p_ok, human_defect)
    total = int(p.size)
    pass_n, pass_e = side_counts(p, defect, grid)
    fail_n, fail_e = side_counts(1.0 - p, ~defect, grid)
    pass_pick, pass_status = fixed_sequence_walk(
        pass_n, pass_e, targets.max_escape_rate, targets.min_labels, targets.confidence
    )
    fail_pick, fail_status = fixed_sequence_walk(
        fail_n, fail_e, targets.max_false_reject_rate, targets.min_labels, targets.confidence
    )
    pass_threshold = float(grid[int(pass_pick)]) if pass_pick >= 0 else None
    fail_threshold = float(grid[int(fail_pick)]) if fail_pick >= 0 else None
    full = check_gate(
        what_if(
            p,
            defect,
            level=AutomationLevel.FULL,
            pass_threshold=FULL_AUTOMATION_CUT,
            fail_threshold=FULL_AUTOMATION_CUT,
        ),
        targets,
    )
    pass_curve = _curve(grid, pass_n, pass_e, pass_status, total)
    fail_curve = _curve(grid, fail_n, fail_e, fail_status, total)
    gate = None
    if pass_threshold is not None and fail_threshold is not None:
        gate = check_gate(
            what_if(
                p,
                defect,
                level=AutomationLevel.PARTIAL,
                pass_threshold=pass_threshold,
                fail_threshold=fail_threshold,
            ),
            targets,
        )
        reason = (
            f"Recommended partial at pass {pass_threshold:g} / fail {fail_threshold:g}: "
            f"coverage {_pct(gate.what_if.coverage)}, escape bound"
            f" {_pct(gate.escape.upper_bound)}, false-reject bound"
            f" {_pct(gate.false_reject.upper_bound)}, from {total:,} labeled parts."
        )
    else:
        stuck = [
            _why_no_threshold(side, curve, target, targets)
            for side, chosen, curve, target in (
                ("auto-pass", pass_threshold, pass_curve, targets.max_escape_rate),
                ("auto-fail", fail_threshold, fail_curve, targets.max_false_reject_rate),
            )
            if chosen is None
        ]
        reason = f"Nothing to recommend yet from {total:,} labeled parts: " + "; ".join(stuck) + "."
    return Recommendation(
        pass_threshold=pass_threshold,
        fail_threshold=fail_threshold,
        gate=gate,
        full=full,
        pass_curve=pass_curve,
        fail_curve=fail_curve,
        n_labeled=total,
        reason=reason,
    )


# --------------------------------------------------------------------------------------------
# Live audits: the test that demotes a line


def audit_log_likelihood_ratio(
    errors: ArrayLike, n: ArrayLike, target: float, *, factor: float = DEMOTION_ALTERNATIVE_FACTOR
) -> NDArray[np.float64]:
    """log P(audits | rate = factor x target) / P(audits | rate = target), for every (errors, n).

    It depends on the counts only, so a whole simulated stream is one cumulative sum away.
    """
    if not 0.0 < target < 1.0 / factor:
        raise ValueError(f"target {target} must lie in (0, 1/{factor})")
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    _check_counts(k, m)
    alternative = factor * target
    return k * math.log(alternative / target) + (m - k) * math.log(
        (1.0 - alternative) / (1.0 - target)
    )


@dataclass(frozen=True)
class AuditAlarm:
    """The live test on one side's audits at the line's current settings."""

    figure: Literal["escape_rate", "false_reject_rate"]
    n: int  # audited parts on this side
    errors: int
    target: float
    estimate: RateEstimate
    upper_bound: float  # one-sided 95%: shown to the supervisor, not what demotes
    log_likelihood_ratio: float
    alarm_at: float  # log(1 / false-alarm probability)
    alarm: bool


def audit_alarm(
    figure: Literal["escape_rate", "false_reject_rate"],
    errors: int,
    n: int,
    target: float,
    *,
    factor: float = DEMOTION_ALTERNATIVE_FACTOR,
    false_alarm: float = DEMOTION_FALSE_ALARM,
) -> AuditAlarm:
    """Wald's sequential probability ratio test of "rate = target" against "rate = factor x
    target", one-sided, with no acceptance boundary, checked after every audit label.

    Why this rule rather than "the live upper bound crossed the target": at a true rate equal
    to the target the one-sided 95% upper bound exceeds the target most of the time, so that
    rule would demote good lines on noise. Why not "the 95% lower bound crossed the target":
    checked after every label, a fixed-level test is run thousands of times and its false-alarm
    chance grows with every look. The likelihood ratio of the audits is a non-negative
    martingale when the true rate equals the target (a supermartingale below it), so by
    Ville's inequality the chance that it EVER reaches 1 / false_alarm is at most false_alarm:
    at or below the target, a line is wrongly demoted with probability <= 5% over its whole
    era at these settings, however often it is checked. Against a rate of factor x target the
    test fires after about log(1/false_alarm) / KL(factor x target || target) audits (a few
    hundred on the escape side at the 0.5% default), and any rate above ~1.8 x target is
    caught eventually; rates only slightly above target are not the test's business.

    Limitation: the statistic only depends on the counts of the current era, so after a long
    clean run it sits far below zero and a later deterioration needs more audits to show. An
    era restarts whenever the level, thresholds or model change.
    """
    llr = float(audit_log_likelihood_ratio(errors, n, target, factor=factor))
    alarm_at = math.log(1.0 / false_alarm)
    return AuditAlarm(
        figure=figure,
        n=n,
        errors=errors,
        target=target,
        estimate=rate_estimate(errors, n),
        upper_bound=clopper_pearson_upper(errors, n),
        log_likelihood_ratio=llr,
        alarm_at=alarm_at,
        alarm=llr >= alarm_at,
    )

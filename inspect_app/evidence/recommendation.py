"""The threshold recommendation: fixed-sequence testing of a predeclared grid, strictest to
loosest, for the pair of thresholds with the most coverage that still passes the gate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from inspect_app.domain import AutomationLevel, Threshold, threshold_text
from inspect_app.evidence.gate import (
    FULL_AUTOMATION_CUT,
    GateResult,
    GateTargets,
    as_labeled_arrays,
    check_gate,
    percent,
    what_if,
)
from inspect_app.evidence.intervals import (
    CONFIDENCE,
    clopper_pearson_upper_array,
    zero_error_sample_size,
)

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

    A side with no passing candidate gets threshold None, which means "never" here as on a
    line (`domain.NEVER`): nothing can be automated on that side yet, so the recommendation
    is one-sided partial automation (e.g. never auto-pass, auto-fail at 0.65), which a
    supervisor can apply as it stands. Each side's walk carries its own guarantee, so the
    side that automates keeps it. Only when neither side passes is `gate` None: there is
    nothing to raise to.
    """

    pass_threshold: Threshold
    fail_threshold: Threshold
    gate: GateResult | None  # the gate at the recommended pair; None when neither side passes
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
            f" {percent(point.upper_bound)} exceeds the {percent(target)} target"
            f" ({point.errors:,} errors in {point.n:,} parts)"
        )
    floor = max(targets.min_labels, zero_error_sample_size(target, targets.confidence))
    most = max((p.n for p in curve), default=0)
    return (
        f"{side} needs at least {floor:,} labeled parts beyond a threshold to be tested"
        f" against its {percent(target)} target, and has at most {most:,}"
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
    p, defect = as_labeled_arrays(p_ok, human_defect)
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
    stuck = [
        _why_no_threshold(side, curve, target, targets)
        for side, chosen, curve, target in (
            ("auto-pass", pass_threshold, pass_curve, targets.max_escape_rate),
            ("auto-fail", fail_threshold, fail_curve, targets.max_false_reject_rate),
        )
        if chosen is None
    ]
    if pass_threshold is not None or fail_threshold is not None:
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
        bounds = [
            f"{name} bound {percent(check.upper_bound)}"
            for name, check in (("escape", gate.escape), ("false-reject", gate.false_reject))
            if check.automated
        ]
        reason = (
            f"Recommended partial at pass {threshold_text(pass_threshold)}"
            f" / fail {threshold_text(fail_threshold)}: coverage"
            f" {percent(gate.what_if.coverage)}, {', '.join(bounds)}, from {total:,} labeled"
            " parts."
        )
        if stuck:
            reason += " Never on the other side for now: " + "; ".join(stuck) + "."
    else:
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

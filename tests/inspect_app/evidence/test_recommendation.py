"""The recommendation's 95% guarantee by simulation, and what it reports."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

from inspect_app.domain import AutomationLevel
from inspect_app.evidence import (
    THRESHOLD_GRID,
    GateTargets,
    fixed_sequence_walk,
    recommend_thresholds,
    side_counts,
)

LabeledStream = Callable[..., tuple[np.ndarray, np.ndarray]]  # the fixture in conftest.py


def test_side_counts_match_a_direct_count_for_every_repetition() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((4, 50))
    scores[:, :5] = 0.9  # ties exactly at a threshold count as clearing it
    errors = rng.random((4, 50)) < 0.3
    grid = (0.95, 0.9, 0.5, 0.1)
    n, e = side_counts(scores, errors, grid)
    assert n.shape == e.shape == (4, 4)
    for r in range(4):
        for j, t in enumerate(grid):
            assert n[r, j] == np.sum(scores[r] >= t)
            assert e[r, j] == np.sum(errors[r] & (scores[r] >= t))


def test_fixed_sequence_walk_skips_small_candidates_and_stops_at_the_first_failure() -> None:
    # Target 2%: zero errors need 149 parts, and min_labels is 200.
    n = np.array([50, 300, 400, 800, 900, 1000])
    e = np.array([5, 0, 2, 40, 3, 3])  # the 4th fails; the 5th would pass but is not reached
    chosen, status = fixed_sequence_walk(n, e, target=0.02, min_labels=200)
    assert int(chosen) == 2
    assert status.tolist() == [2, 0, 0, 1, 3, 3]  # skipped, passed, passed, failed, not reached
    chosen, _ = fixed_sequence_walk(np.array([[100, 300], [300, 400]]),
                                    np.array([[0, 50], [0, 0]]), 0.02, 200)  # fmt: skip
    assert chosen.tolist() == [-1, 1]


def _simulated_stream(rng: np.random.Generator, reps: int, n: int):
    """A model with a known error profile: logit P(ok) ~ N(4, 1.6) for good parts and
    N(-3, 2) for defective ones, 15% defective. Its true escape rate crosses 0.5% near
    P(ok) = 0.7 and its true false-reject rate crosses 2% near P(defect) = 0.6."""
    defect = rng.random((reps, n)) < DEFECT_SHARE
    z = np.where(defect, rng.normal(-3.0, 2.0, (reps, n)), rng.normal(4.0, 1.6, (reps, n)))
    return expit(z), defect


DEFECT_SHARE = 0.15


def _true_escape_rate(t: np.ndarray) -> np.ndarray:
    s_defect = DEFECT_SHARE * norm.sf(logit(t), -3.0, 2.0)
    s_ok = (1 - DEFECT_SHARE) * norm.sf(logit(t), 4.0, 1.6)
    return s_defect / (s_defect + s_ok)


def _true_false_reject_rate(t: np.ndarray) -> np.ndarray:
    f_ok = (1 - DEFECT_SHARE) * norm.cdf(logit(1 - t), 4.0, 1.6)
    f_defect = DEFECT_SHARE * norm.cdf(logit(1 - t), -3.0, 2.0)
    return f_ok / (f_ok + f_defect)


def test_recommended_thresholds_keep_the_true_rates_within_target_in_95_percent_of_runs(
    targets: GateTargets,
) -> None:
    rng = np.random.default_rng(20240611)
    reps, n = 2000, 6000
    grid = np.array(THRESHOLD_GRID)
    true_escape = _true_escape_rate(grid)
    true_false_reject = _true_false_reject_rate(grid)
    # The model is bad enough at loose thresholds for the check to mean something.
    assert true_escape[-1] > 2 * targets.max_escape_rate
    assert true_false_reject[-1] > targets.max_false_reject_rate

    escape_ok, false_reject_ok, naive_escape_ok, chose_pass, chose_fail = [], [], [], [], []
    for _ in range(reps // 500):
        p_ok, defect = _simulated_stream(rng, 500, n)
        pass_n, pass_e = side_counts(p_ok, defect, grid)
        fail_n, fail_e = side_counts(1.0 - p_ok, ~defect, grid)
        pick_pass, _ = fixed_sequence_walk(pass_n, pass_e, 0.005, targets.min_labels)
        pick_fail, _ = fixed_sequence_walk(fail_n, fail_e, 0.02, targets.min_labels)
        chose_pass.append(pick_pass >= 0)
        chose_fail.append(pick_fail >= 0)
        # No choice automates nothing, and nothing automated cannot escape.
        escape_ok.append(np.where(pick_pass >= 0, true_escape[pick_pass] <= 0.005, True))
        false_reject_ok.append(np.where(pick_fail >= 0, true_false_reject[pick_fail] <= 0.02, True))
        # The naive rule (loosest threshold whose observed rate is within target) for contrast.
        plug_in = (pass_e <= 0.005 * pass_n) & (pass_n >= targets.min_labels)
        naive = len(grid) - 1 - plug_in[:, ::-1].argmax(axis=1)
        naive_escape_ok.append(true_escape[naive] <= 0.005)

    assert np.mean(np.concatenate(escape_ok)) >= 0.95
    assert np.mean(np.concatenate(false_reject_ok)) >= 0.95
    # The guarantee is not bought by refusing to automate: most runs automate both sides.
    assert np.mean(np.concatenate(chose_pass)) > 0.9
    assert np.mean(np.concatenate(chose_fail)) > 0.9
    # And the check can fail: picking on the point estimate would not pass it.
    assert np.mean(np.concatenate(naive_escape_ok)) < 0.95


def test_recommendation_reports_the_pair_its_gate_and_the_curves(targets: GateTargets) -> None:
    rng = np.random.default_rng(5)
    p_ok, defect = _simulated_stream(rng, 1, 6000)
    result = recommend_thresholds(p_ok[0], defect[0], targets)
    assert result.pass_threshold is not None and result.fail_threshold is not None
    assert result.gate is not None and result.gate.passed
    assert result.gate.what_if.pass_threshold == result.pass_threshold
    assert len(result.pass_curve) == len(THRESHOLD_GRID) == len(result.fail_curve)
    statuses = [point.status for point in result.pass_curve]
    chosen = THRESHOLD_GRID.index(result.pass_threshold)
    assert statuses[chosen] == "passed"
    assert "passed" not in statuses[chosen + 1 :]
    shares = [point.share for point in result.pass_curve]
    assert shares == sorted(shares)  # looser thresholds automate more
    assert result.full.what_if.level is AutomationLevel.FULL


def test_recommendation_with_too_little_evidence_recommends_nothing(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    p_ok, defect = labeled_stream(n_pass=100, escapes=0, n_fail=100, false_rejects=0)
    result = recommend_thresholds(p_ok, defect, targets)
    assert result.pass_threshold is None and result.fail_threshold is None
    assert result.gate is None
    assert not result.full.passed
    assert {p.status for p in result.pass_curve} == {"skipped"}
    assert "auto-pass needs at least 598 labeled parts" in result.reason
    assert "auto-fail needs at least 200 labeled parts" in result.reason  # min_labels > 149


def test_a_side_with_no_passing_threshold_is_recommended_as_never(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    """Escapes on the pass side at every threshold, a clean fail side: the recommendation is
    one-sided (never auto-pass), with the gate at that pair, which passes."""
    p_ok, defect = labeled_stream(n_pass=700, escapes=20, n_fail=400, false_rejects=0)
    result = recommend_thresholds(p_ok, defect, targets)
    assert result.pass_threshold is None and result.fail_threshold is not None
    assert result.gate is not None and result.gate.passed
    assert result.gate.what_if.pass_threshold is None
    assert not result.gate.escape.automated
    assert result.reason.startswith(
        f"Recommended partial at pass never / fail {result.fail_threshold:g}"
    )
    assert "Never on the other side for now: auto-pass stops at its first tested" in result.reason

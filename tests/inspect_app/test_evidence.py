"""The statistics are right: bounds against the binomial and published tables, kappa against a
hand-worked example, the gate's verdicts and numbers, the recommendation's guarantee by
simulation, and the live audit test's false-alarm and detection rates by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit, logit
from scipy.stats import beta, binom, norm

from inspect_app.domain import AutomationLevel, LinePolicy, Prediction, Route
from inspect_app.evidence import (
    DEMOTION_ALTERNATIVE_FACTOR,
    DEMOTION_FALSE_ALARM,
    THRESHOLD_GRID,
    GateTargets,
    agreement_figures,
    audit_alarm,
    audit_log_likelihood_ratio,
    automated_masks,
    check_gate,
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_upper,
    clopper_pearson_upper_array,
    cohen_kappa,
    fixed_sequence_walk,
    labels_needed,
    rate_estimate,
    recommend_thresholds,
    side_counts,
    what_if,
    zero_error_sample_size,
)
from inspect_app.routing import route_inspection

COUNT_GRID = [(k, n) for n in (1, 2, 3, 5, 10, 30, 100, 598, 1000, 5000) for k in range(n + 1)
              if k <= 12 or k in (n // 2, n - 1, n)]  # fmt: skip


# ----------------------------------------------------------------------------- binomial bounds


@pytest.mark.parametrize(("k", "n"), COUNT_GRID)
def test_upper_bound_is_the_beta_quantile_and_leaves_five_percent_in_the_lower_tail(
    k: int, n: int
) -> None:
    upper = clopper_pearson_upper(k, n)
    if k == n:
        assert upper == 1.0
        return
    assert upper == pytest.approx(beta.ppf(0.95, k + 1, n - k), abs=1e-6)
    # The definition, independently of the beta identity: at the bound, seeing k or fewer
    # errors has probability exactly 5%.
    assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-6)


@pytest.mark.parametrize(("k", "n"), COUNT_GRID)
def test_lower_bound_leaves_five_percent_in_the_upper_tail(k: int, n: int) -> None:
    lower = clopper_pearson_lower(k, n)
    if k == 0:
        assert lower == 0.0
        return
    assert lower == pytest.approx(beta.ppf(0.05, k, n - k + 1), abs=1e-6)
    assert binom.sf(k - 1, n, lower) == pytest.approx(0.05, abs=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 59, 100, 300, 598, 1000, 10_000])
def test_zero_errors_gives_the_rule_of_three_form(n: int) -> None:
    assert clopper_pearson_upper(0, n) == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-9)


def test_published_clopper_pearson_values() -> None:
    # Two-sided 95% exact intervals as tabulated (e.g. Clopper & Pearson 1934; any exact
    # binomial CI table): 0/10 -> (0, 0.3085), 1/10 -> (0.0025, 0.4450), 5/10 ->
    # (0.1871, 0.8129), 0/30 -> (0, 0.1157).
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert clopper_pearson_interval(1, 10) == pytest.approx((0.0025, 0.4450), abs=1e-4)
    assert clopper_pearson_interval(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson_interval(0, 30) == pytest.approx((0.0, 0.1157), abs=1e-4)
    # One-sided 95% with no error in 1 part: the bound is 0.95 itself.
    assert clopper_pearson_upper(0, 1) == pytest.approx(0.95, abs=1e-12)


def test_no_data_gives_the_vacuous_bound_and_no_rate() -> None:
    assert clopper_pearson_upper(0, 0) == 1.0
    estimate = rate_estimate(0, 0)
    assert estimate.rate is None
    assert (estimate.lower, estimate.upper) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_impossible_counts_are_refused(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="errors <= n"):
        clopper_pearson_upper(k, n)


def test_vectorised_bound_matches_the_scalar_one() -> None:
    ks = np.array([[0, 1, 2], [3, 0, 10]])
    ns = np.array([[10, 10, 10], [50, 0, 10]])
    bounds = clopper_pearson_upper_array(ks, ns)
    assert bounds.shape == (2, 3)
    for idx in np.ndindex(ks.shape):
        assert bounds[idx] == clopper_pearson_upper(int(ks[idx]), int(ns[idx]))


def test_zero_error_sample_size_is_the_first_n_that_can_pass() -> None:
    for target in (0.005, 0.01, 0.02, 0.1):
        n = zero_error_sample_size(target)
        assert clopper_pearson_upper(0, n) <= target < clopper_pearson_upper(0, n - 1)
    assert zero_error_sample_size(0.005) == 598


@pytest.mark.parametrize(("rate", "target"), [(0.0, 0.005), (0.001, 0.005), (0.01, 0.02)])
def test_labels_needed_is_the_first_sample_size_whose_bound_reaches_the_target(
    rate: float, target: float
) -> None:
    n = labels_needed(rate, target)
    assert n is not None
    assert clopper_pearson_upper(rate * n, n) <= target
    assert clopper_pearson_upper(rate * (n - 1), n - 1) > target


def test_labels_cannot_help_when_the_rate_is_not_below_the_target() -> None:
    assert labels_needed(0.005, 0.005) is None
    assert labels_needed(0.02, 0.005) is None


# ----------------------------------------------------------------------------- agreement


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


# ----------------------------------------------------------------------------- what-if


def _prediction(p_ok: float) -> Prediction:
    rest = (1.0 - p_ok) / 4
    return Prediction(
        probabilities={
            "ok": p_ok,
            "scratch": rest,
            "crack": rest,
            "pit": rest,
            "discoloration": rest,
        },
        model_version="t",
    )


@pytest.mark.parametrize(
    ("level", "pass_threshold", "fail_threshold"),
    [
        (AutomationLevel.PARTIAL, 0.98, 0.98),
        (AutomationLevel.PARTIAL, 0.9, 0.6),
        (AutomationLevel.PARTIAL, 0.4, 0.4),  # overlapping: both-confident goes to a human
        (AutomationLevel.PARTIAL, 0.5, 0.5),
        (AutomationLevel.FULL, 0.99, 0.99),  # thresholds play no part at full
        (AutomationLevel.SHADOW, 0.9, 0.9),
    ],
)
def test_what_if_automates_exactly_what_routing_would(
    level: AutomationLevel, pass_threshold: float, fail_threshold: float
) -> None:
    p_ok = np.concatenate([np.linspace(0, 1, 201), [0.02, 0.4, 0.5, 0.6, 0.98, 0.9, 0.1]])
    passed, failed = automated_masks(p_ok, level, pass_threshold, fail_threshold)
    policy = LinePolicy(level, pass_threshold, fail_threshold, audit_rate=0.0)
    for i, p in enumerate(p_ok):
        outcome = route_inspection(_prediction(float(p)), policy, draw=0.5)
        auto = outcome.route is Route.AUTO
        assert passed[i] == (auto and outcome.decision == "pass"), p
        assert failed[i] == (auto and outcome.decision == "fail"), p


def test_what_if_counts_escapes_and_false_rejects() -> None:
    p_ok = [0.999, 0.995, 0.99, 0.7, 0.3, 0.02, 0.01]
    defect = [False, True, False, True, False, True, False]
    result = what_if(
        p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=0.99, fail_threshold=0.98
    )
    assert (result.auto_pass.n, result.auto_pass.errors) == (3, 1)  # 0.995 was a defect
    assert (result.auto_fail.n, result.auto_fail.errors) == (2, 1)  # 0.01 was ok
    assert result.to_human == 2
    assert result.coverage == pytest.approx(5 / 7)
    assert result.auto_pass.upper_bound == pytest.approx(beta.ppf(0.95, 2, 2))


def test_what_if_refuses_ragged_or_impossible_input() -> None:
    with pytest.raises(ValueError, match="equal 1-D"):
        what_if([0.5], [True, False], level=AutomationLevel.FULL, pass_threshold=0.5,
                fail_threshold=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="P\\(ok\\)"):
        what_if([1.5], [True], level=AutomationLevel.FULL, pass_threshold=0.5,
                fail_threshold=0.5)  # fmt: skip


# ----------------------------------------------------------------------------- the gate

TARGETS = GateTargets(max_escape_rate=0.005, max_false_reject_rate=0.02, min_labels=200)


def _stream(n_pass: int, escapes: int, n_fail: int, false_rejects: int, n_human: int = 0):
    """Labeled parts: a pass side (P(ok) 0.999), a fail side (P(ok) 0.001), some in between."""
    p_ok = np.concatenate([np.full(n_pass, 0.999), np.full(n_fail, 0.001), np.full(n_human, 0.5)])
    defect = np.concatenate(
        [
            np.arange(n_pass) < escapes,
            np.arange(n_fail) >= false_rejects,
            np.zeros(n_human, dtype=bool),
        ]
    )
    return p_ok, defect


def _gate(p_ok, defect):
    return check_gate(
        what_if(
            p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=0.99, fail_threshold=0.99
        ),
        TARGETS,
    )


def test_gate_accepts_sufficient_evidence() -> None:
    result = _gate(*_stream(n_pass=1000, escapes=0, n_fail=400, false_rejects=1))
    assert result.passed
    assert result.escape.upper_bound == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert result.escape.upper_bound <= 0.005 and result.false_reject.upper_bound <= 0.02
    assert "supports partial" in result.reason


def test_gate_refuses_too_few_labels_even_with_no_error() -> None:
    result = _gate(*_stream(n_pass=1000, escapes=0, n_fail=150, false_rejects=0))
    assert not result.passed
    check = result.false_reject
    assert not check.passed
    assert check.labels_short == 50
    assert check.upper_bound == pytest.approx(1 - 0.05 ** (1 / 150))
    assert check.upper_bound <= 0.02  # the bound alone would pass: only the count fell short
    assert check.more_on_side_needed == 50
    assert "only 150 of the 200 required would-be auto-failed parts" in result.reason
    assert result.escape.passed


def test_gate_refuses_when_the_bound_exceeds_the_target_and_says_by_how_much() -> None:
    p_ok, defect = _stream(n_pass=1000, escapes=2, n_fail=400, false_rejects=0, n_human=600)
    result = _gate(p_ok, defect)
    assert not result.passed
    check = result.escape
    bound = beta.ppf(0.95, 3, 998)  # 2 escapes in 1000: about 0.63%
    assert check.upper_bound == pytest.approx(bound, abs=1e-9)
    assert check.bound_excess == pytest.approx(bound - 0.005, abs=1e-9)
    # At the observed 0.2% rate the bound reaches 0.5% at n* parts on the pass side ...
    n_star = labels_needed(0.002, 0.005)
    assert n_star is not None
    assert check.more_on_side_needed == n_star - 1000
    # ... and the pass side is 1000 of 2000 labeled parts, so twice as many labels overall.
    assert check.more_labels_needed == math.ceil((n_star - 1000) / 0.5)
    assert f"{100 * bound:.2f}%" in result.reason
    assert f"{100 * (bound - 0.005):.2f}% above the 0.50% target" in result.reason
    assert f"about {check.more_labels_needed:,} more labeled parts" in result.reason
    assert result.false_reject.passed


def test_gate_says_when_more_labels_cannot_help() -> None:
    result = _gate(*_stream(n_pass=1000, escapes=10, n_fail=400, false_rejects=0))
    assert not result.passed
    assert result.escape.more_on_side_needed is None
    assert "stricter thresholds" in result.reason


def test_gate_targets_are_validated() -> None:
    with pytest.raises(ValueError, match="max_escape_rate"):
        GateTargets(max_escape_rate=0.0, max_false_reject_rate=0.02, min_labels=10)


# ----------------------------------------------------------------------------- recommendation


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


def test_recommended_thresholds_keep_the_true_rates_within_target_in_95_percent_of_runs() -> None:
    rng = np.random.default_rng(20240611)
    reps, n = 2000, 6000
    grid = np.array(THRESHOLD_GRID)
    true_escape = _true_escape_rate(grid)
    true_false_reject = _true_false_reject_rate(grid)
    # The model is bad enough at loose thresholds for the check to mean something.
    assert true_escape[-1] > 2 * TARGETS.max_escape_rate
    assert true_false_reject[-1] > TARGETS.max_false_reject_rate

    escape_ok, false_reject_ok, naive_escape_ok, chose_pass, chose_fail = [], [], [], [], []
    for _ in range(reps // 500):
        p_ok, defect = _simulated_stream(rng, 500, n)
        pass_n, pass_e = side_counts(p_ok, defect, grid)
        fail_n, fail_e = side_counts(1.0 - p_ok, ~defect, grid)
        pick_pass, _ = fixed_sequence_walk(pass_n, pass_e, 0.005, TARGETS.min_labels)
        pick_fail, _ = fixed_sequence_walk(fail_n, fail_e, 0.02, TARGETS.min_labels)
        chose_pass.append(pick_pass >= 0)
        chose_fail.append(pick_fail >= 0)
        # No choice automates nothing, and nothing automated cannot escape.
        escape_ok.append(np.where(pick_pass >= 0, true_escape[pick_pass] <= 0.005, True))
        false_reject_ok.append(np.where(pick_fail >= 0, true_false_reject[pick_fail] <= 0.02, True))
        # The naive rule (loosest threshold whose observed rate is within target) for contrast.
        plug_in = (pass_e <= 0.005 * pass_n) & (pass_n >= TARGETS.min_labels)
        naive = len(grid) - 1 - plug_in[:, ::-1].argmax(axis=1)
        naive_escape_ok.append(true_escape[naive] <= 0.005)

    assert np.mean(np.concatenate(escape_ok)) >= 0.95
    assert np.mean(np.concatenate(false_reject_ok)) >= 0.95
    # The guarantee is not bought by refusing to automate: most runs automate both sides.
    assert np.mean(np.concatenate(chose_pass)) > 0.9
    assert np.mean(np.concatenate(chose_fail)) > 0.9
    # And the check can fail: picking on the point estimate would not pass it.
    assert np.mean(np.concatenate(naive_escape_ok)) < 0.95


def test_recommendation_reports_the_pair_its_gate_and_the_curves() -> None:
    rng = np.random.default_rng(5)
    p_ok, defect = _simulated_stream(rng, 1, 6000)
    result = recommend_thresholds(p_ok[0], defect[0], TARGETS)
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


def test_recommendation_with_too_little_evidence_recommends_nothing() -> None:
    p_ok, defect = _stream(n_pass=100, escapes=0, n_fail=100, false_rejects=0)
    result = recommend_thresholds(p_ok, defect, TARGETS)
    assert result.pass_threshold is None and result.fail_threshold is None
    assert result.gate is None
    assert not result.full.passed
    assert {p.status for p in result.pass_curve} == {"skipped"}
    assert "auto-pass needs at least 598 labeled parts" in result.reason
    assert "auto-fail needs at least 200 labeled parts" in result.reason  # min_labels > 149


# ----------------------------------------------------------------------------- live audits


def _alarm_paths(rate: float, target: float, reps: int, audits: int, seed: int) -> np.ndarray:
    """For each simulated audit stream, whether the live test ever fired, and when."""
    rng = np.random.default_rng(seed)
    errors = np.cumsum(rng.random((reps, audits)) < rate, axis=1)
    seen = np.arange(1, audits + 1)
    llr = audit_log_likelihood_ratio(errors, seen, target)
    fired = llr >= math.log(1 / DEMOTION_FALSE_ALARM)
    return np.where(fired.any(axis=1), fired.argmax(axis=1), -1)


@pytest.mark.parametrize("target", [0.005, 0.02])
def test_audits_at_the_target_rate_rarely_demote(target: float) -> None:
    # 40 expected errors per stream at the target rate, checked after every audit.
    audits = int(40 / target)
    first_alarm = _alarm_paths(target, target, reps=2000, audits=audits, seed=1)
    assert np.mean(first_alarm >= 0) <= DEMOTION_FALSE_ALARM
    # The naive rule ("upper bound above target") would fire on nearly every such stream.
    rng = np.random.default_rng(2)
    errors = rng.binomial(audits, target, size=2000)
    assert np.mean(clopper_pearson_upper_array(errors, audits) > target) > 0.5


@pytest.mark.parametrize("target", [0.005, 0.02])
def test_audits_revealing_escapes_well_above_target_demote(target: float) -> None:
    audits = int(40 / target)
    first_alarm = _alarm_paths(4 * target, target, reps=2000, audits=audits, seed=3)
    assert np.mean(first_alarm >= 0) >= 0.99
    # ... and about when Wald's approximation says: log(20) over the mean step of the
    # statistic at the true rate (a few hundred audits at a 0.5% target).
    true_rate, alternative = 4 * target, DEMOTION_ALTERNATIVE_FACTOR * target
    mean_step = true_rate * math.log(alternative / target) + (1 - true_rate) * math.log(
        (1 - alternative) / (1 - target)
    )
    expected = math.log(1 / DEMOTION_FALSE_ALARM) / mean_step
    assert 0.5 * expected < np.median(first_alarm) < 2 * expected


def test_audit_alarm_reports_its_figures() -> None:
    quiet = audit_alarm("escape_rate", errors=1, n=400, target=0.005)
    assert not quiet.alarm
    assert quiet.estimate.rate == pytest.approx(0.0025)
    loud = audit_alarm("escape_rate", errors=8, n=400, target=0.005)
    assert loud.alarm
    assert loud.log_likelihood_ratio == pytest.approx(
        8 * math.log(3) + 392 * math.log(0.985 / 0.995)
    )
    assert loud.estimate.lower > 0.005  # here the evidence is clear by any reading
    with pytest.raises(ValueError, match="errors <= n"):
        audit_alarm("escape_rate", errors=5, n=4, target=0.005)

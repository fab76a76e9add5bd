"""The pure rollout rules: which version decides a part, the bandit's probability, the canary
step's verdict and the paired comparison, each on plain values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from inspect_app.domain import AutomationLevel
from inspect_app.evidence.gate import GateTargets
from inspect_app.rollout.policy import (
    Arm,
    DeploymentState,
    Mode,
    assign,
    bandit_probability,
    canary_verdict,
    paired_comparison,
    prob_better,
)

DRAWS = (np.arange(10_000) + 0.5) / 10_000  # an even grid of uniform draws
TARGETS = GateTargets(max_escape_rate=0.03, max_false_reject_rate=0.05, min_labels=100)


def _state(mode: Mode, **kw: object) -> DeploymentState:
    return DeploymentState("line-1", "champ", candidate="cand", mode=mode, **kw)  # type: ignore[arg-type]


def _candidate_share(state: DeploymentState, serial: bool = False) -> float:
    arms = [
        assign(state, draw=d, shadow_draw=0.0, part_serial=f"s-{i}" if serial else None).arm
        for i, d in enumerate(DRAWS)
    ]
    return sum(a is Arm.CANDIDATE for a in arms) / len(arms)


# -- assign


def test_without_a_candidate_the_champion_decides_everything_alone() -> None:
    state = DeploymentState("line-1", "champ")
    for draw in (0.0, 0.5, 0.999):
        a = assign(state, draw=draw, shadow_draw=0.0)
        assert (a.decider, a.arm, a.probability, a.hidden) == ("champ", Arm.CHAMPION, 1.0, ())


@pytest.mark.parametrize("share", [0.05, 0.25, 0.5, 1.0])
def test_a_canary_step_gives_the_candidate_its_share_and_records_the_probability(
    share: float,
) -> None:
    state = _state(Mode.CANARY, share=share)
    assert _candidate_share(state) == pytest.approx(share, abs=1e-4)
    candidate = assign(state, draw=share / 2, shadow_draw=0.9)
    assert (candidate.decider, candidate.probability, candidate.hidden) == (
        "cand",
        share,
        ("champ",),  # the champion runs beside it, hidden: the same parts compared
    )
    if share < 1.0:
        champion = assign(state, draw=(1 + share) / 2, shadow_draw=0.9)
        assert (champion.decider, champion.probability, champion.hidden) == (
            "champ",
            pytest.approx(1.0 - share),
            ("cand",),
        )


def test_shadow_never_lets_the_candidate_decide_and_runs_it_on_its_share() -> None:
    state = _state(Mode.SHADOW, shadow_share=0.3)
    assert _candidate_share(state) == 0.0
    assert assign(state, draw=0.0, shadow_draw=0.29).hidden == ("cand",)
    assert assign(state, draw=0.0, shadow_draw=0.31).hidden == ()
    assert assign(state, draw=0.0, shadow_draw=0.29).probability == 1.0


def test_blue_green_gives_the_candidate_every_part() -> None:
    state = _state(Mode.BLUE_GREEN, share=1.0)
    a = assign(state, draw=0.9999, shadow_draw=0.5)
    assert (a.decider, a.probability, a.hidden) == ("cand", 1.0, ("champ",))


def test_ab_is_sticky_by_part_serial_whatever_the_draw() -> None:
    state = _state(Mode.AB, share=0.5)
    for serial in ("A-1", "A-2", "B-77", "phone-0001"):
        arms = {
            assign(state, draw=d, shadow_draw=0.0, part_serial=serial).arm for d in DRAWS[::500]
        }
        assert len(arms) == 1, serial
    # another process, another day: the same serial lands in the same arm (a hash, no state)
    again = _state(Mode.AB, share=0.5, revision=7)
    for serial in ("A-1", "B-77"):
        assert (
            assign(state, draw=0.1, shadow_draw=0.0, part_serial=serial).arm
            is assign(again, draw=0.9, shadow_draw=0.0, part_serial=serial).arm
        )


def test_ab_splits_serials_by_its_share_and_parts_without_one_by_the_draw() -> None:
    state = _state(Mode.AB, share=0.3)
    by_serial = _candidate_share(state, serial=True)
    assert by_serial == pytest.approx(0.3, abs=4 * (0.3 * 0.7 / len(DRAWS)) ** 0.5)
    assert _candidate_share(state) == pytest.approx(0.3, abs=1e-4)


@pytest.mark.parametrize(
    "mode,share",
    [(Mode.CANARY, 0.5), (Mode.BLUE_GREEN, 1.0), (Mode.AB, 0.5), (Mode.BANDIT, 0.0)],
)
def test_a_quarantined_candidate_never_decides_but_still_runs_hidden(
    mode: Mode, share: float
) -> None:
    state = _state(mode, share=share, quarantined=True, bandit_candidate_p=0.95)
    assert _candidate_share(state) == 0.0
    assert _candidate_share(state, serial=True) == 0.0
    a = assign(state, draw=0.0, shadow_draw=0.99, part_serial="s-1")
    assert (a.decider, a.arm, a.probability, a.hidden) == (
        "champ",
        Arm.CHAMPION,
        1.0,
        ("cand",),  # its evidence keeps coming while it waits for a re-arm
    )


def test_the_bandit_assigns_by_the_snapshots_probability() -> None:
    assert _candidate_share(_state(Mode.BANDIT, bandit_candidate_p=0.8)) == pytest.approx(0.8)
    assert _candidate_share(_state(Mode.BANDIT)) == pytest.approx(0.5)  # no posterior yet
    a = assign(_state(Mode.BANDIT, bandit_candidate_p=0.8), draw=0.9, shadow_draw=0.9)
    assert (a.arm, a.probability, a.hidden) == (Arm.CHAMPION, pytest.approx(0.2), ("cand",))


# -- the bandit's probability


def test_with_no_rewards_both_versions_are_equally_likely() -> None:
    assert bandit_probability((0, 0), (0, 0), 0.1) == pytest.approx(0.5, abs=1e-12)
    assert prob_better(0, 0, 0, 0) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("exploration", [0.0, 0.1, 0.3])
def test_the_floor_holds_at_extreme_counts(exploration: float) -> None:
    worst = bandit_probability((10_000, 0), (0, 10_000), exploration)
    best = bandit_probability((0, 10_000), (10_000, 0), exploration)
    assert worst == pytest.approx(exploration / 2, abs=1e-9)
    assert best == pytest.approx(1 - exploration / 2, abs=1e-9)
    for champion in [(0, 0), (5, 50), (2000, 10), (50_000, 1)]:
        for candidate in [(0, 0), (0, 3000), (70, 3), (49_000, 1000)]:
            p = bandit_probability(champion, candidate, exploration)
            assert exploration / 2 - 1e-12 <= p <= 1 - exploration / 2 + 1e-12


def test_it_favours_the_version_with_the_better_record() -> None:
    # 95% against 92% agreement on a few hundred labels each
    p = bandit_probability((276, 24), (285, 15), 0.1)
    assert 0.5 < p < 0.95
    assert bandit_probability((285, 15), (276, 24), 0.1) == pytest.approx(1 - p)
    more = [bandit_probability((92, 8), (s, 100 - s), 0.1) for s in (85, 90, 92, 95, 99)]
    assert more == sorted(more) and more[2] == pytest.approx(0.5, abs=1e-9)


def test_prob_better_is_the_posteriors_chance_by_sampling() -> None:
    rng = np.random.default_rng(11)
    a = rng.beta(1 + 30, 1 + 10, 400_000)
    b = rng.beta(1 + 40, 1 + 8, 400_000)
    assert prob_better(30, 10, 40, 8) == pytest.approx(float((b > a).mean()), abs=0.004)


def test_exploration_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="exploration"):
        bandit_probability((0, 0), (0, 0), 1.5)


# -- the canary step's verdict


def _verdict(p_ok: list[float], defect: list[bool], **kw: object):  # type: ignore[no-untyped-def]
    settings: dict[str, object] = dict(
        level=AutomationLevel.PARTIAL,
        pass_threshold=0.98,
        fail_threshold=0.98,
        targets=TARGETS,
        min_labels=50,
    )
    settings.update(kw)
    return canary_verdict(np.array(p_ok), np.array(defect, dtype=bool), **settings)  # type: ignore[arg-type]


def test_no_labels_hold_never_pass_or_fail() -> None:
    verdict = _verdict([], [])
    assert verdict.outcome == "hold" and verdict.labels == 0
    assert "Holding on 0 of 50 labels" in verdict.reason


def test_too_few_labels_hold_even_when_the_bound_would_pass() -> None:
    loose = GateTargets(max_escape_rate=0.5, max_false_reject_rate=0.5, min_labels=1)
    verdict = _verdict([0.995] * 20 + [0.005] * 20, [False] * 20 + [True] * 20, targets=loose)
    assert verdict.outcome == "hold"
    with_enough = _verdict([0.995] * 50 + [0.005] * 50, [False] * 50 + [True] * 50, targets=loose)
    assert with_enough.outcome == "pass"


def test_clean_labels_on_both_sides_pass_the_step() -> None:
    verdict = _verdict([0.995] * 150 + [0.005] * 100, [False] * 150 + [True] * 100)
    assert verdict.outcome == "pass" and verdict.labels == 250
    assert verdict.gate.escape.n == 150 and verdict.gate.false_reject.n == 100


def test_a_clean_step_holds_until_its_bound_is_within_the_target() -> None:
    # 60 clean parts a side: enough labels, but 0 of 60 bounds the escape rate at 4.9% > 3%
    verdict = _verdict([0.995] * 60 + [0.005] * 60, [False] * 60 + [True] * 60)
    assert verdict.outcome == "hold"


def test_escapes_clearly_above_the_target_fail_at_once_whatever_the_count() -> None:
    verdict = _verdict([0.995] * 20, [True] * 4 + [False] * 16)  # 4 escapes in 20
    assert verdict.outcome == "fail"
    assert "escape rate (4 of 20" in verdict.reason and "clearly above" in verdict.reason
    false_rejects = _verdict([0.005] * 20, [False] * 5 + [True] * 15)
    assert false_rejects.outcome == "fail" and "false reject" in false_rejects.reason


def test_errors_within_the_target_never_fail_the_step() -> None:
    # 2 escapes in 150 (1.3%) against 3%: the lower bound is far below; not yet a pass either
    verdict = _verdict([0.995] * 150 + [0.005] * 100, [True] * 2 + [False] * 148 + [True] * 100)
    assert verdict.outcome == "hold"


def test_a_side_that_never_automates_needs_no_labels() -> None:
    verdict = _verdict([0.995] * 150 + [0.5] * 10, [False] * 160, fail_threshold=None)
    assert verdict.outcome == "pass"
    assert not verdict.gate.false_reject.automated


def test_below_partial_the_step_is_judged_as_partial_would_be() -> None:
    p, d = [0.995] * 150 + [0.005] * 100, [False] * 150 + [True] * 100
    for level in (AutomationLevel.SHADOW, AutomationLevel.ASSIST):
        assert _verdict(p, d, level=level).outcome == "pass"
    assert (
        _verdict([0.995] * 10, [True] * 5 + [False] * 5, level=AutomationLevel.SHADOW).outcome
        == "fail"
    )


# -- paired comparison


def test_paired_comparison_is_mcnemars_exact_test_on_the_discordant_parts() -> None:
    rng = np.random.default_rng(5)
    champion = rng.random(500) < 0.92
    candidate = rng.random(500) < 0.95
    result = paired_comparison(champion, candidate)
    champion_only = int((champion & ~candidate).sum())
    candidate_only = int((~champion & candidate).sum())
    assert (result.champion_only, result.candidate_only) == (champion_only, candidate_only)
    assert (result.n, result.champion_correct, result.candidate_correct) == (
        500,
        int(champion.sum()),
        int(candidate.sum()),
    )
    expected = binomtest(candidate_only, champion_only + candidate_only).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-12)
    assert result.candidate_accuracy == pytest.approx(candidate.mean())


def test_parts_both_got_right_or_wrong_say_nothing() -> None:
    same = paired_comparison([True, True, False], [True, True, False])
    assert same.p_value == 1.0 and same.champion_only == same.candidate_only == 0
    empty = paired_comparison([], [])
    assert empty.n == 0 and empty.champion_accuracy is None and empty.p_value == 1.0


def test_versions_must_be_judged_on_the_same_parts() -> None:
    with pytest.raises(ValueError, match="same parts"):
        paired_comparison([True, False], [True])

"""The bandit through the database: a reward is a blind label of the part the arm decided,
once per part; what has no label yet is pending, never a failure; a late label still
rewards the arm that decided; a label given with the model shown rewards nothing."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app import review_queue
from inspect_app.domain import AutomationLevel
from inspect_app.lines import change_automation
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.policy import Mode
from tests.inspect_app.rollout.rollout_world import (
    ALWAYS_RIGHT,
    ALWAYS_WRONG,
    CANDIDATE,
    CHAMPION,
    LINE,
    RolloutWorld,
    add_inspector,
    build_world,
)


@pytest.fixture
def world(engine: Engine) -> RolloutWorld:
    """The champion always agrees with the blind label, the candidate never: each reward
    says by its kind which arm got it."""
    world = build_world(engine, ALWAYS_RIGHT, ALWAYS_WRONG)
    world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=Mode.BANDIT))
    return world


def _decided(world: RolloutWorld, ids: list[int]) -> dict[str, int]:
    arms = [i.arm for i in world.inspections(ids)]
    return {CHAMPION: arms.count("champion"), CANDIDATE: arms.count("candidate")}


def test_each_blind_label_rewards_the_arm_that_decided_the_part(world: RolloutWorld) -> None:
    assert world.arms() == {CHAMPION: (0, 0), CANDIDATE: (0, 0)}
    ids = world.parts(30)
    assert world.inspector.drain(LINE) == 30
    decided = _decided(world, ids)
    assert decided[CHAMPION] > 0 and decided[CANDIDATE] > 0
    assert world.arms() == {CHAMPION: (decided[CHAMPION], 0), CANDIDATE: (0, decided[CANDIDATE])}


def test_each_part_stores_the_probability_its_arm_had(world: RolloutWorld) -> None:
    for _ in range(5):
        world.tick(4)  # rewards move the posteriors between ticks
    for inspection in world.inspections():
        p = inspection.assignment_p
        assert p is not None and 0.05 - 1e-9 <= p <= 0.95 + 1e-9  # the floor, both ways
    state = world.rehearsal.state(LINE)
    assert state.bandit_candidate_p is not None and state.bandit_candidate_p < 0.5
    latest = world.parts(1)[0]
    part = world.inspections([latest])[0]
    expected = state.bandit_candidate_p if part.arm == "candidate" else 1 - state.bandit_candidate_p
    assert part.assignment_p == pytest.approx(expected)


def test_a_relabel_does_not_reward_the_part_twice(world: RolloutWorld) -> None:
    [part] = world.parts(1)
    world.inspector.drain(LINE)
    once = world.arms()
    truth = world.inspections([part])[0].true_class
    with Session(world.engine, expire_on_commit=False) as session:
        review_queue.relabel(session, part, world.supervisor, "ok" if truth != "ok" else "pit")
    assert world.arms() == once
    assert sum(s + f for s, f in once.values()) == 1


def test_a_part_without_a_label_is_pending_never_a_failure(world: RolloutWorld) -> None:
    ids = world.parts(12)
    labeled = []
    for _ in range(6):  # the first six get labels, one is escalated, five wait in the queue
        labeled.append(world.inspector.claim(LINE).inspection_id)  # type: ignore[union-attr]
        world.inspector.label_held()
    world.inspector.claim(LINE)
    world.inspector.escalate_held("cannot tell")
    world.rehearsal.refresh()
    decided = _decided(world, labeled)
    assert world.arms() == {CHAMPION: (decided[CHAMPION], 0), CANDIDATE: (0, decided[CANDIDATE])}
    # more parts and labels later: the waiting and the escalated ones still count for nothing
    world.tick(3)
    rewarded = sum(s + f for s, f in world.arms().values())
    assert rewarded == 6 + 5 + 3  # that tick's drain labeled the five waiting and its three
    assert len(world.inspections()) - rewarded == 1  # the escalated part, never labeled
    assert len(ids) == 12


def test_a_late_label_still_rewards_the_arm_that_decided(world: RolloutWorld) -> None:
    slow = add_inspector(world, "slow")
    [late] = world.parts(1)
    assert slow.claim(LINE) is not None  # held while the line goes on
    for _ in range(8):
        world.tick(5)
    before = world.arms()
    decider = CANDIDATE if world.inspections([late])[0].arm == "candidate" else CHAMPION
    slow.label_held()
    after = world.arms()
    gained = {v: (after[v][0] - before[v][0], after[v][1] - before[v][1]) for v in after}
    expected = (1, 0) if decider == CHAMPION else (0, 1)
    assert gained == {decider: expected, ({CHAMPION, CANDIDATE} - {decider}).pop(): (0, 0)}


def test_a_label_given_with_the_model_shown_rewards_nothing(world: RolloutWorld) -> None:
    with Session(world.engine, expire_on_commit=False) as session:
        change_automation(
            session, LINE, level=AutomationLevel.ASSIST, reason="assist", actor=world.supervisor
        )
    ids = world.parts(10)
    assert all(i.show_model for i in world.inspections(ids))
    assert world.inspector.drain(LINE) == 10
    assert world.arms() == {CHAMPION: (0, 0), CANDIDATE: (0, 0)}


def test_changing_a_running_bandit_keeps_what_it_learned(world: RolloutWorld) -> None:
    world.tick(20)
    learned = world.arms()
    world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=Mode.BANDIT, exploration=0.2))
    assert world.arms() == learned
    assert world.rehearsal.state(LINE).bandit_candidate_p == pytest.approx(0.1, abs=0.01)
    # a bandit started again after another mode starts from flat posteriors
    world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=Mode.SHADOW))
    world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=Mode.BANDIT))
    assert world.arms() == {CHAMPION: (0, 0), CANDIDATE: (0, 0)}

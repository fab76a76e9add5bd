"""A canary at partial through the database: each step advances on the candidate's blind
labels, never on time; a worse candidate is rolled back and quarantined by the system; too
few labels hold the step.

The line reaches partial the real way: a shadow phase (both versions run on every part,
labeled blind), the gated raise, then the canary, whose start checks the candidate's gate on
its shadow evidence. Loose targets keep the worlds small; the rules are the product's."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.domain import AutomationLevel
from inspect_app.lines import AutomationRefused, change_automation
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest, RolloutRefused
from inspect_app.rollout.policy import Mode
from inspect_app.storage.tables import Line, ModelPrediction
from tests.inspect_app.rollout.rollout_world import (
    ALWAYS_RIGHT,
    CANARY_TARGETS,
    CANDIDATE,
    CHAMPION,
    LINE,
    PASSES_EVERYTHING,
    STEP_MIN_LABELS,
    RolloutWorld,
    build_world,
    new_kind_of_part,
)

MAX_TICKS = 100


def _canary_at_partial(world: RolloutWorld, steps: list[float]) -> None:
    world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=Mode.SHADOW))
    world.parts(80)
    assert world.label_open_tasks_directly() == 80
    with Session(world.engine, expire_on_commit=False) as session:
        change_automation(
            session, LINE, level=AutomationLevel.PARTIAL, reason="gate passed",
            actor=world.supervisor,
        )  # fmt: skip
    # every part the candidate decides is audited, so each is one blind label
    world.deploy(
        DeploymentRequest(
            candidate=CANDIDATE,
            mode=Mode.CANARY,
            steps=steps,
            step_min_labels=STEP_MIN_LABELS,
            candidate_audit_rate=1.0,
        )
    )


def _verdict(world: RolloutWorld) -> deployments.StepVerdict:
    with Session(world.engine) as session:
        line = session.get(Line, LINE)
        assert line is not None
        return deployments.step_verdict(session, line, world.row())


def test_a_worse_candidate_is_rolled_back_and_quarantined_by_the_system(engine: Engine) -> None:
    world = build_world(
        engine, ALWAYS_RIGHT, ALWAYS_RIGHT, candidate_on={"new-colour": PASSES_EVERYTHING},
        **CANARY_TARGETS,
    )  # fmt: skip
    _canary_at_partial(world, [0.5, 1.0])
    new_kind_of_part(world, "new-colour")  # the candidate passes every part of this kind
    for _ in range(MAX_TICKS):
        world.tick(5)
        if world.row().quarantined:
            break
    row = world.row()
    assert row.quarantined and row.quarantine_reason
    assert row.step == 0 and row.share == 0.0
    [event] = world.events("rollout_rollback")
    assert event.actor == "system" and event.details is not None
    assert event.details["automatic"] is True and event.details["after"]["quarantined"] is True
    assert world.rehearsal.state(LINE).candidate_share() == 0.0

    # from the next part on it decides nothing, and still runs hidden (its evidence goes on)
    ids = world.parts(10)
    assert {i.arm for i in world.inspections(ids)} == {"champion"}
    with Session(world.engine) as session:
        roles = session.exec(
            select(ModelPrediction.role).where(
                col(ModelPrediction.inspection_id).in_(ids),
                ModelPrediction.model_version == CANDIDATE,
            )
        ).all()
    assert roles == ["shadow"] * 10
    # it stays out until a supervisor re-arms it: labels do not bring it back
    world.inspector.drain(LINE)
    assert world.row().quarantined
    with (
        Session(world.engine, expire_on_commit=False) as session,
        pytest.raises(RolloutRefused, match="quarantined"),
    ):
        deployments.promote(session, LINE, actor=world.supervisor, reason="try",
                            default_version=CHAMPION)  # fmt: skip


def test_a_good_candidate_advances_step_by_step_on_labels(engine: Engine) -> None:
    world = build_world(engine, ALWAYS_RIGHT, ALWAYS_RIGHT, **CANARY_TARGETS)
    _canary_at_partial(world, [0.25, 0.5, 1.0])
    seen = [world.row().step]
    for _ in range(MAX_TICKS):
        world.tick(5)
        step = world.row().step
        if step != seen[-1]:
            seen.append(step)
        if step == 2 and _verdict(world).outcome == "pass":
            break
    assert seen == [0, 1, 2]  # one step at a time, never skipped, never rolled back
    assert not world.row().quarantined
    promotions = world.events("rollout_promote")
    assert [e.actor for e in promotions] == ["system", "system"]
    for event in promotions:
        assert event.details is not None
        step = event.details["step"]
        assert step["outcome"] == "pass" and step["labels"] >= 2 * STEP_MIN_LABELS
    assert [e.details["after"]["share"] for e in promotions if e.details] == [0.5, 1.0]
    # the last step passes but is never left by itself: a supervisor finalizes
    world.tick(5)
    assert world.row().step == 2 and world.row().candidate == CANDIDATE
    with Session(world.engine, expire_on_commit=False) as session:
        deployments.finalize(session, LINE, actor=world.supervisor, reason="all steps passed",
                             default_version=CHAMPION)  # fmt: skip
    assert (world.row().champion, world.row().candidate) == (CANDIDATE, None)


def test_a_step_holds_while_it_has_too_few_labels(engine: Engine) -> None:
    world = build_world(engine, ALWAYS_RIGHT, ALWAYS_RIGHT, **CANARY_TARGETS)
    _canary_at_partial(world, [0.5, 1.0])
    world.parts(30)  # the candidate decides about half; nobody has labeled them yet
    world.rehearsal.refresh()
    verdict = _verdict(world)
    assert verdict.outcome == "hold" and verdict.labels == 0
    for _ in range(4):  # a few clean labels: still short of the step's minimum
        assert world.inspector.label_next(LINE) is not None
    verdict = _verdict(world)
    assert verdict.outcome == "hold" and verdict.labels == 4
    assert "Holding on 4 of 10 labels" in verdict.reason
    assert world.row().step == 0 and not world.row().quarantined
    assert world.events("rollout_promote") == [] and world.events("rollout_rollback") == []


@pytest.mark.parametrize("candidate_mode", [Mode.CANARY, Mode.AB, Mode.SHADOW])
def test_raising_a_line_whose_candidate_decides_needs_the_candidates_gate_too(
    engine: Engine, candidate_mode: Mode
) -> None:
    """At shadow a canary or A/B candidate already takes decisions (as the line's level
    allows: none automatic). Raising the line to partial lets it auto-decide its share,
    so the raise is judged on the candidate's own evidence as well as the champion's; a
    candidate only in shadow decides nothing and is not asked."""
    world = build_world(engine, ALWAYS_RIGHT, PASSES_EVERYTHING, **CANARY_TARGETS)
    world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=Mode.SHADOW))
    world.parts(80)
    assert world.label_open_tasks_directly() == 80
    if candidate_mode is not Mode.SHADOW:
        world.deploy(DeploymentRequest(candidate=CANDIDATE, mode=candidate_mode, share=0.5))
    with Session(world.engine, expire_on_commit=False) as session:
        attempt = lambda: change_automation(  # noqa: E731
            session, LINE, level=AutomationLevel.PARTIAL, reason="champion passed",
            actor=world.supervisor,
        )  # fmt: skip
        if candidate_mode is Mode.SHADOW:
            assert attempt().level == "partial"
            return
        with pytest.raises(AutomationRefused) as refused:
            attempt()
        verdict = refused.value.verdict
        assert f"Candidate {CANDIDATE} decides parts" in verdict.reason
        assert verdict.evidence["passed"]  # the champion's own gate passed
        candidate = verdict.evidence["candidate"]
        assert candidate["model_version"] == CANDIDATE and not candidate["passed"]
        assert candidate["escape"]["n"] > 0 and not candidate["escape"]["passed"]
        assert session.get(Line, LINE).level == "shadow"  # type: ignore[union-attr]

        # rolled back (quarantined), the candidate decides nothing: the raise goes through
        deployments.rollback_by(session, LINE, actor=world.supervisor, reason="escapes")
        assert attempt().level == "partial"

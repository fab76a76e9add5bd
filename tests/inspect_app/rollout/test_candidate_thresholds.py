"""A candidate's own thresholds: recommended on its own shadow evidence when it leaves
shadow, gated there, deciding its canary parts, judging its steps, and the line's at
finalize; a rollback drops them.

The candidate here is right on every part but calibrated differently from the champion: it
is sure of its defects (P(ok) <= 0.01) and modest about its good parts (P(ok) 0.93-0.97), so
at the line's pass threshold of 0.98 it would auto-pass nothing, and a gate that asks for
labels on every automated side refuses it there. Small worlds with loose targets, as in
`test_canary`: the rules are the product's."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.automation import live_checks
from inspect_app.domain import CLASS_NAMES, DEFECT_CLASSES, AutomationLevel
from inspect_app.lines import change_automation
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest, RolloutRefused
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.rehearsal import OK, SimulatedVersion, StreamPart
from inspect_app.storage.tables import Line
from tests.inspect_app.rollout.rollout_world import (
    ALWAYS_RIGHT,
    CANARY_TARGETS,
    CANDIDATE,
    CHAMPION,
    LINE,
    STEP_MIN_LABELS,
    RolloutWorld,
    build_world,
)

MAX_TICKS = 60
# 0 errors in ~40 parts a side at every grid threshold down to 0.51: the walk's last step
RECOMMENDED = (0.51, 0.51)


@dataclass(frozen=True)
class ModestAboutGoodParts(SimulatedVersion):
    def probabilities(self, part: StreamPart, rng: random.Random) -> dict[str, float]:
        p_ok = rng.uniform(0.0, 0.01) if part.defective else rng.uniform(0.93, 0.97)
        named = part.true_class if part.defective else rng.choice(DEFECT_CLASSES)
        rest, others = 1.0 - p_ok, len(DEFECT_CLASSES) - 1
        return {
            c: p_ok if c == OK else rest * (0.7 if c == named else 0.3 / others)
            for c in CLASS_NAMES
        }


def _world_at_partial(engine: Engine) -> RolloutWorld:
    """Shadow (both run on every part, labeled blind), then the champion's gated raise."""
    world = build_world(
        engine, ALWAYS_RIGHT, ALWAYS_RIGHT, candidate_model=ModestAboutGoodParts(CANDIDATE),
        **CANARY_TARGETS,
    )  # fmt: skip
    world.deploy(
        DeploymentRequest(
            candidate=CANDIDATE,
            mode=Mode.SHADOW,
            steps=[0.5, 1.0],
            step_min_labels=STEP_MIN_LABELS,
            candidate_audit_rate=1.0,  # every part it decides is one blind label
        )
    )
    world.parts(80)
    assert world.label_open_tasks_directly() == 80
    with Session(world.engine, expire_on_commit=False) as session:
        change_automation(session, LINE, level=AutomationLevel.PARTIAL, reason="gate passed",
                          actor=world.supervisor)  # fmt: skip
    return world


def _promote(world: RolloutWorld, thresholds: tuple[float, float] | None = None) -> None:
    with Session(world.engine, expire_on_commit=False) as session:
        deployments.promote(session, LINE, actor=world.supervisor, reason="shadow looked good",
                            default_version=CHAMPION, thresholds=thresholds)  # fmt: skip
    world.rehearsal.refresh(force=True)


def _line(world: RolloutWorld) -> Line:
    with Session(world.engine, expire_on_commit=False) as session:
        line = session.get(Line, LINE)
        assert line is not None
        return line


def test_a_candidate_calibrated_otherwise_is_promoted_canaried_and_finalized_at_its_own(
    engine: Engine,
) -> None:
    world = _world_at_partial(engine)
    # stated as the line's thresholds, the candidate fails the gate: it would pass nothing
    with pytest.raises(RolloutRefused, match=r"pass 0\.98 / fail 0\.98") as refused:
        _promote(world, thresholds=(0.98, 0.98))
    assert refused.value.evidence["source"] == "supervisor"
    assert not refused.value.evidence["escape"]["passed"]
    assert world.row().mode == Mode.SHADOW.value and world.row().candidate_thresholds is None

    # recommended on its own shadow evidence, it passes, and is promoted with them
    _promote(world)
    row = world.row()
    assert row.mode == Mode.CANARY.value
    assert row.candidate_thresholds == {
        "pass_threshold": RECOMMENDED[0],
        "fail_threshold": RECOMMENDED[1],
        "source": "recommended",
    }
    [promoted] = world.events("rollout_promote")
    assert promoted.details is not None
    gate = promoted.details["gate"]
    assert gate["passed"] and gate["source"] == "recommended" and gate["n_labeled"] == 80
    assert gate["at_line_thresholds"]["passed"] is False  # the figures of both, logged
    assert "Recommended partial" in gate["recommendation"]["reason"]
    view = deployments.view(Session(world.engine), LINE, CHAMPION)
    assert view.candidate_thresholds == {
        "pass_threshold": 0.51,
        "fail_threshold": 0.51,
        "source": "recommended",
    }
    assert deployments.comparison(Session(world.engine), LINE, CHAMPION)["candidate_own"]["passed"]

    # the canary decides the candidate's parts at its thresholds, the champion's at the line's
    ids = world.parts(40)
    parts = world.inspections(ids)
    mine = [i for i in parts if i.arm == "candidate"]
    theirs = [i for i in parts if i.arm == "champion"]
    assert mine and theirs
    assert {(i.pass_threshold, i.fail_threshold) for i in mine} == {RECOMMENDED}
    assert {(i.pass_threshold, i.fail_threshold) for i in theirs} == {(0.98, 0.98)}
    good = [i for i in mine if i.true_class == OK]
    assert good and {i.decision for i in good} == {"pass"}  # 0.93-0.97 >= 0.51: auto-passed

    # its steps are judged at its thresholds: at the line's the pass side would hold forever
    world.inspector.drain(LINE)
    world.rehearsal.refresh()
    for _ in range(MAX_TICKS):
        if world.row().step == 1:
            break
        world.tick(5)
    assert world.row().step == 1 and not world.row().quarantined
    step = world.events("rollout_promote")[-1]
    assert step.actor == "system" and step.details is not None
    assert step.details["step"]["escape"]["n"] >= STEP_MIN_LABELS

    # its live audits are counted at the thresholds its parts were routed at
    with Session(world.engine) as session:
        line = session.get(Line, LINE)
        assert line is not None
        assert live_checks(session, line, CANDIDATE, RECOMMENDED).counts.passed > 0
        assert live_checks(session, line, CANDIDATE).counts.passed == 0

    # finalized, its thresholds become the line's, in an event with before and after
    with Session(world.engine, expire_on_commit=False) as session:
        deployments.finalize(session, LINE, actor=world.supervisor, reason="all steps passed",
                             default_version=CHAMPION)  # fmt: skip
    row = world.row()
    assert (row.champion, row.candidate, row.candidate_thresholds) == (CANDIDATE, None, None)
    line = _line(world)
    assert (line.pass_threshold, line.fail_threshold) == RECOMMENDED
    [event] = world.events("line_thresholds")
    assert event.actor == "sue" and "all steps passed" in (event.reason or "")
    assert event.details is not None
    assert event.details["before"] == {"pass_threshold": 0.98, "fail_threshold": 0.98}
    assert event.details["after"] == {"pass_threshold": 0.51, "fail_threshold": 0.51}
    assert event.details["model_version"] == CANDIDATE
    assert event.details["gate"]["source"] == "recommended"


def test_a_rollback_drops_the_candidates_thresholds_and_a_supervisors_own_are_gated(
    engine: Engine,
) -> None:
    world = _world_at_partial(engine)
    _promote(world, thresholds=(0.9, 0.95))  # stated, gated, passing: kept as stated
    assert world.row().candidate_thresholds == {
        "pass_threshold": 0.9,
        "fail_threshold": 0.95,
        "source": "supervisor",
    }
    with Session(world.engine, expire_on_commit=False) as session:
        deployments.rollback_by(session, LINE, actor=world.supervisor, reason="escapes seen")
    world.rehearsal.refresh(force=True)
    row = world.row()
    assert row.quarantined and row.candidate_thresholds is None
    assert world.rehearsal.state(LINE).candidate_thresholds is None
    [event] = world.events("rollout_rollback")
    assert event.details is not None
    assert event.details["before"]["candidate_thresholds"]["source"] == "supervisor"
    assert event.details["after"]["candidate_thresholds"] is None
    line = _line(world)
    assert (line.pass_threshold, line.fail_threshold) == (0.98, 0.98)  # the line keeps its own

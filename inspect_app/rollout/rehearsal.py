"""A rollout rehearsal: a replayed stream with known truth, simulated model versions and
scripted blind inspectors, driving the real deployment use cases on a database of its own.

Why a plant wants it: a canary step, a bandit or an A/B split advances on labels, and labels
are inspectors' hours. Before starting one, a plant can rehearse it with its line's settings
(level, thresholds, audit rates, targets, steps, exploration) and versions whose error rates
it chooses, and read how many parts and labels each step takes, how fast a worse candidate
is stopped and how many escapes it costs meanwhile. `bench/rollout_scenarios.py` and the
rollout tests are built on it.

What is real: the line and its policy, routing (`routing.route_inspection`), the assignment of
each part (`rollout.policy.assign` on the snapshot `deployments.all_states` gives, refreshed
like `serving.Rollout.refresh`), the rows `pipeline.InspectionPipeline` writes for a part
(the inspection with its arm, assignment probability, deployment revision and audit rate, one
`ModelPrediction` per version that ran, a `ReviewTask` when routed to a human), the review
queue (`claim_next_task`, `submit_label`, `escalate_task`, so the after-label hooks fire as
in production), the evidence, the canary verdicts, the bandit's rewards and every rollback.

`tests/inspect_app/rollout/test_rehearsal.py` holds it to that: the same parts, draws and
deployment give exactly the rows `InspectionPipeline.submit` writes with the same outputs.

What is simulated: the images and the network. A `SimulatedVersion` draws each part's P(ok)
from a distribution conditioned on the part's true class (and, optionally, its variant), so
its error rates are known. The image gate is not simulated (every frame is usable).

Never point it at a plant's database: it registers versions that have no checkpoint.
`register_versions` refuses a database holding any version that is not simulated.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app.domain import (
    CLASS_NAMES,
    DEFECT_CLASSES,
    DefectClass,
    Prediction,
    TaskReason,
)
from inspect_app.lines import policy_of
from inspect_app.review_queue import ClaimedTask, claim_next_task, escalate_task, submit_label
from inspect_app.rollout import deployments
from inspect_app.rollout.policy import Arm, DeploymentState, assign, candidate_policy
from inspect_app.routing import route_inspection
from inspect_app.storage.tables import (
    Inspection,
    Label,
    Line,
    ModelPrediction,
    ModelVersion,
    ReviewTask,
    User,
)
from inspect_app.timeutil import utcnow

OK = DefectClass.OK.value
SIMULATED = "simulated"  # the lineage key that marks a version registered by a rehearsal
# The bands a simulated P(ok) is drawn from. A confident call lies beyond 0.99 on its side,
# so it is auto-decided at any threshold up to 0.99 (the product's default is 0.98); an
# unsure one lies in [0.5, 0.97), so it goes to a human at any threshold from 0.97 up.
CONFIDENT_BAND = (0.99, 1.0)
UNSURE_BAND = (0.5, 0.97)


class RehearsalError(RuntimeError):
    """A rehearsal refused to run (e.g. on a database with real versions)."""


@dataclass(frozen=True)
class Behaviour:
    """How a version calls the parts of one kind, by their true class.

    A call is right with `accuracy_ok` (ok parts) or `accuracy_defect` (defective parts), judged
    at P(ok) = 0.5; `confident_right` of the right calls and `confident_wrong` of the wrong ones
    are confident (auto-decided at the usual thresholds), the rest unsure (to a human)."""

    accuracy_ok: float = 0.98
    accuracy_defect: float = 0.97
    confident_right: float = 0.90
    confident_wrong: float = 0.10

    def __post_init__(self) -> None:
        for name in ("accuracy_ok", "accuracy_defect", "confident_right", "confident_wrong"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")

    def p_ok(self, defective: bool, rng: random.Random) -> float:
        right = rng.random() < (self.accuracy_defect if defective else self.accuracy_ok)
        confident = rng.random() < (self.confident_right if right else self.confident_wrong)
        low, high = CONFIDENT_BAND if confident else UNSURE_BAND
        sure = low + (high - low) * rng.random()  # how sure it is of what it says, >= 0.5
        says_ok = right != defective
        return sure if says_ok else 1.0 - sure

    def binary_accuracy(self, defect_rate: float) -> float:
        """Agreement with the truth at P(ok) = 0.5 (what the bandit rewards)."""
        return (1.0 - defect_rate) * self.accuracy_ok + defect_rate * self.accuracy_defect

    def escape_rate(self, defect_rate: float) -> float:
        """Defective among the parts it auto-passes (thresholds inside the bands' gap)."""
        bad = defect_rate * (1.0 - self.accuracy_defect) * self.confident_wrong
        good = (1.0 - defect_rate) * self.accuracy_ok * self.confident_right
        return bad / (bad + good) if bad + good else 0.0

    def false_reject_rate(self, defect_rate: float) -> float:
        """Ok among the parts it auto-fails (thresholds inside the bands' gap)."""
        bad = (1.0 - defect_rate) * (1.0 - self.accuracy_ok) * self.confident_wrong
        good = defect_rate * self.accuracy_defect * self.confident_right
        return bad / (bad + good) if bad + good else 0.0


@dataclass(frozen=True)
class StreamPart:
    """One part of the replayed stream: its serial, its true class, the kind of part it is."""

    serial: str
    true_class: str
    variant: str = "standard"

    @property
    def defective(self) -> bool:
        return self.true_class != OK


@dataclass(frozen=True)
class SimulatedVersion:
    """A model version that runs no network: `behaviour` on every part, or the behaviour its
    variant has in `by_variant` (a candidate worse on a new kind of part, say)."""

    name: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    by_variant: Mapping[str, Behaviour] = field(default_factory=dict)

    def behaviour_on(self, variant: str) -> Behaviour:
        return self.by_variant.get(variant, self.behaviour)

    def probabilities(self, part: StreamPart, rng: random.Random) -> dict[str, float]:
        """Calibrated-looking class probabilities: P(ok) from the behaviour, most of the rest
        on the part's own defect (a random one for an ok part)."""
        p_ok = self.behaviour_on(part.variant).p_ok(part.defective, rng)
        named = part.true_class if part.defective else rng.choice(DEFECT_CLASSES)
        rest = 1.0 - p_ok
        others = len(DEFECT_CLASSES) - 1
        return {
            c: p_ok if c == OK else rest * (0.7 if c == named else 0.3 / others)
            for c in CLASS_NAMES
        }


def part_stream(
    rng: random.Random,
    *,
    defect_rate: float,
    variants: Mapping[str, float] | None = None,
    prefix: str = "part-",
) -> Iterator[StreamPart]:
    """An endless stream: defective with `defect_rate` (a uniformly chosen defect), of a
    variant drawn with the shares in `variants` (default: every part "standard")."""
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must lie in [0, 1], got {defect_rate}")
    names = list(variants or {"standard": 1.0})
    weights = list((variants or {"standard": 1.0}).values())
    i = 0
    while True:
        defective = rng.random() < defect_rate
        true_class = rng.choice(DEFECT_CLASSES) if defective else OK
        variant = names[0] if len(names) == 1 else rng.choices(names, weights)[0]
        yield StreamPart(f"{prefix}{i:07d}", true_class, variant)
        i += 1


def register_versions(session: Session, versions: Sequence[SimulatedVersion], actor: str) -> None:
    """Registry rows for the simulated versions (no checkpoint: nothing can load them), so the
    deployment use cases accept them. Refuses a database that holds a real version."""
    real = [
        v.version
        for v in session.exec(select(ModelVersion))
        if not (v.lineage or {}).get(SIMULATED)
    ]
    if real:
        raise RehearsalError(
            f"this database holds real model versions ({', '.join(real[:3])}): a rehearsal "
            "runs on a database of its own"
        )
    for version in versions:
        if session.get(ModelVersion, version.name) is not None:
            continue
        session.add(
            ModelVersion(
                version=version.name,
                sha256=hashlib.sha256(f"{SIMULATED}:{version.name}".encode()).hexdigest(),
                path="",
                architecture={SIMULATED: True},
                class_names=list(CLASS_NAMES),
                temperature=1.0,
                metrics={SIMULATED: True},
                lineage={SIMULATED: True, "behaviour": repr(version)},
                notes="a simulated version for a rollout rehearsal: it has no checkpoint",
                registered_by=actor,
            )
        )
    session.commit()


@dataclass
class Rehearsal:
    """The service side of a rehearsal: inspects parts as the pipeline would.

    `rng` is the pipeline's generator (the assignment, shadow and audit draws, in the
    pipeline's order); `model_rng` draws the versions' outputs. Each call works in a session of
    its own, as the pipeline does per image, so nothing is read from a stale identity map."""

    engine: Engine
    versions: Mapping[str, SimulatedVersion]
    default_version: str  # the line's model before it has a deployment row
    rng: random.Random
    model_rng: random.Random
    states: dict[str, DeploymentState] = field(default_factory=dict)
    _seen: tuple[dict[str, int], tuple[int, int]] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, engine: Engine, versions: Sequence[SimulatedVersion], *, seed: int) -> Rehearsal:
        """The first version is the configured model; all are registered (simulated)."""
        with Session(engine) as session:
            register_versions(session, versions, actor="rehearsal")
        return cls(
            engine=engine,
            versions={v.name: v for v in versions},
            default_version=versions[0].name,
            rng=random.Random(f"pipeline-{seed}"),
            model_rng=random.Random(f"models-{seed}"),
        )

    def refresh(self, *, force: bool = False) -> bool:
        """What each process's `Rollout` does on its poll: re-read the deployments when their
        revisions or the bandits' counts changed. True when the snapshot was rebuilt."""
        with Session(self.engine) as session:
            seen = (deployments.revisions(session), deployments.bandit_revision(session))
            if not force and seen == self._seen:
                return False
            self.states = deployments.all_states(session)
        self._seen = seen
        return True

    def state(self, line_id: str) -> DeploymentState:
        state = self.states.get(line_id)
        return state if state is not None else DeploymentState(line_id, self.default_version)

    def inspect(self, line_id: str, part: StreamPart) -> int:
        return self.inspect_many(line_id, [part])[0]

    def inspect_many(self, line_id: str, parts: Sequence[StreamPart]) -> list[int]:
        """Inspect `parts` in order on the current snapshot, in one transaction (as many
        parts arriving within one of the pipeline's snapshot polls); returns their ids.

        Rows go in as batched core inserts, so a rehearsal of tens of thousands of parts
        takes seconds; what goes in is exactly what the pipeline writes for a usable frame."""
        if not parts:
            return []
        with Session(self.engine, expire_on_commit=False) as session:
            line = session.get(Line, line_id, populate_existing=True)
            if line is None:
                raise RehearsalError(f"no line {line_id!r}")
            made = [self._inspect(line, part) for part in parts]
            ids = list(
                session.scalars(
                    insert(Inspection).returning(Inspection.id, sort_by_parameter_order=True),
                    [row for row, _, _ in made],
                )
            )
            predictions = [
                {**prediction, "inspection_id": inspection_id}
                for inspection_id, (_, ran, _) in zip(ids, made, strict=True)
                for prediction in ran
            ]
            tasks = [
                {**task, "inspection_id": inspection_id}
                for inspection_id, (_, _, task) in zip(ids, made, strict=True)
                if task is not None
            ]
            if predictions:
                session.execute(insert(ModelPrediction), predictions)
            if tasks:
                session.execute(insert(ReviewTask), tasks)
            session.commit()
        return ids

    def _inspect(
        self, line: Line, part: StreamPart
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
        """The inspection row, its prediction rows and its review task (or None), with the
        same stages, draws and values as `InspectionPipeline._submit` (minus the image)."""
        policy = policy_of(line)
        state = self.state(line.id)
        assignment = assign(
            state, draw=self.rng.random(), shadow_draw=self.rng.random(), part_serial=part.serial
        )
        ran: dict[str, dict[str, float]] = {}
        if policy.level.runs_model:
            for version in (assignment.decider, *assignment.hidden):
                ran[version] = self.versions[version].probabilities(part, self.model_rng)
        prediction = (
            Prediction(ran[assignment.decider], assignment.decider)
            if assignment.decider in ran
            else None
        )
        if assignment.arm is Arm.CANDIDATE:
            policy = candidate_policy(policy, state)
        routing = route_inspection(prediction, policy, self.rng.random(), usable=True)
        now = utcnow()
        row: dict[str, Any] = dict(
            line_id=line.id, capture_id=part.serial, part_serial=part.serial,
            received_at=now, source="replay", true_class=part.true_class,
            image_sha256=hashlib.sha256(part.serial.encode()).hexdigest(), image_format="png",
            width=64, height=64, brightness=120.0, contrast=30.0, sharpness=200.0,
            level=policy.level.value, pass_threshold=policy.pass_threshold,
            fail_threshold=policy.fail_threshold, route=routing.route.value,
            show_model=routing.show_model, decision=routing.decision.value,
            decided_by=routing.decided_by.value if routing.decided_by is not None else None,
            decided_at=now if routing.decided_by is not None else None,
            decode_ms=0.0, queue_ms=0.0, model_ms=0.0, persist_ms=0.0, total_ms=0.0,
            audit_p=1.0 if routing.task_reason is TaskReason.DECIDE else policy.audit_rate,
            arm=None, assignment_p=None, deployment_revision=None, model_version=None,
            probabilities=None, predicted_class=None, confidence=None, p_defect=None,
        )  # fmt: skip
        if prediction is not None:
            row.update(
                arm=assignment.arm.value,
                assignment_p=assignment.probability,
                deployment_revision=state.revision,
                model_version=prediction.model_version,
                probabilities=dict(prediction.probabilities),
                predicted_class=prediction.predicted_class,
                confidence=float(prediction.confidence),
                p_defect=float(prediction.p_defect),
            )
        predictions = [
            dict(
                model_version=version,
                role="decided" if version == assignment.decider else "shadow",
                probabilities=probabilities,
                predicted_class=max(probabilities, key=probabilities.__getitem__),
                p_defect=1.0 - probabilities[OK],
                model_ms=0.0,
                error=None,
            )
            for version, probabilities in ran.items()
        ]
        task = None
        if routing.task_reason is not None:
            task = dict(
                line_id=line.id,
                reason=routing.task_reason.value,
                priority=0 if routing.task_reason is TaskReason.DECIDE else 1,
                show_model=routing.show_model,
                status="open",
                created_at=now,
            )
        return row, predictions, task


@dataclass
class ScriptedInspector:
    """An inspector who labels what they claim with the part's true class (they look at the
    part), wrong with probability `error_rate` (another class, uniformly). Each action works
    in a session of its own, as each request to the API or the UI does."""

    engine: Engine
    user: User
    rng: random.Random
    error_rate: float = 0.0
    lease_seconds: float = 3600.0
    held: ClaimedTask | None = None

    def claim(self, line_id: str | None = None) -> ClaimedTask | None:
        with Session(self.engine, expire_on_commit=False) as session:
            self.held = claim_next_task(
                session, self.user, lease_seconds=self.lease_seconds, line_id=line_id
            )
        return self.held

    def verdict(self, true_class: str) -> str:
        if self.rng.random() < self.error_rate:
            return self.rng.choice([c for c in CLASS_NAMES if c != true_class])
        return true_class

    def label_held(self) -> Label:
        """Label the task this inspector holds (after_label hooks fire as in production)."""
        task = self.held
        if task is None:
            raise RehearsalError(f"{self.user.name} holds no task")
        with Session(self.engine, expire_on_commit=False) as session:
            inspection = session.get(Inspection, task.inspection_id)
            assert inspection is not None and inspection.true_class is not None
            label = submit_label(
                session, task.task_id, self.user, self.verdict(inspection.true_class)
            )
        self.held = None
        return label

    def escalate_held(self, note: str = "unclear part") -> None:
        """Skip the held task to a supervisor: it leaves the queue unlabeled."""
        task = self.held
        if task is None:
            raise RehearsalError(f"{self.user.name} holds no task")
        with Session(self.engine, expire_on_commit=False) as session:
            escalate_task(session, task.task_id, self.user, note)
        self.held = None

    def label_next(self, line_id: str | None = None) -> Label | None:
        """Claim the next task and label it; None when the queue is empty."""
        if self.claim(line_id) is None:
            return None
        return self.label_held()

    def drain(self, line_id: str | None = None, limit: int | None = None) -> int:
        """Label until the queue is empty (or `limit` labels); returns how many."""
        done = 0
        while limit is None or done < limit:
            if self.label_next(line_id) is None:
                break
            done += 1
        return done

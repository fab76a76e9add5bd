"""A small rollout world for the bandit and canary tests: one line, simulated versions, a
supervisor and a scripted blind inspector, on the test's database.

Built on `inspect_app.rollout.rehearsal` (the bench's world too), so parts are written as the
pipeline writes them and labels go through the review queue, whose after-label hooks reward the
bandit and judge the canary exactly as in production."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.accounts import add_user
from inspect_app.domain import Role, TaskStatus
from inspect_app.lines import add_line
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.rehearsal import (
    Behaviour,
    Rehearsal,
    ScriptedInspector,
    SimulatedVersion,
    StreamPart,
    part_stream,
)
from inspect_app.storage.tables import (
    BanditArm,
    Deployment,
    Event,
    Inspection,
    Label,
    ReviewTask,
    User,
)
from inspect_app.timeutil import utcnow

LINE = "line-1"
# The canary tests' line: 0 errors in 14 labels bound a rate at 19.3%, so a clean step passes
# on ~15 labels a side
CANARY_TARGETS = dict(max_escape_rate=0.2, max_false_reject_rate=0.2, min_labels=20, audit_rate=0.0)
STEP_MIN_LABELS = 10  # the canary's labels per step
CHAMPION = "champ"
CANDIDATE = "cand"
PASSWORD = "a long test password"

ALWAYS_RIGHT = Behaviour(1.0, 1.0, confident_right=1.0, confident_wrong=0.0)
ALWAYS_WRONG = Behaviour(0.0, 0.0, confident_right=1.0, confident_wrong=1.0)
# says ok, confidently, to every part: each defective part it decides is an escape
PASSES_EVERYTHING = Behaviour(1.0, 0.0, confident_right=1.0, confident_wrong=1.0)


@dataclass
class RolloutWorld:
    engine: Engine
    rehearsal: Rehearsal
    supervisor: User
    inspector: ScriptedInspector
    stream: Iterator[StreamPart]

    def deploy(self, request: DeploymentRequest, reason: str = "a test") -> Deployment:
        with Session(self.engine, expire_on_commit=False) as session:
            row = deployments.set_deployment(
                session,
                LINE,
                request,
                actor=self.supervisor,
                reason=reason,
                default_version=CHAMPION,
            )
        self.rehearsal.refresh(force=True)
        return row

    def parts(self, n: int) -> list[int]:
        """`n` parts arrive on the current snapshot (one poll's worth)."""
        return self.rehearsal.inspect_many(LINE, [next(self.stream) for _ in range(n)])

    def tick(self, n: int) -> int:
        """`n` parts, the inspector empties the queue, the service polls; the labels given."""
        self.parts(n)
        labels = self.inspector.drain(LINE)
        self.rehearsal.refresh()
        return labels

    def row(self) -> Deployment:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(Deployment, LINE)
            assert row is not None
            return row

    def arms(self) -> dict[str, tuple[int, int]]:
        with Session(self.engine) as session:
            rows = session.exec(select(BanditArm).where(BanditArm.line_id == LINE))
            return {r.model_version: (r.successes, r.failures) for r in rows}

    def inspections(self, ids: list[int] | None = None) -> list[Inspection]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Inspection).where(Inspection.line_id == LINE)
            if ids is not None:
                query = query.where(col(Inspection.id).in_(ids))
            return list(session.exec(query.order_by(col(Inspection.id))))

    def events(self, kind: str) -> list[Event]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(
                session.exec(
                    select(Event)
                    .where(Event.line_id == LINE, Event.kind == kind)
                    .order_by(col(Event.id))
                )
            )

    def label_open_tasks_directly(self) -> int:
        """Blind labels with the true class for every open task, written as the queue writes
        them but without its hooks: evidence seeded fast (a shadow phase), nothing judged."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(ReviewTask.id, ReviewTask.inspection_id, ReviewTask.show_model,
                       Inspection.true_class)
                .join(Inspection, col(Inspection.id) == col(ReviewTask.inspection_id))
                .where(ReviewTask.line_id == LINE, ReviewTask.status == TaskStatus.OPEN.value)
            ).all()  # fmt: skip
            if not rows:
                return 0
            now = utcnow()
            assert self.inspector.user.id is not None
            session.execute(
                insert(Label),
                [
                    dict(inspection_id=inspection_id, task_id=task_id,
                         user_id=self.inspector.user.id, label=truth, model_shown=shown,
                         created_at=now, superseded=False)
                    for task_id, inspection_id, shown, truth in rows
                ],
            )  # fmt: skip
            session.exec(
                update(ReviewTask)
                .where(col(ReviewTask.id).in_([r[0] for r in rows]))
                .values(status=TaskStatus.DONE.value, completed_at=now)
            )
            session.commit()
            return len(rows)


def build_world(
    engine: Engine,
    champion: Behaviour,
    candidate: Behaviour,
    *,
    candidate_on: Mapping[str, Behaviour] | None = None,
    defect_rate: float = 0.5,
    seed: int = 0,
    candidate_model: SimulatedVersion | None = None,
    **line_settings: object,
) -> RolloutWorld:
    """A line at shadow running `champion` (the configured model); `candidate` registered,
    behaving as `candidate_on` says on the kinds of part it names (see `new_kind_of_part`),
    or `candidate_model` as it stands (named CANDIDATE)."""
    with Session(engine, expire_on_commit=False) as session:
        supervisor = add_user(session, "sue", Role.SUPERVISOR, PASSWORD)
        ann = add_user(session, "ann", Role.INSPECTOR, PASSWORD)
        add_line(session, LINE, "shadow", **line_settings)
        session.commit()
    versions = [
        SimulatedVersion(CHAMPION, champion),
        candidate_model
        or SimulatedVersion(CANDIDATE, candidate, by_variant=dict(candidate_on or {})),
    ]
    rehearsal = Rehearsal.build(engine, versions, seed=seed)
    inspector = ScriptedInspector(engine, ann, random.Random(seed))
    stream = part_stream(random.Random(f"stream-{seed}"), defect_rate=defect_rate)
    return RolloutWorld(engine, rehearsal, supervisor, inspector, stream)


def add_inspector(world: RolloutWorld, name: str) -> ScriptedInspector:
    with Session(world.engine, expire_on_commit=False) as session:
        user = add_user(session, name, Role.INSPECTOR, PASSWORD)
    return ScriptedInspector(world.engine, user, random.Random(name))


def new_kind_of_part(world: RolloutWorld, kind: str, *, defect_rate: float = 0.5) -> None:
    """From now on every part is of `kind` (a new product variant, say)."""
    world.stream = part_stream(
        random.Random(f"stream-{kind}"),
        defect_rate=defect_rate,
        variants={kind: 1.0},
        prefix=f"{kind}-",
    )

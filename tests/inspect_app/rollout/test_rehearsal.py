"""The rehearsal is only worth its figures if it writes what the pipeline writes: the same
parts, draws and deployment give the same rows as `InspectionPipeline.submit` with the same
outputs. Its versions draw the error rates they state, and it never runs on a database that
holds real versions."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app.accounts import add_user
from inspect_app.domain import CLASS_NAMES, Prediction, Role
from inspect_app.inference import BatchedPrediction
from inspect_app.lines import add_line
from inspect_app.metrics import ServiceMetrics
from inspect_app.pipeline import ImageSubmission, InspectionPipeline
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.rehearsal import (
    Behaviour,
    Rehearsal,
    RehearsalError,
    SimulatedVersion,
    StreamPart,
    register_versions,
)
from inspect_app.rollout.serving import ModelPool, Rollout
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.tables import Inspection, Line, ModelPrediction, ModelVersion, ReviewTask

SEED = 4
P_OK = (0.995, 0.004, 0.7, 0.3, 0.985, 0.2, 0.999, 0.01)  # auto-pass, auto-fail, unsure ...


def _probabilities(version: str, index: int) -> dict[str, float]:
    """A fixed output per (version, part): the champion and candidate disagree often."""
    p = P_OK[(index + (3 if version == "cand" else 0)) % len(P_OK)]
    return {c: p if c == "ok" else (1 - p) / (len(CLASS_NAMES) - 1) for c in CLASS_NAMES}


@dataclass(frozen=True)
class FixedVersion(SimulatedVersion):
    def probabilities(self, part: StreamPart, rng: random.Random) -> dict[str, float]:
        return _probabilities(self.name, int(part.serial.rsplit("-", 1)[1]))


class FixedBatcher:
    """The micro-batcher as the pipeline uses it (running, taking images as they are),
    answering the fixed output for the part in the image."""

    running = True
    prepare_key = None  # takes the images themselves

    def __init__(self, version: str) -> None:
        self.predictor = SimpleNamespace(version=version)

    def announce(self) -> SimpleNamespace:
        return SimpleNamespace(withdraw=lambda: None)  # nothing waits here for what comes

    async def predict(
        self,
        image: np.ndarray,
        prepared: np.ndarray | None = None,
        announcement: object | None = None,
    ) -> BatchedPrediction:
        probabilities = _probabilities(self.predictor.version, int(image[0, 0, 0]))
        return BatchedPrediction(Prediction(probabilities, self.predictor.version), 0.0, 0.0, 1)

    def stop(self) -> None:
        pass


def _world(engine: Engine) -> None:
    """A line running a canary at its first step (half the parts to the candidate, audited
    often), at partial: the level is set directly after the canary started, since neither
    gate is what this test is about."""
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as session:
        sue = add_user(session, "sue", Role.SUPERVISOR, "a long test password")
        add_line(session, "line-1", "shadow")
        register_versions(session, [FixedVersion("champ"), FixedVersion("cand")], actor="test")
        request = DeploymentRequest(
            candidate="cand", mode=Mode.CANARY, steps=[0.5, 1.0], candidate_audit_rate=0.6
        )
        deployments.set_deployment(
            session, "line-1", request, actor=sue, reason="a test", default_version="champ"
        )
        session.exec(
            update(Line)
            .where(col(Line.id) == "line-1")
            .values(level="partial", pass_threshold=0.98, fail_threshold=0.98, audit_rate=0.2)
        )
        session.commit()


def _png(index: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((32, 32, 3), index, dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _rows(engine: Engine) -> list[dict[str, Any]]:
    fields = ("capture_id", "part_serial", "source", "true_class", "level", "pass_threshold",
              "fail_threshold", "route", "show_model", "decision", "decided_by", "model_version",
              "probabilities", "predicted_class", "confidence", "p_defect", "arm",
              "assignment_p", "deployment_revision", "audit_p")  # fmt: skip
    with Session(engine) as session:
        rows = []
        for inspection in session.exec(select(Inspection).order_by(col(Inspection.id))):
            predictions = session.exec(
                select(ModelPrediction).where(ModelPrediction.inspection_id == inspection.id)
            ).all()
            task = session.exec(
                select(ReviewTask).where(ReviewTask.inspection_id == inspection.id)
            ).first()
            rows.append(
                {
                    **{f: getattr(inspection, f) for f in fields},
                    "decided": inspection.decided_at is not None,
                    "predictions": sorted(
                        (p.model_version, p.role, p.predicted_class, p.probabilities["ok"])
                        for p in predictions
                        if p.probabilities is not None
                    ),
                    "task": None
                    if task is None
                    else (task.reason, task.priority, task.show_model, task.status),
                }
            )
    return rows


def pipeline_with_rollout(
    engine: Engine, tmp_path: Path, batchers: list[FixedBatcher], rng: random.Random
) -> InspectionPipeline:
    """The service's pipeline over a rollout of `batchers` (the first is the default
    version), as `create_app` wires them, with fixed answers instead of a network."""
    pool = ModelPool(engine, tmp_path)
    for batcher in batchers:
        pool.add(batcher.predictor, batcher, None, None)  # type: ignore[arg-type]
    rollout = Rollout(engine, pool, batchers[0].predictor.version)
    rollout.refresh()
    return InspectionPipeline(
        engine=engine,
        store=LocalImageStore(tmp_path / "images"),
        batcher=batchers[0],  # type: ignore[arg-type]
        metrics=ServiceMetrics(),
        max_image_bytes=1 << 20,
        max_image_pixels=1 << 20,
        rng=rng,
        rollout=rollout,
    )


def test_the_rehearsal_writes_what_the_pipeline_writes(tmp_path: Path) -> None:
    parts = [StreamPart(f"part-{i:07d}", "ok" if i % 3 else "pit") for i in range(60)]

    served = make_engine("sqlite://")
    _world(served)
    pipeline = pipeline_with_rollout(
        served,
        tmp_path,
        [FixedBatcher("champ"), FixedBatcher("cand")],
        random.Random(f"pipeline-{SEED}"),  # the rehearsal's generator for this seed
    )

    async def submit_all() -> None:
        for i, part in enumerate(parts):
            await pipeline.submit(
                ImageSubmission(
                    "line-1", _png(i), "image/png", capture_id=part.serial,
                    part_serial=part.serial, source="replay", true_class=part.true_class,
                )
            )  # fmt: skip
            # the part's hidden runs follow its answer; the in-memory database is one
            # connection shared by every thread, so they commit before the next part reads
            await pipeline.settle()

    asyncio.run(submit_all())

    rehearsed = make_engine("sqlite://")
    _world(rehearsed)
    rehearsal = Rehearsal.build(rehearsed, [FixedVersion("champ"), FixedVersion("cand")],
                                seed=SEED)  # fmt: skip
    rehearsal.refresh(force=True)
    rehearsal.inspect_many("line-1", parts[:25])
    rehearsal.inspect_many("line-1", parts[25:])

    expected, got = _rows(served), _rows(rehearsed)
    assert len(got) == len(expected) == 60
    assert {r["arm"] for r in got} == {"champion", "candidate"}  # both arms, every route
    assert {r["route"] for r in got} == {"auto", "audit", "review"}
    for mine, theirs in zip(got, expected, strict=True):
        assert mine == theirs, mine["capture_id"]


def test_a_version_draws_the_rates_it_states() -> None:
    behaviour = Behaviour(accuracy_ok=0.97, accuracy_defect=0.8, confident_right=0.9,
                          confident_wrong=0.4)  # fmt: skip
    rng = random.Random(1)
    defect_rate = 0.3
    defective = [rng.random() < defect_rate for _ in range(200_000)]
    p_ok = np.array([behaviour.p_ok(d, rng) for d in defective])
    truth = np.array(defective)
    passed, failed = p_ok >= 0.98, p_ok <= 0.02
    assert truth[passed].mean() == pytest.approx(behaviour.escape_rate(defect_rate), rel=0.05)
    assert (~truth[failed]).mean() == pytest.approx(
        behaviour.false_reject_rate(defect_rate), rel=0.05
    )
    agree = (p_ok >= 0.5) == ~truth
    assert agree.mean() == pytest.approx(behaviour.binary_accuracy(defect_rate), abs=0.003)


def test_it_refuses_a_database_with_real_versions(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(
            ModelVersion(
                version="defect-cnn-real", sha256="0" * 64, path="models/x.pt",
                architecture={}, class_names=list(CLASS_NAMES), temperature=1.0, metrics={},
                lineage={}, registered_by="admin",
            )
        )  # fmt: skip
        session.commit()
        with pytest.raises(RehearsalError, match="database of its own"):
            register_versions(session, [SimulatedVersion("sim")], actor="test")
    with pytest.raises(RehearsalError):
        Rehearsal.build(engine, [SimulatedVersion("sim")], seed=0)

"""A challenger running hidden (shadow) is off the champion's answer path: each part is
answered and committed before the hidden versions have run on it; their predictions are
stored afterwards, in a later commit, a failure recorded as such and deciding nothing."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import pipeline as pipeline_module
from inspect_app.accounts import add_user
from inspect_app.domain import Role
from inspect_app.inference import BatchedPrediction
from inspect_app.lines import add_line
from inspect_app.pipeline import ImageSubmission, InspectionPipeline
from inspect_app.rollout import deployments
from inspect_app.rollout.deployments import DeploymentRequest
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.rehearsal import register_versions
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Inspection, ModelPrediction
from tests.inspect_app.rollout.test_rehearsal import (
    FixedBatcher,
    FixedVersion,
    pipeline_with_rollout,
)


class HeldBatcher(FixedBatcher):
    """A challenger that answers only once the test lets it (or fails, if told to)."""

    def __init__(self, version: str, fail: bool = False) -> None:
        super().__init__(version)
        self.go = asyncio.Event()
        self.fail = fail
        self.asked = 0

    async def predict(
        self,
        image: np.ndarray,
        prepared: np.ndarray | None = None,
        announcement: object | None = None,
    ) -> BatchedPrediction:
        self.asked += 1
        await self.go.wait()
        if self.fail:
            raise RuntimeError("the challenger broke")
        return await super().predict(image, prepared)


def _png(index: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((32, 32, 3), index, dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _shadow_world(engine: Engine) -> None:
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as session:
        sue = add_user(session, "sue", Role.SUPERVISOR, "a long test password")
        add_line(session, "line-1", "shadow")
        register_versions(session, [FixedVersion("champ"), FixedVersion("cand")], actor="test")
        deployments.set_deployment(
            session, "line-1", DeploymentRequest(candidate="cand", mode=Mode.SHADOW),
            actor=sue, reason="a test", default_version="champ",
        )  # fmt: skip


def _pipeline(tmp_path: Path, fail: bool) -> tuple[InspectionPipeline, Engine, HeldBatcher]:
    # a file: the in-memory database is one connection that every thread shares, and here
    # the hidden rows commit while the next part is read
    engine = make_engine(f"sqlite:///{tmp_path / 'hidden.db'}")
    _shadow_world(engine)
    challenger = HeldBatcher("cand", fail=fail)
    pipeline = pipeline_with_rollout(
        engine, tmp_path, [FixedBatcher("champ"), challenger], random.Random(1)
    )
    return pipeline, engine, challenger


def _roles(engine: Engine, ids: list[int]) -> list[tuple[int, str, str, bool]]:
    with Session(engine) as session:
        rows = session.exec(
            select(ModelPrediction)
            .where(col(ModelPrediction.inspection_id).in_(ids))
            .order_by(col(ModelPrediction.inspection_id), col(ModelPrediction.model_version))
        ).all()
    return [(r.inspection_id, r.model_version, r.role, r.error is None) for r in rows]


def _submit(pipeline: InspectionPipeline, i: int) -> ImageSubmission:
    return ImageSubmission("line-1", _png(i), "image/png", capture_id=f"part-{i}",
                           source="replay")  # fmt: skip


def test_each_part_is_answered_before_the_challenger_runs_and_its_rows_follow(
    tmp_path: Path,
) -> None:
    pipeline, engine, challenger = _pipeline(tmp_path, fail=False)

    async def scenario() -> list[int]:
        outcomes = [await pipeline.submit(_submit(pipeline, i)) for i in range(3)]
        ids = [o.inspection.id for o in outcomes]
        assert all(o.created for o in outcomes) and None not in ids
        # answered and committed while the challenger has not answered any of them
        with Session(engine) as session:
            rows = session.exec(select(Inspection).where(col(Inspection.id).in_(ids))).all()
        assert {(r.model_version, r.arm) for r in rows} == {("champ", "champion")}
        assert _roles(engine, ids) == [(i, "champ", "decided", True) for i in ids]  # type: ignore[misc]
        challenger.go.set()
        await pipeline.settle()
        return ids  # type: ignore[return-value]

    ids = asyncio.run(scenario())
    pipeline.close()
    assert challenger.asked == 3
    assert _roles(engine, ids) == [
        row for i in ids for row in ((i, "cand", "shadow", True), (i, "champ", "decided", True))
    ]


def test_a_failing_challenger_is_recorded_and_costs_the_line_no_answer(tmp_path: Path) -> None:
    pipeline, engine, challenger = _pipeline(tmp_path, fail=True)
    challenger.go.set()

    async def scenario() -> int:
        outcome = await pipeline.submit(_submit(pipeline, 0))
        await pipeline.settle()
        assert outcome.inspection.id is not None
        return outcome.inspection.id

    inspection_id = asyncio.run(scenario())
    pipeline.close()
    assert _roles(engine, [inspection_id]) == [
        (inspection_id, "cand", "shadow", False),
        (inspection_id, "champ", "decided", True),
    ]


def test_past_the_limit_a_parts_hidden_runs_are_skipped_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A challenger that cannot keep up never holds the line's answers: past
    `MAX_HIDDEN_BEHIND` parts waiting, a part is answered with no hidden run, and the log says
    so; the parts already waiting still get theirs."""
    monkeypatch.setattr(pipeline_module, "MAX_HIDDEN_BEHIND", 2)
    pipeline, engine, challenger = _pipeline(tmp_path, fail=False)

    async def scenario() -> list[int]:
        outcomes = [await pipeline.submit(_submit(pipeline, i)) for i in range(4)]
        challenger.go.set()
        await pipeline.settle()
        return [o.inspection.id for o in outcomes]  # type: ignore[misc]

    with caplog.at_level(logging.WARNING, logger="inspect_app.pipeline"):
        ids = asyncio.run(scenario())
    pipeline.close()
    assert challenger.asked == 2
    first, second, third, fourth = ids
    assert _roles(engine, ids) == [
        (first, "cand", "shadow", True), (first, "champ", "decided", True),
        (second, "cand", "shadow", True), (second, "champ", "decided", True),
        (third, "champ", "decided", True),
        (fourth, "champ", "decided", True),
    ]  # fmt: skip
    skipped = [r.getMessage() for r in caplog.records if "skipped their run" in r.getMessage()]
    assert len(skipped) == 1 and f"inspection {third}" in skipped[0]  # logged once per 100

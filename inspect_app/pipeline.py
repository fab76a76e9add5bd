"""One image in, one committed inspection out: decode -> infer -> route -> persist.

Every way an image arrives (HTTP upload, OpenCV camera, hot folder, replay) goes through
`InspectionPipeline.submit`, so validation, idempotency, routing and durability exist once.

The order of the stages is chosen so that bad input stores nothing and an acknowledged
image is never lost:

1. in ONE worker-thread hop (`_prepare`): cheap checks (declared type, empty, size), the
   line's policy (the image route hands over the one it found with the camera key; other
   sources read `inspect_app.lookups`' cache) and the capture_id replay lookup; validate +
   decode + input stats (OpenCV); and each version's network input
   (`MicroBatcher.prepare`), so the model's thread only runs the network;
2. the deciding version's model, through its micro-batcher (skipped at ``human_only``), and
   beside it a file store's durable write of the bytes (fsync'd before any row points at
   them); versions running hidden (a shadow challenger) run after the reply, their rows in a
   later commit (`_after_reply`), so they are never on the part's answer path;
3. in the group committer's thread (`inspect_app.storage.group_commit`): the image gate
   (``inspect_app.monitoring.gate``: the frame's input metrics and embedding against the
   model's reference profile; a refused frame goes to a human with the reason), routing (pure,
   with the audit lottery's draw taken on the event loop from this pipeline's generator),
   and the rows: the inspection, its predictions, its review task, its outbox message and (the
   database store) its bytes. The images that reach the committer while it commits go in its
   next transaction together: one durable commit for all of them. Each caller is answered only
   after the commit that holds its rows.

Any error before the commit leaves no row; a failure after the image write leaves at most an
unreferenced image file, never a row without its image. A group whose commit fails is
committed again one image at a time, so each error reaches its own caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from inspect_app.domain import LinePolicy, Prediction, TaskReason
from inspect_app.imaging import (
    DecodedImage,
    ImageRejected,
    InputStats,
    check_envelope,
    decode_image,
    input_stats,
)
from inspect_app.inference import BatchedPrediction, BatcherStopped, MicroBatcher
from inspect_app.lookups import line_lookups
from inspect_app.metrics import ServiceMetrics
from inspect_app.monitoring.gate import GateVerdict, ImageGate
from inspect_app.monitoring.service import LineMonitor
from inspect_app.outputs.outbox import enqueue_decisions
from inspect_app.rollout.policy import Arm, Assignment, DeploymentState, candidate_policy
from inspect_app.rollout.serving import Rollout
from inspect_app.routing import route_inspection
from inspect_app.storage.db import database_disk_full
from inspect_app.storage.group_commit import GroupCommitStopped, GroupCommitter
from inspect_app.storage.images import ImageStore, ImageStoreFull, sha256_of
from inspect_app.storage.tables import Inspection, ModelPrediction, ReviewTask
from inspect_app.timeutil import as_utc, utcnow
from inspect_app.workers import Announcement

logger = logging.getLogger(__name__)

SOURCES = ("http", "opencv", "folder", "replay")
# Parts whose hidden runs may wait at once (`InspectionPipeline._after_reply`): at the
# machine's limit a challenger cannot keep up, and its queue must not grow without bound.
MAX_HIDDEN_BEHIND = 256
_MAX_ID_LENGTH = 128  # capture_id and part_serial columns


class IngestError(Exception):
    """An image the pipeline will not take. `status_code` is the HTTP status (4xx for bad
    input; 503 when the service cannot inspect right now), `detail` says what was wrong."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class ImageSubmission:
    line_id: str
    data: bytes
    content_type: str | None = None  # image/jpeg | image/png | image/bmp; None = sniff
    capture_id: str | None = None  # idempotency key per line
    part_serial: str | None = None
    captured_at: datetime | None = None  # naive means UTC
    source: str = "http"  # http | opencv | folder | replay
    true_class: str | None = None  # known truth (replay only), never shown to inspectors
    # The line's policy as the caller found it in its own lookup of the line (the image route,
    # with the camera key): the pipeline then reads nothing again. None: the pipeline looks
    # it up (`inspect_app.lookups`).
    policy: LinePolicy | None = None


@dataclass(frozen=True)
class InspectionOutcome:
    inspection: Inspection  # committed
    created: bool  # False when capture_id replayed an existing inspection


def _check_submission(submission: ImageSubmission) -> None:
    for name in ("capture_id", "part_serial"):
        value = getattr(submission, name)
        if value is not None and not 0 < len(value) <= _MAX_ID_LENGTH:
            raise IngestError(422, f"{name} must be 1 to {_MAX_ID_LENGTH} characters")
    if submission.source not in SOURCES:
        raise IngestError(422, f"unknown source {submission.source!r}: one of {SOURCES}")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass
class _Ran:
    """What the versions that ran on a part said (the decider's first)."""

    decided: BatchedPrediction | None = None
    decider: str | None = None
    hidden: dict[str, BatchedPrediction | Exception] = field(default_factory=dict)
    candidate_failed: Exception | None = None  # the candidate was to decide and failed
    # hidden versions still to run: after the reply (`InspectionPipeline._run_hidden`)
    later: tuple[str, ...] = ()


def _prediction_fields(version: str, role: str, result: BatchedPrediction | Exception) -> dict:
    """A `ModelPrediction` row's fields (but its inspection's id)."""
    if isinstance(result, Exception):
        return dict(
            model_version=version, role=role, error=f"{type(result).__name__}: {result}"[:500]
        )
    prediction = result.prediction
    return dict(
        model_version=version,
        role=role,
        probabilities={k: float(v) for k, v in prediction.probabilities.items()},
        predicted_class=prediction.predicted_class,
        p_defect=float(prediction.p_defect),
        model_ms=round(result.model_ms, 3),
    )


async def _nothing_ran() -> _Ran:
    return _Ran()


@dataclass
class _Prepared:
    """What the worker thread found before the model (`InspectionPipeline._prepare`)."""

    policy: LinePolicy
    sha256: str
    replayed: Inspection | None  # an earlier upload's inspection: nothing else was done
    decoded: DecodedImage | None = None
    stats: InputStats | None = None
    # each version's network input, by its preprocessing (None: the batcher prepares it)
    inputs: dict[Hashable, np.ndarray | None] = field(default_factory=dict)
    decode_s: float = 0.0
    put_s: float | None = None  # the local store's durable write


@dataclass
class _Built:
    row: dict[str, Any]  # the Inspection's fields
    predictions: list[dict[str, Any]]  # each ModelPrediction's, but the inspection id
    task: dict[str, Any] | None  # the ReviewTask's, but the inspection id


@dataclass
class _Job:
    """One image on its way to the group commit."""

    submission: ImageSubmission
    prepared: _Prepared
    received_at: datetime
    started: float
    state: DeploymentState | None
    assignment: Assignment | None
    ran: _Ran
    draw: float  # the audit lottery's draw
    built: _Built | None = None
    verdict: GateVerdict | None = None


@dataclass
class _Staged:
    row: Inspection
    built: _Built


class InspectionPipeline:
    def __init__(
        self,
        *,
        engine: Engine,
        store: ImageStore,
        batcher: MicroBatcher,
        metrics: ServiceMetrics,
        max_image_bytes: int,
        max_image_pixels: int,
        rng: random.Random | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        gate: ImageGate | None = None,
        monitor: LineMonitor | None = None,
        rollout: Rollout | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.batcher = batcher
        self.metrics = metrics
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        # The audit lottery. Only the event-loop thread draws from it, so it needs no lock.
        self.rng = rng if rng is not None else random.Random()
        self.loop = loop
        # None: the model has no reference profile, so nothing can be checked against one
        # (the app factory logs that at start); every frame counts as usable.
        self.gate = gate
        self.monitor = monitor
        # None: one model (`batcher`) decides every line; otherwise each line's deployment
        # says which registered version decides each part and which run beside it, hidden.
        self.rollout = rollout
        self._committer: GroupCommitter | None = None
        self._committer_lock = threading.Lock()
        self._closed = False
        self._hidden_runs: set[asyncio.Task[None]] = set()  # `_after_reply`'s, in flight
        self._hidden_skipped = 0

    @property
    def committer(self) -> GroupCommitter:
        """The writer that commits the inspections waiting together in one transaction
        (`inspect_app.storage.group_commit`); started with the first one."""
        committer = self._committer
        if committer is None:
            with self._committer_lock:
                if self._closed:
                    raise GroupCommitStopped("the pipeline is closed")
                if self._committer is None:
                    started = GroupCommitter(
                        self.engine,
                        finish=self._finish,
                        on_commit=self._observe_commit,
                        name="inspect-inspection-writer",
                    )
                    started.start()
                    self._committer = started
                committer = self._committer
        return committer

    def close(self) -> None:
        """Commit what is waiting and stop the writer (the app's shutdown); safe to repeat."""
        with self._committer_lock:
            self._closed = True
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.stop()

    def _observe_commit(self, size: int, seconds: float) -> None:
        self.metrics.observe_stage("commit", seconds)
        self.metrics.commit_size.observe(size)

    # -- entry points

    async def submit(self, submission: ImageSubmission) -> InspectionOutcome:
        """Inspect one image; raises IngestError (with its HTTP status) when it is refused."""
        try:
            outcome = await self._submit(submission)
        except IngestError as exc:
            self.record_rejection(submission.line_id, submission.source, exc, submission.capture_id)
            raise
        self.metrics.ingest_requests.labels(
            line=submission.line_id,
            source=submission.source,
            outcome="created" if outcome.created else "replayed",
        ).inc()
        return outcome

    def submit_blocking(
        self, submission: ImageSubmission, timeout: float | None = None
    ) -> InspectionOutcome:
        """`submit` for threads that are not the event loop (camera sources).

        Raises TimeoutError when no answer comes within `timeout`; the inspection may still
        be committed afterwards, which a retry with the same capture_id finds.
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            raise IngestError(503, "the pipeline is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("submit_blocking was called from the event loop; await submit()")
        future: Future[InspectionOutcome] = asyncio.run_coroutine_threadsafe(
            self.submit(submission), loop
        )
        return future.result(timeout)

    def record_rejection(
        self, line_id: str, source: str, exc: IngestError, capture_id: str | None = None
    ) -> None:
        """Count and log a refused image; the HTTP layer calls it for what it refuses itself
        (an oversized or malformed body) so every refusal is counted in one place."""
        line = self._metric_line(line_id, exc)
        self.metrics.rejections.labels(line=line, status=str(exc.status_code)).inc()
        self.metrics.ingest_requests.labels(line=line, source=source, outcome="rejected").inc()
        logger.warning(
            "refused an image for line %s from %s (capture %s): %d %s",
            line_id,
            source,
            capture_id,
            exc.status_code,
            exc.detail,
        )

    # -- stages

    async def _submit(self, submission: ImageSubmission) -> InspectionOutcome:
        started = time.perf_counter()
        received_at = utcnow()
        batchers = self._batchers_for(submission.line_id)
        # the image is on its way to each version's batcher: they wait for it, not for
        # images that are not coming (`inspect_app.workers`); ended when it is queued, or
        # here, whatever happens, for a batcher it never reaches
        announced = {id(b): b.announce() for b in batchers}
        try:
            return await self._inspect(submission, started, received_at, batchers, announced)
        finally:
            for announcement in announced.values():
                announcement.withdraw()

    async def _inspect(
        self,
        submission: ImageSubmission,
        started: float,
        received_at: datetime,
        batchers: list[MicroBatcher],
        announced: dict[int, Announcement],
    ) -> InspectionOutcome:
        # one hop for everything before the model: the line and replay lookups, decoding,
        # input stats and each version's network input
        prepared = await asyncio.to_thread(self._prepare, submission, batchers)
        policy, replayed = prepared.policy, prepared.replayed
        if replayed is not None:
            logger.info(
                "capture %s on line %s replayed: inspection %s, decision %s",
                submission.capture_id,
                submission.line_id,
                replayed.id,
                replayed.decision,
            )
            return InspectionOutcome(inspection=replayed, created=False)
        assert prepared.decoded is not None and prepared.stats is not None
        self.metrics.observe_stage("decode", prepared.decode_s)

        state, assignment = self._assign(submission)
        ran = _Ran()
        if self.store.kind == "local":
            # the file's fsync and the model's run overlap: the part waits for the longer
            put_and_models = await asyncio.gather(
                asyncio.to_thread(self._put_file, submission.data),
                self._run_models(prepared.decoded.image, assignment, prepared.inputs, announced)
                if policy.level.runs_model
                else _nothing_ran(),
                return_exceptions=True,
            )
            for result in put_and_models:
                if isinstance(result, BaseException):
                    raise result
            prepared.put_s, ran = put_and_models  # type: ignore[assignment]
        elif policy.level.runs_model:
            ran = await self._run_models(
                prepared.decoded.image, assignment, prepared.inputs, announced
            )
        if assignment is not None and ran.decider != assignment.decider:
            assignment = None  # the candidate failed on this image: the champion decided
        job = _Job(
            submission=submission,
            prepared=prepared,
            received_at=received_at,
            started=started,
            state=state,
            assignment=assignment,
            ran=ran,
            draw=self.rng.random(),  # the audit lottery's, drawn here (the loop's generator)
        )
        persist_started = time.perf_counter()
        try:
            inspection = (await self.committer.commit(partial(self._stage, job))).row
        except IntegrityError:
            if submission.capture_id is None:
                raise
            # lost a capture_id race to an identical upload
            existing = await asyncio.to_thread(self._committed_capture, submission, prepared)
            return InspectionOutcome(inspection=existing, created=False)
        except OperationalError as exc:
            if not database_disk_full(exc):
                raise
            raise IngestError(503, "the service cannot store inspections: disk full") from exc
        except ImageStoreFull as exc:  # nothing stored, no row: the camera sends it again
            raise IngestError(503, f"the service cannot store images: {exc.strerror}") from exc
        except GroupCommitStopped:
            raise IngestError(503, "the service is shutting down; send the image again") from None
        self.metrics.observe_stage("persist", time.perf_counter() - persist_started)
        self.metrics.observe_stage("total", time.perf_counter() - started)
        stats = prepared.stats
        self._record(inspection, ran.decided.prediction if ran.decided else None,
                     stats.brightness, stats.contrast, stats.sharpness)  # fmt: skip
        if job.verdict is not None and not job.verdict.usable:
            for code in job.verdict.codes:
                self.metrics.gate_refusals.labels(line=inspection.line_id, reason=code).inc()
        if self.monitor is not None:
            self.monitor.observe(inspection.line_id)
        if ran.later:
            assert inspection.id is not None
            self._after_reply(inspection.id, job, state, ran)
        elif state is not None:
            self._watch_candidate(state, ran)
        return InspectionOutcome(inspection=inspection, created=True)

    def _prepare(self, submission: ImageSubmission, batchers: list[MicroBatcher]) -> _Prepared:
        """Everything an image needs before the model, in the request's one worker thread:
        the line's policy and the capture_id replay lookup, validation and decoding, the input
        stats, the image's durable write (a file store; the database store writes in the
        commit) and the network input of each version that may run (once per preprocessing).
        """
        policy, sha256, replayed = self._policy_and_replay(submission)
        if replayed is not None:
            return _Prepared(policy, sha256, replayed)
        decode_started = time.perf_counter()
        try:
            decoded, stats = self._decode(submission)
        except ImageRejected as exc:
            raise IngestError(exc.status_code, exc.detail) from exc
        decode_s = time.perf_counter() - decode_started
        if policy.level.runs_model and any(not b.running for b in batchers):
            # before the image is written: a stopping service stores nothing it will not answer
            raise IngestError(503, "the service is shutting down; send the image again")
        inputs: dict[Hashable, np.ndarray | None] = {}
        if policy.level.runs_model:
            for batcher in batchers:
                key = batcher.prepare_key
                if key is None or key in inputs:
                    continue
                try:
                    inputs[key] = batcher.prepare(decoded.image)
                except Exception:  # the batcher runs the image itself and reports the error
                    logger.exception("could not prepare an image for model %s",
                                     batcher.predictor.version)  # fmt: skip
                    inputs[key] = None
        return _Prepared(policy, sha256, None, decoded, stats, inputs, decode_s)

    def _put_file(self, data: bytes) -> float:
        """A file store's durable write (temp file, fsync, rename, fsync of the folder), in a
        worker thread beside the model's run; returns its seconds. Before any row points at
        the bytes; a failure later leaves at most an unreferenced file, which the retention
        sweep removes."""
        started = time.perf_counter()
        try:
            self.store.put(data)
        except ImageStoreFull as exc:  # nothing stored, no row: the camera sends it again
            raise IngestError(503, f"the service cannot store images: {exc.strerror}") from exc
        return time.perf_counter() - started

    def _batchers_for(self, line_id: str) -> list[MicroBatcher]:
        """The batchers of every loaded version the line's deployment may run on a part."""
        if self.rollout is None:
            return [self.batcher]
        loaded = (self.rollout.pool.get(v) for v in self.rollout.state(line_id).versions)
        return [v.batcher for v in loaded if v is not None]

    def _build(self, job: _Job) -> _Built:
        """The gate's verdict, the route and the rows' fields (in the committer's thread, once
        per image however often its write is tried)."""
        if job.built is not None:
            return job.built
        submission, prepared, ran = job.submission, job.prepared, job.ran
        decoded, stats = prepared.decoded, prepared.stats
        assert decoded is not None and stats is not None
        policy, state, assignment = prepared.policy, job.state, job.assignment
        batched = ran.decided
        prediction = batched.prediction if batched is not None else None
        gate = self._gate_of(ran.decider)
        verdict = self._check_gate(gate, stats, batched)
        if assignment is not None and assignment.arm is Arm.CANDIDATE and state is not None:
            policy = candidate_policy(policy, state)
        routing = route_inspection(
            prediction, policy, job.draw, usable=verdict is None or verdict.usable
        )
        row: dict[str, Any] = dict(
            line_id=submission.line_id,
            capture_id=submission.capture_id,
            part_serial=submission.part_serial,
            captured_at=as_utc(submission.captured_at),
            received_at=job.received_at,
            source=submission.source,
            true_class=submission.true_class,
            image_sha256=prepared.sha256,
            image_format=decoded.format,
            width=stats.width,
            height=stats.height,
            brightness=stats.brightness,
            contrast=stats.contrast,
            sharpness=stats.sharpness,
            clipped_dark=stats.clipped_dark,
            clipped_bright=stats.clipped_bright,
            mean_blue=stats.mean_blue,
            mean_green=stats.mean_green,
            mean_red=stats.mean_red,
            level=policy.level.value,
            pass_threshold=policy.pass_threshold,
            fail_threshold=policy.fail_threshold,
            route=routing.route.value,
            show_model=routing.show_model,
            decision=routing.decision.value,
            decided_by=routing.decided_by.value if routing.decided_by is not None else None,
            decided_at=utcnow() if routing.decided_by is not None else None,
            decode_ms=_ms(prepared.decode_s),
            audit_p=1.0 if routing.task_reason is TaskReason.DECIDE else policy.audit_rate,
        )
        if state is not None and ran.decider is not None:
            row["arm"] = assignment.arm.value if assignment is not None else Arm.CHAMPION.value
            row["assignment_p"] = assignment.probability if assignment is not None else 1.0
            row["deployment_revision"] = state.revision
        if prediction is not None and batched is not None:
            row.update(
                model_version=prediction.model_version,
                probabilities={k: float(v) for k, v in prediction.probabilities.items()},
                predicted_class=prediction.predicted_class,
                confidence=float(prediction.confidence),
                p_defect=float(prediction.p_defect),
                queue_ms=round(batched.queue_ms, 3),
                model_ms=round(batched.model_ms, 3),
            )
        if verdict is not None:
            row["ood_distance"] = verdict.ood_distance
            if not verdict.usable:
                row["gate_codes"] = ",".join(code.value for code in verdict.codes)
                row["gate_reason"] = "; ".join(verdict.reasons)[:1000]
        if gate is not None and batched is not None and batched.embedding is not None:
            # the reduced coordinates the profile keeps of its own calibration images, so the
            # embedding-drift test compares like with like
            profile = gate.profile
            m = int(profile.reference_coordinates.shape[1]) - 1
            coords = profile.embedding.coordinates(batched.embedding[None], m)[0]
            row["embedding"] = [round(float(v), 4) for v in coords]
        predictions = []
        if batched is not None and ran.decider is not None:
            predictions.append(_prediction_fields(ran.decider, "decided", batched))
        predictions += [_prediction_fields(v, "shadow", r) for v, r in ran.hidden.items()]
        task = None
        if routing.task_reason is not None:
            task = dict(
                line_id=submission.line_id,
                reason=routing.task_reason.value,
                # the line waits for a human's decision; an audit can wait
                priority=0 if routing.task_reason is TaskReason.DECIDE else 1,
                show_model=routing.show_model,
            )
        job.verdict = verdict
        job.built = _Built(row=row, predictions=predictions, task=task)
        return job.built

    def _stage(self, job: _Job, session: Session) -> _Staged:
        """One image's rows in the group's transaction (the committer's thread). Fresh rows
        on each call: a group that fails is tried again one image at a time."""
        built = self._build(job)
        put_s = job.prepared.put_s
        if self.store.kind != "local":  # the database store: the bytes commit with the row
            put_started = time.perf_counter()
            self.store.put(job.submission.data, session=session)
            put_s = time.perf_counter() - put_started
        row = Inspection(**built.row)
        row.persist_ms = _ms(put_s) if put_s is not None else None
        # The row cannot hold the duration of its own commit; the metrics have the full total.
        row.total_ms = _ms(time.perf_counter() - job.started)
        session.add(row)
        return _Staged(row=row, built=built)

    @staticmethod
    def _finish(session: Session, staged: list[_Staged]) -> None:
        """After every image of a group is staged: one flush numbers the inspections, then
        their predictions, review tasks and outbox messages (one counter update per line)."""
        staged = [item for item in staged if isinstance(item, _Staged)]  # not hidden rows
        if not staged:
            return
        session.flush()
        decided: list[Inspection] = []
        for item in staged:
            row = item.row
            assert row.id is not None
            session.add_all(
                ModelPrediction(inspection_id=row.id, **fields) for fields in item.built.predictions
            )
            if item.built.task is not None:
                session.add(ReviewTask(inspection_id=row.id, **item.built.task))
            if row.decided_by is not None:  # decided at once: the line's outputs learn it
                decided.append(row)
        if decided:
            enqueue_decisions(session, decided, cause="model")

    def _committed_capture(self, submission: ImageSubmission, prepared: _Prepared) -> Inspection:
        """The inspection a concurrent identical upload committed first (after our write lost
        the capture_id race), or the 409 of a different image."""
        assert submission.capture_id is not None
        with Session(self.engine, expire_on_commit=False) as session:
            existing = self._by_capture(session, submission.line_id, submission.capture_id)
        if existing is None:
            raise IngestError(503, "the inspection could not be stored; send the image again")
        logger.info(
            "capture %s on line %s was committed concurrently as inspection %s",
            submission.capture_id,
            submission.line_id,
            existing.id,
        )
        return self._same_image_or_conflict(existing, submission, prepared.sha256)

    # -- several versions

    def _assign(
        self, submission: ImageSubmission
    ) -> tuple[DeploymentState | None, Assignment | None]:
        if self.rollout is None:
            return None, None
        return self.rollout.assign(
            submission.line_id,
            draw=self.rng.random(),
            shadow_draw=self.rng.random(),
            part_serial=submission.part_serial,
        )

    def _batcher_of(self, version: str) -> MicroBatcher:
        if self.rollout is None:
            return self.batcher
        loaded = self.rollout.pool.get(version)
        if loaded is None:
            raise IngestError(503, f"model {version} is not loaded; send the image again")
        return loaded.batcher

    def _gate_of(self, version: str | None) -> ImageGate | None:
        if self.rollout is None or version is None:
            return self.gate
        loaded = self.rollout.pool.get(version)
        return loaded.gate if loaded is not None else None

    async def _run_models(
        self,
        image: np.ndarray,
        assignment: Assignment | None,
        inputs: dict[Hashable, np.ndarray | None],
        announced: dict[int, Announcement],
    ) -> _Ran:
        """The decider only: the hidden versions run after the reply (`_run_hidden`), so a
        challenger's inference is never on the champion's answer path. A failing candidate
        decider hands the part to the champion (run then), so a bad candidate never costs the
        line an answer."""
        if assignment is None:
            decided = await self._predict(self.batcher, image, inputs, announced)
            return _Ran(decided=decided, decider=self.batcher.predictor.version)
        try:
            decided = await self._predict_version(assignment.decider, image, inputs, announced)
        except Exception as exc:
            if not (assignment.arm is Arm.CANDIDATE and assignment.hidden):
                raise
            champion = assignment.hidden[0]
            ran = _Ran(candidate_failed=exc, later=assignment.hidden[1:])
            ran.hidden[assignment.decider] = exc
            logger.warning(
                "candidate %s failed on an image (%s); champion %s decides it",
                assignment.decider,
                exc,
                champion,
            )
            ran.decided = await self._predict_version(champion, image, inputs, announced)
            ran.decider = champion
            return ran
        return _Ran(decided=decided, decider=assignment.decider, later=assignment.hidden)

    def _after_reply(
        self, inspection_id: int, job: _Job, state: DeploymentState | None, ran: _Ran
    ) -> None:
        """The hidden versions' runs of a committed part, in a task of their own: the caller
        has its answer. Past `MAX_HIDDEN_BEHIND` parts waiting, a part's hidden runs are
        skipped (and counted in the log): the challenger's evidence comes from fewer parts,
        the line's answers never wait for it."""
        if len(self._hidden_runs) >= MAX_HIDDEN_BEHIND:
            self._hidden_skipped += 1
            if self._hidden_skipped % 100 == 1:
                logger.warning(
                    "hidden versions %s are %d parts behind: skipped their run on inspection "
                    "%s (%d parts skipped so far)",
                    ", ".join(ran.later),
                    len(self._hidden_runs),
                    inspection_id,
                    self._hidden_skipped,
                )
            return
        task = asyncio.get_running_loop().create_task(
            self._run_hidden(inspection_id, job, state, ran)
        )
        self._hidden_runs.add(task)
        task.add_done_callback(self._hidden_runs.discard)

    async def _run_hidden(
        self, inspection_id: int, job: _Job, state: DeploymentState | None, ran: _Ran
    ) -> None:
        """Run the hidden versions on a part already answered, concurrently, and store their
        predictions in a later group commit. A version's failure is recorded and decides
        nothing. These rows are the challenger's evidence, not the part's decision: a crash
        between the reply and their commit loses them (never the acknowledged inspection)."""
        assert job.prepared.decoded is not None
        image, inputs = job.prepared.decoded.image, job.prepared.inputs
        versions = ran.later
        results = await asyncio.gather(
            *(self._predict_version(v, image, inputs) for v in versions),
            return_exceptions=True,
        )
        hidden: dict[str, BatchedPrediction | Exception] = {
            v: r if isinstance(r, BatchedPrediction | Exception) else RuntimeError("cancelled")
            for v, r in zip(versions, results, strict=True)
        }
        ran.hidden.update(hidden)
        rows = [_prediction_fields(v, "shadow", r) for v, r in hidden.items()]
        try:
            await self.committer.commit(partial(self._stage_hidden, inspection_id, rows))
        except Exception:
            logger.exception(
                "could not store the hidden versions' predictions of inspection %s",
                inspection_id,
            )
            return
        if state is not None:
            self._watch_candidate(state, ran)

    @staticmethod
    def _stage_hidden(inspection_id: int, rows: list[dict[str, Any]], session: Session) -> None:
        session.add_all(ModelPrediction(inspection_id=inspection_id, **f) for f in rows)

    async def settle(self) -> None:
        """Wait until the hidden runs of every part answered so far are stored (the app's
        shutdown, before the batchers stop; tests)."""
        while self._hidden_runs:
            await asyncio.gather(*list(self._hidden_runs), return_exceptions=True)

    def settle_blocking(self, timeout: float | None = None) -> None:
        """`settle` for threads that are not the event loop (tests with a TestClient)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.settle(), loop).result(timeout)

    def _watch_candidate(self, state: DeploymentState, ran: _Ran) -> None:
        """Count the candidate's run; roll it back (in a worker thread) past the limits."""
        assert self.rollout is not None
        candidate = state.candidate
        if candidate is None:
            return
        if ran.decider == candidate and ran.decided is not None:
            error, model_ms = False, ran.decided.model_ms
        elif candidate in ran.hidden:
            result = ran.hidden[candidate]
            error = isinstance(result, Exception)
            model_ms = 0.0 if isinstance(result, Exception) else result.model_ms
        else:
            return
        why = self.rollout.observe_candidate(state.line_id, candidate, error=error,
                                             model_ms=model_ms)  # fmt: skip
        if why is not None:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(
                None, self.rollout.roll_back_unhealthy, state.line_id, candidate, why
            )

    def _check_gate(
        self, gate: ImageGate | None, stats: InputStats, batched: BatchedPrediction | None
    ) -> GateVerdict | None:
        """The image gate's verdict (of the deciding version's reference profile); at
        human_only (no model run) on the input metrics alone."""
        if gate is None:
            return None
        started = time.perf_counter()
        embedding = batched.embedding if batched is not None else None
        verdict = gate.check(stats.metrics(), embedding, stats.edge_layout)
        self.metrics.observe_stage("gate", time.perf_counter() - started)
        return verdict

    def _policy_and_replay(
        self, submission: ImageSubmission
    ) -> tuple[LinePolicy, str, Inspection | None]:
        """The line's policy now, the image's hash, and the inspection an earlier upload with
        the same capture_id made (or None)."""
        policy = submission.policy
        if policy is None:
            policy = self._policy_of(submission.line_id)
        # The checks that need no decoding come before the replay lookup, so an empty or
        # oversized body is named as such even when its capture_id was used before.
        _check_submission(submission)
        try:
            check_envelope(submission.data, submission.content_type, max_bytes=self.max_image_bytes)
        except ImageRejected as exc:
            raise IngestError(exc.status_code, exc.detail) from exc
        sha256 = sha256_of(submission.data)
        if submission.capture_id is None:
            return policy, sha256, None
        with Session(self.engine, expire_on_commit=False) as session:
            existing = self._by_capture(session, submission.line_id, submission.capture_id)
        if existing is None:
            return policy, sha256, None
        return policy, sha256, self._same_image_or_conflict(existing, submission, sha256)

    def _policy_of(self, line_id: str) -> LinePolicy:
        """The line's policy, cached while no line or key changed (`inspect_app.lookups`):
        no query at all while the cache is fresh."""
        with Session(self.engine) as session:
            policy = line_lookups(self.engine).current(session).policy(line_id)
        if policy is None:
            raise IngestError(404, f"unknown line {line_id!r}")
        return policy

    @staticmethod
    def _by_capture(session: Session, line_id: str, capture_id: str) -> Inspection | None:
        return session.exec(
            select(Inspection)
            .where(Inspection.line_id == line_id)
            .where(Inspection.capture_id == capture_id)
        ).first()

    @staticmethod
    def _same_image_or_conflict(
        existing: Inspection, submission: ImageSubmission, sha256: str
    ) -> Inspection:
        if existing.image_sha256 != sha256:
            raise IngestError(
                409,
                f"capture_id {submission.capture_id!r} was already used on line "
                f"{submission.line_id!r} for a different image (inspection {existing.id})",
            )
        return existing

    def _decode(self, submission: ImageSubmission) -> tuple[DecodedImage, InputStats]:
        decoded = decode_image(
            submission.data,
            submission.content_type,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
        )
        return decoded, input_stats(decoded.image)

    async def _predict_version(
        self,
        version: str,
        image: np.ndarray,
        inputs: dict[Hashable, np.ndarray | None],
        announced: dict[int, Announcement] | None = None,
    ) -> BatchedPrediction:
        return await self._predict(self._batcher_of(version), image, inputs, announced)

    async def _predict(
        self,
        batcher: MicroBatcher,
        image: np.ndarray,
        inputs: dict[Hashable, np.ndarray | None],
        announced: dict[int, Announcement] | None = None,
    ) -> BatchedPrediction:
        key = batcher.prepare_key
        announcement = announced.pop(id(batcher), None) if announced is not None else None
        try:
            return await batcher.predict(
                image, inputs.get(key) if key is not None else None, announcement
            )
        except BatcherStopped:
            raise IngestError(503, "the service is shutting down; send the image again") from None
        except Exception as exc:
            # Not the camera's fault, and not worth guessing a route for: the line retries.
            raise IngestError(
                503, f"the model could not inspect this image ({type(exc).__name__}: {exc})"
            ) from exc

    # -- reporting

    @staticmethod
    def _metric_line(line_id: str, exc: IngestError) -> str:
        # The line is looked up first, so only a 404 carries a line name the caller made up:
        # keep that out of the metric's labels.
        return "unknown" if exc.status_code == 404 else line_id

    def _record(
        self,
        inspection: Inspection,
        prediction: Prediction | None,
        brightness: float,
        contrast: float,
        sharpness: float,
    ) -> None:
        line = inspection.line_id
        m = self.metrics
        m.decisions.labels(line=line, route=inspection.route, decision=inspection.decision).inc()
        m.brightness.labels(line=line).observe(brightness)
        m.contrast.labels(line=line).observe(contrast)
        m.sharpness.labels(line=line).observe(sharpness)
        if prediction is not None:
            m.confidence.labels(line=line).observe(prediction.confidence)
        logger.info(
            "inspection %s line=%s route=%s decision=%s decided_by=%s model=%s "
            "predicted=%s confidence=%s gate=%s source=%s capture=%s serial=%s total_ms=%.1f",
            inspection.id,
            line,
            inspection.route,
            inspection.decision,
            inspection.decided_by or "-",
            inspection.model_version or "-",
            inspection.predicted_class or "-",
            f"{inspection.confidence:.4f}" if inspection.confidence is not None else "-",
            inspection.gate_codes or "ok",
            inspection.source,
            inspection.capture_id or "-",
            inspection.part_serial or "-",
            inspection.total_ms,
        )

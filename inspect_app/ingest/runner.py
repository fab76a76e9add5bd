"""Runs the service's camera sources: one daemon thread per camera, feeding the pipeline.

Each thread's lifecycle: ``connect()`` -> ``read()`` and submit until stopped or the source
is finished -> ``disconnect()``. Every image goes through ``InspectionPipeline.submit_blocking``,
the same path as an HTTP upload, so validation, storage, idempotency and routing are never
duplicated here. A refused image is logged with the reason and the camera keeps going.
A camera configured with ``max_queue`` waits while its line's review queue is that full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.ingest.base import CameraSource, CapturedImage
from inspect_app.ingest.folder import FolderSource
from inspect_app.ingest.opencv_source import OpenCVSource
from inspect_app.ingest.replay import ReplaySource
from inspect_app.pipeline import ImageSubmission, IngestError
from inspect_app.review_queue import queue_depth
from inspect_app.settings import CameraSourceConfig

if TYPE_CHECKING:
    from inspect_app.pipeline import InspectionPipeline

log = logging.getLogger(__name__)

SOURCE_KINDS: dict[str, type[CameraSource]] = {
    OpenCVSource.kind: OpenCVSource,
    FolderSource.kind: FolderSource,
    ReplaySource.kind: ReplaySource,
}
# Refusals worth retrying: the request, not the image, was the problem.
_TRANSIENT_STATUS = {408, 425, 429}
_MAX_BACKOFF_S = 30.0


def build_camera_source(config: CameraSourceConfig) -> CameraSource:
    """The source a configuration describes; a clear error for an unknown kind."""
    try:
        source_class = SOURCE_KINDS[config.kind]
    except KeyError:
        kinds = ", ".join(sorted(SOURCE_KINDS))
        raise ValueError(
            f"camera for line {config.line!r}: unknown kind {config.kind!r} (known: {kinds})"
        ) from None
    return source_class(config)


def is_permanent_refusal(exc: IngestError) -> bool:
    """Bad input stays bad (4xx); overload, timeouts and server errors may pass on a retry."""
    status = getattr(exc, "status_code", 400)
    return 400 <= status < 500 and status not in _TRANSIENT_STATUS


def describe_refusal(exc: BaseException) -> str:
    """One line naming why ingestion did not take an image, for the log and error notes."""
    if isinstance(exc, IngestError):
        detail = getattr(exc, "detail", None) or str(exc)
        return f"{getattr(exc, 'status_code', '?')}: {detail}"
    if isinstance(exc, TimeoutError):
        return "the pipeline did not answer in time"
    return f"{type(exc).__name__}: {exc}"


class QueueLimit:
    """Holds a camera back while its line's review queue holds `max_queue` unlabeled tasks
    or more, and lets it go on once inspectors have brought the queue below that.

    For simulated lines (the demo's replay camera): parts nobody labels would otherwise pile
    up without end. The depth is asked at most once per `check_every_s` (1 s), whatever the
    camera's rate: one count of the line's unlabeled tasks a second costs nothing next to
    ingesting, where a count per frame at 30 frames/s would not. The price is that between
    two checks a camera may add up to rate x `check_every_s` parts beyond the limit (at the
    demo's 1 image/s, one part), and resumes up to `check_every_s` after a label freed room.
    """

    def __init__(
        self,
        line_id: str,
        max_queue: int,
        depth: Callable[[], int],
        *,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.line_id = line_id
        self.max_queue = max_queue
        self.paused = False
        self._depth = depth
        self._check_every_s = check_every_s
        self._clock = clock
        self._next_check = float("-inf")

    def holds(self) -> bool:
        """Whether the camera must wait now; asks for the depth only when the last answer
        is older than `check_every_s`. Logs once when it starts holding, once when it lets go."""
        now = self._clock()
        if now < self._next_check:
            return self.paused
        self._next_check = now + self._check_every_s
        depth = self._depth()
        full = depth >= self.max_queue
        if full != self.paused:
            log.info(
                "line %s: review queue at %d unlabeled tasks (limit %d); its camera %s",
                self.line_id,
                depth,
                self.max_queue,
                "pauses" if full else "resumes",
            )
        self.paused = full
        return full

    @property
    def seconds_to_next_check(self) -> float:
        return max(0.0, self._next_check - self._clock())


def line_queue_depth(engine: Engine, line_id: str) -> Callable[[], int]:
    """The depth of `line_id`'s review queue, read from the database each time it is called."""

    def depth() -> int:
        with Session(engine) as session:
            return queue_depth(session, line_id)

    return depth


@dataclass
class SourceStats:
    """What one camera has done since start, for logs, tests and the shutdown summary."""

    ingested: int = 0  # new inspections committed
    duplicates: int = 0  # capture id already inspected (a restart or a retry)
    refused: int = 0  # ingestion refused the image for good (bad input)
    errors: int = 0  # transient failures: read errors, timeouts, service errors
    last_error: str | None = None


class CameraWorker(threading.Thread):
    """One camera's thread: reads its source and submits each image to the pipeline."""

    def __init__(
        self,
        source: CameraSource,
        pipeline: InspectionPipeline,
        stop_event: threading.Event,
        *,
        submit_timeout_s: float = 60.0,
        error_backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=f"camera-{source.config.line}-{source.kind}", daemon=True)
        self.source = source
        self.pipeline = pipeline
        self.stats = SourceStats()
        config = source.config
        self.queue_limit = (
            None
            if config.max_queue is None
            else QueueLimit(
                config.line,
                config.max_queue,
                line_queue_depth(pipeline.engine, config.line),
                clock=clock,
            )
        )
        self._stop_event = stop_event
        self._submit_timeout_s = submit_timeout_s
        self._error_backoff_s = error_backoff_s
        self._failures_in_a_row = 0

    def run(self) -> None:
        try:
            self.source.connect()
        except Exception as exc:
            self.stats.last_error = describe_refusal(exc)
            log.error("camera %s cannot start: %s", self.source.name, self.stats.last_error)
            self._disconnect()
            return
        try:
            while not self._stop_event.is_set():
                wait = self.step()
                if wait is None:
                    break
                if wait > 0:
                    self._stop_event.wait(wait)
        finally:
            self._disconnect()
            log.info(
                "camera %s stopped: %d ingested, %d duplicates, %d refused, %d errors",
                self.source.name,
                self.stats.ingested,
                self.stats.duplicates,
                self.stats.refused,
                self.stats.errors,
            )

    def step(self) -> float | None:
        """One turn of the camera's loop, on a connected source: at most one image read and
        submitted. Returns the seconds to wait before the next turn, or None when the source
        is finished. The thread runs it until stopped; a test runs it one turn at a time."""
        if self.queue_limit is not None:
            try:
                if self.queue_limit.holds():
                    return self.queue_limit.seconds_to_next_check
            except Exception as exc:
                self._count_error(exc)
                log.exception("camera %s: review queue depth unknown; retrying", self.source.name)
                self._back_off()
                return 0.0
        try:
            image = self.source.read()
        except Exception as exc:
            self._count_error(exc)
            log.exception("camera %s: read failed; retrying", self.source.name)
            self._back_off()
            return 0.0
        if image is None:
            return None if self.source.finished else self.source.idle_seconds
        self._ingest(image)
        return 0.0

    def _ingest(self, image: CapturedImage) -> None:
        submission = ImageSubmission(
            line_id=self.source.config.line,
            data=image.data,
            content_type=image.content_type,
            capture_id=image.capture_id,
            part_serial=image.part_serial,
            captured_at=image.captured_at,
            source=self.source.kind,
            true_class=image.true_class,
        )
        try:
            outcome = self.pipeline.submit_blocking(submission, timeout=self._submit_timeout_s)
        except IngestError as exc:
            reason = describe_refusal(exc)
            permanent = is_permanent_refusal(exc)
            if permanent:
                self.stats.refused += 1
                self.stats.last_error = reason
            else:
                self._count_error(exc)
            log.warning(
                "camera %s: %s (capture %s) refused: %s",
                self.source.name,
                image.origin,
                image.capture_id,
                reason,
            )
            self.source.rejected(image, reason, permanent=permanent)
            if not permanent:
                self._back_off()
            return
        except Exception as exc:
            self._count_error(exc)
            log.error(
                "camera %s: %s (capture %s) not ingested: %s",
                self.source.name,
                image.origin,
                image.capture_id,
                describe_refusal(exc),
                exc_info=not isinstance(exc, TimeoutError),
            )
            self.source.rejected(image, describe_refusal(exc), permanent=False)
            self._back_off()
            return
        self._failures_in_a_row = 0
        inspection = outcome.inspection
        if outcome.created:
            self.stats.ingested += 1
        else:
            self.stats.duplicates += 1
        # DEBUG: the pipeline already logs every decision at INFO; this adds only the origin.
        log.debug(
            "camera %s: %s -> inspection %s, decision %s%s",
            self.source.name,
            image.origin,
            inspection.id,
            inspection.decision,
            "" if outcome.created else " (already inspected under this capture id)",
        )
        self.source.ingested(image)

    def _back_off(self) -> None:
        """Wait longer after each failure in a row (up to 30 s), so a camera that stays
        broken is retried without flooding the log; any success resets it."""
        self._failures_in_a_row += 1
        delay = min(_MAX_BACKOFF_S, self._error_backoff_s * 2 ** (self._failures_in_a_row - 1))
        self._stop_event.wait(delay)

    def _count_error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = describe_refusal(exc)

    def _disconnect(self) -> None:
        try:
            self.source.disconnect()
        except Exception:
            log.exception("camera %s: disconnect failed", self.source.name)


class CameraSourceGroup:
    """The running cameras of one service; ``stop()`` before the pipeline's batcher stops."""

    def __init__(self, workers: list[CameraWorker], stop_event: threading.Event) -> None:
        self.workers = workers
        self._stop_event = stop_event

    @property
    def stats(self) -> dict[str, SourceStats]:
        return {worker.source.name: worker.stats for worker in self.workers}

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every camera to stop and wait for them; an image in flight finishes first."""
        self._stop_event.set()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.warning("camera %s did not stop within %.1f s", worker.source.name, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_camera_sources(
    configs: list[CameraSourceConfig], pipeline: InspectionPipeline
) -> CameraSourceGroup:
    """Start one thread per configured camera. Every configuration is checked before any
    thread starts, so a typo in one camera stops the service at start-up, not at 3 a.m."""
    sources = [build_camera_source(config) for config in configs]
    stop_event = threading.Event()
    workers = [CameraWorker(source, pipeline, stop_event) for source in sources]
    for worker in workers:
        worker.start()
        log.info(
            "camera %s started, feeding line %s", worker.source.name, worker.source.config.line
        )
    return CameraSourceGroup(workers, stop_event)

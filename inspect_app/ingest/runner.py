"""Runs the service's camera sources: one daemon thread per camera, feeding the pipeline.

Each thread's lifecycle: ``connect()`` -> ``read()`` and submit until stopped or the source
is finished -> ``disconnect()``. Every image goes through ``InspectionPipeline.submit_blocking``,
the same path as an HTTP upload, so validation, storage, idempotency and routing are never
duplicated here. A refused image is logged with the reason and the camera keeps going.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from inspect_app.ingest.base import CameraSource, CapturedImage
from inspect_app.ingest.folder import FolderSource
from inspect_app.ingest.opencv_source import OpenCVSource
from inspect_app.ingest.replay import ReplaySource
from inspect_app.pipeline import ImageSubmission, IngestError
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
    ) -> None:
        super().__init__(name=f"camera-{source.config.line}-{source.kind}", daemon=True)
        self.source = source
        self.pipeline = pipeline
        self.stats = SourceStats()
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
                try:
                    image = self.source.read()
                except Exception as exc:
                    self._count_error(exc)
                    log.exception("camera %s: read failed; retrying", self.source.name)
                    self._back_off()
                    continue
                if image is None:
                    if self.source.finished:
                        break
                    self._stop_event.wait(self.source.idle_seconds)
                    continue
                self._ingest(image)
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

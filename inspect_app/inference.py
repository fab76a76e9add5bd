"""Micro-batching: concurrent requests share one model call.

A CNN's cost per image falls steeply with the batch size, and line cameras fire in bursts.
Each request puts its decoded image on a queue and waits on its own future; one dedicated
worker thread takes the first waiting image, gathers more for at most ``max_wait_ms`` (or
until ``max_batch``), runs the model once and hands each caller its own result. The model
never runs in the event-loop thread, so a slow batch never stalls HTTP handling.

A caller may hand the image's network input along with it (`prepare`, in the caller's own
worker thread, beside the decoding): the batch is then one stack of ready inputs, and the
model's thread, the one place every image of a version queues for, does no per-image
preprocessing. A predictor without `predict_prepared` gets the images themselves.

Lifecycle (`inspect_app.workers.QueueWorker`, shared with the group committer): ``start()``
-> the worker runs until ``stop()`` -> everything queued before the stop is still answered,
anything submitted after it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from inspect_app.domain import Prediction
from inspect_app.metrics import ServiceMetrics
from inspect_app.workers import Announcement, QueueWorker

logger = logging.getLogger(__name__)


class BatchPredictor(Protocol):
    """What the batcher needs of a model: models.predictor.Predictor is one."""

    @property
    def version(self) -> str: ...

    def predict_with_embeddings(
        self, images: Sequence[np.ndarray], *, heatmap: bool = False
    ) -> tuple[list[Prediction], np.ndarray]: ...


class PreparingPredictor(BatchPredictor, Protocol):
    """A predictor that takes inputs prepared elsewhere (`models.predictor.Predictor` and
    `models.onnx_predictor.OnnxPredictor` are)."""

    @property
    def preprocessing(self) -> Hashable: ...

    def prepare(self, image: np.ndarray) -> np.ndarray: ...

    def predict_prepared(self, x: np.ndarray) -> tuple[list[Prediction], np.ndarray]: ...


class BatcherStopped(RuntimeError):
    """The batcher is stopping or stopped: no new images are taken."""


@dataclass(frozen=True)
class BatchedPrediction:
    prediction: Prediction
    queue_ms: float  # waiting for the batch to form and for the worker to be free
    model_ms: float  # the model call this image was part of
    batch_size: int
    # (D,) the image's embedding from the same forward pass, for the image gate
    embedding: np.ndarray | None = None


@dataclass
class _Item:
    image: np.ndarray
    future: Future[BatchedPrediction]
    prepared: np.ndarray | None = None  # (3, S, S) network input, from `MicroBatcher.prepare`
    enqueued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(QueueWorker[_Item]):
    def __init__(
        self,
        predictor: BatchPredictor,
        max_batch: int,
        max_wait_ms: float,
        *,
        metrics: ServiceMetrics | None = None,
        wait_for_announced: bool = False,
    ) -> None:
        """`wait_for_announced`: wait up to `max_wait_ms` only for images callers have
        `announce`d (`inspect_app.workers`); the service's batchers do, with the pipeline
        announcing each image before it decodes it."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        super().__init__(
            name="inspect-model-batcher",
            max_group=max_batch,
            max_wait_s=max_wait_ms / 1000.0,
            stopped=BatcherStopped,
            wait_for_announced=wait_for_announced,
        )
        self.predictor = predictor
        self.max_batch = max_batch
        self.metrics = metrics
        self._preparing = all(
            callable(getattr(predictor, name, None)) for name in ("prepare", "predict_prepared")
        )

    @property
    def prepare_key(self) -> Hashable | None:
        """What `prepare` depends on (the version's preprocessing): versions with the same key
        take the same prepared input. None: this predictor takes images only."""
        return getattr(self.predictor, "preprocessing", None) if self._preparing else None

    def prepare(self, image: np.ndarray) -> np.ndarray | None:
        """The image's network input for this version (call it from a worker thread, never the
        event loop), or None when the predictor takes images only."""
        if not self._preparing:
            return None
        return self.predictor.prepare(image)  # type: ignore[attr-defined,no-any-return]

    def start(self) -> None:
        super().start()
        logger.info(
            "model batcher started: model %s, batches of up to %d, waiting up to %.1f ms",
            self.predictor.version,
            self.max_batch,
            self.max_wait_s * 1000,
        )

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Answer what is queued, then end the worker. Safe to call twice."""
        stopped = super().stop(timeout)
        if stopped:
            logger.info("model batcher stopped")
        return stopped

    def submit(
        self,
        image: np.ndarray,
        prepared: np.ndarray | None = None,
        announcement: Announcement | None = None,
    ) -> Future[BatchedPrediction]:
        """Queue one image (from any thread), with its `prepare`d input when the caller made
        it, ending its `announcement`; the future gets its prediction or its error."""
        future: Future[BatchedPrediction] = Future()
        self.put(_Item(image=image, future=future, prepared=prepared), announcement)
        return future

    async def predict(
        self,
        image: np.ndarray,
        prepared: np.ndarray | None = None,
        announcement: Announcement | None = None,
    ) -> BatchedPrediction:
        """Predict one image from the event loop, batched with whatever else is waiting."""
        return await asyncio.wrap_future(self.submit(image, prepared, announcement))

    def _predict(self, items: list[_Item]) -> tuple[list[Prediction], np.ndarray]:
        if self._preparing and all(item.prepared is not None for item in items):
            stacked = np.stack([item.prepared for item in items])  # type: ignore[misc]
            return self.predictor.predict_prepared(stacked)  # type: ignore[attr-defined,no-any-return]
        return self.predictor.predict_with_embeddings([item.image for item in items])

    # -- the worker thread

    def handle(self, group: list[_Item]) -> None:
        self._run_batch(group)

    def _run_batch(self, batch: list[_Item]) -> None:
        # A caller that gave up (client disconnected) is not worth a model slot.
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            predictions, embeddings = self._predict(live)
            if len(predictions) != len(live) or len(embeddings) != len(live):
                raise RuntimeError(
                    f"the model returned {len(predictions)} predictions for {len(live)} images"
                )
        except Exception as exc:
            if len(live) == 1:
                logger.exception("the model failed on an image")
                live[0].future.set_exception(exc)
                return
            # One bad image must not fail its neighbours: retry one by one, so each error
            # reaches the caller whose image caused it.
            logger.warning("a batch of %d failed (%s); retrying one by one", len(live), exc)
            for item in live:
                self._retry_alone(item)
            return
        model_s = time.perf_counter() - started
        self._record(len(live), model_s, [started - item.enqueued_at for item in live])
        for item, prediction, embedding in zip(live, predictions, embeddings, strict=True):
            item.future.set_result(
                BatchedPrediction(
                    prediction=prediction,
                    queue_ms=(started - item.enqueued_at) * 1000,
                    model_ms=model_s * 1000,
                    batch_size=len(live),
                    embedding=embedding,
                )
            )

    def _retry_alone(self, item: _Item) -> None:
        started = time.perf_counter()
        try:
            (prediction,), (embedding,) = self._predict([item])
        except Exception as exc:
            logger.exception("the model failed on an image")
            item.future.set_exception(exc)
            return
        model_s = time.perf_counter() - started
        self._record(1, model_s, [started - item.enqueued_at])
        item.future.set_result(
            BatchedPrediction(
                prediction=prediction,
                queue_ms=(started - item.enqueued_at) * 1000,
                model_ms=model_s * 1000,
                batch_size=1,
                embedding=embedding,
            )
        )

    def _record(self, size: int, model_s: float, waits_s: list[float]) -> None:
        if self.metrics is None:
            return
        self.metrics.batch_size.observe(size)
        self.metrics.observe_stage("model", model_s)
        for wait in waits_s:
            self.metrics.observe_stage("queue_wait", wait)

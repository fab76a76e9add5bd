"""The micro-batcher groups concurrent images into one model call and answers each caller.

The predictor here is a fake that can be held mid-call: the batcher's contract does not
depend on what the model computes, and holding the call is what makes batching
deterministic to test without timing anything.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from inspect_app.domain import Prediction
from inspect_app.inference import BatcherStopped, MicroBatcher
from inspect_app.metrics import ServiceMetrics


class HeldPredictor:
    """P(ok) = the image's first pixel / 255; images whose first pixel is 13 make it fail."""

    version = "fake-1"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.calls: list[int] = []
        self.threads: list[str] = []

    def predict_with_embeddings(
        self, images: list[np.ndarray], heatmap: bool = False
    ) -> tuple[list[Prediction], np.ndarray]:
        return self.predict(images), np.zeros((len(images), 2), dtype=np.float32)

    def predict(self, images: list[np.ndarray], heatmap: bool = False) -> list[Prediction]:
        self.calls.append(len(images))
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10)
        if any(int(image.flat[0]) == 13 for image in images):
            raise ValueError("image 13 is cursed")
        return [
            Prediction(
                probabilities={"ok": image.flat[0] / 255, "scratch": 1 - image.flat[0] / 255},
                model_version=self.version,
            )
            for image in images
        ]


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


@pytest.fixture
def predictor() -> HeldPredictor:
    return HeldPredictor()


def test_images_that_arrive_while_the_model_is_busy_share_the_next_call(
    predictor: HeldPredictor,
) -> None:
    metrics = ServiceMetrics()
    batcher = MicroBatcher(predictor, max_batch=16, max_wait_ms=0, metrics=metrics)
    batcher.start()
    try:
        predictor.release.clear()
        first = batcher.submit(image(0))
        assert predictor.entered.wait(10)  # the worker is inside the first model call
        rest = [batcher.submit(image(v)) for v in range(1, 8)]
        predictor.release.set()
        results = [first.result(10)] + [f.result(10) for f in rest]
    finally:
        batcher.stop()
    assert predictor.calls == [1, 7]
    # each caller gets the prediction for its own image
    assert [r.prediction.p_ok for r in results] == pytest.approx([v / 255 for v in range(8)])
    assert [r.batch_size for r in results] == [1] + [7] * 7
    assert metrics.sample("inspect_model_batch_size_count") == 2
    assert metrics.sample("inspect_model_batch_size_sum") == 8
    assert metrics.sample("inspect_model_batch_size_bucket", {"le": "1.0"}) == 1
    assert metrics.sample("inspect_stage_seconds_count", {"stage": "queue_wait"}) == 8
    assert metrics.sample("inspect_stage_seconds_count", {"stage": "model"}) == 2


def test_a_batch_never_exceeds_max_batch(predictor: HeldPredictor) -> None:
    batcher = MicroBatcher(predictor, max_batch=3, max_wait_ms=0)
    batcher.start()
    try:
        predictor.release.clear()
        first = batcher.submit(image(0))
        assert predictor.entered.wait(10)
        rest = [batcher.submit(image(v)) for v in range(1, 8)]
        predictor.release.set()
        for future in [first, *rest]:
            future.result(10)
    finally:
        batcher.stop()
    assert predictor.calls == [1, 3, 3, 1]


def test_concurrent_async_callers_are_batched_off_the_event_loop(
    predictor: HeldPredictor,
) -> None:
    # A generous wait lets all eight requests of one burst join the first batch.
    batcher = MicroBatcher(predictor, max_batch=8, max_wait_ms=10_000)
    batcher.start()

    async def burst() -> list[float]:
        results = await asyncio.gather(*(batcher.predict(image(v)) for v in range(8)))
        return [r.prediction.p_ok for r in results]

    try:
        p_oks = asyncio.run(burst())
    finally:
        batcher.stop()
    assert p_oks == pytest.approx([v / 255 for v in range(8)])
    assert predictor.calls == [8]  # max_batch reached: it did not wait out the 10 s
    assert predictor.threads == ["inspect-model-batcher"]


def test_an_error_reaches_only_the_caller_whose_image_caused_it(
    predictor: HeldPredictor,
) -> None:
    batcher = MicroBatcher(predictor, max_batch=16, max_wait_ms=0)
    batcher.start()
    try:
        predictor.release.clear()
        first = batcher.submit(image(0))
        assert predictor.entered.wait(10)
        good = batcher.submit(image(100))
        bad = batcher.submit(image(13))
        also_good = batcher.submit(image(200))
        predictor.release.set()
        first.result(10)
        assert good.result(10).prediction.p_ok == pytest.approx(100 / 255)
        assert also_good.result(10).prediction.p_ok == pytest.approx(200 / 255)
        with pytest.raises(ValueError, match="cursed"):
            bad.result(10)
        # the worker survives a failed batch
        assert batcher.submit(image(50)).result(10).batch_size == 1
    finally:
        batcher.stop()


def test_stop_answers_what_was_queued_and_refuses_new_images(predictor: HeldPredictor) -> None:
    batcher = MicroBatcher(predictor, max_batch=2, max_wait_ms=0)
    batcher.start()
    predictor.release.clear()
    first = batcher.submit(image(0))
    assert predictor.entered.wait(10)
    queued = [batcher.submit(image(v)) for v in (1, 2, 3)]
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    predictor.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert first.result(0).batch_size == 1
    assert [f.result(0).prediction.p_ok for f in queued] == pytest.approx(
        [1 / 255, 2 / 255, 3 / 255]
    )
    assert not batcher.running
    with pytest.raises(BatcherStopped):
        batcher.submit(image(4))
    batcher.stop()  # a second stop is harmless


def test_bad_settings_are_refused(predictor: HeldPredictor) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(predictor, max_batch=0, max_wait_ms=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(predictor, max_batch=1, max_wait_ms=-1)


@pytest.fixture
def announcing(predictor: HeldPredictor) -> Iterator[MicroBatcher]:
    """A batcher that waits only for announced images, for up to 10 s: had it waited the
    wait out, a test's images would have company or would not be answered in time."""
    batcher = MicroBatcher(predictor, max_batch=8, max_wait_ms=10_000, wait_for_announced=True)
    batcher.start()
    try:
        yield batcher
    finally:
        batcher.stop()


def test_with_wait_for_announced_an_image_alone_does_not_wait_for_companions(
    predictor: HeldPredictor, announcing: MicroBatcher
) -> None:
    assert announcing.submit(image(10)).result(5).batch_size == 1
    gone = announcing.announce()
    gone.withdraw()  # an image that will not come (refused before the model)
    gone.withdraw()  # twice is harmless
    assert announcing.submit(image(20)).result(5).batch_size == 1
    assert predictor.calls == [1, 1]


def test_with_wait_for_announced_a_batch_waits_for_an_announced_image_and_no_longer(
    predictor: HeldPredictor, announcing: MicroBatcher
) -> None:
    coming = announcing.announce()
    first = announcing.submit(image(10), announcement=announcing.announce())
    assert not first.done()  # it waits: another image is on its way
    second = announcing.submit(image(20), announcement=coming)
    # every announced image is in: the batch runs without waiting out the 10 s
    assert first.result(5).batch_size == second.result(5).batch_size == 2
    assert predictor.calls == [2]

"""The queue worker's life cycle, which the micro-batcher and the group committer share:
what was queued before a stop is handled, in groups of at most `max_group`, anything after
it refused with the worker's own error."""

from __future__ import annotations

import threading

import pytest

from inspect_app.workers import QueueWorker


class Stopped(RuntimeError):
    pass


class Recorder(QueueWorker[int]):
    def __init__(self, max_group: int) -> None:
        super().__init__(name="test-worker", max_group=max_group, stopped=Stopped)
        self.groups: list[list[int]] = []
        self.hold = threading.Event()

    def handle(self, group: list[int]) -> None:
        self.hold.wait()
        self.groups.append(group)


def test_what_was_queued_before_the_stop_is_handled_in_bounded_groups() -> None:
    worker = Recorder(max_group=3)
    with pytest.raises(Stopped):
        worker.put(0)  # not started
    worker.start()
    assert worker.running
    for item in range(1, 9):
        worker.put(item)
    worker.hold.set()
    assert worker.stop() is True
    assert not worker.running
    assert [i for group in worker.groups for i in group] == list(range(1, 9))
    assert all(1 <= len(group) <= 3 for group in worker.groups)
    with pytest.raises(Stopped, match="not running"):
        worker.put(9)
    assert worker.stop() is False  # a second stop does nothing
    with pytest.raises(RuntimeError, match="already started"):
        worker.start()


def test_a_worker_needs_a_group_of_one_and_no_negative_wait() -> None:
    with pytest.raises(ValueError):
        QueueWorker(name="w", max_group=0)
    with pytest.raises(ValueError):
        QueueWorker(name="w", max_group=1, max_wait_s=-1.0)


def test_an_announcement_ends_when_its_item_is_put_even_if_the_worker_refuses_it() -> None:
    worker = Recorder(max_group=3)
    announcement = worker.announce()
    with pytest.raises(Stopped):
        worker.put(1, announcement)  # not started
    assert worker.announced == 0
    worker.start()
    worker.hold.set()
    worker.put(2, worker.announce())
    announcement.withdraw()  # already ended: counts nothing twice
    assert worker.announced == 0
    worker.stop()
    assert worker.groups == [[2]]

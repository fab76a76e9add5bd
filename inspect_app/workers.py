"""One dedicated thread fed by a queue, in groups: the life cycle the micro-batcher
(`inspect_app.inference`) and the group committer (`inspect_app.storage.group_commit`)
share.

``start()`` -> the thread takes the first waiting item, then whatever else arrives within
``max_wait_s`` (0: only what is already queued) up to ``max_group``, and hands the group to
`handle` -> until ``stop()``: everything queued before the stop is still handled, anything
submitted after it is refused with the worker's `stopped` error. A stop sentinel on the
queue, put under the same lock as every accepted item, is what orders the two: no item can
land behind it.

Waiting for a group is worth it only when more items are coming. With
``wait_for_announced``, a caller `announce`s an item before the work that precedes it (the
pipeline, before decoding an image) and the worker waits for more only while an announced
item has not arrived: an image alone on a quiet line goes straight to the model instead of
waiting out ``max_wait_s`` for companions that are not on their way (5 ms of a part's ~35),
and a group stops waiting as soon as every announced item is in it. Under load there is
always something announced, so groups form as before.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()


class Announcement:
    """An item on its way to a worker. It ends when the item is `put` with it, or when the
    caller `withdraw`s it (the item will not come: a refused image, an error); ending it
    twice does nothing, so a caller can withdraw in a ``finally`` whatever was not put."""

    __slots__ = ("_open", "_worker")

    def __init__(self, worker: QueueWorker[Any]) -> None:
        self._worker = worker
        self._open = True

    def withdraw(self) -> None:
        with self._worker._lock:
            self._end()

    def _end(self) -> None:  # under the worker's lock
        if self._open:
            self._open = False
            self._worker._announced -= 1


class QueueWorker(Generic[T]):
    """Subclasses implement `handle(group)`, which runs in the worker's thread and must
    answer every item of the group (it is never given an empty one)."""

    def __init__(
        self,
        *,
        name: str,
        max_group: int,
        max_wait_s: float = 0.0,
        stopped: type[Exception] = RuntimeError,
        wait_for_announced: bool = False,
    ) -> None:
        if max_group < 1:
            raise ValueError("the largest group must be at least 1")
        if max_wait_s < 0:
            raise ValueError("the wait for a group must not be negative")
        self.name = name
        self.max_group = max_group
        self.max_wait_s = max_wait_s
        self._stopped = stopped
        self._queue: queue.Queue[T | object] = queue.Queue()
        self._lock = threading.Lock()  # orders "accepting?" checks against the stop sentinel
        self._accepting = False
        self._thread: threading.Thread | None = None
        self.wait_for_announced = wait_for_announced
        self._announced = 0  # announced items not yet put (read unlocked by the worker)

    @property
    def running(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self.name} was already started")
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._accepting = True
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Handle what is queued, then end the thread. Safe to call twice; False when this
        call did nothing (never started or already stopped)."""
        with self._lock:
            if not self._accepting:
                return False
            self._accepting = False
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("%s did not stop within %s s", self.name, timeout)
        return True

    def announce(self) -> Announcement:
        """An item will be `put` soon (from any thread); see the module docstring."""
        with self._lock:
            self._announced += 1
        return Announcement(self)

    def put(self, item: T, announcement: Announcement | None = None) -> None:
        """Queue one item (from any thread), ending its `announcement`; refused with
        `stopped` unless running (the announcement ends then too)."""
        with self._lock:
            if announcement is not None:
                announcement._end()
            if not self._accepting:
                raise self._stopped(f"{self.name} is not running")
            self._queue.put(item)

    @property
    def announced(self) -> int:
        """Items announced and not yet put or withdrawn."""
        return self._announced

    def _more_coming(self) -> bool:
        return not self.wait_for_announced or self._announced > 0

    def handle(self, group: list[T]) -> None:
        raise NotImplementedError

    # -- the worker thread

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[T] = [first]  # type: ignore[list-item]
            deadline = time.perf_counter() + self.max_wait_s
            while len(group) < self.max_group:
                remaining = deadline - time.perf_counter() if self._more_coming() else 0.0
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else None
                except queue.Empty:
                    nxt = None
                if nxt is None:
                    # The wait is over; still take whatever is already queued, for free.
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if nxt is _STOP:
                    stopping = True
                    break
                group.append(nxt)  # type: ignore[arg-type]
            self.handle(group)

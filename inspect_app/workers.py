"""One dedicated thread fed by a queue, in groups: the life cycle the micro-batcher
(`inspect_app.inference`) and the group committer (`inspect_app.storage.group_commit`)
share.

``start()`` -> the thread takes the first waiting item, then whatever else arrives within
``max_wait_s`` (0: only what is already queued) up to ``max_group``, and hands the group to
`handle` -> until ``stop()``: everything queued before the stop is still handled, anything
submitted after it is refused with the worker's `stopped` error. A stop sentinel on the
queue, put under the same lock as every accepted item, is what orders the two: no item can
land behind it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STOP = object()


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

    def put(self, item: T) -> None:
        """Queue one item (from any thread); refused with `stopped` unless running."""
        with self._lock:
            if not self._accepting:
                raise self._stopped(f"{self.name} is not running")
            self._queue.put(item)

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
                remaining = deadline - time.perf_counter()
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

"""Group commit: the writes that wait together commit in one transaction.

A durable commit costs a flush to disk (SQLite's WAL fsync at ``synchronous=FULL``, a
PostgreSQL WAL flush), whatever it holds. When images arrive faster than one commit takes,
committing each alone makes the disk the line's limit; committing what has queued meanwhile
in one transaction pays the flush once for all of them. Nothing waits on purpose: a write
that finds the writer idle commits at once, alone, so a quiet line gets no added latency.

One dedicated writer thread takes the first waiting write, everything else already queued
(up to ``max_batch``), runs each write's `stage` on one session, then `finish` on all their
results (the outbox's one counter update per line, for instance), and commits. Each caller
is answered, through its own future, only after that commit: the rule that nothing is
acknowledged before it is durable holds for every write of the group.

A failure anywhere in a group (an integrity error of one write, a full disk) rolls the whole
transaction back and runs each write again alone, in its own transaction, so one bad write
never fails its neighbours and each error reaches the caller whose write caused it. A
`stage` must therefore build its rows afresh each time it is called.

Lifecycle (`inspect_app.workers.QueueWorker`, shared with the micro-batcher): ``start()`` ->
the writer runs until ``stop()``; what was queued before the stop is still committed,
anything submitted after it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.workers import QueueWorker

logger = logging.getLogger(__name__)

R = TypeVar("R")

Stage = Callable[[Session], R]  # adds one write's rows to the session (and flushes them)
Finish = Callable[[Session, list[Any]], None]  # after every stage of a group, before commit


class GroupCommitStopped(RuntimeError):
    """The writer is stopping or stopped: no new writes are taken."""


@dataclass
class _Write(Generic[R]):
    stage: Stage[R]
    future: Future[R]
    queued_at: float = field(default_factory=time.perf_counter)


class GroupCommitter(QueueWorker[_Write[Any]]):
    def __init__(
        self,
        engine: Engine,
        *,
        finish: Finish | None = None,
        max_batch: int = 64,
        name: str = "inspect-group-commit",
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        """`finish` runs once per transaction on the list of its stages' results, in order;
        `on_commit(size, seconds)` is told each commit (metrics)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        # no wait for a group: what queued during the last commit is the group
        super().__init__(name=name, max_group=max_batch, stopped=GroupCommitStopped)
        self.engine = engine
        self.finish = finish
        self.max_batch = max_batch
        self.on_commit = on_commit

    def submit(self, stage: Stage[R]) -> Future[R]:
        """Queue one write (from any thread); its future gets the stage's result once the
        transaction holding it has committed, or the write's own error."""
        future: Future[R] = Future()
        self.put(_Write(stage=stage, future=future))
        return future

    async def commit(self, stage: Stage[R]) -> R:
        """`submit` from the event loop, awaited."""
        return await asyncio.wrap_future(self.submit(stage))

    # -- the writer thread

    def handle(self, group: list[_Write[Any]]) -> None:
        live = [w for w in group if w.future.set_running_or_notify_cancel()]
        if live:
            self._commit_group(live)

    def _transaction(self, writes: list[_Write[Any]]) -> list[Any]:
        started = time.perf_counter()
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                results = [w.stage(session) for w in writes]
                if self.finish is not None:
                    self.finish(session, results)
                session.commit()
            except BaseException:
                session.rollback()
                raise
        if self.on_commit is not None:
            self.on_commit(len(writes), time.perf_counter() - started)
        return results

    def _commit_group(self, writes: list[_Write[Any]]) -> None:
        try:
            results = self._transaction(writes)
        except Exception as exc:
            if len(writes) == 1:
                writes[0].future.set_exception(exc)
                return
            logger.warning(
                "a group commit of %d writes failed (%s: %s); committing each alone",
                len(writes),
                type(exc).__name__,
                exc,
            )
            for write in writes:
                self._commit_alone(write)
            return
        for write, result in zip(writes, results, strict=True):
            write.future.set_result(result)

    def _commit_alone(self, write: _Write[Any]) -> None:
        try:
            (result,) = self._transaction([write])
        except Exception as exc:
            write.future.set_exception(exc)
            return
        write.future.set_result(result)

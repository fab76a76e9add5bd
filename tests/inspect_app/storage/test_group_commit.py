"""Group commit on both databases: writes that wait together commit in one transaction, each
caller is answered only after that commit, and one bad write fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from inspect_app.lines import add_line
from inspect_app.storage.group_commit import GroupCommitStopped, GroupCommitter
from inspect_app.storage.tables import Line


def _line_ids(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.exec(select(Line.id)).all())


def _adds(line_id: str) -> Any:
    def stage(session: Session) -> str:
        session.add(Line(id=line_id))
        return line_id

    return stage


def test_writes_waiting_together_commit_once_and_are_answered_after_it(engine: Engine) -> None:
    commits: list[int] = []
    answered_after_commit: list[bool] = []
    started, release = threading.Event(), threading.Event()

    def first(session: Session) -> str:
        started.set()
        release.wait(30)  # holds the writer while the others queue
        session.add(Line(id="line-0"))
        return "line-0"

    committer = GroupCommitter(engine, on_commit=lambda n, _s: commits.append(n))
    committer.start()
    try:
        futures: list[Future[str]] = [committer.submit(first)]
        assert started.wait(30)
        futures += [committer.submit(_adds(f"line-{i}")) for i in range(1, 6)]

        def check(future: Future[str]) -> None:  # runs when the caller is answered
            answered_after_commit.append(future.result() in _line_ids(engine))

        for future in futures[1:]:
            future.add_done_callback(check)
        release.set()
        assert [f.result(30) for f in futures] == [f"line-{i}" for i in range(6)]
    finally:
        committer.stop()
    assert commits == [1, 5]
    assert answered_after_commit == [True] * 5


def test_a_bad_write_fails_alone_and_its_neighbours_commit(engine: Engine) -> None:
    with Session(engine) as session:
        add_line(session, "taken")
    release = threading.Event()

    def first(session: Session) -> str:
        release.wait(30)
        return "nothing"

    committer = GroupCommitter(engine)
    committer.start()
    try:
        futures = [committer.submit(first)]
        futures += [committer.submit(_adds(n)) for n in ("line-a", "taken", "line-b")]
        release.set()
        assert futures[1].result(30) == "line-a" and futures[3].result(30) == "line-b"
        with pytest.raises(IntegrityError):
            futures[2].result(30)
    finally:
        committer.stop()
    assert _line_ids(engine) == ["line-a", "line-b", "taken"]


def test_after_stop_nothing_is_taken(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    committer.start()
    assert committer.submit(_adds("line-1")).result(30) == "line-1"
    committer.stop()
    with pytest.raises(GroupCommitStopped):
        committer.submit(_adds("line-2"))
    assert _line_ids(engine) == ["line-1"]

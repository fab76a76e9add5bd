from __future__ import annotations

import logging
from enum import StrEnum

import pytest
from sqlmodel import Session

from inspect_app.events import list_events, record_event


class _Colour(StrEnum):
    RED = "red"


def test_an_event_is_stored_with_json_details_and_logged(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="inspect_app.events"):
        event = record_event(
            session,
            kind="level_change",
            actor="sue",
            reason="audits look bad",
            line_id="line-9",
            details={"old": {"level": _Colour.RED}, "n": 3},
        )
    session.commit()
    assert event.id is not None
    assert event.details == {"old": {"level": "red"}, "n": 3}
    assert "level_change" in caplog.text and "audits look bad" in caplog.text
    assert [e.kind for e in list_events(session, line_id="line-9")] == ["level_change"]


def test_events_list_newest_first_and_filter_by_kind(session: Session) -> None:
    for kind in ("a", "b", "a"):
        record_event(session, kind=kind, actor="system", line_id="l")
    session.commit()
    events = list_events(session, line_id="l")
    assert [e.kind for e in events] == ["a", "b", "a"]
    assert events[0].id > events[-1].id  # type: ignore[operator]
    assert len(list_events(session, kind="a")) == 2


def test_an_event_needs_kind_and_actor(session: Session) -> None:
    with pytest.raises(ValueError, match="kind"):
        record_event(session, kind="", actor="x")
    with pytest.raises(ValueError, match="actor"):
        record_event(session, kind="k", actor="")

"""The review UI served by the real service, driven through Gradio's own API with
`gradio_client` sessions: roles enforced in every handler, several inspectors at once,
and leases that return a part when its inspector disappears."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gradio_client import Client
from sqlmodel import Session, col, select

from inspect_app.settings import Settings
from inspect_app.storage.tables import Event, Label, Line, ReviewTask, User, utcnow
from tests.review_ui.conftest import LiveService, add_lines, add_people, review_client, serve

pytestmark = pytest.mark.slow


def login(service: LiveService, name: str) -> Client:
    return review_client(service.review_url, name)


def state(outputs: tuple[Any, ...]) -> dict[str, Any]:
    """The desk's summary: the last output of every Inspect-page event."""
    return outputs[-1]


def test_an_inspector_labels_through_the_page_handlers_and_is_refused_supervisor_ones(
    live_service: LiveService, add_parts: Callable[..., list[int]]
) -> None:
    engine = live_service.engine
    add_people(engine, ("ines", "inspector"))
    add_lines(engine, ("line-1", "shadow"))
    first, second = add_parts(engine, live_service.settings.image_dir, "line-1", 2)
    client = login(live_service, "ines")

    shown = state(client.predict(api_name="/resume"))
    assert (shown["mode"], shown["task_id"], shown["model_shown"]) == ("task", first, False)
    after = state(client.predict("", api_name="/label_crack"))
    assert after["task_id"] == second

    # The supervisors' handlers, called directly with the inspector's session: refused,
    # even for a lowering that would always be allowed to a supervisor.
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("/change_automation", ("line-1", "human_only", 0.99, 0.99, 2.0, False, False, "try")),
        ("/change_targets", ("line-1", 1.0, 5.0, 10, True, "try")),
        ("/use_recommendation", ("line-1",)),
        ("/lines", ("line-1",)),
        ("/select_line", ("line-1",)),
        ("/evidence", ("line-1", "current model", "All time")),
    ]
    for api_name, args in calls:
        with pytest.raises(Exception, match="may not"):
            client.predict(*args, api_name=api_name)
    with Session(engine) as db:
        line = db.get(Line, "line-1")
        assert line is not None and line.level == "shadow"
        assert not db.exec(select(Event).where(col(Event.kind).like("level_change%"))).all()
        assert not db.exec(select(Event).where(Event.kind == "targets_change")).all()
        assert line.max_escape_rate == 0.005
        labels = db.exec(select(Label)).all()
    assert [(lb.label, lb.task_id) for lb in labels] == [("crack", first)]


def test_eight_inspectors_labeling_at_once_never_get_the_same_part(
    live_service: LiveService, add_parts: Callable[..., list[int]]
) -> None:
    engine = live_service.engine
    names = [f"inspector-{i}" for i in range(8)]
    add_people(engine, *((n, "inspector") for n in names))
    add_lines(engine, ("line-1", "shadow"), ("line-2", "shadow"))
    tasks = add_parts(engine, live_service.settings.image_dir, "line-1", 24)
    tasks += add_parts(engine, live_service.settings.image_dir, "line-2", 16, first_seed=100)
    clients = {name: login(live_service, name) for name in names}
    start = threading.Barrier(len(names))
    labeled: dict[str, list[int]] = {name: [] for name in names}
    problems: list[str] = []

    def work(name: str) -> None:
        client = clients[name]
        try:
            start.wait(timeout=60)
            current = state(client.predict(api_name="/resume"))
            while current["mode"] == "task":
                task_id = current["task_id"]
                outputs = client.predict("", api_name="/label_ok")
                if "Saved part" not in outputs[3]:
                    problems.append(f"{name}: {outputs[3]}")
                labeled[name].append(task_id)
                current = state(outputs)
        except Exception as exc:  # reported below, with the inspector's name
            problems.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not problems
    seen = [task for mine in labeled.values() for task in mine]
    assert sorted(seen) == sorted(tasks)  # every part once, no part twice
    assert sum(1 for mine in labeled.values() if mine) > 1  # the work was really shared
    with Session(engine) as db:
        rows = db.exec(select(Label, User.name).join(User, col(User.id) == col(Label.user_id)))
        by_task = {label.task_id: name for label, name in rows}
    assert len(by_task) == len(tasks)
    for name, mine in labeled.items():
        assert all(by_task[t] == name for t in mine)


@pytest.fixture
def short_lease_service(app_settings: Settings) -> Iterator[LiveService]:
    yield from serve(app_settings.model_copy(update={"review_lease_seconds": 2.0}))


def test_a_part_whose_inspector_disappears_returns_to_the_queue_when_its_lease_expires(
    short_lease_service: LiveService, add_parts: Callable[..., list[int]]
) -> None:
    service = short_lease_service
    add_people(service.engine, ("gone", "inspector"), ("stays", "inspector"))
    add_lines(service.engine, ("line-1", "shadow"))
    first, second = add_parts(service.engine, service.settings.image_dir, "line-1", 2)
    gone, stays = login(service, "gone"), login(service, "stays")

    assert state(gone.predict(api_name="/resume"))["task_id"] == first
    # "gone" never renews; wait until the database says its lease has run out
    deadline = time.monotonic() + 30
    while True:
        with Session(service.engine) as db:
            task = db.get(ReviewTask, first)
            assert task is not None and task.lease_expires_at is not None
            expires = task.lease_expires_at
        if expires.replace(tzinfo=None) < utcnow().replace(tzinfo=None):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # the abandoned part is back in the queue, first in line
    assert state(stays.predict(api_name="/resume"))["task_id"] == first
    late = gone.predict("", api_name="/label_scratch")
    assert "Not saved" in late[3]
    assert state(late)["task_id"] == second
    stays.predict("", api_name="/label_ok")
    with Session(service.engine) as db:
        labels = db.exec(select(Label)).all()
    assert [(lb.task_id, lb.label) for lb in labels] == [(first, "ok")]


def test_a_sessions_queue_answers_only_the_user_who_opened_it(
    live_service: LiveService, add_parts: Callable[..., list[int]]
) -> None:
    """Another login that learns an inspector's session hash can neither read that
    session's results stream nor cancel, beat or join under it; the owner goes on."""
    import httpx

    engine = live_service.engine
    add_people(engine, ("ines", "inspector"), ("sam", "supervisor"))
    add_lines(engine, ("line-1", "shadow"))
    first, second = add_parts(engine, live_service.settings.image_dir, "line-1", 2)
    ines, sam = login(live_service, "ines"), login(live_service, "sam")
    assert state(ines.predict(api_name="/resume"))["task_id"] == first

    api = f"{live_service.review_url}gradio_api"
    stolen = ines.session_hash
    with httpx.Client(cookies=sam.cookies, timeout=60) as http:
        tries = [
            http.get(f"{api}/queue/data", params={"session_hash": stolen}),
            http.get(f"{api}/heartbeat/{stolen}"),
            http.post(
                f"{api}/cancel", json={"session_hash": stolen, "event_id": "e", "fn_index": 0}
            ),
            http.post(
                f"{api}/queue/join", json={"data": [], "fn_index": 0, "session_hash": stolen}
            ),
        ]
    for answer in tries:
        assert answer.status_code == 403, answer.text
        assert "belongs to another user" in answer.json()["detail"]

    assert state(ines.predict("", api_name="/label_crack"))["task_id"] == second
    with Session(engine) as db:  # sam's own session still works; ines's label stands
        assert db.exec(select(Label).where(Label.task_id == first)).one().label == "crack"
    assert sam.predict("line-1", api_name="/lines")

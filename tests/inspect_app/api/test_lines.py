"""Lines over HTTP through the real app: reading them, and changing the automation level."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.storage.tables import Event, Line, utcnow


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def supervisor(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("supervisor"))


def _db(client: TestClient) -> Session:
    return Session(client.app.state.engine, expire_on_commit=False)  # type: ignore[attr-defined]


def _set_level(client: TestClient, line_id: str, level: str) -> None:
    """Set-up only: as if an earlier raise had been allowed."""
    with _db(client) as db:
        line = db.get(Line, line_id)
        assert line is not None
        line.level = level
        db.add(line)
        db.commit()


def test_lines_show_settings_and_queue(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    seed_review_task: Callable[..., int],
    supervisor: dict[str, str],
) -> None:
    add_line_with_camera("line-1", "assist", audit_rate=0.1)
    add_line_with_camera("line-2")
    t0 = utcnow() - timedelta(minutes=5)
    with _db(client) as db:
        seed_review_task(db, "line-1", created_at=t0)
        seed_review_task(db, "line-1")
    listed = client.get("/api/v1/lines", headers=supervisor).json()
    assert [x["id"] for x in listed] == ["line-1", "line-2"]
    one = client.get("/api/v1/lines/line-1", headers=supervisor).json()
    assert (one["level"], one["audit_rate"], one["queue_depth"]) == ("assist", 0.1, 2)
    assert one["max_escape_rate"] == 0.005 and one["min_labels"] == 200
    assert one["oldest_waiting"].startswith(t0.strftime("%Y-%m-%dT%H:%M:%S"))
    assert listed[1]["queue_depth"] == 0 and listed[1]["oldest_waiting"] is None


def test_an_unknown_line_is_404(client: TestClient, supervisor: dict[str, str]) -> None:
    response = client.get("/api/v1/lines/nope", headers=supervisor)
    assert response.status_code == 404 and "nope" in response.json()["detail"]
    response = client.put(
        "/api/v1/lines/nope/automation", json={"level": "shadow", "reason": "x"}, headers=supervisor
    )
    assert response.status_code == 404


def test_an_inspector_cannot_change_a_line(
    client: TestClient, add_line_with_camera: Callable[..., str], user_token: Callable[[str], str]
) -> None:
    add_line_with_camera("line-1", "assist")
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={"level": "human_only", "reason": "I want to"},
        headers=_auth(user_token("inspector")),
    )
    assert response.status_code == 403
    with _db(client) as db:
        assert db.get(Line, "line-1").level == "assist"  # type: ignore[union-attr]


@pytest.mark.parametrize("start", ["full", "partial", "assist"])
def test_lowering_is_always_allowed_and_immediate(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    supervisor: dict[str, str],
    start: str,
) -> None:
    add_line_with_camera("line-1")
    _set_level(client, "line-1", start)
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={"level": "shadow", "reason": "escapes reported by the customer"},
        headers=supervisor,
    )
    assert response.status_code == 200, response.text
    assert response.json()["level"] == "shadow"
    assert client.get("/api/v1/lines/line-1", headers=supervisor).json()["level"] == "shadow"


def test_raising_to_partial_without_evidence_is_409_with_the_evidence_and_logged(
    client: TestClient, add_line_with_camera: Callable[..., str], supervisor: dict[str, str]
) -> None:
    add_line_with_camera("line-1", "assist")
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={"level": "partial", "pass_threshold": 0.99, "reason": "looks good to me"},
        headers=supervisor,
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["detail"] and isinstance(body["evidence"], dict)
    assert client.get("/api/v1/lines/line-1", headers=supervisor).json()["level"] == "assist"
    events = client.get(
        "/api/v1/lines/line-1/events", params={"kind": "level_change_refused"}, headers=supervisor
    ).json()
    assert len(events) == 1
    assert events[0]["reason"] == "looks good to me"
    assert events[0]["details"]["new"]["level"] == "partial"
    assert events[0]["details"]["evidence"] == body["evidence"]


def test_raising_below_partial_is_allowed_and_recorded_with_who_and_why(
    client: TestClient, add_line_with_camera: Callable[..., str], supervisor: dict[str, str]
) -> None:
    add_line_with_camera("line-1", "human_only")
    me = client.get("/api/v1/users/me", headers=supervisor).json()["name"]
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={"level": "shadow", "audit_rate": 0.05, "reason": "start comparing"},
        headers=supervisor,
    )
    assert response.status_code == 200
    assert (response.json()["level"], response.json()["audit_rate"]) == ("shadow", 0.05)
    with _db(client) as db:
        event = db.exec(select(Event).where(Event.kind == "level_change")).one()
    assert (event.actor, event.reason, event.line_id) == (me, "start comparing", "line-1")
    assert event.details is not None
    assert event.details["old"]["level"] == "human_only"
    assert event.details["new"]["audit_rate"] == 0.05


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"level": "shadow", "reason": "   "}, "reason"),
        ({"level": "shadow"}, "reason"),
        ({"level": "shadow", "reason": "x", "pass_threshold": 0.5}, "pass_threshold"),
        ({"level": "shadow", "reason": "x", "fail_threshold": 1.2}, "fail_threshold"),
        ({"level": "shadow", "reason": "x", "audit_rate": -0.01}, "audit_rate"),
        ({"level": "warp", "reason": "x"}, "level"),
    ],
)
def test_bad_settings_are_422_naming_the_field(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    supervisor: dict[str, str],
    body: dict,
    field: str,
) -> None:
    add_line_with_camera("line-1")
    response = client.put("/api/v1/lines/line-1/automation", json=body, headers=supervisor)
    assert response.status_code == 422
    assert field in {error["loc"][-1] for error in response.json()["detail"]}

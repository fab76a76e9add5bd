"""Lines over HTTP through the real app: reading them, and changing the automation level."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.storage.tables import Event, Inspection, Line, utcnow


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
        ({"level": "shadow", "reason": "x", "pass_threshold": "always"}, "pass_threshold"),
        ({"level": "shadow", "reason": "x", "fail_threshold": "0.9"}, "fail_threshold"),
        ({"level": "shadow", "reason": "x", "fail_threshold": True}, "fail_threshold"),
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


def test_a_side_set_to_never_reads_back_as_never_and_keeps_when_omitted(
    client: TestClient, add_line_with_camera: Callable[..., str], supervisor: dict[str, str]
) -> None:
    add_line_with_camera("line-1", "assist")
    _set_level(client, "line-1", "partial")
    url = "/api/v1/lines/line-1/automation"
    response = client.put(
        url,
        json={"level": "partial", "pass_threshold": "never", "reason": "escapes reported"},
        headers=supervisor,
    )
    assert response.status_code == 200, response.text  # a tightening: no evidence needed
    assert (response.json()["pass_threshold"], response.json()["fail_threshold"]) == (
        "never",
        0.98,
    )
    # Omitted (or null) keeps: the line stays one-sided.
    kept = client.put(url, json={"level": "partial", "pass_threshold": None, "reason": "audit"},
                      headers=supervisor)  # fmt: skip
    assert kept.status_code == 200 and kept.json()["pass_threshold"] == "never"
    assert client.get("/api/v1/lines/line-1", headers=supervisor).json()["pass_threshold"] == (
        "never"
    )
    both = client.put(url, json={"level": "partial", "fail_threshold": "never", "reason": "x"},
                      headers=supervisor)  # fmt: skip
    assert both.status_code == 422 and "both thresholds never" in both.json()["detail"]
    events = client.get(
        "/api/v1/lines/line-1/events", params={"kind": "level_change"}, headers=supervisor
    ).json()
    assert events[-1]["details"]["new"]["pass_threshold"] == "never"


def test_the_schema_says_how_to_write_never(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    change = schema["components"]["schemas"]["AutomationChange"]["properties"]
    forms = change["pass_threshold"]["anyOf"]
    assert {"type": "string", "const": "never"} in forms
    assert {"type": "number", "exclusiveMinimum": 0.5, "maximum": 1.0} in forms
    assert "never" in change["pass_threshold"]["description"]
    assert "/api/v1/lines/{line}/targets" in schema["paths"]
    put = schema["paths"]["/api/v1/lines/{line}/targets"]["put"]
    assert {"200", "401", "403", "404", "413", "422"} <= set(put["responses"])


def test_targets_are_changed_by_a_supervisor_and_say_what_happened(
    client: TestClient, add_line_with_camera: Callable[..., str], supervisor: dict[str, str]
) -> None:
    add_line_with_camera("line-1", "assist")
    response = client.put(
        "/api/v1/lines/line-1/targets",
        json={"max_escape_rate": 0.001, "min_labels": 500, "reason": "customer spec rev B"},
        headers=supervisor,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["line"]["max_escape_rate"] == 0.001 and body["line"]["min_labels"] == 500
    assert body["line"]["level"] == "assist" and body["demoted_to"] is None
    assert body["live_alarm"] is None and body["gate_at_current_settings"] is None
    assert "next raise" in body["message"]
    events = client.get(
        "/api/v1/lines/line-1/events", params={"kind": "targets_change"}, headers=supervisor
    ).json()
    assert events[0]["details"]["old"]["max_escape_rate"] == 0.005
    assert events[0]["reason"] == "customer spec rev B"


def test_targets_at_partial_report_the_gate_and_the_live_audits(
    client: TestClient, add_line_with_camera: Callable[..., str], supervisor: dict[str, str]
) -> None:
    add_line_with_camera("line-1", "assist")
    _set_level(client, "line-1", "partial")
    body = client.put(
        "/api/v1/lines/line-1/targets",
        json={"max_false_reject_rate": 0.01, "reason": "tighter"},
        headers=supervisor,
    ).json()
    assert body["line"]["level"] == "partial"  # no audits: nothing clearly above target
    assert body["live_alarm"] is False and body["demoted_to"] is None
    assert body["gate_at_current_settings"]["allowed"] is False  # no evidence at all


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "nothing"},
        {"max_escape_rate": 0, "reason": "x"},
        {"max_escape_rate": 0.3, "reason": "x"},
        {"max_escape_rate": None, "reason": "x"},
        {"min_labels": 0, "reason": "x"},
        {"min_labels": 2.5, "reason": "x"},
        {"min_labels": 2**63, "reason": "x"},
        {"auto_demote": "yes", "reason": "x"},
        {"min_labels": 10, "reason": "  "},
        {"min_labels": 10},
    ],
)
def test_bad_targets_are_422(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    supervisor: dict[str, str],
    body: dict,
) -> None:
    add_line_with_camera("line-1")
    response = client.put("/api/v1/lines/line-1/targets", json=body, headers=supervisor)
    assert response.status_code == 422, response.text
    with _db(client) as db:
        line = db.get(Line, "line-1")
        assert line is not None and (line.max_escape_rate, line.min_labels) == (0.005, 200)


def test_targets_are_for_supervisors(
    client: TestClient, add_line_with_camera: Callable[..., str], user_token: Callable[[str], str]
) -> None:
    add_line_with_camera("line-1")
    body = {"min_labels": 1, "reason": "fewer labels please"}
    assert client.put("/api/v1/lines/line-1/targets", json=body).status_code == 401
    response = client.put(
        "/api/v1/lines/line-1/targets", json=body, headers=_auth(user_token("inspector"))
    )
    assert response.status_code == 403
    missing = client.put(
        "/api/v1/lines/nope/targets", json=body, headers=_auth(user_token("supervisor"))
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("pass_threshold", "fail_threshold", "never_decided"),
    [(None, 0.51, "pass"), (0.51, None, "fail")],
)
def test_a_one_sided_line_never_auto_decides_its_never_side(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    pass_threshold: float | None,
    fail_threshold: float | None,
    never_decided: str,
) -> None:
    """Parts through the real pipeline (the tiny model): the never side goes to a human, and
    each inspection records the one-sided policy it was routed under."""
    import cv2
    import numpy as np

    key = add_line_with_camera("line-1", "assist")
    with _db(client) as db:
        line = db.get(Line, "line-1")
        assert line is not None
        line.level, line.pass_threshold, line.fail_threshold = (
            "partial",
            pass_threshold,
            fail_threshold,
        )
        line.audit_rate = 0.0
        db.add(line)
        db.commit()
    answers = []
    for seed in range(6):
        image = np.full((96, 128, 3), 30 + 10 * seed, dtype=np.uint8)
        image[10:86, 30:98] = (120 + seed, 120, 125)
        ok, buf = cv2.imencode(".png", image)
        assert ok
        response = client.post(
            "/api/v1/lines/line-1/images",
            content=buf.tobytes(),
            headers={"X-Api-Key": key, "Content-Type": "image/png"},
        )
        assert response.status_code == 201, response.text
        answers.append(response.json())
    assert all(not (a["route"] == "auto" and a["decision"] == never_decided) for a in answers), (
        answers
    )
    with _db(client) as db:
        rows = db.exec(select(Inspection)).all()
    assert len(rows) == 6
    assert {(r.level, r.pass_threshold, r.fail_threshold) for r in rows} == {
        ("partial", pass_threshold, fail_threshold)
    }

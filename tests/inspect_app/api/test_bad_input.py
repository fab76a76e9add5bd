"""Hostile input through the real app: every case is refused with a 4xx and a JSON body that
names the problem, writes nothing, and leaves the service healthy.

The cases are the ones found by trying the service as an attacker would: ids past 2^63,
NaN and Infinity in JSON, times at the calendar's ends, text of megabytes, refusals raised
in review-UI handlers, and uploads to Gradio's file route.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import Session, col, func, select

from inspect_app.api.app import MAX_BODY_BYTES
from inspect_app.api.params import (
    LINE_ID_PATTERN,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    USER_NAME_PATTERN,
)
from inspect_app.storage.tables import Event, Inspection, Label, Line, ReviewTask, User
from tests.inspect_app.api.test_images import phone_image

PASSWORD = "a long test password"
TOO_BIG_ID = 2**63  # one past BIGINT: the driver cannot bind it


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _db(client: TestClient) -> Session:
    return Session(client.app.state.engine, expire_on_commit=False)  # type: ignore[attr-defined]


def _counts(client: TestClient) -> dict[str, int]:
    """Rows a refused request must not add. A review-UI login the test makes to send its
    requests opens a session (a row and its event): that is the login's, not the request's."""
    with _db(client) as db:
        counts = {
            table.__name__: db.exec(select(func.count()).select_from(table)).one()
            for table in (Inspection, ReviewTask, Label, User)
        }
        counts["Event"] = db.exec(
            select(func.count())
            .select_from(Event)
            .where(~col(Event.kind).startswith("ui_session_"))
        ).one()
        return counts


@pytest.fixture
def world(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    user_token: Callable[[str], str],
    seed_review_task: Callable[..., int],
) -> Iterator[dict[str, Any]]:
    """A line with a camera key, a supervisor and an inspector holding a claimed task, and
    review-UI users of both roles. After the test: nothing was written by the refused
    requests and the service is healthy."""
    from inspect_app.accounts import add_user

    key = add_line_with_camera("line-1", "shadow")
    with _db(client) as db:
        for role in ("inspector", "supervisor"):
            add_user(db, f"ui-{role}", role, PASSWORD)
    supervisor = _auth(user_token("supervisor"))
    inspector = _auth(user_token("inspector"))
    with _db(client) as db:
        seed_review_task(db, "line-1")
    claimed = client.post("/api/v1/reviews/claim", headers=inspector)
    assert claimed.status_code == 200, claimed.text
    before = _counts(client)
    yield {
        "key": key,
        "supervisor": supervisor,
        "inspector": inspector,
        "task_id": claimed.json()["task_id"],
    }
    assert _counts(client) == before, "a refused request wrote something"
    with _db(client) as db:
        line = db.get(Line, "line-1")
        assert line is not None and line.level == "shadow"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def refused(response: Response, status: int, *mentions: str) -> Any:
    """The JSON detail of a refusal with `status`, which names each of `mentions`."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    text = json.dumps(detail)
    for word in mentions:
        assert word in text, f"{word!r} not in {text[:500]}"
    return detail


# -- ids and numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [TOO_BIG_ID, 10**30, 0, -1])
def test_ids_out_of_range_are_422_naming_the_parameter(
    client: TestClient, world: dict[str, Any], bad_id: int
) -> None:
    inspector, supervisor = world["inspector"], world["supervisor"]
    label = client.post(f"/api/v1/reviews/{bad_id}/label", json={"label": "ok"}, headers=inspector)
    refused(label, 422, "task_id")
    read = client.get(f"/api/v1/inspections/{bad_id}", headers=supervisor)
    refused(read, 422, "inspection_id")
    image = client.get(f"/api/v1/inspections/{bad_id}/image", headers=supervisor)
    refused(image, 422, "inspection_id")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000])
def test_non_finite_numbers_in_json_are_422_even_unauthenticated(
    client: TestClient, world: dict[str, Any], constant: str
) -> None:
    body = f'{{"name": {constant}, "password": "whatever it is"}}'
    login = client.post(
        "/api/v1/auth/token", content=body, headers={"Content-Type": "application/json"}
    )
    issue = refused(login, 422, "json_invalid")[0]
    assert issue["loc"] == ["body"]
    change = client.put(
        "/api/v1/lines/line-1/automation",
        content=f'{{"level": "shadow", "audit_rate": {constant}, "reason": "try"}}',
        headers={**world["supervisor"], "Content-Type": "application/json"},
    )
    refused(change, 422, "json_invalid")


def test_a_label_duration_past_a_day_is_refused(client: TestClient, world: dict[str, Any]) -> None:
    response = client.post(
        f"/api/v1/reviews/{world['task_id']}/label",
        json={"label": "ok", "duration_ms": 10**12},
        headers=world["inspector"],
    )
    refused(response, 422, "duration_ms", "less than or equal")


def test_a_validation_error_echoes_a_bounded_json_safe_input(
    client: TestClient, world: dict[str, Any]
) -> None:
    # A valid JSON string that is far over the limit, for a field that wants a number.
    huge = "x" * 50_000
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={"level": "shadow", "audit_rate": huge, "reason": "try"},
        headers=world["supervisor"],
    )
    detail = refused(response, 422, "audit_rate")
    assert len(response.content) < 2000
    assert all(len(json.dumps(issue.get("input"))) < 300 for issue in detail)


# -- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "captured_at",
    [
        "0001-01-01T00:00:00+01:00",  # before the calendar once in UTC: OverflowError
        "9999-12-31T23:59:59-01:00",  # after it
        "1969-12-31T23:59:59Z",
        "3000-01-01T00:00:00Z",
        "not a time",
    ],
)
def test_a_capture_time_out_of_range_is_422_before_the_model_runs(
    client: TestClient, world: dict[str, Any], captured_at: str
) -> None:
    headers = {"X-Api-Key": world["key"], "Content-Type": "image/jpeg"}
    raw = client.post(
        "/api/v1/lines/line-1/images",
        content=phone_image(1),
        headers=headers,
        params={"captured_at": captured_at},
    )
    refused(raw, 422, "captured_at")
    form = client.post(
        "/api/v1/lines/line-1/images",
        files={"image": ("part.jpg", phone_image(2), "image/jpeg")},
        data={"captured_at": captured_at},
        headers={"X-Api-Key": world["key"]},
    )
    refused(form, 422, "captured_at")


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0", "2024-05-01"]
)
def test_an_evidence_window_out_of_range_is_422_naming_the_bound(
    client: TestClient, world: dict[str, Any], name: str, value: str
) -> None:
    response = client.get(
        "/api/v1/lines/line-1/agreement", params={name: value}, headers=world["supervisor"]
    )
    refused(response, 422, name)


def test_the_what_if_schema_offers_only_the_levels_it_answers(
    client: TestClient, world: dict[str, Any]
) -> None:
    response = client.get(
        "/api/v1/lines/line-1/what-if",
        params={"pass_threshold": 0.99, "fail_threshold": 0.99, "level": "human_only"},
        headers=world["supervisor"],
    )
    refused(response, 422, "level", "partial")


# -- text and bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status", "mention"),
    [
        ("", 422, "reason"),
        ("   ", 422, "a reason is required"),
        ("x" * (MAX_REASON_CHARS + 1), 422, "at most 500"),
        ("line\x00feed", 422, "NUL"),
        ("x" * 1_000_000, 413, "over the limit"),
    ],
)
def test_an_automation_reason_is_bounded_on_the_server(
    client: TestClient, world: dict[str, Any], reason: str, status: int, mention: str
) -> None:
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={"level": "human_only", "reason": reason},
        headers=world["supervisor"],
    )
    refused(response, status, mention)


def test_notes_are_bounded_and_without_nul(client: TestClient, world: dict[str, Any]) -> None:
    task = world["task_id"]
    for note in ("x" * (MAX_NOTE_CHARS + 1), "a\x00b"):
        label = client.post(
            f"/api/v1/reviews/{task}/label",
            json={"label": "ok", "note": note},
            headers=world["inspector"],
        )
        refused(label, 422, "note")
        escalate = client.post(
            f"/api/v1/reviews/{task}/escalate", json={"note": note}, headers=world["inspector"]
        )
        refused(escalate, 422, "note")


def test_a_body_over_the_limit_is_413_with_or_without_a_length(
    client: TestClient, world: dict[str, Any]
) -> None:
    headers = {**world["supervisor"], "Content-Type": "application/json"}
    declared = client.put(
        "/api/v1/lines/line-1/automation", content=b"{" + b" " * MAX_BODY_BYTES, headers=headers
    )
    refused(declared, 413, "over the limit", str(MAX_BODY_BYTES))

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"level": "human_only", "reason": "'
        for _ in range(40):
            yield b"x" * 4096
        yield b'"}'

    streamed = client.put("/api/v1/lines/line-1/automation", content=chunks(), headers=headers)
    refused(streamed, 413, "over the limit")


def _chunked(size: int) -> Iterator[bytes]:
    for _ in range(0, size, 4096):
        yield b"x" * 4096


@pytest.mark.review_ui
def test_the_review_uis_routes_sit_behind_the_same_body_limit(
    client: TestClient, world: dict[str, Any]
) -> None:
    gradio = client.post("/review/gradio_api/queue/join", content=b"x" * (MAX_BODY_BYTES + 1))
    refused(gradio, 413, "over the limit")
    streamed = client.post("/review/gradio_api/queue/join", content=_chunked(2 * MAX_BODY_BYTES))
    refused(streamed, 413, "over the limit")


@pytest.mark.parametrize(
    ("name", "password"),
    [("a" * 129, "whatever it is"), ("bad\x00name", "whatever it is"), ("ines", "p" * 2000)],
)
def test_login_input_is_bounded_before_any_lookup_or_hash(
    client: TestClient, world: dict[str, Any], name: str, password: str
) -> None:
    response = client.post("/api/v1/auth/token", json={"name": name, "password": password})
    assert response.status_code == 422, response.text


def test_name_patterns_are_the_ones_the_services_check() -> None:
    from inspect_app.accounts import _USER_NAME
    from inspect_app.lines import _LINE_ID

    assert _LINE_ID.pattern == LINE_ID_PATTERN
    assert _USER_NAME.pattern == USER_NAME_PATTERN


# -- the review UI (Gradio) ------------------------------------------------------------------


def _gradio_login(client: TestClient, role: str) -> TestClient:
    """Log the client in to the review UI as the `world` fixture's user of `role`."""
    name = f"ui-{role}"
    response = client.post("/review/login", data={"username": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client


def _run(client: TestClient, api_name: str, *data: Any) -> Response:
    return client.post(
        f"/review/gradio_api/run/{api_name}",
        json={"data": list(data), "session_hash": "bad-input-test"},
    )


@pytest.mark.review_ui
def test_a_refusal_in_a_ui_handler_is_a_4xx_with_its_message(
    client: TestClient, world: dict[str, Any]
) -> None:
    _gradio_login(client, "inspector")
    change = _run(client, "change_automation", "line-1", "full", 0.99, 0.99, 1.0, False, False,
                  "go")  # fmt: skip
    assert change.status_code == 403, change.text
    assert "may not change a line" in change.json()["error"]
    # A value Gradio's own component refuses (a number above the box's maximum) is the
    # input's fault too.
    _gradio_login(client, "supervisor")
    too_high = _run(client, "change_automation", "line-1", "full", 7.0, 0.99, 1.0, False, False,
                    "go")  # fmt: skip
    assert too_high.status_code == 422, too_high.text
    assert "greater than maximum" in too_high.json()["error"]


@pytest.mark.review_ui
def test_the_ui_enforces_the_reason_limit_on_the_server(
    client: TestClient, world: dict[str, Any]
) -> None:
    _gradio_login(client, "supervisor")
    for reason in ("x" * 10_000, "a\x00b"):
        answer = _run(client, "change_automation", "line-1", "human_only", None, None, None,
                      False, False, reason)  # fmt: skip
        assert answer.status_code == 200, answer.text
        result_html = answer.json()["data"][0]
        assert f"at most {MAX_REASON_CHARS} characters" in result_html
        answer = _run(client, "change_targets", "line-1", 1.0, None, None, None, reason)
        assert answer.status_code == 200, answer.text
        result_html = answer.json()["data"][0]
        assert f"at most {MAX_REASON_CHARS} characters" in result_html
    unknown = _run(client, "select_line", "no\x00line")
    assert unknown.status_code == 422 and "no line" in unknown.json()["error"]


@pytest.mark.review_ui
def test_gradio_file_uploads_are_closed(client: TestClient, world: dict[str, Any]) -> None:
    _gradio_login(client, "inspector")
    for route in ("upload", "process_recording"):
        response = client.post(
            f"/review/gradio_api/{route}",
            files={"files": ("big.bin", b"\x00" * 1024, "application/octet-stream")},
        )
        refused(response, 404, "no file uploads")

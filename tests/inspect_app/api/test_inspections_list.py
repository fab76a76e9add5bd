"""`GET /api/v1/inspections`: supervisors list parts by line, time, decision, route, model
and label, a keyset page at a time, with every parameter range-checked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from inspect_app.accounts import add_user
from inspect_app.domain import Role
from inspect_app.storage.tables import utcnow

AddParts = Callable[..., list[int]]
URL = "/api/v1/inspections"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def supervisor(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("supervisor"))


@pytest.fixture
def parts(
    client: TestClient, add_line_with_camera: Callable[..., str], add_labeled_parts: AddParts
) -> dict[str, list[int]]:
    """line-1: 3 labeled reviews (model v1, yesterday), 2 unlabeled (v2, now); line-2: 2
    audits of a one-sided setting (never auto-pass), labeled."""
    add_line_with_camera("line-1")
    add_line_with_camera("line-2", "assist")
    yesterday = utcnow() - timedelta(days=1)
    with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
        ida = add_user(db, "ida", Role.INSPECTOR, "inspector-pw")
        old = add_labeled_parts(db, "line-1", [0.99, 0.1, 0.97], ["ok", "pit", "ok"],
                                user_id=ida.id, model_version="v1",
                                received_at=yesterday)  # fmt: skip
        new = add_labeled_parts(db, "line-1", [0.6, 0.7], [None, None], user_id=ida.id,
                                model_version="v2")  # fmt: skip
        audits = add_labeled_parts(db, "line-2", [0.01, 0.02], ["crack", "ok"], user_id=ida.id,
                                   model_version="v2", route="audit", level="partial",
                                   pass_threshold=None, fail_threshold=0.9)  # fmt: skip
    return {"old": old, "new": new, "audits": audits}


def _ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[int]:
    response = client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [item["inspection_id"] for item in response.json()["items"]]


def test_filters_select_the_parts_they_name(
    client: TestClient, parts: dict[str, list[int]], supervisor: dict[str, str]
) -> None:
    everything = parts["old"] + parts["new"] + parts["audits"]
    assert _ids(client, supervisor) == sorted(everything)
    assert _ids(client, supervisor, line="line-2") == parts["audits"]
    assert _ids(client, supervisor, line="line-1", labeled="true") == parts["old"]
    assert _ids(client, supervisor, line="line-1", labeled="false") == parts["new"]
    assert _ids(client, supervisor, model_version="v1") == parts["old"]
    assert _ids(client, supervisor, route="audit") == parts["audits"]
    assert _ids(client, supervisor, decision="pending") == parts["new"]
    assert _ids(client, supervisor, decision="fail", line="line-1") == [parts["old"][1]]
    an_hour_ago = (utcnow() - timedelta(hours=1)).isoformat()
    assert _ids(client, supervisor, since=an_hour_ago) == sorted(parts["new"] + parts["audits"])
    assert _ids(client, supervisor, until=an_hour_ago) == parts["old"]


def test_an_item_carries_the_policy_the_model_and_the_standing_label(
    client: TestClient, parts: dict[str, list[int]], supervisor: dict[str, str]
) -> None:
    items = client.get(URL, params={"line": "line-2"}, headers=supervisor).json()["items"]
    first = items[0]
    assert (first["level"], first["pass_threshold"], first["fail_threshold"]) == (
        "partial",
        "never",
        0.9,
    )
    assert (first["route"], first["decision"], first["label"]) == ("audit", "fail", "crack")
    assert first["model_version"] == "v2" and first["p_ok"] == pytest.approx(0.01)
    assert first["labeled_at"] is not None
    assert first["received_at"].endswith(("Z", "+00:00"))  # aware UTC, as every API time
    pending = client.get(URL, params={"labeled": "false"}, headers=supervisor).json()["items"]
    assert all(item["label"] is None and item["labeled_at"] is None for item in pending)


def test_pages_follow_the_cursor_without_skipping_or_repeating(
    client: TestClient,
    parts: dict[str, list[int]],
    supervisor: dict[str, str],
    add_labeled_parts: AddParts,
) -> None:
    seen: list[int] = []
    after: int | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        body = client.get(URL, params=params, headers=supervisor).json()
        seen += [item["inspection_id"] for item in body["items"]]
        pages += 1
        if pages == 1:  # a part arriving mid-listing lands on a later page
            with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
                late = add_labeled_parts(db, "line-1", [0.5], [None], user_id=1)
        after = body["next_cursor"]
        if after is None:
            break
        assert len(body["items"]) == 2 and after == body["items"][-1]["inspection_id"]
    assert seen == sorted(parts["old"] + parts["new"] + parts["audits"] + late)
    assert pages == 4  # 8 parts, 2 a page, the last page full and the cursor then null


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"after": 0}, "after"),
        ({"after": 2**63}, "after"),
        ({"after": "x"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"decision": "maybe"}, "decision"),
        ({"route": "elsewhere"}, "route"),
        ({"line": "no such line!"}, "line"),
        ({"since": "0999-01-01T00:00:00"}, "since"),
        ({"until": "tomorrow"}, "until"),
        ({"labeled": "perhaps"}, "labeled"),
        ({"model_version": "v" * 129}, "model_version"),
    ],
)
def test_every_parameter_is_range_checked(
    client: TestClient, supervisor: dict[str, str], params: dict[str, Any], where: str
) -> None:
    response = client.get(URL, params=params, headers=supervisor)
    assert response.status_code == 422, response.text
    assert where in {issue["loc"][-1] for issue in response.json()["detail"]}


def test_an_empty_window_and_an_unknown_line_say_so(
    client: TestClient, supervisor: dict[str, str]
) -> None:
    response = client.get(
        URL,
        params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=supervisor,
    )
    assert response.status_code == 422
    assert (
        "until" in response.json()["detail"]
        and "must be after since" in (response.json()["detail"])
    )
    missing = client.get(URL, params={"line": "line-9"}, headers=supervisor)
    assert missing.status_code == 404 and "line-9" in missing.json()["detail"]


def test_the_listing_is_for_supervisors(
    client: TestClient, user_token: Callable[[str], str]
) -> None:
    assert client.get(URL).status_code == 401
    assert client.get(URL, headers=_auth(user_token("inspector"))).status_code == 403
    assert client.get(URL, headers=_auth(user_token("admin"))).status_code == 200


def test_the_schema_declares_the_parameters_and_their_bounds(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][URL]["get"]
    params = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert set(params) >= {"line", "since", "until", "decision", "route", "model_version"}
    assert params["limit"]["maximum"] == 500 and params["limit"]["minimum"] == 1
    after = params["after"]["anyOf"][0]
    assert (after["minimum"], after["maximum"]) == (1, 2**63 - 1)
    assert {"200", "401", "403", "404", "422"} <= set(operation["responses"])

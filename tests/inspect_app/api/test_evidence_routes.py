"""Evidence over HTTP through the real app: agreement, recommendation, what-if, and the
gate's 409 for a raise the evidence does not support."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from inspect_app.accounts import add_user
from inspect_app.domain import Role

AddParts = Callable[..., list[int]]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def supervisor(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("supervisor"))


@pytest.fixture
def labeled_line(
    client: TestClient, add_line_with_camera: Callable[..., str], add_labeled_parts: AddParts
) -> dict[str, list[int]]:
    """line-1 at shadow with blind labels: 700 confident-ok parts (2 of them defective),
    200 confident-defect parts (all defective), 100 uncertain ones; plus 10 assist labels."""
    add_line_with_camera("line-1", "shadow")
    with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
        user = add_user(db, "ida", Role.INSPECTOR, "inspector-pw")
        confident_ok = add_labeled_parts(
            db, "line-1", [0.9995] * 700, ["crack"] * 2 + ["ok"] * 698, user_id=user.id
        )
        confident_defect = add_labeled_parts(
            db, "line-1", [0.001] * 200, ["pit"] * 200, user_id=user.id
        )
        add_labeled_parts(db, "line-1", [0.7] * 100, ["ok"] * 100, user_id=user.id)
        add_labeled_parts(db, "line-1", [0.99] * 10, ["ok"] * 10, user_id=user.id,
                          level="assist", model_shown=True)  # fmt: skip
    return {"escapes": confident_ok[:2], "defects": confident_defect}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/lines/line-1/agreement",
        "/api/v1/lines/line-1/recommendation",
        "/api/v1/lines/line-1/what-if?pass_threshold=0.99&fail_threshold=0.99",
    ],
)
def test_evidence_is_for_supervisors(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    user_token: Callable[[str], str],
    path: str,
) -> None:
    add_line_with_camera("line-1")
    assert client.get(path).status_code == 401
    response = client.get(path, headers=_auth(user_token("inspector")))
    assert response.status_code == 403
    assert "supervisor" in response.json()["detail"]
    elsewhere = client.get(path.replace("line-1", "line-9"), headers=_auth(user_token("admin")))
    assert elsewhere.status_code == 404


def test_agreement_reports_blind_and_shown_apart_with_intervals(
    client: TestClient, labeled_line: dict, supervisor: dict[str, str]
) -> None:
    body = client.get("/api/v1/lines/line-1/agreement", headers=supervisor).json()
    assert body["model_version"] == "test"
    assert body["labeled"] == 1010 and body["predicted"] == 1010
    blind, shown = body["blind"], body["shown"]
    assert blind["n"] == 1000 and shown["n"] == 10
    assert blind["binary"]["escapes"] == 2
    escape = blind["escape_rate"]
    assert (escape["count"], escape["n"]) == (2, 800)  # the model called 800 parts ok
    assert escape["lower"] < 2 / 800 < escape["upper"]
    assert blind["class_matrix"][0][0] == 798
    assert [i["inspector"] for i in body["by_inspector"]] == ["ida"]


def test_agreement_window_and_version_are_query_parameters(
    client: TestClient, labeled_line: dict, supervisor: dict[str, str]
) -> None:
    url = "/api/v1/lines/line-1/agreement"
    empty = client.get(url, params={"model_version": "v-none"}, headers=supervisor).json()
    assert empty["labeled"] == 0 and empty["blind"]["accuracy"]["rate"] is None
    later = client.get(url, params={"since": "2999-01-01T00:00:00Z"}, headers=supervisor).json()
    assert later["labeled"] == 0
    bad = client.get(url, params={"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
                     headers=supervisor)  # fmt: skip
    assert bad.status_code == 422 and "window is empty" in bad.json()["detail"]


def test_recommendation_gives_thresholds_bounds_and_curves(
    client: TestClient, labeled_line: dict, supervisor: dict[str, str]
) -> None:
    body = client.get("/api/v1/lines/line-1/recommendation", headers=supervisor).json()
    assert body["model_version"] == "test" and body["level"] == "shadow"
    rec = body["recommendation"]
    # 2 escapes in 700 at P(ok) 0.9995: bound 0.9% > 0.5%, and looser thresholds only add
    # the uncertain parts: no pass threshold is supported, so that side is "never". The fail
    # side holds the same 200 clean parts at every threshold (the uncertain ones have
    # P(defect) 0.3), so the walk reaches the loosest candidate.
    assert rec["pass_threshold"] == "never"
    assert rec["fail_threshold"] == 0.51
    fail_statuses = [p["status"] for p in rec["fail_curve"]]
    assert fail_statuses[:2] == ["skipped", "skipped"]  # P(defect) 0.999: none above 0.9995
    assert set(fail_statuses[2:]) == {"passed"}
    # One-sided: the gate at (never, 0.51) passes on the fail side alone.
    assert rec["gate"]["passed"] and not rec["gate"]["escape"]["automated"]
    assert rec["gate"]["what_if"]["pass_threshold"] == "never"
    assert "Recommended partial at pass never / fail 0.51" in rec["reason"]
    assert "auto-pass stops at its first tested threshold 0.9995" in rec["reason"]
    assert rec["pass_curve"][0]["threshold"] == 0.9999
    statuses = [p["status"] for p in rec["pass_curve"]]
    assert statuses[:2] == ["skipped", "failed"] and set(statuses[2:]) == {"not_reached"}
    assert body["live"] is None  # shadow: nothing audited
    assert body["current"]["escape"]["n"] == 700


def test_a_one_sided_recommendation_is_applied_as_it_reads(
    client: TestClient, labeled_line: dict, supervisor: dict[str, str]
) -> None:
    """The recommendation's thresholds go back to PUT .../automation unchanged."""
    rec = client.get("/api/v1/lines/line-1/recommendation", headers=supervisor).json()
    body = {
        "level": "partial",
        "pass_threshold": rec["recommendation"]["pass_threshold"],
        "fail_threshold": rec["recommendation"]["fail_threshold"],
        "reason": "the recommendation: auto-fail only",
    }
    response = client.put("/api/v1/lines/line-1/automation", json=body, headers=supervisor)
    assert response.status_code == 200, response.text
    line = response.json()
    assert (line["level"], line["pass_threshold"], line["fail_threshold"]) == (
        "partial",
        "never",
        0.51,
    )
    # Turning auto-pass on at a threshold the evidence does not support is gated and refused.
    body = {**body, "pass_threshold": 0.9995, "reason": "auto-pass too"}
    response = client.put("/api/v1/lines/line-1/automation", json=body, headers=supervisor)
    assert response.status_code == 409
    assert response.json()["evidence"]["pass_threshold"] == 0.9995
    what_if = client.get(
        "/api/v1/lines/line-1/what-if",
        params={"pass_threshold": "never", "fail_threshold": "0.51"},
        headers=supervisor,
    ).json()
    assert what_if["gate"]["passed"] and what_if["escapes"] == []
    assert what_if["gate"]["what_if"]["auto_pass"]["n"] == 0


def test_what_if_lists_the_parts_behind_the_errors(
    client: TestClient, labeled_line: dict[str, list[int]], supervisor: dict[str, str]
) -> None:
    params = {"pass_threshold": 0.999, "fail_threshold": 0.99}
    body = client.get("/api/v1/lines/line-1/what-if", params=params, headers=supervisor).json()
    assert sorted(body["escapes"]) == sorted(labeled_line["escapes"])
    assert body["false_rejects"] == []
    gate = body["gate"]
    assert not gate["passed"]
    assert (gate["escape"]["n"], gate["escape"]["errors"]) == (700, 2)
    assert gate["what_if"]["coverage"] == pytest.approx(0.9)
    bad = client.get("/api/v1/lines/line-1/what-if", headers=supervisor,
                     params={**params, "level": "assist"})  # fmt: skip
    assert bad.status_code == 422
    too_low = client.get("/api/v1/lines/line-1/what-if", headers=supervisor,
                         params={**params, "pass_threshold": 0.5})  # fmt: skip
    assert too_low.status_code == 422


def test_a_raise_without_the_evidence_is_409_with_the_shortfall(
    client: TestClient, labeled_line: dict, supervisor: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/lines/line-1/automation",
        json={
            "level": "partial",
            "pass_threshold": 0.999,
            "fail_threshold": 0.99,
            "reason": "try",
        },
        headers=supervisor,
    )
    assert response.status_code == 409
    body = response.json()
    assert "escape rate bound" in body["detail"]
    assert body["evidence"]["escape"]["errors"] == 2
    assert body["evidence"]["escape"]["more_labels_needed"] > 0
    assert body["evidence"]["false_reject"]["passed"]


def test_the_openapi_schema_documents_the_evidence_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("agreement", "recommendation", "what-if"):
        assert f"/api/v1/lines/{{line}}/{path}" in paths

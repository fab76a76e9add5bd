"""A line's deployment over HTTP through the real app: shadow, rollback into quarantine,
re-arm, promote, finalize; the evidence gate's 409 with figures; every change an event with
who and why; and this process following each change at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from inspect_app.rollout.registry import register_model
from inspect_app.storage.tables import Line

CONFIGURED = "defect-cnn-tiny-test"
CANDIDATE = "defect-cnn-tiny-candidate"
URL = "/api/v1/lines/line-1/deployment"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def supervisor(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("supervisor"))


@pytest.fixture
def line_with_candidate(
    client: TestClient, add_line_with_camera: Callable[..., str], tiny_candidate: Path
) -> str:
    """line-1 at shadow, running the configured model; the candidate registered, not run."""
    add_line_with_camera("line-1", "shadow")
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        register_model(db, tiny_candidate, client.app.state.settings.data_dir, registered_by="ml")  # type: ignore[attr-defined]
    return CANDIDATE


def _name(client: TestClient, headers: dict[str, str]) -> str:
    return client.get("/api/v1/users/me", headers=headers).json()["name"]


def test_a_line_never_changed_runs_the_configured_model(
    client: TestClient, line_with_candidate: str, supervisor: dict[str, str]
) -> None:
    body = client.get(URL, headers=supervisor).json()
    assert body["champion"] == CONFIGURED and body["candidate"] is None
    assert body["mode"] == "none" and body["revision"] == 0 and body["comparison"] is None
    assert body["steps"] == [0.05, 0.25, 0.5, 1.0]


def test_shadow_rollback_rearm_promote_finalize(
    client: TestClient, line_with_candidate: str, supervisor: dict[str, str]
) -> None:
    rollout = client.app.state.rollout  # type: ignore[attr-defined]
    shadow = client.put(
        URL,
        json={"candidate": CANDIDATE, "mode": "shadow", "reason": "try the new model hidden"},
        headers=supervisor,
    )
    assert shadow.status_code == 200, shadow.text
    body = shadow.json()
    assert (body["champion"], body["candidate"], body["mode"]) == (CONFIGURED, CANDIDATE, "shadow")
    assert body["share"] == 0.0 and body["shadow_share"] == 1.0 and body["revision"] == 1
    comparison = body["comparison"]
    assert comparison["champion"]["model_version"] == CONFIGURED
    assert comparison["candidate"]["model_version"] == CANDIDATE
    assert comparison["candidate"]["n_labeled"] == 0 and comparison["paired"]["n"] == 0
    # This process follows at once: the candidate is loaded and runs hidden from the next part.
    assert rollout.state("line-1").candidate == CANDIDATE
    assert rollout.pool.get(CANDIDATE) is not None
    assert client.get(URL, headers=supervisor).json() == body

    rolled = client.post(f"{URL}/rollback", json={"reason": "odd calls"}, headers=supervisor)
    assert rolled.status_code == 200, rolled.text
    assert (
        rolled.json()["quarantined"] is True and rolled.json()["quarantine_reason"] == "odd calls"
    )
    assert rollout.state("line-1").quarantined

    refused = client.post(f"{URL}/promote", json={"reason": "go"}, headers=supervisor)
    assert refused.status_code == 409
    assert "quarantined" in refused.json()["detail"] and "evidence" in refused.json()
    twice = client.post(f"{URL}/rollback", json={"reason": "again"}, headers=supervisor)
    assert twice.status_code == 409 and "already rolled back" in twice.json()["detail"]
    assert twice.json()["evidence"]["deployment"]["quarantined"] is True

    rearmed = client.post(f"{URL}/rearm", json={"reason": "fixed"}, headers=supervisor)
    assert rearmed.status_code == 200 and rearmed.json()["quarantined"] is False
    not_quarantined = client.post(f"{URL}/rearm", json={"reason": "x"}, headers=supervisor)
    assert not_quarantined.status_code == 409

    half = client.post(f"{URL}/promote", json={"reason": "go", "pass_threshold": 0.9},
                       headers=supervisor)  # fmt: skip
    assert half.status_code == 422 and "give both" in half.json()["detail"]
    # at shadow nothing is gated: the supervisor's own thresholds for the candidate are kept
    promoted = client.post(
        f"{URL}/promote",
        json={"reason": "shadow looks fine", "pass_threshold": 0.9, "fail_threshold": "never"},
        headers=supervisor,
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["candidate_thresholds"] == {
        "pass_threshold": 0.9,
        "fail_threshold": "never",
        "source": "supervisor",
    }
    assert rollout.state("line-1").candidate_thresholds == (0.9, None)
    assert promoted.json()["comparison"]["candidate_own"]["source"] == "supervisor"
    assert promoted.json()["mode"] == "canary" and promoted.json()["step"] == 0
    assert promoted.json()["share"] == 0.05
    assert "step" in promoted.json()["comparison"]  # the canary step's verdict
    assert rollout.state("line-1").candidate_share() == 0.05
    # No blind labels of the candidate's decisions yet: the step holds, never passes.
    held = client.post(f"{URL}/promote", json={"reason": "more"}, headers=supervisor)
    assert held.status_code == 409
    assert held.json()["evidence"]["step"]["outcome"] == "hold"

    final = client.post(f"{URL}/finalize", json={"reason": "it is better"}, headers=supervisor)
    assert final.status_code == 200, final.text
    body = final.json()
    assert (body["champion"], body["candidate"], body["mode"]) == (CANDIDATE, None, "none")
    assert body["comparison"] is None and body["revision"] == 5
    assert rollout.state("line-1").champion == CANDIDATE
    assert client.get(f"/api/v1/models/{CANDIDATE}", headers=supervisor).json()["lines"] == [
        {"line_id": "line-1", "role": "champion"}
    ]

    events = [
        e
        for e in client.get("/api/v1/lines/line-1/events", headers=supervisor).json()
        if e["kind"] not in ("line_added", "camera_key_added")
    ]
    assert [(e["kind"], e["reason"]) for e in reversed(events)] == [
        ("deployment_change", "try the new model hidden"),
        ("rollout_rollback", "odd calls"),
        ("rollout_rearm", "fixed"),
        ("rollout_promote", "shadow looks fine"),
        ("model_switch", "it is better"),
        ("line_thresholds", f"model {CANDIDATE} finalized with its own thresholds: it is better"),
    ]
    assert {e["actor"] for e in events} == {_name(client, supervisor)}
    switch = next(e for e in events if e["kind"] == "model_switch")
    assert switch["details"]["before"]["candidate"] == CANDIDATE
    assert switch["details"]["after"]["champion"] == CANDIDATE
    thresholds = next(e for e in events if e["kind"] == "line_thresholds")["details"]
    assert thresholds["before"] == {"pass_threshold": 0.98, "fail_threshold": 0.98}
    assert thresholds["after"] == {"pass_threshold": 0.9, "fail_threshold": "never"}
    line = client.get("/api/v1/lines/line-1", headers=supervisor).json()
    assert (line["pass_threshold"], line["fail_threshold"]) == (0.9, "never")


def test_a_canary_at_partial_needs_the_candidates_own_evidence(
    client: TestClient, line_with_candidate: str, supervisor: dict[str, str]
) -> None:
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        line = db.get(Line, "line-1")
        assert line is not None
        line.level = "partial"  # as if it had earned it; the candidate has not
        db.add(line)
        db.commit()
    refused = client.put(
        URL,
        json={"candidate": CANDIDATE, "mode": "canary", "steps": [0.1, 1], "reason": "go"},
        headers=supervisor,
    )
    assert refused.status_code == 409
    body = refused.json()
    assert f"Candidate {CANDIDATE} may not decide parts on line line-1 at partial" in body["detail"]
    gate = body["evidence"]
    assert gate["candidate"] == CANDIDATE and gate["passed"] is False
    assert gate["n_labeled"] == 0 and gate["escape"]["passed"] is False
    after = client.get(URL, headers=supervisor).json()
    assert after["revision"] == 0 and after["candidate"] is None

    # Shadow decides nothing, so it needs no evidence: it is how the evidence is gathered.
    shadow = client.put(URL, json={"candidate": CANDIDATE, "mode": "shadow", "reason": "gather"},
                        headers=supervisor)  # fmt: skip
    assert shadow.status_code == 200
    promote = client.post(f"{URL}/promote", json={"reason": "go"}, headers=supervisor)
    assert promote.status_code == 409 and promote.json()["evidence"]["passed"] is False
    finalize = client.post(f"{URL}/finalize", json={"reason": "go"}, headers=supervisor)
    assert finalize.status_code == 409
    assert client.get(URL, headers=supervisor).json()["mode"] == "shadow"


def test_settings_are_checked_and_kept(
    client: TestClient, line_with_candidate: str, supervisor: dict[str, str]
) -> None:
    def put(**body: object) -> tuple[int, dict]:
        response = client.put(URL, json={"reason": "test", **body}, headers=supervisor)
        return response.status_code, response.json()

    status, body = put(candidate=CANDIDATE, mode="canary", steps=[0.1, 0.5, 1],
                       step_min_labels=20, candidate_audit_rate=0.3)  # fmt: skip
    assert status == 200, body
    assert body["steps"] == [0.1, 0.5, 1.0] and body["share"] == 0.1
    assert body["step_min_labels"] == 20 and body["candidate_audit_rate"] == 0.3
    status, body = put(candidate=CANDIDATE, mode="ab", share=0.2)
    assert status == 200 and body["share"] == 0.2 and body["step_min_labels"] == 20  # kept
    status, body = put(candidate=CANDIDATE, mode="bandit", exploration=0.2)
    assert status == 200 and body["exploration"] == 0.2
    assert set(body["bandit"]) == {CONFIGURED, CANDIDATE}

    refusals = {
        "canary steps must increase": dict(candidate=CANDIDATE, mode="canary", steps=[0.5, 0.2, 1]),
        "the last canary step must be 1": dict(candidate=CANDIDATE, mode="canary", steps=[0.5]),
        "mode shadow needs a candidate version": dict(mode="shadow"),
        "a candidate needs a mode": dict(candidate=CANDIDATE, mode="none"),
        "is already the line's champion": dict(candidate=CONFIGURED, mode="shadow"),
        "candidate defect-cnn-nope is not registered": dict(candidate="defect-cnn-nope",
                                                            mode="shadow"),
    }  # fmt: skip
    for words, body in refusals.items():
        status, answer = put(**body)
        assert status == 422 and words in answer["detail"], (body, answer)
    for bad in (dict(mode="fast"), dict(mode="ab", share=1.0), dict(mode="ab", share=True),
                dict(mode="shadow", shadow_share=0), dict(mode="canary", steps=[]),
                dict(mode="canary", step_min_labels=0), dict(mode="none", reason=" ")):  # fmt: skip
        status, answer = put(candidate=CANDIDATE, **bad)
        assert status == 422 and isinstance(answer["detail"], list), (bad, answer)

    ended = put(mode="none")
    assert ended[0] == 200 and ended[1]["candidate"] is None and ended[1]["mode"] == "none"
    nothing = client.post(f"{URL}/promote", json={"reason": "go"}, headers=supervisor)
    assert nothing.status_code == 409 and "has no candidate" in nothing.json()["detail"]


def test_a_candidate_that_fails_to_load_is_refused(
    client: TestClient, line_with_candidate: str, supervisor: dict[str, str]
) -> None:
    pool = client.app.state.rollout.pool  # type: ignore[attr-defined]

    def broken(path: Path) -> object:
        raise RuntimeError("CUDA out of memory (pretend)")

    pool.loader = broken
    refused = client.put(URL, json={"candidate": CANDIDATE, "mode": "shadow", "reason": "try"},
                         headers=supervisor)  # fmt: skip
    assert refused.status_code == 409
    assert (
        f"model {CANDIDATE} could not be loaded, so no traffic moves to it"
        in (refused.json()["detail"])
    )
    assert "CUDA out of memory (pretend)" in refused.json()["detail"]
    assert refused.json()["evidence"] == {"version": CANDIDATE}
    assert client.get(URL, headers=supervisor).json()["revision"] == 0


def test_deployments_are_for_supervisors(
    client: TestClient, line_with_candidate: str, user_token: Callable[[str], str]
) -> None:
    inspector = _auth(user_token("inspector"))
    change = {"candidate": CANDIDATE, "mode": "shadow", "reason": "try"}
    assert client.get(URL).status_code == 401
    for response in (
        client.get(URL, headers=inspector),
        client.put(URL, json=change, headers=inspector),
        *(
            client.post(f"{URL}/{action}", json={"reason": "x"}, headers=inspector)
            for action in ("promote", "rollback", "rearm", "finalize")
        ),
    ):
        assert response.status_code == 403 and "supervisor" in response.json()["detail"]
    admin = _auth(user_token("admin"))
    assert client.put(URL, json=change, headers=admin).status_code == 200
    elsewhere = client.get("/api/v1/lines/line-9/deployment", headers=admin)
    assert elsewhere.status_code == 404 and "no line 'line-9'" in elsewhere.json()["detail"]
    assert client.put(
        "/api/v1/lines/line-9/deployment", json=change, headers=admin
    ).status_code == (404)

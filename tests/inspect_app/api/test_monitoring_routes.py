"""Monitoring over HTTP through the real app: the overview, the alarms with their states, and
a supervisor's edit of one rule (422 with the rule's own message when it cannot be used)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from inspect_app.monitoring.alarms import DEFAULT_RULES
from inspect_app.monitoring.service import line_rules
from inspect_app.storage.tables import Event
from tests.inspect_app.monitoring.monitoring_world import MonitoringWorld, seed_monitoring


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(client: TestClient) -> MonitoringWorld:
    with Session(client.app.state.engine, expire_on_commit=False) as db:  # type: ignore[attr-defined]
        return seed_monitoring(db)


@pytest.fixture
def supervisor(user_token: Callable[[str], str]) -> dict[str, str]:
    return _auth(user_token("supervisor"))


def _edit(changes: dict[str, Any], reason: str = "lamp being replaced") -> dict[str, Any]:
    return {"changes": changes, "reason": reason}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/lines/line-1/monitoring", None),
        ("GET", "/api/v1/lines/line-1/alarms", None),
        ("PUT", "/api/v1/lines/line-1/alarms/input_drift", _edit({"enabled": False})),
        (
            "POST",
            "/api/v1/lines/line-1/monitoring/baseline",
            {"since": "2026-11-01T00:00:00Z", "until": "2026-11-08T00:00:00Z", "reason": "ok"},
        ),
    ],
)
def test_monitoring_is_for_supervisors(
    client: TestClient,
    world: MonitoringWorld,
    user_token: Callable[[str], str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    assert client.request(method, path, json=body).status_code == 401
    refused = client.request(method, path, json=body, headers=_auth(user_token("inspector")))
    assert refused.status_code == 403 and "supervisor" in refused.json()["detail"]
    elsewhere = client.request(
        method, path.replace("line-1", "line-9"), json=body, headers=_auth(user_token("admin"))
    )
    assert elsewhere.status_code == 404 and elsewhere.json()["detail"] == "no line 'line-9'"
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        assert line_rules(db, "line-1") == list(DEFAULT_RULES)  # the inspector changed nothing


def test_the_overview_has_series_alarms_history_drift_and_refusals(
    client: TestClient, world: MonitoringWorld, supervisor: dict[str, str]
) -> None:
    response = client.get("/api/v1/lines/line-1/monitoring", headers=supervisor)
    assert response.status_code == 200
    body = response.json()
    assert body["line_id"] == "line-1" and body["model_version"] == "test"
    assert len(body["series"]["gate_refusal_rate"]) == 12
    assert body["series"]["gate_refusal_rate"][-1]["value"] == pytest.approx(0.22)
    firing = [a for a in body["alarms"] if a["status"] == "firing"]
    assert [a["name"] for a in firing] == ["gate_refusals_high"]
    assert [e["kind"] for e in body["history"]] == ["alarm_firing", "alarm_pending"]
    assert {e["kind"] for e in body["actions"]} == {"alarm_stop_automation", "alarm_notify"}
    embedding = next(d for d in body["drift"] if d["kind"] == "embedding")
    assert [p["inspection_id"] for p in embedding["responsible"]] == [
        i for i in world.responsible if i in world.inspection_ids
    ]
    assert body["gate_counts"] == {
        "parts": 60,
        "refused": 6,
        "by_code": {"underexposed": 6, "blurred": 3},
    }
    assert body["gate_refusals"][0]["codes"] == ["underexposed", "blurred"]
    recent = client.get(
        "/api/v1/lines/line-1/monitoring",
        params={"since": "2024-05-01T12:10:00Z", "limit": 1},
        headers=supervisor,
    ).json()
    assert len(recent["series"]["gate_refusal_rate"]) == 1
    assert [e["kind"] for e in recent["history"]] == ["alarm_firing"]


def test_the_alarms_list_every_rule_with_its_state(
    client: TestClient, world: MonitoringWorld, supervisor: dict[str, str]
) -> None:
    alarms = client.get("/api/v1/lines/line-1/alarms", headers=supervisor).json()
    assert [a["name"] for a in alarms] == [r.name for r in DEFAULT_RULES]
    gate = alarms[0]
    assert (gate["status"], gate["value"], gate["threshold"], gate["clear_threshold"]) == (
        "firing",
        0.22,
        0.2,
        0.05,
    )
    assert gate["since"].startswith("2024-05-01T12:10:00")
    assert gate["actions"] == ["stop_automation", "notify"] and gate["edits"] == {}


def test_a_supervisor_edits_a_rule_and_the_edit_is_logged(
    client: TestClient, world: MonitoringWorld, supervisor: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/lines/line-1/alarms/gate_refusals_high",
        json=_edit({"threshold": 0.3, "hold": 1}, reason="  a dusty lens, cleaned on Friday  "),
        headers=supervisor,
    )
    assert response.status_code == 200, response.text
    rule = response.json()
    assert (rule["threshold"], rule["hold"], rule["status"]) == (0.3, 1, "firing")
    assert rule["edits"] == {"threshold": 0.3, "hold": 1}
    assert rule["edit_reason"] == "a dusty lens, cleaned on Friday"
    assert rule["edited_by"].startswith("supervisor-")
    # a second edit adds to the first
    again = client.put(
        "/api/v1/lines/line-1/alarms/gate_refusals_high",
        json=_edit({"enabled": False}),
        headers=supervisor,
    ).json()
    assert again["edits"] == {"threshold": 0.3, "hold": 1, "enabled": False}
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        rules = {r.name: r for r in line_rules(db, "line-1")}
        events = db.exec(select(Event).where(Event.kind == "alarm_rule_changed")).all()
    assert (rules["gate_refusals_high"].threshold, rules["gate_refusals_high"].enabled) == (
        0.3,
        False,
    )
    assert [e.details["changes"] for e in events if e.details] == [
        {"threshold": 0.3, "hold": 1},
        {"enabled": False},
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": 0.01}, "clear_threshold 0.05 must be at or below threshold 0.01"),
        ({"threshold": 2.0}, "must lie in [0, 1]"),
        ({"audit_rate": 0.5}, "raise_audit_rate is not among the actions"),
        ({"window_parts": None}, "is computed over a window"),
    ],
)
def test_an_edit_that_leaves_the_rule_unusable_is_422_with_the_rules_message(
    client: TestClient,
    world: MonitoringWorld,
    supervisor: dict[str, str],
    changes: dict[str, Any],
    message: str,
) -> None:
    response = client.put(
        "/api/v1/lines/line-1/alarms/gate_refusals_high", json=_edit(changes), headers=supervisor
    )
    assert response.status_code == 422
    assert message in response.json()["detail"]
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        assert line_rules(db, "line-1") == list(DEFAULT_RULES)
        assert not db.exec(select(Event).where(Event.kind == "alarm_rule_changed")).all()


@pytest.mark.parametrize(
    "body",
    [
        _edit({}),  # nothing to change
        _edit({"threshold": None}),  # a threshold is needed
        _edit({"threshold": True}),
        _edit({"metric": "input_drift"}),  # not editable: a different rule
        _edit({"actions": ["notify", "notify"]}),
        _edit({"enabled": False}, reason="   "),
        {"changes": {"enabled": False}},
    ],
)
def test_malformed_edits_are_refused_as_field_problems(
    client: TestClient, world: MonitoringWorld, supervisor: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.put("/api/v1/lines/line-1/alarms/input_drift", json=body, headers=supervisor)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_an_unknown_rule_is_404(
    client: TestClient, world: MonitoringWorld, supervisor: dict[str, str]
) -> None:
    response = client.put(
        "/api/v1/lines/line-1/alarms/lamp_off", json=_edit({"enabled": False}), headers=supervisor
    )
    assert response.status_code == 404
    assert "no alarm rule 'lamp_off'" in response.json()["detail"]
    assert "gate_refusals_high" in response.json()["detail"]


BASELINE = "/api/v1/lines/line-1/monitoring/baseline"
WINDOW = {"since": "2026-11-01T00:00:00Z", "until": "2026-11-08T00:00:00Z", "reason": "good"}


def test_a_baseline_needs_a_window_after_its_start_and_a_model_with_a_profile(
    client: TestClient, world: MonitoringWorld, supervisor: dict[str, str]
) -> None:
    backwards = client.post(BASELINE, json={**WINDOW, "until": WINDOW["since"]}, headers=supervisor)
    # the tiny test model has no reference profile: nothing to re-baseline against
    refused = client.post(BASELINE, json=WINDOW, headers=supervisor)
    assert refused.status_code in (409, 422), refused.text
    assert backwards.status_code in (409, 422)
    assert (
        client.post(BASELINE, json={**WINDOW, "reason": ""}, headers=supervisor).status_code == 422
    )
    with Session(client.app.state.engine) as db:  # type: ignore[attr-defined]
        assert not db.exec(select(Event).where(Event.kind == "monitoring_rebaseline")).all()

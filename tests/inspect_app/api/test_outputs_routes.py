"""/api/v1/outputs: supervisors configure a line's destinations, see each message's delivery
and replay; a part the model decides through the real pipeline is in the outbox at once.
`inspect-app outputs` does the same from the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session
from typer.testing import CliRunner

from inspect_app.cli import app
from inspect_app.events import list_events
from inspect_app.lines import add_line
from inspect_app.settings import Settings
from inspect_app.storage.tables import Line

SECRET = "a shared secret of the line's MES"


def test_supervisors_configure_outputs_and_see_each_decision(
    client: TestClient,
    add_line_with_camera: Callable[..., str],
    toy_png: Callable[..., bytes],
    user_token: Callable[[str], str],
) -> None:
    camera_key = add_line_with_camera("line-1")
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as db:  # the model decides every usable part (seeded as a test would)
        line = db.get(Line, "line-1")
        assert line is not None
        line.level, line.pass_threshold, line.fail_threshold = "full", 0.51, 0.51
        db.add(line)
        db.commit()
    supervisor = {"Authorization": f"Bearer {user_token('supervisor')}"}
    inspector = {"Authorization": f"Bearer {user_token('inspector')}"}
    base = "/api/v1/outputs"

    body = {"line_id": "line-1", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
            "secret": SECRET, "reason": "the MES takes decisions now"}  # fmt: skip
    assert client.post(f"{base}/destinations", json=body, headers=inspector).status_code == 403
    bad = client.post(f"{base}/destinations", json={**body, "url": "ftp://x"}, headers=supervisor)
    assert bad.status_code == 422 and "http" in bad.json()["detail"]
    missing = client.post(f"{base}/destinations", json={**body, "line_id": "nope"},
                          headers=supervisor)  # fmt: skip
    assert missing.status_code == 404
    blank = client.post(f"{base}/destinations", json={**body, "reason": "  "}, headers=supervisor)
    assert blank.status_code == 422
    made = client.post(f"{base}/destinations", json=body, headers=supervisor)
    assert made.status_code == 201, made.text
    dest = made.json()
    assert dest["has_secret"] and "secret" not in dest and dest["pending_from_seq"] == 1
    paused = client.patch(f"{base}/destinations/{dest['id']}",
                          json={"enabled": False, "reason": "only watch for now"},
                          headers=supervisor)  # fmt: skip
    assert paused.status_code == 200 and not paused.json()["enabled"]
    assert client.patch(f"{base}/destinations/999", json={"enabled": True, "reason": "x"},
                        headers=supervisor).status_code == 404  # fmt: skip

    posted = client.post(
        "/api/v1/lines/line-1/images", content=toy_png("ok", 1),
        headers={"X-Api-Key": camera_key, "Content-Type": "image/png"},
    )  # fmt: skip
    assert posted.status_code == 201, posted.text
    decided = posted.json()
    messages = client.get(f"{base}/messages", params={"line": "line-1"}, headers=supervisor)
    assert messages.status_code == 200
    assert decided["decision"] != "pending", decided
    (message,) = messages.json()
    assert message["payload"]["inspection_id"] == decided["inspection_id"]
    assert message["payload"]["decision"] == decided["decision"]
    assert message["payload"]["cause"] == "model" and message["seq"] == 1
    assert [d["state"] for d in message["deliveries"]] == ["waiting"]  # paused
    waiting = client.get(f"{base}/messages", params={"state": "waiting"}, headers=supervisor)
    assert len(waiting.json()) == 1
    assert client.get(f"{base}/messages", params={"state": "delivered"},
                      headers=supervisor).json() == []  # fmt: skip
    (listed,) = client.get(f"{base}/destinations", headers=supervisor).json()
    assert listed["undelivered"] == 1

    replay = client.post(f"{base}/replay", json={"line_id": "line-1", "from_seq": 1,
                                                 "reason": "test"}, headers=supervisor)  # fmt: skip
    assert replay.status_code == 200 and replay.json() == {"queued": 1}
    assert client.post(f"{base}/replay", json={"line_id": "line-1", "from_seq": 5,
                                               "reason": "x"},
                       headers=supervisor).status_code == 422  # fmt: skip
    with Session(engine) as db:
        kinds = [e.kind for e in list_events(db, line_id="line-1")]
    assert {"output_added", "output_changed", "output_replay"} <= set(kinds)


def test_the_cli_adds_lists_and_replays(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from inspect_app.storage.db import make_engine, upgrade_database

    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    upgrade_database(engine)
    with Session(engine) as db:
        add_line(db, "line-1", "shadow")
    engine.dispose()
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["outputs", *args, "--data-dir", str(data_dir)])
        assert result.exit_code == code, result.output
        return result.output

    out = run("add", "line-1", "--kind", "mqtt", "--url", "mqtt://127.0.0.1:1883",
              "--reason", "the PLC listens")  # fmt: skip
    assert "output 1: mqtt" in out
    assert "a webhook needs a shared secret" in run(
        "add", "line-1", "--kind", "webhook", "--url", "http://mes/hook", "--reason", "x", code=1
    )
    assert "0 undelivered" in run("list")
    assert "paused" in run("set", "1", "--paused", "--reason", "maintenance")
    assert run("messages") == ""
    assert "replay needs" in run("replay", "line-1", "--from-seq", "1", "--reason", "x", code=1)

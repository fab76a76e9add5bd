"""The registry and a line's rollout from the command line: `inspect-app models add|list|show`
and `inspect-app deploy show|set|promote|rollback|rearm|finalize`, through the same rules as
the API (supervisors only, the candidate loaded before the change, the evidence gate, events
with who and why)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from inspect_app.accounts import add_user
from inspect_app.cli import app
from inspect_app.domain import Role
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine
from inspect_app.storage.tables import Deployment, Event, Line
from models.defect_cnn import DefectCNNConfig, build_model

CONFIGURED = "defect-cnn-tiny-test"
CANDIDATE = "defect-cnn-tiny-candidate"
ROLLOUT_KINDS = ("deployment_change", "rollout_rollback", "rollout_rearm", "rollout_promote",
                 "model_switch")  # fmt: skip


@pytest.fixture
def run(tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The CLI on its own data folder, serving (as configured) the tiny test model."""
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    monkeypatch.setenv("INSPECT_WEIGHTS", str(tiny_checkpoint))
    runner = CliRunner()
    data_dir = tmp_path / "var"

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
        assert result.exit_code == code, result.output
        return result.output

    invoke.session = lambda: Session(  # type: ignore[attr-defined]
        make_engine(Settings(data_dir=data_dir).resolved_database_url), expire_on_commit=False
    )
    invoke("lines", "add", "line-1")  # makes the database
    return invoke


def _rollout_events(run) -> list[Event]:  # type: ignore[no-untyped-def]
    with run.session() as db:
        query = select(Event).where(col(Event.kind).in_(ROLLOUT_KINDS)).order_by(col(Event.id))
        return list(db.exec(query))


def _deployment(run) -> Deployment:  # type: ignore[no-untyped-def]
    with run.session() as db:
        row = db.get(Deployment, "line-1")
        assert row is not None
        return row


def test_models_add_list_show(run, tiny_candidate: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run("models", "add", str(tiny_candidate), "--notes", "new augmentations")
    assert f"registered {CANDIDATE}" in out and "by cli:" in out
    again = run("models", "add", str(tiny_candidate))
    assert f"already registered: {tiny_candidate} is {CANDIDATE}" in again

    listed = run("models", "list").splitlines()
    assert listed[0].startswith("version\tregistered\tby")
    rows = {line.split("\t")[0]: line.split("\t") for line in listed[1:]}
    assert set(rows) == {CONFIGURED, CANDIDATE}  # the configured model, registered on use
    assert rows[CONFIGURED][2] == "system" and rows[CONFIGURED][-1] == "line-1 (champion)"
    assert rows[CANDIDATE][2].startswith("cli:") and rows[CANDIDATE][-1] == "-"

    shown = run("models", "show", CANDIDATE)
    assert f"version: {CANDIDATE}" in shown and "classes: ok, scratch" in shown
    assert "notes: new augmentations" in shown and "reference profile: no" in shown
    record = json.loads(run("models", "show", CANDIDATE, "--json"))
    assert record["version"] == CANDIDATE and record["temperature"] == 1.0
    assert record["lines"] == [] and record["notes"] == "new augmentations"

    assert "no registered model version 'defect-cnn-nope'" in run(
        "models", "show", "defect-cnn-nope", code=1
    )


def test_models_add_refuses_what_the_service_could_not_serve(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = tmp_path / "notes.pt"
    text.write_text("definitely not a model")
    bare = tmp_path / "state_dict.pt"
    torch.save(build_model(DefectCNNConfig(width_mult=0.1)).state_dict(), bare)
    assert "is not a readable checkpoint" in run("models", "add", str(text), code=1)
    assert "holds a bare state_dict" in run("models", "add", str(bare), code=1)
    assert "no checkpoint file" in run("models", "add", str(tmp_path / "absent.pt"), code=1)


def test_only_supervisors_register_and_deploy(run, tiny_candidate: Path) -> None:  # type: ignore[no-untyped-def]
    with run.session() as db:
        add_user(db, "ida", Role.INSPECTOR, "inspector-pw")
        add_user(db, "sam", Role.SUPERVISOR, "supervisor-pw")
    refused = run("models", "add", str(tiny_candidate), "--by", "ida", code=1)
    assert "may not register models: supervisors and admins only" in refused
    assert f"registered {CANDIDATE}" in run("models", "add", str(tiny_candidate), "--as", "sam")
    not_allowed = run("deploy", "set", "line-1", "--candidate", CANDIDATE, "--mode", "shadow",
                      "--reason", "try", "--as", "ida", code=1)  # fmt: skip
    assert "may not change a line's deployment: supervisors and admins only" in not_allowed
    run("deploy", "set", "line-1", "--candidate", CANDIDATE, "--mode", "shadow",
        "--reason", "try", "--as", "sam")  # fmt: skip
    assert [e.actor for e in _rollout_events(run)] == ["sam"]


def test_a_rollout_from_the_command_line(run, tiny_candidate: Path) -> None:  # type: ignore[no-untyped-def]
    run("models", "add", str(tiny_candidate))
    before = run("deploy", "show", "line-1")
    assert f"line line-1: champion {CONFIGURED}" in before and "no candidate" in before

    shadow = run("deploy", "set", "line-1", "--candidate", CANDIDATE, "--mode", "shadow",
                 "--reason", "try it hidden")  # fmt: skip
    assert f"candidate {CANDIDATE}: mode shadow, armed, decides 0% of parts" in shadow
    assert "runs hidden on 100% of parts" in shadow
    assert "paired on 0 parts" in shadow and f"candidate {CANDIDATE}: 0 blind labels" in shadow

    rolled = run("deploy", "rollback", "line-1", "--reason", "odd calls")
    assert "QUARANTINED (odd calls)" in rolled
    refused = run("deploy", "promote", "line-1", "--reason", "go", code=1)
    assert "refused:" in refused and "quarantined" in refused
    run("deploy", "rearm", "line-1", "--reason", "fixed")
    half = run("deploy", "promote", "line-1", "--reason", "go", "--pass-threshold", "0.95",
               code=2)  # fmt: skip
    assert "give both" in " ".join(half.replace("│", " ").split())
    canary = run("deploy", "promote", "line-1", "--reason", "shadow looks fine",
                 "--pass-threshold", "0.95", "--fail-threshold", "never")  # fmt: skip
    assert "mode canary" in canary and "step 1 of 4 (5%, 25%, 50%, 100%)" in canary
    assert "this canary step: hold" in canary
    assert "its own thresholds: pass 0.95 / fail never (supervisor)" in canary
    final = run("deploy", "finalize", "line-1", "--reason", "it is better")
    assert f"champion {CANDIDATE}" in final and "no candidate" in final
    row = _deployment(run)
    assert (row.champion, row.candidate, row.mode) == (CANDIDATE, None, "none")
    assert "pass>=0.95\tfail>=never" in run("lines", "list")  # the candidate's, the line's now

    events = _rollout_events(run)
    assert [(e.kind, e.reason) for e in events] == [
        ("deployment_change", "try it hidden"),
        ("rollout_rollback", "odd calls"),
        ("rollout_rearm", "fixed"),
        ("rollout_promote", "shadow looks fine"),
        ("model_switch", "it is better"),
    ]
    assert all(e.actor.startswith("cli:") for e in events)


def test_deploy_set_takes_the_canary_settings(run, tiny_candidate: Path) -> None:  # type: ignore[no-untyped-def]
    run("models", "add", str(tiny_candidate))
    out = run("deploy", "set", "line-1", "--candidate", CANDIDATE, "--mode", "canary",
              "--steps", "0.1,0.5,1", "--min-labels", "30", "--audit-rate", "0.4",
              "--reason", "small steps")  # fmt: skip
    assert "step 1 of 3 (10%, 50%, 100%), 30 blind labels a step" in out
    row = _deployment(run)
    assert row.steps == [0.1, 0.5, 1.0] and row.step_min_labels == 30
    assert row.candidate_audit_rate == 0.4 and row.share == 0.1

    assert "canary steps must increase" in run(
        "deploy", "set", "line-1", "--candidate", CANDIDATE, "--mode", "canary",
        "--steps", "0.5,0.2,1", "--reason", "x", code=1,
    )  # fmt: skip
    assert "shares separated by commas" in run(
        "deploy", "set", "line-1", "--mode", "canary", "--steps", "a,b", "--reason", "x", code=2
    )
    assert "one of none | shadow" in run(
        "deploy", "set", "line-1", "--mode", "fast", "--reason", "x", code=2
    )
    assert "no registered model version 'defect-cnn-nope'" in run(
        "deploy", "set", "line-1", "--candidate", "defect-cnn-nope", "--mode", "shadow",
        "--reason", "x", code=1,
    )  # fmt: skip
    assert "no line 'line-9'" in run("deploy", "show", "line-9", code=1)


def test_a_canary_at_partial_is_refused_with_the_figures(run, tiny_candidate: Path) -> None:  # type: ignore[no-untyped-def]
    run("models", "add", str(tiny_candidate))
    with run.session() as db:
        line = db.get(Line, "line-1")
        assert line is not None
        line.level = "partial"  # as if it had earned it; the candidate has not
        db.add(line)
        db.commit()
    refused = run("deploy", "set", "line-1", "--candidate", CANDIDATE, "--mode", "canary",
                  "--reason", "go", code=1)  # fmt: skip
    assert f"refused: Candidate {CANDIDATE} may not decide parts on line line-1 at partial" in (
        refused
    )
    assert "escape rate: SHORT: 0 errors in 0 parts" in refused
    with run.session() as db:
        assert db.get(Deployment, "line-1") is None  # nothing changed
    assert _rollout_events(run) == []

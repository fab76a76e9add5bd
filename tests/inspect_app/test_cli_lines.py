"""Running a plant from the command line: `inspect-app lines set|targets` through the same
rules as the API (the evidence gate, supervisors only, events with who and why), and
`inspect-app inspections list` exporting every page."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from inspect_app.accounts import add_user
from inspect_app.cli import app
from inspect_app.domain import Role
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine
from inspect_app.storage.tables import Event, Line

AddParts = Callable[..., list[int]]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
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


def _events(run, kind: str) -> list[Event]:  # type: ignore[no-untyped-def]
    with run.session() as db:
        return list(db.exec(select(Event).where(Event.kind == kind).order_by(col(Event.id))))


def _line(run) -> Line:  # type: ignore[no-untyped-def]
    with run.session() as db:
        line = db.get(Line, "line-1")
        assert line is not None
        return line


def _evidence(run, add_labeled_parts: AddParts) -> None:  # type: ignore[no-untyped-def]
    """Blind labels: 3 escapes in 700 confident-ok parts, 300 clean confident defects."""
    with run.session() as db:
        ida = add_user(db, "ida", Role.INSPECTOR, "inspector-pw")
        add_labeled_parts(db, "line-1", [0.9995] * 700, ["crack"] * 3 + ["ok"] * 697,
                          user_id=ida.id)  # fmt: skip
        add_labeled_parts(db, "line-1", [0.001] * 300, ["pit"] * 300, user_id=ida.id)


def test_lines_set_acts_as_the_operator_through_the_gate(run) -> None:  # type: ignore[no-untyped-def]
    out = run("lines", "set", "line-1", "--level", "assist", "--audit-rate", "0.05",
              "--reason", "show the model")  # fmt: skip
    assert "line-1 is now assist" in out and "by cli:" in out
    (event,) = _events(run, "level_change")
    assert event.actor.startswith("cli:") and event.reason == "show the model"
    assert event.details is not None and event.details["new"]["audit_rate"] == 0.05

    refused = run("lines", "set", "line-1", "--level", "partial", "--reason", "go", code=1)
    assert "refused: Not enough evidence for partial: line line-1 has no model predictions" in (
        refused
    )
    assert _line(run).level == "assist"
    assert _events(run, "level_change_refused")[0].actor.startswith("cli:")


def test_lines_set_as_a_named_account_uses_its_role(run) -> None:  # type: ignore[no-untyped-def]
    with run.session() as db:
        add_user(db, "sue", Role.SUPERVISOR, "supervisor-pw")
        add_user(db, "ann", Role.INSPECTOR, "inspector-pw")
    run("lines", "set", "line-1", "--level", "human_only", "--reason", "camera moved",
        "--as", "sue")  # fmt: skip
    assert _events(run, "level_change")[-1].actor == "sue"
    out = run("lines", "set", "line-1", "--level", "shadow", "--reason", "x", "--as", "ann",
              code=1)  # fmt: skip
    assert "supervisors only" in out
    out = run("lines", "set", "line-1", "--level", "shadow", "--reason", "x", "--as", "bob",
              code=1)  # fmt: skip
    assert "no user named 'bob'" in out
    run("users", "deactivate", "sue")
    out = run("lines", "set", "line-1", "--level", "shadow", "--reason", "x", "--as", "sue",
              code=1)  # fmt: skip
    assert "deactivated" in out
    assert _line(run).level == "human_only"


def test_lines_set_automates_one_side_with_never(run, add_labeled_parts: AddParts) -> None:  # type: ignore[no-untyped-def]
    _evidence(run, add_labeled_parts)
    out = run("lines", "set", "line-1", "--level", "partial", "--pass-threshold", "never",
              "--fail-threshold", "0.9", "--reason", "auto-fail only")  # fmt: skip
    assert "line-1 is now partial: pass>=never fail>=0.9" in out
    refused = run("lines", "set", "line-1", "--level", "full", "--reason", "all of it", code=1)
    assert "escape rate: SHORT" in refused  # full automates both sides again
    line = _line(run)
    assert (line.pass_threshold, line.fail_threshold) == (None, 0.9)
    assert "pass>=never\tfail>=0.9" in run("lines", "list")
    refused = run("lines", "set", "line-1", "--level", "partial", "--pass-threshold", "0.999",
                  "--reason", "both", code=1)  # fmt: skip
    assert "escape rate: SHORT: 3 errors in 700 parts (at least 200 needed)" in refused
    assert "false-reject rate: met: 0 errors in 300 parts" in refused
    bad = run("lines", "set", "line-1", "--level", "partial", "--pass-threshold", "sometimes",
              "--reason", "x", code=1)  # fmt: skip
    assert "pass_threshold must be a number in (0.5, 1] or 'never'" in bad


def test_lines_targets_changes_them_and_says_what_happened(run) -> None:  # type: ignore[no-untyped-def]
    out = run("lines", "targets", "line-1", "--max-escape-rate", "0.001", "--min-labels", "500",
              "--no-auto-demote", "--reason", "customer spec rev B")  # fmt: skip
    assert "max_escape_rate 0.005 -> 0.001" in out and "min_labels 200 -> 500" in out
    assert "auto_demote True -> False" in out and "level shadow" in out
    assert "apply to the next raise" in out
    line = _line(run)
    assert (line.max_escape_rate, line.min_labels, line.auto_demote) == (0.001, 500, False)
    (event,) = _events(run, "targets_change")
    assert event.actor.startswith("cli:") and event.reason == "customer spec rev B"
    assert "must be from 1e-06 to 0.25" in run(
        "lines", "targets", "line-1", "--max-false-reject-rate", "0.5", "--reason", "x", code=1
    )
    assert "nothing to change" in run("lines", "targets", "line-1", "--reason", "x", code=1)
    assert "targets: escape<=0.001 false-reject<=0.02 min-labels=500 auto-demote=off" in run(
        "lines", "list"
    )


def test_inspections_list_streams_every_page_as_csv_or_json(
    run,  # type: ignore[no-untyped-def]
    add_labeled_parts: AddParts,
) -> None:
    with run.session() as db:
        ida = add_user(db, "ida", Role.INSPECTOR, "inspector-pw")
        labeled = add_labeled_parts(db, "line-1", [0.99] * 1100, ["ok"] * 1100, user_id=ida.id)
        open_ = add_labeled_parts(db, "line-1", [0.6] * 3, [None] * 3, user_id=ida.id,
                                  model_version="v2")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(run("inspections", "list"))))
    assert [int(r["inspection_id"]) for r in rows] == labeled + open_  # three pages of 500
    assert rows[0]["label"] == "ok" and rows[0]["pass_threshold"] == "0.98"
    assert rows[-1]["label"] == "" and rows[-1]["decision"] == "pending"

    unlabeled = json.loads(run("inspections", "list", "--unlabeled", "--format", "json"))
    assert [item["inspection_id"] for item in unlabeled] == open_
    assert unlabeled[0]["model_version"] == "v2" and unlabeled[0]["label"] is None
    some = json.loads(run("inspections", "list", "--labeled", "--limit", "7", "--format", "json"))
    assert [item["inspection_id"] for item in some] == labeled[:7]
    assert json.loads(run("inspections", "list", "--model", "v9", "--format", "json")) == []
    by_decision = run("inspections", "list", "--decision", "pending", "--line", "line-1")
    assert len(list(csv.DictReader(io.StringIO(by_decision)))) == 3


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--since", "yesterday"), 2, "not an ISO 8601 date-time"),
        (("--decision", "maybe"), 2, "one of pass | fail | pending"),
        (("--route", "x"), 2, "one of auto | review | audit"),
        (("--format", "xml"), 2, "csv or json"),
        (("--line", "line-9"), 1, "no line 'line-9'"),
        (("--since", "2026-02-01T00:00:00", "--until", "2026-01-01T00:00:00"), 1, "must be after"),
    ],
)
def test_inspections_list_refuses_bad_input_with_the_reason(
    run,  # type: ignore[no-untyped-def]
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    assert message in run("inspections", "list", *args, code=code)

"""`inspect-app reference`: add, list, rate, accuracy and remove, against a SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session
from typer.testing import CliRunner

from inspect_app.accounts import add_user
from inspect_app.cli import app
from inspect_app.lines import add_line
from inspect_app.storage.db import make_engine, upgrade_database


def test_reference_commands(tmp_path: Path, add_labeled_parts: Callable[..., list[int]]) -> None:
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    with Session(engine, expire_on_commit=False) as db:
        add_line(db, "line-1")
        sue = add_user(db, "sue", "supervisor", "a long test password")
        add_user(db, "ina", "inspector", "a long test password")
        assert sue.id is not None
        (inspection,) = add_labeled_parts(db, "line-1", [0.9], ["pit"], user_id=sue.id)
    engine.dispose()
    runner = CliRunner()
    db_opt = ["--database-url", url]

    added = runner.invoke(
        app, ["reference", "add", str(inspection), "--label", "pit", "--reason", "checked",
              "--as", "sue", *db_opt],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert f"inspection {inspection} (line-1) is pit" in added.output
    refused = runner.invoke(
        app, ["reference", "add", str(inspection), "--label", "pit", "--reason", "again",
              "--as", "ina", *db_opt],
    )  # fmt: skip
    assert refused.exit_code == 1 and "supervisors only" in refused.output
    listed = runner.invoke(app, ["reference", "list", *db_opt])
    assert listed.exit_code == 0 and f"\t{inspection}\tline-1\tpit\tsue" in listed.output
    rate = runner.invoke(app, ["reference", "rate", "line-1", "0.05", "--reason", "go", *db_opt])
    assert rate.exit_code == 0 and "reference_rate 0.05" in rate.output
    too_high = runner.invoke(app, ["reference", "rate", "line-1", "0.9", "--reason", "x", *db_opt])
    assert too_high.exit_code == 1 and "reference_rate must lie in" in too_high.output
    accuracy = runner.invoke(app, ["reference", "accuracy", *db_opt])
    assert accuracy.exit_code == 0 and accuracy.output == ""  # no answers yet
    reference_id = listed.output.split("\t")[0]
    removed = runner.invoke(
        app, ["reference", "remove", reference_id, "--reason", "retired", *db_opt]
    )
    assert removed.exit_code == 0
    assert runner.invoke(app, ["reference", "list", *db_opt]).output == ""

"""The export leaves out the labels of an inspector flagged on reference parts, when asked."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session

from inspect_app.accounts import add_user
from inspect_app.export import ExportRequest, export_to_folder
from inspect_app.lines import add_line
from inspect_app.storage.images import LocalImageStore
from inspect_app.storage.tables import InspectorFlag

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_exclude_flagged_leaves_their_labels_out_and_lists_them(
    session: Session, tmp_path: Path, add_plant_parts: Callable[..., list[int]]
) -> None:
    store = LocalImageStore(tmp_path / "images")
    add_line(session, "line-1")
    good = add_user(session, "gail", "inspector", "a long test password")
    poor = add_user(session, "pete", "inspector", "a long test password")
    assert good.id is not None and poor.id is not None
    add_plant_parts(session, store, "line-1", ["ok", "scratch"], user_id=good.id, start=START)
    poor_ids = add_plant_parts(
        session, store, "line-1", ["ok", "crack", "ok"], user_id=poor.id, start=START, seed=5
    )
    session.add(InspectorFlag(user_id=poor.id, flagged=True))
    session.commit()

    everything = export_to_folder(session, store, ExportRequest("line-1"), tmp_path / "all")
    assert everything.images == 5 and everything.excluded == {}

    out = tmp_path / "trusted"
    summary = export_to_folder(session, store, ExportRequest("line-1", exclude_flagged=True), out)
    assert summary.images == 2 and summary.labelers == {"gail": 2}
    assert summary.excluded == {"pete": 3}
    assert "excluded (flagged inspectors): pete 3" in summary.lines()
    written = json.loads((out / "export.json").read_text())
    assert written["excluded_flagged"] == {"pete": 3}
    assert written["request"]["exclude_flagged"] is True
    with (out / "manifest.csv").open(newline="") as f:
        listed = {int(r["inspection_id"]) for r in csv.DictReader(f)}
    assert listed.isdisjoint(poor_ids)
    assert not any((out / "_unlabeled").glob("*")) if (out / "_unlabeled").exists() else True

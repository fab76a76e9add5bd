"""The registry: a version is validated, copied under its content hash, recorded with its
card and lineage, and never changed; foreign files are refused with the reason."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app.rollout.registry import (
    InvalidCheckpoint,
    RegistryError,
    VersionConflict,
    get_version,
    list_versions,
    materialize,
    register_model,
)
from inspect_app.storage.tables import Event, ModelFile, ModelVersion
from models import onnx_export
from models.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from models.onnx_export import PARITY_TOLERANCE, export_checked, onnx_path
from models.runtime import load_predictor


def test_a_registered_version_round_trips_with_its_card_and_lineage(
    session: Session, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    made = register_model(session, tiny_checkpoint, tmp_path, registered_by="ana", notes="first")
    assert made.created
    row = get_version(session, "defect-cnn-tiny-test")
    assert row.sha256 == file_sha256(tiny_checkpoint)
    copy = tmp_path / row.path
    assert copy.name == f"{row.sha256}.pt" and file_sha256(copy) == row.sha256
    assert row.class_names == list(load_checkpoint(tiny_checkpoint).class_names)
    # the checkpoint's card, plus the serving runtime's parity check made at registration
    card = dict(row.metrics)
    assert card.pop("onnx")["accepted"] is True
    assert card == {"note": "tiny random test model"}
    assert row.registered_by == "ana" and row.notes == "first"
    assert row.lineage["source_file"] == str(tiny_checkpoint.resolve())
    assert [v.version for v in list_versions(session)] == ["defect-cnn-tiny-test"]
    event = session.exec(select(Event).where(Event.kind == "model_registered")).one()
    assert event.actor == "ana" and event.details["sha256"] == row.sha256


def test_the_same_file_twice_is_the_same_version(
    session: Session, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    register_model(session, tiny_checkpoint, tmp_path, registered_by="ana")
    again = register_model(session, tiny_checkpoint, tmp_path, registered_by="bob")
    assert not again.created and again.version.registered_by == "ana"


def test_the_same_file_registered_elsewhere_meanwhile_is_that_version(
    engine: Engine, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services starting together on one database both register their configured model:
    the one that finds it registered while it validates the file takes that version, and
    does not refuse it as another file under the same name (which stopped the service)."""
    import models.checkpoint

    real_load = models.checkpoint.load_checkpoint
    loads: list[Path] = []

    def load_while_the_other_registers(path: Path) -> object:
        loads.append(path)
        if len(loads) == 1:  # the other process, while this one loads the file
            with Session(engine) as other:
                assert register_model(other, path, tmp_path / "b", registered_by="system").created
        return real_load(path)

    monkeypatch.setattr(models.checkpoint, "load_checkpoint", load_while_the_other_registers)
    with Session(engine) as db:
        made = register_model(db, tiny_checkpoint, tmp_path / "a", registered_by="system")
        assert not made.created and made.version.sha256 == file_sha256(tiny_checkpoint)
        assert len(db.exec(select(ModelVersion)).all()) == 1


def test_the_same_file_registered_elsewhere_while_this_one_writes_is_that_version(
    engine: Engine, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The later window of the same race: the other process commits the same bytes after
    this one has added its rows, so this one's flush fails on the stored file's key. That
    too is the version, not an error that stops the service."""
    real_write = onnx_export.write_export
    writes: list[Path] = []

    def write_while_the_other_registers(*args: object) -> None:
        writes.append(Path(str(args[0])))
        if len(writes) == 1:
            with Session(engine) as other:
                assert register_model(other, tiny_checkpoint, tmp_path / "b",
                                      registered_by="system").created  # fmt: skip
        real_write(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_export, "write_export", write_while_the_other_registers)
    with Session(engine) as db:
        made = register_model(db, tiny_checkpoint, tmp_path / "a", registered_by="system")
        assert not made.created and made.version.sha256 == file_sha256(tiny_checkpoint)
        assert len(db.exec(select(ModelVersion)).all()) == 1
        assert len(db.exec(select(Event).where(Event.kind == "model_registered")).all()) == 1


def test_other_bytes_under_a_taken_name_are_refused(
    session: Session, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    register_model(session, tiny_checkpoint, tmp_path, registered_by="ana")
    loaded = load_checkpoint(tiny_checkpoint)
    other = tmp_path / "same-name.pt"
    save_checkpoint(
        other,
        loaded.model,
        config=loaded.config,
        class_names=loaded.class_names,
        preprocessing=loaded.preprocessing,
        temperature=2.0,  # other calibration, same name
        metrics={},
        data_seed=None,
        version=loaded.version,
    )
    with pytest.raises(VersionConflict, match="already registered from a different file"):
        register_model(session, other, tmp_path, registered_by="ana")


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p: p.write_text("not a model"), "not a readable checkpoint"),
        (lambda p: torch.save({"w": torch.zeros(2)}, p), "bare state_dict"),
        (lambda p: torch.save({"format": "other/1"}, p), "not a defect-model checkpoint"),
    ],
)
def test_a_foreign_file_is_refused_with_the_reason(
    session: Session, tmp_path: Path, write, reason: str
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "foreign.pt"
    write(path)
    with pytest.raises(InvalidCheckpoint, match=reason):
        register_model(session, path, tmp_path / "data", registered_by="ana")
    assert list_versions(session) == []


def test_a_registered_version_cannot_be_changed(
    session: Session, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    register_model(session, tiny_checkpoint, tmp_path, registered_by="ana")
    row = get_version(session, "defect-cnn-tiny-test")
    row.notes = "rewritten history"
    session.add(row)
    with pytest.raises(RegistryError, match="cannot be changed"):
        session.commit()
    session.rollback()
    assert get_version(session, "defect-cnn-tiny-test").notes == ""


def test_another_process_gets_the_bytes_from_the_database(
    session: Session, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    register_model(session, tiny_checkpoint, tmp_path / "process-a", registered_by="ana")
    row = get_version(session, "defect-cnn-tiny-test")
    path = materialize(session, tmp_path / "process-b", row)
    assert file_sha256(path) == row.sha256
    assert load_checkpoint(path).version == row.version
    # ... and with the bytes gone from the database, the reason is named
    session.exec(delete(ModelFile))  # type: ignore[call-overload]
    session.commit()
    with pytest.raises(RegistryError, match="no bytes"):
        materialize(session, tmp_path / "process-c", row)
    assert session.exec(select(ModelVersion)).one().version == row.version


def test_registration_stores_the_checked_onnx_graph_beside_the_checkpoint(
    session: Session, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    register_model(session, tiny_checkpoint, tmp_path / "process-a", registered_by="ana")
    row = get_version(session, "defect-cnn-tiny-test")
    card = row.metrics["onnx"]
    assert card["accepted"] is True and card["checkpoint_sha256"] == row.sha256
    assert card["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert card["parity"]["n_images"] > 0 and card["runtime"]["onnxruntime"]
    copy = tmp_path / "process-a" / row.path
    assert file_sha256(onnx_path(copy)) == card["onnx_sha256"]
    assert session.get(ModelFile, card["onnx_sha256"]) is not None
    event = session.exec(select(Event).where(Event.kind == "model_registered")).one()
    assert (
        event.details["onnx_accepted"] is True
        and "within the limit" in event.details["onnx_parity"]
    )
    # another process writes the graph and its record from the database, and serves it
    path = materialize(session, tmp_path / "process-b", row)
    assert file_sha256(onnx_path(path)) == card["onnx_sha256"]
    assert load_predictor(path).runtime == "onnxruntime"


def test_a_refused_export_registers_the_version_for_torch_with_the_reason(
    session: Session, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a checkpoint without a build's export beside it is exported at registration; an
    # injected tolerance no graph meets makes its parity check refuse it
    bare = tmp_path / "bare" / "tiny.pt"
    bare.parent.mkdir()
    shutil.copyfile(tiny_checkpoint, bare)
    # the registry imports the exporter when it first registers (torch loads on first use)
    monkeypatch.setattr(onnx_export, "export_checked", partial(export_checked, tolerance=-1.0))
    made = register_model(session, bare, tmp_path, registered_by="ana")
    assert made.created
    card = made.version.metrics["onnx"]
    assert card["accepted"] is False and card["onnx_sha256"] is None
    assert "above the limit" in card["reason"]
    copy = tmp_path / made.version.path
    assert not onnx_path(copy).exists()
    event = session.exec(select(Event).where(Event.kind == "model_registered")).one()
    assert event.details["onnx_accepted"] is False
    assert load_predictor(copy).runtime == "torch"  # served, by torch

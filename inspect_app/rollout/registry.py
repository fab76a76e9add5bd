"""The model registry: every version a line may run, registered once and never changed.

A version is the checkpoint's own name (``defect-cnn-<date>-<8 hex of the weights' digest>``),
and the file is kept under the SHA-256 of its bytes in ``<data_dir>/models/``: what a line
ran can always be loaded again, even after the file it was registered from is gone. The
reference profile beside the checkpoint (`models.profile`) is copied with it.

Registration also makes the version's ONNX graph, the serving runtime's
(``models/onnx_export.py``): exported and checked against torch on the parity images (a file
that brings its build's checked export, as the bundled weights do, brings its figure too).
An accepted graph is kept beside the checkpoint and in the database like the other files; the
check's outcome, accepted or refused with its reason and figure, is the ``onnx`` entry of the
version's model card (`ModelVersion.metrics`). A refused graph does not refuse the version:
torch serves it.

Registering the same file twice answers the existing version; a different file under a
name already taken is refused. Rows are immutable: the ORM refuses an UPDATE of one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from inspect_app.events import record_event
from inspect_app.storage.tables import ModelFile, ModelVersion
from models.profile import ProfileError, load_profile, profile_path

if TYPE_CHECKING:  # torch and ONNX Runtime load on first use: `lines list` needs neither
    from models.checkpoint import LoadedCheckpoint
    from models.onnx_export import OnnxRecord

logger = logging.getLogger(__name__)

REGISTRY_DIR = "models"
MAX_NOTES = 2000
CARD_FIGURES = ("binary_accuracy", "defect_recall", "false_reject_rate", "ece")


class RegistryError(Exception):
    """A registry request that cannot be carried out; the message says why."""


class VersionNotFound(RegistryError, LookupError):
    pass


class InvalidCheckpoint(RegistryError, ValueError):
    """The file is not a checkpoint this service can serve."""


class VersionConflict(RegistryError):
    """The name is taken by a different file."""


@event.listens_for(ModelVersion, "before_update")
def _immutable(_mapper: Any, _connection: Any, target: ModelVersion) -> None:
    raise RegistryError(f"model version {target.version} is registered and cannot be changed")


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    created: bool  # False: this very file was already registered


def registry_dir(data_dir: Path) -> Path:
    return Path(data_dir) / REGISTRY_DIR


def checkpoint_path(data_dir: Path, version: ModelVersion) -> Path:
    """Where the registry keeps the version's checkpoint (its profile sits beside it)."""
    return Path(data_dir) / version.path


def materialize(session: Session, data_dir: Path, version: ModelVersion) -> Path:
    """The version's checkpoint (and profile) in this process's data folder, written from the
    database when this process has not got it (registered through another process)."""
    from models.checkpoint import file_sha256
    from models.onnx_export import onnx_path, record_bytes, record_path

    path = checkpoint_path(data_dir, version)
    wanted = [(path, version.sha256)]
    if version.profile_sha256 is not None:
        wanted.append((profile_path(path), version.profile_sha256))
    record = _onnx_record(version)
    if record is not None and record.onnx_sha256 is not None:
        wanted.append((onnx_path(path), record.onnx_sha256))
    for target, sha256 in wanted:
        if target.is_file() and file_sha256(target) == sha256:
            continue
        stored = session.get(ModelFile, sha256)
        if stored is None:
            raise RegistryError(f"the registry has no bytes for {target.name} of {version.version}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(stored.data)
        os.replace(tmp, target)
        logger.info("model %s: %s written from the registry", version.version, target.name)
    if record is not None:
        target, data = record_path(path), record_bytes(record)
        if not (target.is_file() and target.read_bytes() == data):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return path


def _onnx_record(version: ModelVersion) -> OnnxRecord | None:
    """The version's ONNX export record (its model card's ``onnx``); None for a version
    registered before exports existed, or whose record this code cannot read (then the
    loader exports it again, in memory)."""
    from models.onnx_export import OnnxExportError, OnnxRecord

    raw = (version.metrics or {}).get("onnx")
    if not isinstance(raw, Mapping):
        return None
    try:
        return OnnxRecord.from_dict(raw)
    except OnnxExportError as exc:
        logger.warning("model %s: its ONNX record is unusable (%s)", version.version, exc)
        return None


def _serving_export(checkpoint: Path, loaded: LoadedCheckpoint) -> tuple[bytes | None, OnnxRecord]:
    """The version's checked ONNX graph. An accepted export beside the file (the bundled
    weights' is made at build), whose record names these very bytes and this ONNX Runtime
    version, is taken with its figure: checking it again would measure the same numbers.
    Otherwise the graph is exported (or the one beside it checked again) here. Never raises
    for a bad graph: a refusal is recorded and torch serves the version."""
    from models.onnx_export import OnnxExportError, export_checked, read_export, runtime_versions
    from models.predictor import Predictor

    try:
        found = read_export(checkpoint)
    except OnnxExportError as exc:
        logger.warning("%s: %s; exporting it again", checkpoint, exc)
        found = None
    if found is not None and found[0] is not None and found[1].runtime == runtime_versions():
        logger.info("%s: its export beside it, checked at build: %s",
                    checkpoint.name, found[1].summary())  # fmt: skip
        return found
    prior = found[0] if found is not None else None
    return export_checked(checkpoint, reference=Predictor(loaded), onnx_model=prior)


def _copy_atomically(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def register_model(
    session: Session,
    checkpoint: Path,
    data_dir: Path,
    *,
    registered_by: str,
    notes: str = "",
    parent_version: str | None = None,
    lineage: Mapping[str, Any] | None = None,
) -> Registration:
    """Validate `checkpoint`, copy it (and its profile) into the registry, record the version.

    Raises InvalidCheckpoint for a file the service could not serve (the reason is the
    loader's), VersionConflict for a name already held by other bytes."""
    from models.checkpoint import CheckpointError, file_sha256, load_checkpoint
    from models.onnx_export import write_export

    checkpoint = Path(checkpoint)
    if len(notes) > MAX_NOTES:
        raise RegistryError(f"notes must be at most {MAX_NOTES} characters")
    # The same bytes were validated when they were registered: a service restarting on its
    # registered weights does not load them a second time (0.2 s for the bundled ones).
    try:
        sha256: str | None = file_sha256(checkpoint)
    except OSError:  # no file, or not readable: the loader below says which
        sha256 = None
    same_file = session.exec(select(ModelVersion).where(ModelVersion.sha256 == sha256)).first()
    if same_file is not None:
        return Registration(same_file, created=False)
    try:
        loaded = load_checkpoint(checkpoint)  # says why a missing or broken file is refused
    except CheckpointError as exc:
        raise InvalidCheckpoint(str(exc)) from exc
    if sha256 is None:
        raise InvalidCheckpoint(f"cannot read {checkpoint}")
    try:
        profile = load_profile(checkpoint, version=loaded.version)
    except ProfileError as exc:
        raise InvalidCheckpoint(f"its reference profile is unusable: {exc}") from exc
    taken = session.get(ModelVersion, loaded.version)
    if taken is not None and taken.sha256 == sha256:
        # another process registered these very bytes since the look-up above (two services
        # starting together on one database)
        return Registration(taken, created=False)
    if taken is not None:
        raise VersionConflict(
            f"version {loaded.version} is already registered from a different file; a version "
            "never changes, so save the new weights as a new checkpoint"
        )
    parent = parent_version or loaded.metrics.get("parent_version")
    if parent is not None and session.get(ModelVersion, str(parent)) is None:
        raise RegistryError(f"parent version {parent} is not registered")

    onnx_model, onnx_record = _serving_export(checkpoint, loaded)

    target_dir = registry_dir(data_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{sha256}.pt"
    _copy_atomically(checkpoint, target)
    # A row another process added meanwhile (two services starting together) fails a flush
    # or the commit: then the version it registered from these bytes is the answer.
    try:
        profile_sha = None
        session.add(ModelFile(sha256=sha256, data=target.read_bytes()))
        write_export(target, onnx_model, onnx_record)
        onnx_sha = onnx_record.onnx_sha256
        # the same weights under another model card export to the same graph: stored once
        if (
            onnx_model is not None
            and onnx_sha is not None
            and session.get(ModelFile, onnx_sha) is None
        ):
            session.add(ModelFile(sha256=onnx_sha, data=onnx_model))
        if profile is not None:
            source_profile = profile_path(checkpoint)
            _copy_atomically(source_profile, profile_path(target))
            profile_sha = file_sha256(source_profile)
            if session.get(ModelFile, profile_sha) is None:
                session.add(ModelFile(sha256=profile_sha, data=profile_path(target).read_bytes()))
        row = ModelVersion(
            version=loaded.version,
            sha256=sha256,
            path=str(target.relative_to(Path(data_dir))),
            architecture=loaded.config.to_dict(),
            class_names=list(loaded.class_names),
            temperature=loaded.temperature,
            metrics=_plain({**loaded.metrics, "onnx": onnx_record.to_dict()}),
            data_seed=loaded.data_seed,
            parent_version=None if parent is None else str(parent),
            lineage=_plain(
                {
                    "data_seed": loaded.data_seed,
                    "source_file": str(checkpoint.resolve()),
                    **(lineage or {}),
                }
            ),
            profile_sha256=profile_sha,
            notes=notes,
            registered_by=registered_by,
        )
        session.add(row)
        record_event(
            session,
            kind="model_registered",
            actor=registered_by,
            reason=notes or f"registered from {checkpoint.name}",
            details={
                "version": row.version,
                "sha256": sha256,
                "parent_version": row.parent_version,
                "has_profile": profile is not None,
                # the serving runtime: ONNX Runtime, or torch when the parity check refused it
                "onnx_accepted": onnx_record.accepted,
                "onnx_parity": onnx_record.reason,
                # the model card's figures: under "validation", or at the top for older cards
                "validation": row.metrics.get("validation")
                or {k: row.metrics[k] for k in CARD_FIGURES if k in row.metrics},
            },
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = session.exec(select(ModelVersion).where(ModelVersion.sha256 == sha256)).first()
        if existing is None:
            raise
        return Registration(existing, created=False)
    session.refresh(row)
    logger.info("registered model %s (sha256 %s) by %s; %s",
                row.version, sha256[:12], registered_by, onnx_record.summary())  # fmt: skip
    return Registration(row, created=True)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars and tuples from a model card become plain values)."""
    return json.loads(json.dumps(value, default=_scalar))


def get_version(session: Session, version: str) -> ModelVersion:
    row = session.get(ModelVersion, version)
    if row is None:
        raise VersionNotFound(f"no registered model version {version!r}")
    return row


def list_versions(session: Session) -> list[ModelVersion]:
    """Newest first."""
    return list(
        session.exec(
            select(ModelVersion).order_by(
                col(ModelVersion.registered_at).desc(), col(ModelVersion.version)
            )
        )
    )


def ensure_registered(session: Session, checkpoint: Path, data_dir: Path) -> ModelVersion:
    """The service's configured model, registered at start (by "system") if it is not yet."""
    return register_model(
        session,
        checkpoint,
        data_dir,
        registered_by="system",
        notes=f"the service's configured model ({Path(checkpoint).name})",
    ).version

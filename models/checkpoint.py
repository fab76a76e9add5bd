"""The model file: weights plus everything needed to use them correctly.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts, so it loads
with ``torch.load(weights_only=True)``: opening a model file never runs code from it.
A file that is not one of ours (corrupt, a bare state_dict, other classes) is refused
with a `CheckpointError` saying why, before anything is served with it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from inspect_app.domain import CLASS_NAMES
from models.defect_cnn import DefectCNN, DefectCNNConfig, build_model
from models.preprocess import Preprocessing

log = logging.getLogger(__name__)

# Bumped when the layout of the dict changes incompatibly.
FORMAT = "inspect_app.defect_cnn/1"
REQUIRED_KEYS = (
    "format",
    "state_dict",
    "config",
    "class_names",
    "preprocessing",
    "temperature",
    "metrics",
    "data_seed",
    "version",
)


class CheckpointError(ValueError):
    """The file cannot be used as a defect-model checkpoint; the message says why."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back: the network is built, loaded and in eval mode."""

    model: DefectCNN  # built from `config`, weights loaded, eval mode
    config: DefectCNNConfig
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    temperature: float  # calibrated probabilities = softmax(logits / temperature)
    metrics: dict = field(default_factory=dict)
    data_seed: int | None = None
    version: str = ""
    path: Path | None = None


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the weights' bytes in key order: the same weights give the same digest."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        t = state_dict[key].detach().cpu().contiguous()
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes: the identity of a checkpoint (and of what sits beside it)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_version(state_dict: Mapping[str, torch.Tensor], when: datetime | None = None) -> str:
    """``defect-cnn-<YYYYMMDD>-<8 hex of the weights>``: readable, and unique per weights."""
    when = when or datetime.now(UTC)
    return f"defect-cnn-{when:%Y%m%d}-{weights_digest(state_dict)[:8]}"


def save_checkpoint(
    path: Path,
    model: nn.Module,
    *,
    config: DefectCNNConfig,
    class_names: Sequence[str],
    preprocessing: Preprocessing,
    temperature: float,
    metrics: Mapping[str, object],
    data_seed: int | None,
    version: str | None = None,
) -> str:
    """Write the checkpoint atomically (a reader never sees half a file); returns its version.

    `metrics` must be plain data (numbers, strings, lists, dicts), which is what
    ``weights_only`` loading accepts.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and positive, got {temperature}")
    if len(class_names) != config.num_classes:
        raise ValueError(f"{len(class_names)} class names for {config.num_classes} outputs")
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    version = version or make_version(state_dict)
    payload = {
        "format": FORMAT,
        "state_dict": state_dict,
        "config": config.to_dict(),
        "class_names": list(class_names),
        "preprocessing": preprocessing.to_dict(),
        "temperature": float(temperature),
        "metrics": dict(metrics),
        "data_seed": None if data_seed is None else int(data_seed),
        "version": version,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    log.info("wrote checkpoint %s (version %s, %d bytes)", path, version, len(buffer.getvalue()))
    return version


def _looks_like_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def load_checkpoint(
    path: Path, *, expected_class_names: Sequence[str] | None = CLASS_NAMES
) -> LoadedCheckpoint:
    """Read, validate and build the model of a checkpoint, on the CPU, in eval mode.

    `expected_class_names` (default: the app's classes, in the app's order) guards against
    a model whose outputs mean something else; pass None only to inspect a foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a corrupt file raises anything from EOFError to RuntimeError
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from exc

    if _looks_like_state_dict(raw):
        raise CheckpointError(
            f"{path} holds a bare state_dict; a checkpoint also needs the model config, class "
            "names, preprocessing and calibration (write it with models.checkpoint.save_checkpoint)"
        )
    if not isinstance(raw, Mapping) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(
            f"{path} is not a defect-model checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}")

    class_names = tuple(str(c) for c in raw["class_names"])
    if expected_class_names is not None and class_names != tuple(expected_class_names):
        raise CheckpointError(
            f"{path} predicts classes {list(class_names)}, but this app needs "
            f"{list(expected_class_names)} in that order"
        )
    try:
        config = DefectCNNConfig.from_dict(dict(raw["config"]))
        preprocessing = Preprocessing.from_dict(dict(raw["preprocessing"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} has an invalid config or preprocessing: {exc}") from exc
    if config.num_classes != len(class_names):
        raise CheckpointError(
            f"{path}: {config.num_classes} outputs but {len(class_names)} class names"
        )
    temperature = raw["temperature"]
    if not isinstance(temperature, int | float) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise CheckpointError(
            f"{path}: temperature must be a finite positive number, got {temperature!r}"
        )

    model = build_model(config)
    try:
        model.load_state_dict(raw["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the stored config: {exc}") from exc
    model.eval()
    loaded = LoadedCheckpoint(
        model=model,
        config=config,
        class_names=class_names,
        preprocessing=preprocessing,
        temperature=float(temperature),
        metrics=dict(raw["metrics"]),
        data_seed=raw["data_seed"],
        version=str(raw["version"]),
        path=path,
    )
    log.info("loaded checkpoint %s (version %s, T=%.3f)", path, loaded.version, loaded.temperature)
    return loaded

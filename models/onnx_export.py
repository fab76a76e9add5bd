"""A checkpoint's network as an ONNX graph, accepted only after a parity check.

The graph (torch's TorchScript-based exporter, opset 17, any batch size) takes the
preprocessed batch and returns what serving needs of the network: the logits, from which
probabilities are calibrated outside the graph exactly as in torch
(`models.predictor.calibrated_probabilities`, float64), and the gate embedding the image
gate and drift monitoring compare with the version's reference profile.

**Parity rule**: the export is accepted only if, on the parity images, the largest absolute
difference between the calibrated probabilities of ONNX Runtime and of torch is at most
`PARITY_TOLERANCE` (1e-4). A larger difference would move parts across a line's
thresholds (0.98 and the like) and silently break the calibration the model card states;
then the version is served with torch, with a warning that says why. The figure, the
images it was measured on and the runtime's version are recorded (`OnnxRecord`) beside the
checkpoint (``<name>.onnx.json``, next to ``<name>.onnx``) and in the registry's model card.

**Parity images**: a checkpoint does not carry its calibration images (only the seeds of
the data they were drawn from, which need not be on the machine that registers it), so the
check runs on a stated fixed set: `PARITY_IMAGES` synthetic line-camera photos from
``data.synth`` (default configuration, the generator's class mix, dataset seed
`PARITY_SEED`), the same on every machine and for every version.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.checkpoint import LoadedCheckpoint, file_sha256
from models.defect_cnn import DefectCNN
from models.onnx_predictor import INPUT_NAME, OUTPUT_NAMES, OnnxPredictor
from models.predictor import Predictor

log = logging.getLogger(__name__)

FORMAT = "inspect_app.onnx_export/1"
OPSET = 17
PARITY_TOLERANCE = 1e-4  # max |p_onnx - p_torch| over every class of every parity image
PARITY_IMAGES = 64  # 4 batches of 16: every class several times, ~1 s to render and run
PARITY_SEED = 13  # dataset seed of the parity set; no training set uses it
ONNX_SUFFIX = ".onnx"
RECORD_SUFFIX = ".onnx.json"


class OnnxExportError(ValueError):
    """An export record beside a checkpoint that does not belong to it; the message says why."""


class _Answers(Protocol):
    class_names: tuple[str, ...]

    def predict_with_embeddings(
        self, images: Sequence[np.ndarray], *, heatmap: bool = False
    ) -> tuple[list[Any], np.ndarray]: ...


class _ServingGraph(nn.Module):
    """What the graph computes: (B, 3, S, S) -> ((B, C) logits, (B, D) gate embedding)."""

    def __init__(self, model: DefectCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_embedding(x)


def export_onnx(checkpoint: LoadedCheckpoint) -> bytes:
    """The checkpoint's network as ONNX bytes, with a dynamic batch dimension."""
    size = checkpoint.preprocessing.input_size
    # The exporter puts the module it is given back in the mode it found it in, recursively:
    # the wrapper must already be in eval mode, or the network comes back in training mode.
    graph = _ServingGraph(checkpoint.model.eval()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding
        torch.onnx.export(
            graph,
            (torch.zeros(2, 3, size, size),),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    checkpoint.model.eval()
    return buffer.getvalue()


@functools.lru_cache(maxsize=1)
def _rendered_parity_set() -> tuple[np.ndarray, ...]:
    from data.synth import SynthConfig, class_schedule, image_seeds, render_sample

    config = SynthConfig()
    classes = class_schedule(PARITY_IMAGES, PARITY_SEED, config.class_mix)
    seeds = image_seeds(PARITY_IMAGES, PARITY_SEED)
    images = []
    for seed, cls in zip(seeds, classes, strict=True):
        image = render_sample(seed, cls, config).image
        image.setflags(write=False)  # shared by every check in this process
        images.append(image)
    return tuple(images)


def parity_images() -> tuple[list[np.ndarray], str]:
    """The fixed parity set (rendered once per process) and its description."""
    return list(_rendered_parity_set()), (
        f"{PARITY_IMAGES} synthetic line-camera images (data.synth default configuration, "
        f"dataset seed {PARITY_SEED})"
    )


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against torch on the same images, through the serving path."""

    max_abs_diff: float  # of calibrated probabilities: what the rule bounds
    max_abs_diff_embedding: float  # of the gate embedding (recorded, not bounded)
    n_images: int
    images: str  # which images, in words
    tolerance: float = PARITY_TOLERANCE

    @property
    def accepted(self) -> bool:
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    reference: _Answers,
    candidate: _Answers,
    images: Sequence[np.ndarray],
    *,
    images_source: str,
    tolerance: float = PARITY_TOLERANCE,
    batch_size: int = 16,
) -> Parity:
    """Both predictors over `images` in serving-sized batches; the largest differences."""
    if not images:
        raise ValueError("parity needs at least one image")
    worst_p, worst_e = 0.0, 0.0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        ref, ref_emb = reference.predict_with_embeddings(chunk)
        got, got_emb = candidate.predict_with_embeddings(chunk)
        p_ref = np.array([[p.probabilities[c] for c in reference.class_names] for p in ref])
        p_got = np.array([[p.probabilities[c] for c in reference.class_names] for p in got])
        # a NaN anywhere must fail the check, and max() of a NaN comparison would hide it
        worst_p = max(worst_p, float(np.nan_to_num(np.abs(p_got - p_ref), nan=np.inf).max()))
        worst_e = max(worst_e, float(np.nan_to_num(np.abs(got_emb - ref_emb), nan=np.inf).max()))
    return Parity(
        max_abs_diff=worst_p,
        max_abs_diff_embedding=worst_e,
        n_images=len(images),
        images=images_source,
        tolerance=tolerance,
    )


def runtime_versions() -> dict[str, str]:
    return {"onnxruntime": ort.__version__, "torch": torch.__version__.split("+")[0]}


@dataclass(frozen=True)
class OnnxRecord:
    """The outcome of one export: the model card's statement of the serving runtime."""

    model_version: str
    checkpoint_sha256: str  # the checkpoint file it was exported from
    accepted: bool
    reason: str  # why it was accepted or refused, in words
    onnx_sha256: str | None  # None when refused (no graph is kept)
    onnx_bytes: int
    parity: Parity | None  # None when the export itself failed
    runtime: Mapping[str, str]
    opset: int = OPSET
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["runtime"] = dict(self.runtime)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OnnxRecord:
        if d.get("format") != FORMAT:
            raise OnnxExportError(f"not an ONNX export record (format {d.get('format')!r})")
        parity = d.get("parity")
        try:
            return cls(
                model_version=str(d["model_version"]),
                checkpoint_sha256=str(d["checkpoint_sha256"]),
                accepted=bool(d["accepted"]),
                reason=str(d["reason"]),
                onnx_sha256=None if d["onnx_sha256"] is None else str(d["onnx_sha256"]),
                onnx_bytes=int(d["onnx_bytes"]),
                parity=None if parity is None else Parity(**parity),
                runtime=dict(d["runtime"]),
                opset=int(d["opset"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OnnxExportError(f"invalid ONNX export record: {exc}") from exc

    def summary(self) -> str:
        if self.parity is None:
            return f"ONNX refused: {self.reason}"
        verdict = "accepted" if self.accepted else "refused"
        return (
            f"ONNX {verdict}: max |p_onnx - p_torch| = {self.parity.max_abs_diff:.2e} "
            f"(limit {self.parity.tolerance:g}) on {self.parity.images}; "
            f"onnxruntime {self.runtime.get('onnxruntime')}"
        )


def export_checked(
    checkpoint: Path,
    *,
    reference: Predictor | None = None,
    onnx_model: bytes | None = None,
    images: Sequence[np.ndarray] | None = None,
    images_source: str | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[bytes | None, OnnxRecord]:
    """Export `checkpoint` (or take `onnx_model`, an export made before) and check its
    parity against torch; returns the graph (None when refused) and the record.

    Never raises for a graph that fails: a refusal is an outcome, logged with its reason,
    and the version is then served with torch.
    """
    checkpoint = Path(checkpoint)
    reference = reference or Predictor.from_checkpoint(checkpoint)
    if images is None:
        images, images_source = parity_images()
    sha256 = file_sha256(checkpoint)

    def refused(reason: str, parity: Parity | None, size: int) -> tuple[None, OnnxRecord]:
        log.warning("model %s: ONNX export refused, torch serves it: %s", reference.version, reason)
        record = OnnxRecord(
            reference.version, sha256, False, reason, None, size, parity, runtime_versions()
        )
        return None, record

    try:
        onnx_model = onnx_model if onnx_model is not None else export_onnx(reference.checkpoint)
        candidate = OnnxPredictor(reference, onnx_model, intra_op_threads=1)
        parity = check_parity(
            reference,
            candidate,
            images,
            images_source=images_source or f"{len(images)} given images",
            tolerance=tolerance,
        )
    except Exception as exc:  # the exporter and the runtime raise anything from a bad graph
        return refused(f"the export does not run: {type(exc).__name__}: {exc}", None, 0)
    size = len(onnx_model)
    if not parity.accepted:
        return refused(
            f"max |p_onnx - p_torch| = {parity.max_abs_diff:.3g} on {parity.n_images} images, "
            f"above the limit of {tolerance:g}",
            parity,
            size,
        )
    record = OnnxRecord(
        model_version=reference.version,
        checkpoint_sha256=sha256,
        accepted=True,
        reason=(
            f"max |p_onnx - p_torch| = {parity.max_abs_diff:.3g} on {parity.n_images} images, "
            f"within the limit of {tolerance:g}"
        ),
        onnx_sha256=_sha256(onnx_model),
        onnx_bytes=size,
        parity=parity,
        runtime=runtime_versions(),
    )
    log.info("model %s: %s", reference.version, record.summary())
    return onnx_model, record


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def onnx_path(checkpoint: Path) -> Path:
    """``default.pt`` -> ``default.onnx``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ONNX_SUFFIX)


def record_path(checkpoint: Path) -> Path:
    """``default.pt`` -> ``default.onnx.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + RECORD_SUFFIX)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def record_bytes(record: OnnxRecord) -> bytes:
    """The record as its file holds it (the same record gives the same bytes)."""
    return (json.dumps(record.to_dict(), indent=1, sort_keys=True) + "\n").encode()


def write_export(checkpoint: Path, onnx_model: bytes | None, record: OnnxRecord) -> Path:
    """Write the graph (when accepted) and the record beside `checkpoint`; a graph left from
    an earlier export is removed when this one is refused. Returns the record's path."""
    if record.accepted:
        if onnx_model is None:
            raise ValueError("an accepted record needs its graph")
        _write_atomically(onnx_path(checkpoint), onnx_model)
    else:
        onnx_path(checkpoint).unlink(missing_ok=True)
    path = record_path(checkpoint)
    _write_atomically(path, record_bytes(record))
    return path


def read_export(checkpoint: Path) -> tuple[bytes | None, OnnxRecord] | None:
    """The export beside `checkpoint`: (graph or None when refused, record); None when there
    is none. Raises OnnxExportError when the record was made for other bytes (stale after a
    retrain) or the graph is not the one the record accepted."""
    path = record_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = OnnxRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise OnnxExportError(f"{path} is not readable: {exc}") from exc
    if record.checkpoint_sha256 != file_sha256(checkpoint):
        raise OnnxExportError(f"{path} was made for another checkpoint file than {checkpoint}")
    if not record.accepted:
        return None, record
    graph = onnx_path(checkpoint)
    data = graph.read_bytes() if graph.is_file() else b""
    if _sha256(data) != record.onnx_sha256:
        raise OnnxExportError(f"{graph} is missing or not the graph {path} accepted")
    return data, record

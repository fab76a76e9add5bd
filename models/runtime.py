"""Which runtime serves a checkpoint: ONNX Runtime when its checked export allows, else torch.

`load_predictor` is what serving loads a version with. With ``runtime="onnx"`` (the
service's default) it uses the checked export beside the checkpoint (``<name>.onnx`` and
``<name>.onnx.json``, written at registration or, for the bundled weights, by
``inspect-app models export-onnx``): its record states the parity figure measured when it
was made, and the hashes tie it to these very bytes, so the check is not run again here.
Without one (a checkpoint configured straight from a folder, a version registered before
exports existed) it exports and checks in memory now, a few seconds. A refused or failing
export is served with torch, with a warning that says why; ``runtime="torch"`` asks for
torch outright.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models import DEFAULT_WEIGHTS
from models.onnx_export import OnnxExportError, export_checked, read_export
from models.onnx_predictor import OnnxPredictor
from models.predictor import Predictor

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "torch")
ServingPredictor = Predictor | OnnxPredictor  # what serving holds: one interface, two runtimes


def load_predictor(
    path: Path | None = None, *, runtime: str = "onnx", intra_op_threads: int | None = None
) -> ServingPredictor:
    """The checkpoint at `path` (default: the bundled weights) as the service serves it.
    Raises CheckpointError for a file that is no checkpoint, ValueError for a runtime that
    is not one of `RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown inference runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    reference = Predictor.from_checkpoint(path)
    if runtime == "torch":
        log.info("model %s served by torch (the inference runtime setting asks for it)",
                 reference.version)  # fmt: skip
        return reference
    try:
        found = read_export(path)
    except OnnxExportError as exc:
        log.warning("model %s: %s; exporting it again", reference.version, exc)
        found = None
    if found is None:
        log.info("model %s has no checked ONNX export beside %s: exporting and checking it now",
                 reference.version, path)  # fmt: skip
        found = export_checked(path, reference=reference)
    graph, record = found
    if graph is None:
        log.warning("model %s served by torch, not ONNX Runtime: %s",
                    reference.version, record.reason)  # fmt: skip
        return reference
    try:
        predictor = OnnxPredictor(reference, graph, intra_op_threads=intra_op_threads)
    except Exception as exc:  # a runtime that cannot open an accepted graph: keep serving
        log.warning("model %s served by torch: ONNX Runtime cannot open its graph: %s",
                    reference.version, exc)  # fmt: skip
        return reference
    log.info("model %s served by ONNX Runtime (%s)", reference.version, record.summary())
    return predictor

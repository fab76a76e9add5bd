"""The model served by ONNX Runtime on the CPU, with the torch `Predictor`'s interface.

Why: on this machine's CPU the same weights ran 545 images/s in torch eager and 2,056 in
ONNX Runtime at batch 16 (issue 13; ``bench/model_throughput.py`` prints the figures of a
run). Everything but the forward pass stays the torch predictor's, so the two runtimes can
only differ in the network's arithmetic, which the parity check bounds
(``models/onnx_export.py``):

- preprocessing is `Predictor.preprocess` itself (the same resize and normalisation as
  training), not a copy;
- logits become calibrated probabilities in `models.predictor.calibrated_probabilities`
  (float64 softmax of logits / T), and predictions in `Predictor.predictions`;
- the heatmap (the review UI's, one image at a time) runs in torch: Layer-CAM needs
  gradients, which an inference graph has not got. The torch network is loaded anyway (the
  checkpoint is read with torch, ~0.4M parameters), so keeping it costs no load time; the
  bench measures the heatmap's rate under both runtimes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import torch

from inspect_app.domain import Prediction
from models.checkpoint import LoadedCheckpoint
from models.predictor import Predictor, calibrated_probabilities
from models.preprocess import Preprocessing

log = logging.getLogger(__name__)

INPUT_NAME = "image"  # (B, 3, S, S) float32, normalised (Predictor.preprocess)
OUTPUT_NAMES = ("logits", "embedding")  # (B, C) logits, (B, D) gate embedding


def default_intra_op_threads() -> int:
    """One thread per core: on the 2-core line PC that is 2 (see `session_options`)."""
    return max(1, os.cpu_count() or 1)


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """ONNX Runtime's settings for a 2-core line PC that also runs the event loop, image
    decoding and the database.

    - ``intra_op_num_threads`` = the cores (2 there; `intra_op_threads` overrides): one
      batch's convolutions split over both cores, which is where the throughput is. On this
      2-core machine, loaded ~9 by other work (best of six 1-s rounds, default weights, model
      only): batch 16 ran 248 images/s with 2 threads against 126 with 1; batch 1, 270
      against 288, so a single part loses nothing to the second thread.
    - ``session.intra_op.allow_spinning = 0``: ONNX Runtime's workers otherwise spin after
      each operator waiting for the next, as OpenMP's default does (``models/__init__.py``
      measured that for torch: 25 img/s spinning against 218 passive at load ~2.5); a
      spinning worker takes the core the event loop and the decoder need. Without spinning
      the second thread sleeps when there is nothing to split, so the event loop keeps it.
    - ``inter_op_num_threads = 1`` and sequential execution: the graph is a chain of
      convolutions with nothing to run side by side, and a parallel executor's extra pool
      would only add threads competing for the same two cores.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or default_intra_op_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initialisers are not the operator's
    return options


class OnnxPredictor:
    """A checkpoint's network as an ONNX graph in an ONNX Runtime session: the same
    `version`, `class_names`, `input_size`, `temperature`, `metrics`, `preprocess`,
    `predict` and `predict_with_embeddings` as `models.predictor.Predictor`.

    `InferenceSession.run` is safe to call from several threads (each version's micro-batcher
    is one thread anyway), so no lock; the heatmap path takes the torch predictor's.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        torch_predictor: Predictor,
        onnx_model: bytes,
        *,
        intra_op_threads: int | None = None,
    ) -> None:
        self._torch = torch_predictor
        self._session = ort.InferenceSession(
            onnx_model, session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )
        outputs = tuple(o.name for o in self._session.get_outputs())
        if outputs != OUTPUT_NAMES:
            raise ValueError(f"the ONNX graph's outputs are {outputs}, expected {OUTPUT_NAMES}")
        self.version: str = torch_predictor.version
        self.class_names: tuple[str, ...] = torch_predictor.class_names
        self.input_size: int = torch_predictor.input_size
        self.temperature: float = torch_predictor.temperature
        self.metrics: dict = torch_predictor.metrics

    @property
    def checkpoint(self) -> LoadedCheckpoint:
        return self._torch.checkpoint

    @property
    def torch_predictor(self) -> Predictor:
        """The torch predictor beside the graph (heatmaps; the parity check's reference)."""
        return self._torch

    @property
    def embedding_size(self) -> int:
        return self._torch.embedding_size

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Exactly `Predictor.preprocess` (it is that method)."""
        return self._torch.preprocess(images)

    @property
    def preprocessing(self) -> Preprocessing:
        return self._torch.preprocessing

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Exactly `Predictor.prepare`: one image's (3, S, S) float32 input."""
        return self._torch.prepare(image)

    def predict_prepared(self, x: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
        """As `Predictor.predict_prepared`: the stacked inputs are the graph's feed as they are
        (NCHW float32), so the model's thread spends nothing on preprocessing."""
        if len(x) == 0:
            return [], np.zeros((0, self.embedding_size), dtype=np.float32)
        feed = np.ascontiguousarray(x, dtype=np.float32)  # a no-op for `prepare`'s arrays
        logits, embedding = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: feed})
        probabilities = calibrated_probabilities(logits, self.temperature)
        predictions = self._torch.predictions(probabilities, [None] * len(x))
        return predictions, embedding.astype(np.float32, copy=False)

    def _run(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) -> ((B, C) logits, (B, D) embedding), float32."""
        # preprocess hands channels-last strides (torch's fast layout); the graph takes NCHW
        feed = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        logits, embedding = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: feed})
        return logits, embedding

    def predict_tensor(self, x: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) preprocessed -> (B, C) calibrated probabilities, as the torch one."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, S, S), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return np.zeros((0, len(self.class_names)))
        return calibrated_probabilities(self._run(x)[0], self.temperature)

    def predict(self, images: Sequence[np.ndarray], *, heatmap: bool = False) -> list[Prediction]:
        return self.predict_with_embeddings(images, heatmap=heatmap)[0]

    def predict_with_embeddings(
        self, images: Sequence[np.ndarray], *, heatmap: bool = False
    ) -> tuple[list[Prediction], np.ndarray]:
        """As `Predictor.predict_with_embeddings`. With `heatmap`, the whole answer is the
        torch predictor's (its probabilities are within the parity bound of this graph's)."""
        if heatmap:
            return self._torch.predict_with_embeddings(images, heatmap=True)
        if len(images) == 0:
            return [], np.zeros((0, self.embedding_size), dtype=np.float32)
        logits, embedding = self._run(self.preprocess(images))
        probabilities = calibrated_probabilities(logits, self.temperature)
        predictions = self._torch.predictions(probabilities, [None] * len(images))
        return predictions, embedding.astype(np.float32, copy=False)

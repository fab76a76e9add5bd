"""The model as the service uses it: load once, predict batches of decoded images.

Input is what OpenCV decoders return (BGR uint8, any size, gray and BGRA accepted);
output is `inspect_app.domain.Prediction` with calibrated probabilities, the model
version, and a heatmap at the image's own size when asked for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from inspect_app.domain import CLASS_NAMES, Prediction
from models import DEFAULT_WEIGHTS
from models.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from models.defect_cnn import EmbeddingCatcher
from models.heatmap import logits_and_heatmaps, resize_heatmap
from models.preprocess import Preprocessing, model_input, normalize, stack_uint8

log = logging.getLogger(__name__)


class Predictor:
    """A loaded checkpoint, ready for concurrent `predict` calls from worker threads.

    One lock serialises model calls: forward passes gain nothing from running side by side
    on a few cores (torch already uses them all inside one call), and the heatmap hooks the
    model, which must not happen while another thread runs it.
    """

    runtime = "torch"  # what serves the forward pass (OnnxPredictor: "onnxruntime")

    def __init__(self, checkpoint: LoadedCheckpoint) -> None:
        if checkpoint.class_names != CLASS_NAMES:
            raise CheckpointError(
                f"checkpoint classes {list(checkpoint.class_names)} "
                f"are not the app's {list(CLASS_NAMES)}"
            )
        self._checkpoint = checkpoint
        self._model = checkpoint.model.eval()
        for p in self._model.parameters():
            p.requires_grad_(False)  # the heatmap needs gradients of activations only
        self._lock = threading.Lock()
        self.version: str = checkpoint.version
        self.class_names: tuple[str, ...] = checkpoint.class_names
        self.input_size: int = checkpoint.preprocessing.input_size
        self.temperature: float = checkpoint.temperature
        self.metrics: dict = checkpoint.metrics

    @property
    def checkpoint(self) -> LoadedCheckpoint:
        """The checkpoint this predictor serves (the ONNX export reads its network)."""
        return self._checkpoint

    @property
    def embedding_size(self) -> int:
        return self._model.embedding_size

    @classmethod
    def from_checkpoint(cls, path: Path | None = None) -> Predictor:
        """Load `path`, or the bundled default weights when None. Raises CheckpointError."""
        path = Path(path) if path is not None else DEFAULT_WEIGHTS
        predictor = cls(load_checkpoint(path))
        log.info("predictor ready: %s from %s", predictor.version, path)
        return predictor

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Decoded BGR uint8 images of any size -> (B, 3, S, S) normalised float32."""
        x = stack_uint8(images, self.input_size)  # (B, 3, S, S) uint8 RGB
        # channels-last already (see stack_uint8); contiguous() is a no-op then
        return normalize(x, self._checkpoint.preprocessing).contiguous(
            memory_format=torch.channels_last
        )

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image becomes this version's input (versions that share it share inputs)."""
        return self._checkpoint.preprocessing

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One decoded BGR image -> its (3, S, S) float32 input (`models.preprocess.model_input`),
        for `predict_prepared`: the service prepares images where it decodes them."""
        return model_input(image, self._checkpoint.preprocessing)

    def predict_prepared(self, x: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
        """`predict_with_embeddings` (no heatmap) of (B, 3, S, S) float32 inputs that `prepare`
        made: the same predictions and (B, D) embeddings as from the images themselves."""
        if len(x) == 0:
            return [], np.zeros((0, self.embedding_size), dtype=np.float32)
        # channels-last is the layout the network runs fastest on (as `preprocess` hands it)
        tensor = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode():
            logits, embeddings = self._model.forward_with_embedding(tensor)  # (B, C), (B, D)
        predictions = self.predictions(self._probabilities(logits), [None] * len(x))
        return predictions, embeddings.numpy().astype(np.float32, copy=False)

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return calibrated_probabilities(logits, self.temperature)

    def predict_tensor(self, x: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) preprocessed -> (B, C) calibrated probabilities (float64, rows sum to 1)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, S, S), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            return np.zeros((0, len(self.class_names)))
        with self._lock, torch.inference_mode():
            logits = self._model(x)  # (B, C)
        return self._probabilities(logits)

    def predict(self, images: Sequence[np.ndarray], *, heatmap: bool = False) -> list[Prediction]:
        """Calibrated predictions for decoded images, in order; heatmaps at each image's size."""
        return self.predict_with_embeddings(images, heatmap=heatmap)[0]

    def predict_with_embeddings(
        self, images: Sequence[np.ndarray], *, heatmap: bool = False
    ) -> tuple[list[Prediction], np.ndarray]:
        """`predict`, plus each image's gate embedding from the same forward pass: (B, D)
        float32 (`models.defect_cnn.gate_embedding`), which the image gate compares with the
        version's reference profile (``models/profile.py``)."""
        if len(images) == 0:
            return [], np.zeros((0, self.embedding_size), dtype=np.float32)
        x = self.preprocess(images)
        if heatmap:
            # the heatmap's own forward pass yields the embedding too (caught by hooks,
            # inside the lock so that no other thread's pass meets them)
            with self._lock, EmbeddingCatcher(self._model) as catcher:
                logits, maps = logits_and_heatmaps(self._model, x, self.class_names)
            embeddings = catcher.embedding
            heats: list[np.ndarray | None] = [
                resize_heatmap(m, im.shape[0], im.shape[1])
                for m, im in zip(maps, images, strict=True)
            ]
        else:
            with self._lock, torch.inference_mode():
                logits, embeddings = self._model.forward_with_embedding(x)  # (B, C), (B, D)
            heats = [None] * len(images)
        predictions = self.predictions(self._probabilities(logits), heats)
        return predictions, embeddings.numpy().astype(np.float32, copy=False)

    def predictions(
        self, probabilities: np.ndarray, heatmaps: Sequence[np.ndarray | None]
    ) -> list[Prediction]:
        """(B, C) calibrated probabilities -> the service's predictions of this version
        (shared with `models.onnx_predictor.OnnxPredictor`, so both runtimes answer alike)."""
        return [
            Prediction(
                probabilities={c: float(p) for c, p in zip(self.class_names, row, strict=True)},
                model_version=self.version,
                heatmap=h,
            )
            for row, h in zip(probabilities, heatmaps, strict=True)
        ]


def calibrated_probabilities(logits: torch.Tensor | np.ndarray, temperature: float) -> np.ndarray:
    """(B, C) logits -> (B, C) calibrated probabilities, softmax(logits / T) in float64 (rows
    sum to 1): the one place either runtime's logits become probabilities."""
    logits = torch.as_tensor(logits)
    return torch.softmax(logits.double() / temperature, dim=1).numpy()  # (B, C)

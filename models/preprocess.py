"""Turning decoded camera images into the model's input, the same way in training and serving.

One module so the two can never drift apart: `train.py` and `predictor.py` both call
`resize_to_input` and `normalize`. The parameters travel inside the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a tensor; stored in every checkpoint.

    Images are resized (stretched, no crop) to a square `input_size` so that a defect near
    the border is never cut off, converted BGR -> RGB, scaled to [0, 1] and normalised with
    the per-channel `mean`/`std` measured on the training images.
    """

    input_size: int
    mean: tuple[float, float, float]  # RGB, in [0, 1] units
    std: tuple[float, float, float]  # RGB, in [0, 1] units

    def __post_init__(self) -> None:
        if self.input_size < 16:
            raise ValueError(f"input_size must be at least 16, got {self.input_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f"std must be finite and positive, got {self.std}")

    def to_dict(self) -> dict[str, object]:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Preprocessing:
        mean = d["mean"]
        std = d["std"]
        return cls(
            input_size=int(d["input_size"]),  # type: ignore[call-overload]
            mean=tuple(float(v) for v in mean),  # type: ignore[attr-defined,arg-type]
            std=tuple(float(v) for v in std),  # type: ignore[attr-defined,arg-type]
        )


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept what OpenCV decoders return (gray, BGR, BGRA) as 3-channel uint8 BGR."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")


def resize_to_input(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) BGR uint8 of any size -> (size, size, 3) RGB uint8.

    INTER_AREA when shrinking keeps a faint 1-px scratch as a fainter line instead of
    dropping it between samples; INTER_LINEAR when enlarging.
    """
    image = as_bgr(image_bgr)
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("empty image")
    if (h, w) != (size, size):
        shrinking = h * w > size * size
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def stack_uint8(images_bgr: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Decoded BGR images -> (B, 3, size, size) uint8 RGB tensor (not yet normalised)."""
    if len(images_bgr) == 0:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    rgb = np.stack([resize_to_input(im, size) for im in images_bgr])  # (B, S, S, 3)
    # a view with channels-last strides, the layout the network runs fastest on: no copy
    return torch.from_numpy(rgb).permute(0, 3, 1, 2)  # (B, 3, S, S)


def model_input(image_bgr: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """One decoded BGR image -> its (3, S, S) float32 network input, normalised and
    C-contiguous, so that a batch is one `np.stack` (NCHW, what an ONNX graph takes).

    The same numbers as `normalize(stack_uint8(...))` (the same float32 operations in the same
    order), computed per image where the image is decoded: the service prepares each image in
    the request's worker thread, beside its decoding, and the model's thread only runs the
    network on the stacked batch.
    """
    rgb = resize_to_input(image_bgr, prep.input_size)  # (S, S, 3) uint8
    mean = np.asarray(prep.mean, dtype=np.float32) * np.float32(255.0)
    std = np.asarray(prep.std, dtype=np.float32) * np.float32(255.0)
    x = np.empty((3, prep.input_size, prep.input_size), dtype=np.float32)  # (3, S, S)
    for c in range(3):
        np.subtract(rgb[:, :, c], mean[c], out=x[c], dtype=np.float32)
        x[c] /= std[c]
    return x


def normalize(x_uint8: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """(B, 3, S, S) uint8 or float in [0, 255] -> (B, 3, S, S) float32 normalised, in the
    input's memory layout."""
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    x = x_uint8.to(torch.float32, copy=True)  # never modify the caller's tensor in place
    return x.sub_(mean).div_(std)


def channel_stats(
    x_uint8: torch.Tensor, chunk: int = 256
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units of a (N, 3, S, S) uint8 tensor.

    Summed in chunks so a few thousand 256x256 images never need a float64 copy at once.
    """
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, x_uint8.shape[0], chunk):
        x = x_uint8[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if count == 0:
        raise ValueError("no images to measure")
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-6).sqrt().clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)

"""Where the model looks: a defect heatmap, as an array and as an overlay.

Two maps, multiplied (geometric mean) and scaled to [0, 1]:

- the locator's map (`DefectCNN.locator`, trained on the generator's defect boxes):
  "a defect of class k is in this 16-px cell", the most reliable *where*, but coarse;
- Layer-CAM (Jiang et al., 2021; Grad-CAM weighting each activation by its own positive
  gradient, which stays sharp on early layers) of the class logit on the stride-8 block:
  it places a 3-px pit within its 16-px cell.

The class explained is the most likely defect class: for a defect prediction that is the
predicted class; for an `ok` prediction it shows what the model would call a defect, which
is what an inspector double-checking an "ok" wants to see.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inspect_app.domain import CLASS_NAMES, DefectClass
from models.defect_cnn import DefectCNN, cam_layers


def _defect_indices(class_names: Sequence[str]) -> list[int]:
    idx = [i for i, c in enumerate(class_names) if c != DefectClass.OK]
    if not idx:
        raise ValueError("no defect class to explain")
    return idx


def _unit(m: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) non-negative -> each map divided by its peak; an all-zero map becomes all
    ones, so a layer with no evidence anywhere does not veto the others."""
    peak = m.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, m / peak.clamp_min(1e-12), torch.ones_like(m))


def logits_and_heatmaps(
    model: DefectCNN, x: torch.Tensor, class_names: Sequence[str] = CLASS_NAMES
) -> tuple[torch.Tensor, np.ndarray]:
    """(B, 3, S, S) normalised input -> ((B, C) logits, (B, S, S) float32 maps in [0, 1]).

    One forward and one backward pass; the model must be in eval mode (batch norm then
    treats every image on its own, so one backward of the summed scores gives each image
    its own gradients). Not thread-safe: it hooks the model; callers hold a lock.
    """
    if x.ndim != 4:
        raise ValueError(f"expected (B, 3, S, S), got {tuple(x.shape)}")
    activations: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: activations.append(out))
        for layer in cam_layers(model)
    ]
    defect_idx = torch.tensor(_defect_indices(class_names))
    try:
        with torch.enable_grad():
            # the input asks for gradients so activations get them even with frozen weights
            logits, cells = model.forward_with_map(x.detach().requires_grad_(True))
            channel = logits[:, defect_idx].argmax(dim=1)  # (B,) most likely defect
            target = defect_idx[channel]  # (B,) its class index
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, activations)
    finally:
        for h in hooks:
            h.remove()

    size = x.shape[-2:]
    where = torch.sigmoid(cells.detach()[torch.arange(x.shape[0]), channel])[:, None]  # (B,1,h,w)
    maps = [_unit(F.interpolate(where, size=size, mode="bilinear", align_corners=False))]
    for act, grad in zip(activations, grads, strict=True):
        cam = F.relu((F.relu(grad) * act).sum(dim=1, keepdim=True)).detach()  # (B, 1, h, w)
        maps.append(_unit(F.interpolate(cam, size=size, mode="bilinear", align_corners=False)))
    combined = torch.ones_like(maps[0])
    for m in maps:
        combined = combined * m
    # geometric mean: the same peak as the product, but a map that still reads as a region
    combined = combined[:, 0] ** (1.0 / len(maps))  # (B, S, S)
    peak = combined.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    heat = (combined / peak).clamp(0.0, 1.0).numpy().astype(np.float32)
    return logits.detach(), heat


def heatmap(
    model: DefectCNN, x: torch.Tensor, class_names: Sequence[str] = CLASS_NAMES
) -> np.ndarray:
    """One image, (3, S, S) or (1, 3, S, S) normalised -> (S, S) float32 map in [0, 1]."""
    if x.ndim == 3:
        x = x[None]
    if x.shape[0] != 1:
        raise ValueError("heatmap() explains one image; use logits_and_heatmaps for a batch")
    return logits_and_heatmaps(model, x, class_names)[1][0]


def resize_heatmap(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) map -> (height, width) float32 in [0, 1], to lie over the original image."""
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def overlay(image_bgr: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heatmap blended over it as a JET colormap (BGR uint8, image size).

    Blending is weighted by the heat itself, so cold regions keep the photo's own pixels
    and the inspector still sees the part there.
    """
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(
            f"expected a BGR uint8 image (H, W, 3), got {image_bgr.dtype} {image_bgr.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    h, w = image_bgr.shape[:2]
    heat = resize_heatmap(np.asarray(heat, dtype=np.float32), h, w)
    colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (alpha * heat)[..., None]  # (H, W, 1)
    blended = image_bgr.astype(np.float32) * (1 - weight) + colored.astype(np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)

"""Training the defect CNN from scratch: data -> weights -> calibration -> checkpoint + card.

The whole dataset is decoded once into a uint8 tensor in memory (8,000 images at
256x256 are 1.6 GB) and augmented in batches on tensors, so the 2 CPU cores spend their
time on the network, not on PNG decoding.

Three disjoint, class-stratified splits of the data: `train` (weights), `val` (early
stopping and the model card's figures) and `calib` (the temperature only). The
temperature never sees an image the weights were fitted to, and the card's figures never
see an image the temperature was fitted to. The calibration split also gives the version its
reference profile (``models/profile.py``), written beside the checkpoint by `train_model`
or, later and without retraining, by `profile_checkpoint` (``inspect-app profile``).

Fine-tuning (``TrainConfig.init_from``) starts from a checkpoint's weights, architecture and
input normalisation, so its outputs stay comparable with its parent's. Several data folders
train together (``TrainConfig.sources``), each with a weight in the loss and, optionally, a
manifest column that orders its images in time: such a folder's validation and calibration
splits are its most recent images (validation the newest), so the figures measure the
future rather than the past the weights were fitted to. Nothing here knows where a folder
came from; the caller says which one is ordered and how much it weighs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from inspect_app.domain import CLASS_NAMES, DefectClass
from models.calibrate import calibrated_probabilities, fit_temperature, negative_log_likelihood
from models.checkpoint import load_checkpoint, save_checkpoint
from models.defect_cnn import INPUT_SIZE, DefectCNNConfig, build_model
from models.evaluate import EvaluationReport, evaluate_probabilities, write_model_card
from models.preprocess import Preprocessing, channel_stats, normalize, resize_to_input
from models.profile import ReferenceProfile, compute_profile, min_profile_images, write_profile

if TYPE_CHECKING:
    from data.dataset import LabeledImage

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1, pixels, inclusive-exclusive
LOCATOR_POS_WEIGHT = 20.0
# The service's input metrics of one decoded BGR image (``input_stats(image).metrics()``),
# handed in by the caller because ``models`` does not import the service.
InputMetrics = Callable[[np.ndarray], Mapping[str, float]]


@dataclass(frozen=True)
class DataSource:
    """One data folder of a training run beyond `TrainConfig.data` (or describing it)."""

    path: Path
    weight: float = 1.0  # each image's weight in the class loss, relative to 1
    # a manifest column of ISO 8601 times (or numbers) ordering the images: with it the
    # folder's validation and calibration splits are its latest images, not a random draw
    order_by: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"{self.path}: the weight must be a positive number")


@dataclass
class TrainConfig:
    """One training run. The defaults are what `make weights` uses."""

    data: Path
    out: Path
    # 12 crop epochs + 4 full-image epochs of 6,400 images: ~23 min on 2 lightly shared cores
    epochs: int = 16  # the most epochs; early stopping may end sooner
    seed: int = 0  # splits, initialisation, augmentation and batch order
    batch_size: int = 32  # fits batch norm; larger batches are no faster on 2 cores
    lr: float = 3e-3  # peak of the one-cycle schedule (AdamW)
    weight_decay: float = 0.02
    patience: int = 6  # epochs without a better validation loss before stopping
    val_fraction: float = 0.1
    calib_fraction: float = 0.1
    augment: bool = True
    # Most epochs train on `crop_size` windows round the defects (4x cheaper than full
    # images, and the defect is a larger share of what the network sees, so it learns where
    # to look in a few hundred steps instead of thousands); the last `full_epochs` train on
    # whole images, which is what the line sends. Crops need every defect image's boxes.
    crop_size: int = 128
    # the first full-image epoch lifted validation accuracy from 0.77 to 0.92: the network
    # must also learn what a whole phone looks like when nothing is wrong with it
    full_epochs: int = 4
    locator_weight: float = 1.0  # the box-supervised locator's loss, relative to the class loss
    bn_images: int = 640  # training images that re-measure batch-norm statistics each epoch
    width_mult: float = DefectCNNConfig.width_mult
    input_size: int = INPUT_SIZE
    data_seed: int | None = None  # the generator seed of `data`, recorded in the checkpoint
    # torch threads; None keeps torch's default (one per core). On a shared machine 1 can be
    # faster than 2: a thread that waits for a descheduled sibling wastes its core.
    threads: int | None = None
    # fine-tune from this checkpoint: its weights, architecture (width_mult), input size
    # and normalisation replace the ones above
    init_from: Path | None = None
    # more data folders trained together with `data` (which weighs 1, stratified splits)
    sources: tuple[DataSource, ...] = ()
    # with `sources`: re-weight each class so that the weighted class mix of the training split
    # is `data`'s own (`prior_preserving_weights`). A plant's labels are ~96% ok; weighted 3
    # they made the weighted mix 75% ok against the parent's 40%, which moved every P(ok) up
    # (1.5 nats of log-odds) and let more defects pass on normal parts. A source's weight
    # still says how much one of its images counts against a base image of the same class.
    keep_prior: bool = True
    # with `init_from`: the parent's answers on the base images (`data` and the sources not
    # ordered in time) as a second target, this
    # much against the class loss (KL divergence at `distill_temperature`), so that a
    # fine-tune on new conditions does not forget what the parent got right on the old ones.
    # 0 turns it off; it costs one forward pass of the parent per batch.
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    # with `sources`: rehearsal. Every batch holds this share of base images (`data` and the
    # sources not ordered in time), the rest from the other sources, each stream cycling
    # through its own shuffled training images; None draws batches from all training images
    # alike (the base share of a batch then varies with the draw, ~65% in the scenario). The
    # share sets how often each kind is seen; a source's weight still multiplies its images'
    # loss within the batch, and `keep_prior` is computed at the new sampling rates.
    base_share: float | None = None
    # written into the checkpoint's metrics and card as they are (e.g. the parent version
    # and the data's lineage, which the caller knows and this module does not)
    notes: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.out = Path(self.out)
        self.init_from = None if self.init_from is None else Path(self.init_from)
        self.sources = tuple(
            s if isinstance(s, DataSource) else DataSource(Path(s)) for s in self.sources
        )
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (batch norm)")
        if not (self.distill_weight >= 0 and math.isfinite(self.distill_weight)):
            raise ValueError("distill_weight must be a number at or above 0")
        if not self.distill_temperature > 0:
            raise ValueError("distill_temperature must be positive")
        if self.base_share is not None and not 0 < self.base_share < 1:
            raise ValueError("base_share must be within (0, 1), or None")
        if not (0 < self.val_fraction < 0.5 and 0 < self.calib_fraction < 0.5):
            raise ValueError("val_fraction and calib_fraction must be within (0, 0.5)")


@dataclass
class TrainResult:
    checkpoint: Path
    model_card: Path
    version: str
    temperature: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    report: EvaluationReport | None = None  # calibrated, on the validation split
    calib_indices: np.ndarray | None = None  # the calibration split, as indices into the data
    profile: Path | None = None  # the reference profile beside the checkpoint, when written


# -- data -------------------------------------------------------------------------------------


def load_images(
    paths: Sequence[Path], size: int, *, progress: bool = False
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Decode images into one (N, 3, size, size) uint8 RGB tensor, plus each file's own
    (height, width) for scaling its boxes. An unreadable file is an error here: training
    data are expected to be clean."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    sizes = []
    for i, path in enumerate(tqdm(paths, desc="load", unit="img", disable=not progress)):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read training image {path}")
        sizes.append((image.shape[0], image.shape[1]))
        out[i] = torch.from_numpy(resize_to_input(image, size)).permute(2, 0, 1)
    return out, sizes


def scale_boxes(boxes: Sequence[Box], height: int, width: int, size: int) -> list[Box]:
    """Boxes in a (height, width) image -> boxes in its (size, size) resized version."""
    sx, sy = size / width, size / height
    return [
        (int(x0 * sx), int(y0 * sy), max(int(x0 * sx) + 1, math.ceil(x1 * sx)),
         max(int(y0 * sy) + 1, math.ceil(y1 * sy)))
        for x0, y0, x1, y1 in boxes
    ]  # fmt: skip


def box_masks(boxes: Sequence[Sequence[Box]], size: int) -> torch.Tensor:
    """Per image, 1 inside its defect boxes, 0 elsewhere: (B, 1, size, size) float32."""
    mask = torch.zeros((len(boxes), 1, size, size))
    for i, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes:
            mask[i, 0, max(y0, 0) : y1, max(x0, 0) : x1] = 1.0
    return mask


def training_splits(
    labels: np.ndarray, *, seed: int, val_fraction: float, calib_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, calib) indices as `fit` draws them; ``inspect-app profile`` calls this
    too, so that it re-derives exactly the calibration images training used."""
    train, val, calib = stratified_split(labels, [val_fraction, calib_fraction], seed)
    return train, val, calib


def time_split(
    times: np.ndarray, *, val_fraction: float, calib_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, calib) indices by time: validation the newest `val_fraction`, calibration
    the `calib_fraction` just before it, training the rest (the oldest). Every training time
    is at or before every calibration time, and those at or before every validation time;
    ties are broken by index, so the split is deterministic. Sorted indices."""
    times = np.asarray(times)
    n = len(times)
    order = np.argsort(times, kind="stable")
    n_val = max(1, round(val_fraction * n)) if n >= 3 else 0
    n_calib = max(1, round(calib_fraction * n)) if n >= 3 else 0
    n_train = n - n_val - n_calib
    train, calib, val = (
        order[:n_train],
        order[n_train : n_train + n_calib],
        order[n_train + n_calib :],
    )
    return tuple(np.sort(s).astype(np.int64) for s in (train, val, calib))  # type: ignore[return-value]


def prior_preserving_weights(
    labels: np.ndarray, weights: np.ndarray, train: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """`weights` scaled per class so that the weighted class mix of `train` equals the
    (unweighted) class mix of `reference` (a subset of `train`: the base data's images).

    Within a class every image keeps its weight relative to the others, so a source's weight
    still means "one of these counts w base images of its class"; only the classes' totals
    move. A class the reference lacks keeps its weights. Returns a new (N,) float32 array.
    """
    labels, out = np.asarray(labels), np.asarray(weights, dtype=np.float64).copy()
    train, reference = np.asarray(train, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    classes = np.unique(labels[train])
    ref_share = {c: float((labels[reference] == c).mean()) if len(reference) else 0.0
                 for c in classes}  # fmt: skip
    total = out[train].sum()
    kept = [c for c in classes if ref_share[c] > 0]
    # the weight left for the reference's classes once the others keep theirs
    free = total - sum(out[train][labels[train] == c].sum() for c in classes if c not in kept)
    for c in kept:
        members = train[labels[train] == c]
        out[members] *= ref_share[c] * free / out[members].sum()
    return out.astype(np.float32)


def rehearsal_batch_size(batch_size: int, share: float) -> int:
    """Base images per batch at `share`: at least one of each kind in every batch."""
    return min(max(round(share * batch_size), 1), batch_size - 1)


def rehearsal_rates(
    is_base: np.ndarray, train: np.ndarray, batch_size: int, share: float
) -> np.ndarray:
    """(N,) how often each image is drawn per training image an epoch's batches hold, under
    rehearsal at `share`, relative to drawing all training images alike (1.0): base images
    `k / B` of every batch against their `n_base / n` of the training split, the others the
    rest. `keep_prior` weighs the classes at these rates: what the loss sees is weight x rate."""
    is_base, train = np.asarray(is_base, dtype=bool), np.asarray(train, dtype=np.int64)
    n, n_base = len(train), int(is_base[train].sum())
    if n_base == 0 or n_base == n:
        raise ValueError("rehearsal needs base images and other images in training")
    k = rehearsal_batch_size(batch_size, share)
    rates = np.ones(len(is_base))
    rates[is_base] = (k / batch_size) / (n_base / n)
    rates[~is_base] = ((batch_size - k) / batch_size) / ((n - n_base) / n)
    return rates


def rehearsal_order(
    train: np.ndarray,
    is_base: np.ndarray,
    *,
    batch_size: int,
    share: float,
    steps: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """`steps` batches of `batch_size` training indices, each `rehearsal_batch_size` of them
    base images and the rest the others; each kind cycles through its own shuffled images
    (a fresh shuffle each time it runs out), so every image comes round before any repeats."""
    train = torch.as_tensor(np.asarray(train, dtype=np.int64))
    base_mask = torch.as_tensor(np.asarray(is_base, dtype=bool))[train]
    pools = [train[base_mask], train[~base_mask]]
    if any(len(p) == 0 for p in pools):
        raise ValueError("rehearsal needs base images and other images in training")
    k = rehearsal_batch_size(batch_size, share)
    wanted = [k * steps, (batch_size - k) * steps]
    streams = []
    for pool, n in zip(pools, wanted, strict=True):
        rounds = [pool[torch.randperm(len(pool), generator=generator)]
                  for _ in range(math.ceil(n / len(pool)))]  # fmt: skip
        streams.append(torch.cat(rounds)[:n])
    return [
        torch.cat([streams[0][i * k : (i + 1) * k],
                   streams[1][i * (batch_size - k) : (i + 1) * (batch_size - k)]])
        for i in range(steps)
    ]  # fmt: skip


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Indices of disjoint splits, each holding `fraction` of every class (the rest is the
    first split, for training). Sorted indices, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    splits: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        sizes = [max(1, round(f * len(idx))) if len(idx) > len(fractions) else 0 for f in fractions]
        for k, n in enumerate(sizes, start=1):
            splits[k].extend(idx[start : start + n].tolist())
            start += n
        splits[0].extend(idx[start:].tolist())
    return [np.array(sorted(s), dtype=np.int64) for s in splits]


# -- augmentation ----------------------------------------------------------------------------


class Augmenter:
    """Varies a batch the way a line camera varies, cheaply enough not to slow training.

    Keeps every defect in the picture and visible: flips, a small affine on a third of the
    batch (±6°, ±5 px, ±5 % scale; the generator leaves a margin round the part, so it
    never leaves the frame), lighting gain/offset, contrast and colour-temperature jitter,
    and sensor noise. No cutout, no blur: either can erase a 3-px pit and teach the model
    that a labeled defect may be invisible (crops, which `defect_crops` places round the
    defect, are the training loop's business). The other two thirds keep their
    pixels unresampled, so the model also sees 1-px scratches as the camera drew them.

    Noise comes from a bank of pre-drawn fields (drawing 6 M normals per batch cost as much
    as the network's step on 2 cores); flips after the noise multiply the bank by four.
    """

    def __init__(self, size: int, generator: torch.Generator, bank: int = 32) -> None:
        self.generator = generator
        self.noise = torch.randn((bank, 3, size, size), generator=generator)  # (K, 3, S, S)

    def _u(self, *shape: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=self.generator)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) float32 in [0, 255] and its (B, 1, S, S) defect mask -> both
        augmented alike (the image in place); the mask follows every geometric change."""
        b, _, s, _ = x.shape
        u = self._u

        # lighting: one multiply-add per pixel for contrast (about the image mean), lamp gain,
        # colour temperature and offset together
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        contrast = 1.0 + 0.15 * u(b, 1, 1, 1)
        gain = (1.0 + 0.15 * u(b, 1, 1, 1)) * (1.0 + 0.04 * u(b, 3, 1, 1))  # (B, 3, 1, 1)
        scale = contrast * gain
        shift = mean * (1.0 - contrast) * gain + 12.0 * u(b, 1, 1, 1)
        x.mul_(scale).add_(shift)

        pick = torch.randint(0, self.noise.shape[0], (b,), generator=self.generator)
        std = u(b, 1, 1, 1, lo=0.0, hi=3.0)  # grey levels
        x.add_(self.noise[pick, :, : x.shape[2], : x.shape[3]] * std)

        flip_h = torch.rand(b, generator=self.generator) < 0.5
        flip_v = torch.rand(b, generator=self.generator) < 0.5
        if flip_h.any():
            x[flip_h] = x[flip_h].flip(3)
            mask[flip_h] = mask[flip_h].flip(3)
        if flip_v.any():
            x[flip_v] = x[flip_v].flip(2)
            mask[flip_v] = mask[flip_v].flip(2)

        warp = torch.rand(b, generator=self.generator) < 1 / 3
        n = int(warp.sum())
        if n:
            angle = u(n) * math.radians(6)
            zoom = 1.0 + 0.05 * u(n)
            move = u(n, 2) * (5.0 * 2 / s)  # pixels -> normalised coordinates
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack(
                [torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)],
                1,
            )  # (n, 2, 3)
            grid = F.affine_grid(theta, [n, 3, s, s], align_corners=False)
            x[warp] = F.grid_sample(
                x[warp], grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
            mask[warp] = F.grid_sample(
                mask[warp], grid, mode="nearest", padding_mode="zeros", align_corners=False
            )
        return x.clamp_(0.0, 255.0), mask


# -- training --------------------------------------------------------------------------------


def predict_logits(
    model: nn.Module, images: torch.Tensor, prep: Preprocessing, batch_size: int = 64
) -> torch.Tensor:
    """(N, 3, S, S) uint8 -> (N, C) logits, in eval mode, batch by batch."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            xb = normalize(images[start : start + batch_size], prep)
            out.append(model(xb.contiguous(memory_format=torch.channels_last)))
    return torch.cat(out) if out else torch.empty((0, len(CLASS_NAMES)))


def defect_crops(
    labels: Sequence[int],
    boxes: Sequence[Sequence[Box]],
    size: int,
    crop: int,
    ok_index: int,
    generator: torch.Generator,
) -> list[tuple[int, int]]:
    """(top, left) of a `crop`-pixel window per image that keeps the label true.

    An ok image: anywhere. A defect image: round one of its boxes, chosen at random, with the
    whole box inside where it fits and at least its central half where it does not (a long
    crack cut at its tips is still a crack). Callers only crop images whose boxes are known.
    """
    span = size - crop

    def rand_in(lo: float, hi: float) -> int:
        lo, hi = max(0, math.floor(lo)), min(span, math.ceil(hi))
        if hi <= lo:
            return min(max(lo, 0), span)
        return lo + int(torch.randint(0, hi - lo + 1, (1,), generator=generator))

    origins = []
    for label, image_boxes in zip(labels, boxes, strict=True):
        if label == ok_index or not image_boxes:
            origins.append((rand_in(0, span), rand_in(0, span)))
            continue
        pick = int(torch.randint(0, len(image_boxes), (1,), generator=generator))
        x0, y0, x1, y1 = image_boxes[pick]

        def axis(a0: int, a1: int) -> int:
            if a1 - a0 <= crop:  # the whole box fits
                return rand_in(a1 - crop, a0)
            centre, quarter = (a0 + a1) / 2, (a1 - a0) / 4
            return rand_in(centre + quarter - crop, centre - quarter)

        origins.append((axis(y0, y1), axis(x0, x1)))
    return origins


def _crop_batch(
    xb: torch.Tensor,
    mask: torch.Tensor,
    batch: torch.Tensor,
    labels: np.ndarray,
    boxes: Sequence[Sequence[Box]],
    config: TrainConfig,
    ok_index: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's images and masks cut to `config.crop_size` windows by `defect_crops`."""
    c = config.crop_size
    index = batch.tolist()
    at = defect_crops(
        labels[index].tolist(), [boxes[i] for i in index], config.input_size, c, ok_index, generator
    )
    xs = torch.stack([xb[k, :, top : top + c, left : left + c] for k, (top, left) in enumerate(at)])
    ms = torch.stack(
        [mask[k, :, top : top + c, left : left + c] for k, (top, left) in enumerate(at)]
    )
    return xs, ms


def locator_loss(
    cell_logits: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    located: torch.Tensor,
    ok_index: int,
) -> torch.Tensor:
    """Binary cross-entropy of "cell shows a defect of class k" against the box masks.

    `cell_logits` (B, K, h, w) for the K defect classes in order; `mask` (B, 1, S, S). A
    cell is positive for the image's own class if any box pixel falls in it. Positives are
    weighted up (a pit is 1-4 of 256 cells), and images whose defect place is unknown
    (`located` False) do not count.
    """
    h, w = cell_logits.shape[-2:]
    cells = F.adaptive_max_pool2d(mask, (h, w))  # (B, 1, h, w)
    target = torch.zeros_like(cell_logits)
    defect = labels != ok_index
    channel = labels - (labels > ok_index).long()  # class index -> defect channel
    rows = torch.nonzero(defect).flatten()
    target[rows, channel[rows]] = cells[rows, 0]
    per_cell = F.binary_cross_entropy_with_logits(
        cell_logits, target, pos_weight=torch.tensor(LOCATOR_POS_WEIGHT), reduction="none"
    )
    per_image = per_cell.mean(dim=(1, 2, 3)) * located.float()
    return per_image.sum() / located.float().sum().clamp_min(1.0)


def distill_loss(
    teacher: nn.Module,
    xb: torch.Tensor,
    logits: torch.Tensor,
    picked: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL(teacher || student) on the `picked` images of the batch, both softened by
    `temperature` (and scaled by its square, so its gradients keep the class loss's size).
    The teacher runs in eval mode, as the parent serves: what it answers on the line."""
    if not bool(picked.any()):
        return logits.new_zeros(())
    with torch.no_grad():
        target = F.log_softmax(teacher(xb[picked]) / temperature, dim=1)
    student = F.log_softmax(logits[picked] / temperature, dim=1)
    kl = F.kl_div(student, target, log_target=True, reduction="batchmean")
    return kl * temperature**2


def refresh_batchnorm(
    model: nn.Module, images: torch.Tensor, prep: Preprocessing, batch_size: int = 32
) -> None:
    """Re-estimate batch-norm statistics as exact averages over `images` (un-augmented).

    The running averages kept during training trail the weights and carry the augmentation's
    lighting shifts; re-measuring them on camera-like images before every validation makes
    the validated (and saved) network the one that will be served. Cheap: forward passes only.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for start in range(0, images.shape[0] - 1, batch_size):
            xb = normalize(images[start : start + batch_size], prep)
            if xb.shape[0] > 1:
                model(xb.contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def fit(
    config: TrainConfig,
    images: torch.Tensor,
    labels: np.ndarray,
    *,
    boxes: Sequence[Sequence[Box]] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    progress: bool = False,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    sample_weights: np.ndarray | None = None,
    val_subsets: Mapping[str, np.ndarray] | None = None,
    distill: np.ndarray | None = None,
    base: np.ndarray | None = None,
) -> TrainResult:
    """Train, early-stop, calibrate, evaluate and write checkpoint + model card.

    `splits`: explicit, disjoint (train, val, calib) indices (default: `training_splits`
    by `config.seed`). `sample_weights`: (N,) positive weights of each image in the class
    loss (default: all 1). `val_subsets`: named parts of the validation split whose figures
    the card also reports on their own (e.g. the newest images of one folder). `distill`:
    (N,) bools, the images on which a fine-tune also follows its parent's answers
    (`TrainConfig.distill_weight`; default: every image). `base`: (N,) bools, the base
    images, which `TrainConfig.base_share` rehearses in every batch (needed with it; the
    caller scales `sample_weights` by `rehearsal_rates`).

    `images`: (N, 3, S, S) uint8 RGB at `config.input_size`; `labels`: (N,) class indices;
    `boxes`: per image, its defect boxes in input pixels (empty where unknown). The locator
    head learns from images whose defect place is known: every ok image (nowhere) and every
    defect image with boxes; the rest teach the classifier only.
    """
    if images.ndim != 4 or images.shape[0] != len(labels):
        raise ValueError(f"images {tuple(images.shape)} and {len(labels)} labels do not match")
    boxes = [list(b) for b in boxes] if boxes is not None else [[] for _ in range(len(labels))]
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} box lists for {len(labels)} images")
    ok_index = list(class_names).index(DefectClass.OK)
    located = torch.tensor(
        [lab == ok_index or bool(b) for lab, b in zip(labels, boxes, strict=True)]
    )
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if splits is None:
        train_idx, val_idx, calib_idx = training_splits(
            labels,
            seed=config.seed,
            val_fraction=config.val_fraction,
            calib_fraction=config.calib_fraction,
        )
    else:
        train_idx, val_idx, calib_idx = (np.asarray(s, dtype=np.int64) for s in splits)
        seen = np.concatenate([train_idx, val_idx, calib_idx])
        if len(np.unique(seen)) != len(seen) or (
            len(seen) and not 0 <= seen.min() <= seen.max() < len(labels)
        ):
            raise ValueError("the train, val and calib splits must be disjoint indices of the data")
    weights = (
        torch.ones(len(labels))
        if sample_weights is None
        else torch.as_tensor(np.asarray(sample_weights, dtype=np.float32))
    )
    if weights.shape != (len(labels),) or not bool((weights > 0).all()):
        raise ValueError(f"sample_weights must be {len(labels)} positive numbers")
    if len(val_idx) == 0 or len(calib_idx) == 0 or len(train_idx) < 2:
        raise ValueError("too few images per class for validation and calibration splits")
    if config.base_share is not None and (base is None or len(base) != len(labels)):
        raise ValueError("base_share needs the base images marked (`base`, one per image)")
    log.info(
        "training on %d images, validating on %d, calibrating on %d (seed %d)",
        len(train_idx),
        len(val_idx),
        len(calib_idx),
        config.seed,
    )
    parent = None if config.init_from is None else load_checkpoint(config.init_from)
    if parent is not None:
        if tuple(parent.class_names) != tuple(class_names):
            raise ValueError(f"{config.init_from} has classes {parent.class_names}")
        if parent.preprocessing.input_size != images.shape[-1]:
            raise ValueError(
                f"images are {images.shape[-1]} px, {config.init_from} takes "
                f"{parent.preprocessing.input_size} px"
            )
        # the parent's normalisation and architecture: the weights only make sense with them
        prep, model_config, model = parent.preprocessing, parent.config, parent.model
        config = replace(config, input_size=prep.input_size, width_mult=parent.config.width_mult)
        log.info("fine-tuning from %s (%s)", config.init_from, parent.version)
    else:
        mean, std = channel_stats(images[train_idx])
        prep = Preprocessing(input_size=config.input_size, mean=mean, std=std)  # type: ignore[arg-type]
        model_config = DefectCNNConfig(num_classes=len(class_names), width_mult=config.width_mult)
        model = build_model(model_config)

    teacher = None
    if parent is not None and config.distill_weight > 0:
        teacher = load_checkpoint(config.init_from).model.eval()  # type: ignore[arg-type]
        for p in teacher.parameters():
            p.requires_grad_(False)
    distilled = torch.ones(len(labels), dtype=torch.bool) if distill is None else (
        torch.as_tensor(np.asarray(distill, dtype=bool)))  # fmt: skip
    y = torch.from_numpy(labels.astype(np.int64))
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=0.15,
    )
    generator = torch.Generator().manual_seed(config.seed)
    augment = Augmenter(config.input_size, generator) if config.augment else None

    # the training images that re-measure batch-norm statistics before each validation
    bn_idx = np.sort(np.random.default_rng(config.seed).permutation(train_idx)[: config.bn_images])
    best_loss, best_epoch, best_state = math.inf, 0, None
    history: list[dict[str, float]] = []
    # crops need to know where each defect is; a dataset without boxes trains on full images
    can_crop = (
        bool(located[torch.from_numpy(train_idx)].all()) and config.crop_size < config.input_size
    )
    if not can_crop:
        log.info("training on full images only (crop_size %d, boxes known for all: %s)",
                 config.crop_size, bool(located.all()))  # fmt: skip
    for epoch in range(1, config.epochs + 1):
        model.train()
        cropping = can_crop and epoch <= config.epochs - config.full_epochs
        if config.base_share is None:
            order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=generator)]
            batches = [order[i * config.batch_size : (i + 1) * config.batch_size]
                       for i in range(steps_per_epoch)]  # fmt: skip
        else:
            batches = rehearsal_order(
                train_idx, base, batch_size=config.batch_size,  # type: ignore[arg-type]
                share=config.base_share, steps=steps_per_epoch, generator=generator,
            )  # fmt: skip
        total, total_where, correct, seen = 0.0, 0.0, 0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for step in bar:
            batch = batches[step]
            if len(batch) < 2:  # batch norm needs two images
                continue
            xb = images[batch].to(torch.float32)
            mask = box_masks([boxes[i] for i in batch.tolist()], config.input_size)
            if cropping:
                xb, mask = _crop_batch(xb, mask, batch, labels, boxes, config, ok_index, generator)
            if augment is not None:
                xb, mask = augment(xb, mask)
            xb = normalize(xb, prep).contiguous(memory_format=torch.channels_last)
            logits, cell_logits = model.forward_with_map(xb)  # (B, C), (B, C-1, S/16, S/16)
            w = weights[batch]
            class_loss = (F.cross_entropy(logits, y[batch], reduction="none") * w).sum() / w.sum()
            where_loss = locator_loss(cell_logits, mask, y[batch], located[batch], ok_index)
            loss = class_loss + config.locator_weight * where_loss
            if teacher is not None:
                loss = loss + config.distill_weight * distill_loss(
                    teacher, xb, logits, distilled[batch], config.distill_temperature
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(class_loss.detach()) * len(batch)
            total_where += float(where_loss.detach()) * len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
            seen += len(batch)
            bar.set_postfix(loss=f"{total / seen:.3f}", acc=f"{correct / seen:.3f}")

        refresh_batchnorm(model, images[bn_idx], prep, config.batch_size)
        val_logits = predict_logits(model, images[val_idx], prep)
        val_loss = negative_log_likelihood(val_logits.numpy(), labels[val_idx])
        val_pred = val_logits.argmax(1).numpy()
        val_acc = float((val_pred == labels[val_idx]).mean())
        val_binary = float(((val_pred == ok_index) == (labels[val_idx] == ok_index)).mean())
        record = {
            "epoch": epoch,
            "train_loss": total / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "train_locator_loss": total_where / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "val_binary_accuracy": val_binary,
            "minutes": (time.perf_counter() - started) / 60,
        }
        history.append(record)
        log.info(
            "epoch %d (%s): train loss %.4f acc %.3f locator %.4f | val loss %.4f acc %.3f "
            "binary %.3f | %.1f min",
            epoch, "crops" if cropping else "full images", record["train_loss"],
            record["train_accuracy"], record["train_locator_loss"], val_loss, val_acc,
            val_binary, record["minutes"],
        )  # fmt: skip
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            log.info("early stop: no better validation loss for %d epochs", config.patience)
            break

    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()

    calib_logits = predict_logits(model, images[calib_idx], prep).numpy()
    temperature = fit_temperature(calib_logits, labels[calib_idx])
    val_logits_np = predict_logits(model, images[val_idx], prep).numpy()
    report = evaluate_probabilities(
        calibrated_probabilities(val_logits_np, temperature), labels[val_idx], class_names
    )
    subsets = {}
    for name, subset in (val_subsets or {}).items():
        subset = np.asarray(subset, dtype=np.int64)
        if len(subset):
            subset_logits = predict_logits(model, images[subset], prep).numpy()
            subsets[name] = evaluate_probabilities(
                calibrated_probabilities(subset_logits, temperature), labels[subset], class_names
            ).to_dict()
    sources = ", ".join(
        [str(config.data)]
        + [f"{s.path} (weight {s.weight:g}{', split by ' + s.order_by if s.order_by else ''})"
           for s in config.sources]
    )  # fmt: skip
    metrics = {
        "evaluated_on": (f"validation split of {sources} ({len(val_idx)} images, not trained on)"),
        **report.to_dict(),
        "validation_subsets": subsets,
        **({"init_from": parent.version} if parent is not None else {}),
        **config.notes,
        "temperature": temperature,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "calib_images": len(calib_idx),
        "train_minutes": round((time.perf_counter() - started) / 60, 2),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_config": _plain_config(config),
        "history": history,
    }
    version = save_checkpoint(
        config.out,
        model,
        config=model_config,
        class_names=class_names,
        preprocessing=prep,
        temperature=temperature,
        metrics=metrics,
        data_seed=config.data_seed,
    )
    card = write_model_card(
        config.out, version=version, metrics=metrics, model_config=model_config, preprocessing=prep
    )
    log.info("checkpoint %s (%s), model card %s", config.out, version, card)
    return TrainResult(
        checkpoint=config.out,
        model_card=card,
        version=version,
        temperature=temperature,
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=history,
        report=report,
        calib_indices=calib_idx,
    )


def _plain_config(config: TrainConfig) -> dict[str, object]:
    """The config as JSON-safe values (paths as text), for the checkpoint's metrics."""

    def plain(value: object) -> object:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in asdict(config).items() if k != "notes"}


def _labeled_items(data: Path) -> tuple[list[LabeledImage], np.ndarray]:
    """A dataset folder's images in `load_dataset`'s (sorted) order, with class indices."""
    from data.dataset import load_dataset

    items = load_dataset(data)
    if not items:
        raise ValueError(f"no labeled images under {data}")
    unknown = sorted({it.label for it in items} - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"{data} has labels {unknown} that are not classes {CLASS_NAMES}")
    return items, np.array([CLASS_NAMES.index(it.label) for it in items], dtype=np.int64)


def train_model(
    config: TrainConfig, *, progress: bool = False, input_metrics: InputMetrics | None = None
) -> TrainResult:
    """Train on a dataset folder (class folders or manifest.csv) and write the checkpoint.

    With `input_metrics` (the service's ``input_stats(image).metrics()``), also write the
    reference profile of the calibration split beside it (`profile_checkpoint`).
    """
    if config.sources:
        return _train_sources(config, progress=progress, input_metrics=input_metrics)
    items, labels = _labeled_items(config.data)
    splits = training_splits(
        labels, seed=config.seed, val_fraction=config.val_fraction,
        calib_fraction=config.calib_fraction,
    )  # fmt: skip
    check_split_sizes(splits, profile=input_metrics is not None)
    size = _input_size(config)
    images, sizes = load_images([it.path for it in items], size, progress=progress)
    boxes = [scale_boxes(it.boxes, h, w, size) for it, (h, w) in zip(items, sizes, strict=True)]
    result = fit(config, images, labels, boxes=boxes, progress=progress, splits=splits)
    if input_metrics is not None:
        del images  # the profile decodes its 10% again; 1.6 GB freed first
        result.profile = profile_checkpoint(
            result.checkpoint, config.data, input_metrics, progress=progress
        )[1]
    return result


def check_split_sizes(splits: tuple[np.ndarray, np.ndarray, np.ndarray], *, profile: bool) -> None:
    """Refuse data too small to validate, calibrate and profile, before any image is loaded
    or any epoch is run: a plant's first small export should fail in a second, saying how
    many images it lacks, not at the end of training."""
    train, val, calib = (len(s) for s in splits)
    need = min_profile_images() if profile else 1
    if train < 2 or val < 1 or calib < need:
        raise ValueError(
            f"too few images: the splits are {train} training, {val} validation and {calib} "
            f"calibration images, and training needs at least 2, 1 and {need}"
            + (" (the reference profile is computed on the calibration split)" if profile else "")
            + ": add images (more base data, or a longer export)"
        )


def _input_size(config: TrainConfig) -> int:
    """The parent's input size when fine-tuning (its weights were fitted to it)."""
    if config.init_from is None:
        return config.input_size
    return load_checkpoint(config.init_from).preprocessing.input_size


def _order_values(root: Path, column: str, items: Sequence[LabeledImage]) -> np.ndarray:
    """`column` of `root`'s manifest for each of `items` (in their order), as sortable
    numbers: ISO 8601 times become POSIX seconds (naive means UTC), numbers stay numbers."""
    import csv

    from data.dataset import MANIFEST_NAME

    manifest = Path(root) / MANIFEST_NAME
    if not manifest.is_file():
        raise ValueError(f"{root}: ordering by {column!r} needs a {MANIFEST_NAME}")
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        rows = {
            (Path(root) / str(row["file"]).strip().replace("\\", "/")).as_posix(): row
            for row in csv.DictReader(f)
        }
    values = []
    for item in items:
        raw = str((rows.get(item.path.as_posix()) or {}).get(column) or "").strip()
        try:
            value = float(raw)
        except ValueError:
            try:
                when = datetime.fromisoformat(raw)
            except ValueError:
                raise ValueError(f"{manifest}: {item.path.name} has no {column} to order by "
                                 f"({raw!r})") from None  # fmt: skip
            value = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        values.append(value)
    return np.array(values, dtype=np.float64)


def _train_sources(
    config: TrainConfig, *, progress: bool, input_metrics: InputMetrics | None
) -> TrainResult:
    """`train_model` over `config.data` plus `config.sources`: the splits are made per folder
    (stratified by the seed, or by time where the folder says `order_by`) and joined, and
    each image weighs what its folder says."""
    size = _input_size(config)
    all_items: list[LabeledImage] = []
    all_labels, weights, distill = [], [], []
    train_parts, val_parts, calib_parts = [], [], []
    subsets: dict[str, np.ndarray] = {}
    for source in (DataSource(config.data), *config.sources):
        items, labels = _labeled_items(source.path)
        offset = len(all_items)
        if source.order_by is None:
            train, val, calib = training_splits(
                labels, seed=config.seed, val_fraction=config.val_fraction,
                calib_fraction=config.calib_fraction,
            )  # fmt: skip
            subsets[f"{source.path} (stratified {len(val)})"] = val + offset
        else:
            times = _order_values(source.path, source.order_by, items)
            train, val, calib = time_split(
                times, val_fraction=config.val_fraction, calib_fraction=config.calib_fraction
            )
            subsets[f"{source.path} (newest {len(val)} by {source.order_by})"] = val + offset
        for parts, split in ((train_parts, train), (val_parts, val), (calib_parts, calib)):
            parts.append(split + offset)
        all_items.extend(items)
        all_labels.append(labels)
        weights.append(np.full(len(items), source.weight, dtype=np.float32))
        distill.append(np.full(len(items), source.order_by is None))
    labels = np.concatenate(all_labels)
    splits = tuple(np.sort(np.concatenate(p)) for p in (train_parts, val_parts, calib_parts))
    check_split_sizes(splits, profile=input_metrics is not None)  # type: ignore[arg-type]
    # what each folder gave each split: validation and calibration hold base images as well
    # as the plant's, so the early stopping, the temperature and the card see both
    by_source = {
        str(source.path): {"train": len(t), "val": len(v), "calib": len(c)}
        for source, t, v, c in zip(
            (DataSource(config.data), *config.sources), train_parts, val_parts, calib_parts,
            strict=True,
        )
    }  # fmt: skip
    config = replace(config, notes={**config.notes, "splits_by_source": by_source})
    sample_weights = np.concatenate(weights)
    is_base = np.concatenate(distill)
    # how often each image is drawn (rehearsal changes it), so the class mix is the loss's
    rates = (
        np.ones(len(labels))
        if config.base_share is None
        else rehearsal_rates(is_base, splits[0], config.batch_size, config.base_share)
    )
    if config.base_share is not None:
        log.info("rehearsal: %d base images in every batch of %d",
                 rehearsal_batch_size(config.batch_size, config.base_share),
                 config.batch_size)  # fmt: skip
    if config.keep_prior:
        before = _class_mix(labels, sample_weights * rates, splits[0])
        seen = prior_preserving_weights(labels, sample_weights * rates, splits[0], train_parts[0])
        sample_weights = (seen / rates).astype(np.float32)
        log.info("class mix of training, weighted: %s; kept at the base data's: %s",
                 before, _class_mix(labels, sample_weights * rates, splits[0]))  # fmt: skip
    images, sizes = load_images([it.path for it in all_items], size, progress=progress)
    boxes = [scale_boxes(it.boxes, h, w, size) for it, (h, w) in zip(all_items, sizes, strict=True)]
    result = fit(
        config, images, labels, boxes=boxes, progress=progress, splits=splits,  # type: ignore[arg-type]
        sample_weights=sample_weights, val_subsets=subsets, distill=is_base, base=is_base,
    )  # fmt: skip
    if input_metrics is not None:
        del images
        calib = splits[2]
        folders = [config.data, *(s.path for s in config.sources)]
        # the new training distribution's calibration images: base and plant alike
        result.profile = _write_profile(
            result.checkpoint,
            [all_items[i].path for i in calib],
            input_metrics,
            source=(
                f"calibration split of {', '.join(map(str, folders))} "
                f"({len(calib)} of {len(all_items)} images)"
            ),
            extra={"split_seed": config.seed, "dataset_images": len(all_items)},
            progress=progress,
        )[1]
    return result


def _class_mix(labels: np.ndarray, weights: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    """Each class's share of the weight of `idx`, for the log."""
    total = float(weights[idx].sum())
    return {CLASS_NAMES[c]: round(float(weights[idx][labels[idx] == c].sum()) / total, 3)
            for c in np.unique(labels[idx])}  # fmt: skip


def _write_profile(
    checkpoint: Path,
    paths: Sequence[Path],
    input_metrics: InputMetrics,
    *,
    source: str,
    extra: Mapping[str, object],
    progress: bool,
) -> tuple[ReferenceProfile, Path]:
    """Decode `paths`, profile the checkpoint on them as the service runs it, write it."""
    from models.predictor import Predictor

    loaded = load_checkpoint(checkpoint)
    images = []
    for path in tqdm(paths, desc="profile", unit="img", disable=not progress):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path}")
        images.append(image)
    profile = compute_profile(
        Predictor(loaded),
        images,
        [input_metrics(image) for image in images],
        source=source,
        extra=dict(extra),
    )
    path = write_profile(profile, checkpoint)
    log.info("reference profile of %s (%d images) -> %s", loaded.version, len(images), path)
    return profile, path


# -- the reference profile (models/profile.py) ------------------------------------------------


def profile_checkpoint(
    checkpoint: Path, data: Path, input_metrics: InputMetrics, *, progress: bool = False
) -> tuple[ReferenceProfile, Path]:
    """Compute a checkpoint's reference profile on its calibration split of `data`, and write
    it beside the checkpoint; returns the profile and its path.

    The split is re-derived from what the checkpoint records (the training seed and split
    fractions in ``metrics["train_config"]``), so this works long after training, without
    retraining, for any checkpoint `fit` wrote; `data` must be the folder it was trained on,
    which is checked by the split's size. Images are decoded from their files and run
    through the `Predictor` as the service runs them.
    """
    from models.predictor import Predictor

    loaded = load_checkpoint(checkpoint)
    recorded = loaded.metrics.get("train_config")
    if not isinstance(recorded, Mapping):
        raise ValueError(f"{checkpoint} does not record its training split (train_config)")
    seed = int(recorded["seed"])
    val_fraction = float(recorded["val_fraction"])
    calib_fraction = float(recorded["calib_fraction"])
    items, labels = _labeled_items(data)
    expected = sum(
        int(loaded.metrics.get(k, 0)) for k in ("train_images", "val_images", "calib_images")
    )
    if expected and expected != len(items):
        raise ValueError(
            f"{data} holds {len(items)} images, but {checkpoint} was trained on {expected}: "
            "profile it on the data it was trained on"
        )
    calib = training_splits(
        labels, seed=seed, val_fraction=val_fraction, calib_fraction=calib_fraction
    )[2]
    if "calib_images" in loaded.metrics and len(calib) != int(loaded.metrics["calib_images"]):
        raise ValueError(
            f"the re-derived calibration split has {len(calib)} images, training used "
            f"{loaded.metrics['calib_images']}: not the data {checkpoint} was trained on"
        )
    images = []
    for i in tqdm(calib, desc="profile", unit="img", disable=not progress):
        image = cv2.imread(str(items[i].path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {items[i].path}")
        images.append(image)
    data_seed = f"data seed {loaded.data_seed}, " if loaded.data_seed is not None else ""
    profile = compute_profile(
        Predictor(loaded),
        images,
        [input_metrics(image) for image in images],
        source=(
            f"calibration split of {data} ({data_seed}split seed {seed}, "
            f"{len(calib)} of {len(items)} images)"
        ),
        extra={
            "data": str(data),
            "data_seed": loaded.data_seed,
            "split_seed": seed,
            "val_fraction": val_fraction,
            "calib_fraction": calib_fraction,
            "dataset_images": len(items),
        },
    )
    path = write_profile(profile, checkpoint)
    log.info("reference profile of %s (%d images) -> %s", loaded.version, len(calib), path)
    return profile, path

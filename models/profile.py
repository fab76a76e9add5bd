"""A model version's reference profile: what its calibration images looked like to the camera
and to the network (design.md section 10).

The image gate (``inspect_app/monitoring/gate.py``) refuses a frame for automation when it
falls outside this profile, and drift monitoring compares a line's recent frames with it. It
is computed on the calibration split (images the weights never trained on, so their
embeddings look like a fresh part's, not like memorised ones) when the model is trained, and
stored beside the checkpoint as ``<name>.profile.json``: the checkpoint's bytes are its
identity, so the profile never goes inside it, and ``inspect-app profile`` can regenerate it
without retraining.

What it holds:

- quantiles of every input metric (the caller measures them with the service's own
  ``inspect_app.imaging.input_stats``: ``models`` does not import the service, so the rows
  come in as plain numbers);
- the embedding's distribution as a probabilistic PCA (Tipping & Bishop, 1999; scikit-learn's
  ``PCA``): mean, top components and their variances, and one isotropic variance for the
  rest. The squared Mahalanobis distance under that Gaussian is the gate's out-of-distribution
  score. A full covariance of the 352-value embedding would be 124,000 numbers from 800
  images; the PPCA keeps 64 directions (22,500 numbers, ~120 KB as base64 float32) and
  still counts how far a frame strays *off* them, which a plain PCA projection would not;
- the reference distribution of that distance on the calibration images themselves, each
  scored by a PPCA fitted without it (5-fold cross-fitting): a model scores its own fitting
  images closer than fresh ones, so in-sample quantiles would refuse more clean parts than
  the quantile says;
- the joint distribution of a few input metrics that mean more together than apart
  (`JOINT_METRICS`: a Gaussian's mean and precision, and the reference distribution of its
  Mahalanobis distance, cross-fitted as the embedding's is), which the image gate checks
  besides each metric's own range;
- the layout of each calibration image's edges (`edge_layout`: where in the frame the part's
  outline, its screen and its camera lie, on a 16x16 grid) as a second PPCA with its own
  cross-fitted reference distances (32 directions, ~45 KB): a signal in pixel space,
  independent of the network, that a whole phone in its fixture is close to and a half of
  one, a zoomed-in centre or a stretched band is far from (``inspect_app/monitoring/gate.py``
  has the figures);
- the calibration embeddings themselves, as coordinates along the first 32 directions plus
  the distance off them (float16, ~70 KB): the reference sample of embedding-drift tests;
- the predicted defect rate and histograms of the confidence and of P(defect), for
  output-drift monitoring.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from inspect_app.domain import CLASS_NAMES, DefectClass

if TYPE_CHECKING:
    from models.predictor import Predictor

FORMAT = "inspect_app.reference_profile/1"
SUFFIX = ".profile.json"

# The quantile levels stored for every metric and for the OOD score: every percentile, min
# and max included (what drift monitoring's KS tests interpolate, ``monitoring/drift.py``),
# plus the tails an image gate sits at (0.1%, 0.5%, 99.5%, 99.9%).
QUANTILE_LEVELS: tuple[float, ...] = tuple(
    sorted({round(float(v), 4) for v in np.linspace(0.0, 1.0, 101)} | {0.001, 0.005, 0.995, 0.999})
)
CONFIDENCE_BINS = 20  # equal bins of [0, 1] for the histogram of the top class's probability
# Bin edges of the P(defect) histogram: the same as ``inspect_app.monitoring.drift``'s
# CONFIDENCE_BINS (``models`` cannot import the service; a test checks that they agree), fine
# near 0 and 1 where the line's thresholds live.
P_DEFECT_BINS: tuple[float, ...] = (
    0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0,
)  # fmt: skip
DEFECT_CUT = 0.5  # P(defect) above this is a predicted defect, as drift monitoring counts it
# Input metrics checked together (`JointMetrics`): a half of a phone stretched to fill the
# frame has one end's outline weaker than the other's (end balance) *and* its detail smeared
# up and down (gradient balance), each inside its own clean range but together where no
# calibration image lies (``inspect_app/monitoring/gate.py`` has the figures).
JOINT_METRICS: tuple[str, ...] = ("end_balance", "gradient_balance")
# The edge layout (`edge_layout`): the grey frame shrunk to LAYOUT_WORK pixels a side, its
# gradient magnitude there, averaged down to LAYOUT_GRID cells a side. At 64 px a phone's
# outline, screen and camera module are still edges while the belt's grain and a crack's
# branches are mostly gone; 16x16 cells keep where those edges lie and drop how they look.
# Measured on the gate's tuning sets (a PPCA of 32 directions): grids of 16 and 24 cells
# caught the same frames, 32 refused more clean parts; the grey levels themselves (no
# gradient) let the halves and zoomed-in centres of phones through.
LAYOUT_WORK = 64
LAYOUT_GRID = 16


def edge_layout(image: np.ndarray) -> np.ndarray:
    """A decoded BGR (or grey) uint8 frame -> its (LAYOUT_GRID**2,) float32 edge layout: where
    its edges lie, standardised to mean 0 and standard deviation 1 so that the lamp's
    brightness and the part's contrast do not count, only the layout. A flat frame has no
    edges and gives zeros. ~0.15 ms for a 256x256 colour frame at a load of ~4.7 on 2 cores
    (``bench/image_gate.py`` prints it)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (LAYOUT_WORK, LAYOUT_WORK), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    magnitude = cv2.magnitude(
        cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1)
    )
    cells = cv2.resize(magnitude, (LAYOUT_GRID, LAYOUT_GRID), interpolation=cv2.INTER_AREA)
    cells = cells.ravel()
    spread = float(cells.std())
    if not spread > 1e-3:
        return np.zeros(LAYOUT_GRID * LAYOUT_GRID, dtype=np.float32)
    return ((cells - cells.mean()) / spread).astype(np.float32)


class ProfileError(ValueError):
    """A profile file that cannot be used with this checkpoint; the message says why."""


def _encode(a: np.ndarray, dtype: str = "float32") -> dict[str, Any]:
    """A float array as JSON-safe base64 of its little-endian bytes: a third the size of
    decimals. float16 for data only compared statistically (the reference sample)."""
    raw = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return {"shape": list(np.shape(a)), dtype: base64.b64encode(raw).decode("ascii")}


def _decode(d: Mapping[str, Any]) -> np.ndarray:
    dtype = "float16" if "float16" in d else "float32"
    raw = base64.b64decode(d[dtype])
    return (
        np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        .reshape(d["shape"])
        .astype(np.float64)
    )


@dataclass(frozen=True)
class EmbeddingModel:
    """A probabilistic PCA of the calibration embeddings: covariance = components' variances
    along `components`, `noise_variance` in every other direction."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,), the variance along each component
    noise_variance: float  # the mean variance of the D - k directions left out

    @classmethod
    def fit(cls, embeddings: np.ndarray, components: int) -> EmbeddingModel:
        """Fit on (N, D) embeddings; `components` is capped where N or D are too small to
        leave any direction for the isotropic rest."""
        from sklearn.decomposition import PCA  # fitting only: reading a profile needs numpy

        x = np.asarray(embeddings, dtype=np.float64)
        k = max(1, min(components, x.shape[0] - 1, x.shape[1] - 1))
        pca = PCA(n_components=k, svd_solver="full").fit(x)
        # a floor keeps the rest's variance positive when the embeddings span only k dims
        floor = 1e-9 * max(float(pca.explained_variance_[0]), 1e-12)
        return cls(
            mean=pca.mean_,
            components=pca.components_,
            variances=np.maximum(pca.explained_variance_, floor),
            noise_variance=max(float(pca.noise_variance_), floor),
        )

    @property
    def dimension(self) -> int:
        return int(self.mean.shape[0])

    def _project(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, D) -> ((B, k) coordinates along the components, (B,) squared residual)."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if x.shape[1] != self.dimension:
            raise ValueError(f"embeddings have {x.shape[1]} values, the profile {self.dimension}")
        centred = x - self.mean
        z = centred @ self.components.T  # (B, k)
        residual = np.maximum((centred**2).sum(axis=1) - (z**2).sum(axis=1), 0.0)
        return z, residual

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """(B, D) -> (B,) Mahalanobis distance under the PPCA Gaussian:
        sqrt(sum_i z_i^2 / var_i + |residual|^2 / noise_variance)."""
        z, residual = self._project(embeddings)
        return np.sqrt((z**2 / self.variances).sum(axis=1) + residual / self.noise_variance)

    def coordinates(self, embeddings: np.ndarray, m: int) -> np.ndarray:
        """(B, D) -> (B, m + 1): the coordinates along the first m components, then the
        distance off them. What the profile's reference sample is stored as, so that drift
        monitoring compares a window's `coordinates` with it."""
        z, residual = self._project(embeddings)
        m = min(m, z.shape[1])
        rest = residual + (z[:, m:] ** 2).sum(axis=1)
        return np.hstack([z[:, :m], np.sqrt(rest)[:, None]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": _encode(self.mean),
            "components": _encode(self.components),
            "variances": _encode(self.variances),
            "noise_variance": self.noise_variance,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EmbeddingModel:
        return cls(
            mean=_decode(d["mean"]),
            components=_decode(d["components"]),
            variances=_decode(d["variances"]),
            noise_variance=float(d["noise_variance"]),
        )


@dataclass(frozen=True)
class JointMetrics:
    """A Gaussian of a few input metrics of the calibration images, and the reference
    distribution of the Mahalanobis distance under it (each image scored by a Gaussian fitted
    on the other folds, as the embedding's distances are)."""

    metrics: tuple[str, ...]
    mean: np.ndarray  # (M,)
    precision: np.ndarray  # (M, M), the covariance's inverse
    quantiles: tuple[float, ...]  # of the cross-fitted distance, at the profile's levels

    @classmethod
    def fit(cls, table: np.ndarray, metrics: Sequence[str], config: ProfileConfig) -> JointMetrics:
        """Fit on an (N, M) table of the `metrics`' values, one row per image."""
        from sklearn.covariance import EmpiricalCovariance
        from sklearn.model_selection import KFold

        x = np.asarray(table, dtype=np.float64)
        cross = np.empty(x.shape[0])
        folds = KFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
        for fit_idx, score_idx in folds.split(x):
            part = EmpiricalCovariance().fit(x[fit_idx])
            cross[score_idx] = np.sqrt(part.mahalanobis(x[score_idx]))
        whole = EmpiricalCovariance().fit(x)
        return cls(
            metrics=tuple(metrics),
            mean=whole.location_,
            precision=whole.precision_,
            quantiles=_quantiles(cross),
        )

    def distance(self, values: np.ndarray) -> np.ndarray:
        """(B, M) values of `metrics`, in that order -> (B,) Mahalanobis distances."""
        centred = np.atleast_2d(np.asarray(values, dtype=np.float64)) - self.mean
        return np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", centred, self.precision, centred), 0))

    def quantile(self, level: float) -> float:
        """The reference distance at a quantile level (interpolated between stored levels)."""
        return float(np.interp(level, QUANTILE_LEVELS, self.quantiles))

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": list(self.metrics),
            "mean": _encode(self.mean),
            "precision": _encode(self.precision),
            "quantiles": list(self.quantiles),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JointMetrics:
        return cls(
            metrics=tuple(str(m) for m in d["metrics"]),
            mean=_decode(d["mean"]),
            precision=_decode(d["precision"]),
            quantiles=tuple(float(v) for v in d["quantiles"]),
        )


@dataclass(frozen=True)
class LayoutReference:
    """A PPCA of the calibration images' edge layouts (`edge_layout`) and the reference
    distribution of the Mahalanobis distance under it, each image scored by a PPCA fitted on
    the other folds (as the embedding's distances are)."""

    model: EmbeddingModel
    quantiles: tuple[float, ...]  # of the cross-fitted distance, at the profile's levels

    @classmethod
    def fit(cls, layouts: np.ndarray, config: ProfileConfig) -> LayoutReference:
        """Fit on (N, LAYOUT_GRID**2) edge layouts, one row per image."""
        x = np.asarray(layouts, dtype=np.float64)
        return cls(
            model=EmbeddingModel.fit(x, config.layout_components),
            quantiles=_quantiles(cross_fitted_distances(x, config, config.layout_components)),
        )

    def distance(self, layouts: np.ndarray) -> np.ndarray:
        """(B, LAYOUT_GRID**2) edge layouts -> (B,) Mahalanobis distances."""
        return self.model.distance(layouts)

    def quantile(self, level: float) -> float:
        """The reference distance at a quantile level (interpolated between stored levels)."""
        return float(np.interp(level, QUANTILE_LEVELS, self.quantiles))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": f"mahalanobis distance of the {LAYOUT_GRID}x{LAYOUT_GRID} edge layout "
            "under a PPCA Gaussian",
            "model": self.model.to_dict(),
            "quantiles": list(self.quantiles),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayoutReference:
        return cls(
            model=EmbeddingModel.from_dict(d["model"]),
            quantiles=tuple(float(v) for v in d["quantiles"]),
        )


@dataclass(frozen=True)
class ProfileConfig:
    # PPCA directions kept: on the gate's tuning frames 64 caught as much as a full
    # shrinkage covariance (LedoitWolf) while refusing fewer clean parts; 16-32 lost most of
    # the zoomed-in corners of phones, whose difference lies in the smaller directions.
    components: int = 64
    folds: int = 5  # cross-fitting of the reference OOD distances (see the module docstring)
    seed: int = 0  # of the fold assignment, so the same images give the same profile
    batch_size: int = 32  # images per forward pass while profiling
    # Coordinates kept per calibration image for drift tests (`EmbeddingModel.coordinates`):
    # the adversarial-validation test reduces to 16 principal components anyway; 32 and the
    # distance off them keep the profile under 300 KB (with the edge layout's PPCA, 280 KB).
    reference_coordinates: int = 32
    # PPCA directions of the edge layout (`LayoutReference`; 256 values per image): on the
    # gate's tuning sets 32 and 64 caught the same frames, 16 refused more clean parts.
    layout_components: int = 32


@dataclass(frozen=True)
class ReferenceProfile:
    """What a model version's calibration images looked like; see the module docstring."""

    model_version: str
    source: str  # in words: which images, e.g. "calibration split of var/train (...)"
    n_images: int
    quantile_levels: tuple[float, ...]
    # metric name (as InputStats.metrics() names it) -> its quantiles at quantile_levels
    metric_quantiles: dict[str, tuple[float, ...]]
    embedding: EmbeddingModel
    # quantiles of the cross-fitted OOD distance (EmbeddingModel.distance) at quantile_levels
    ood_quantiles: tuple[float, ...]
    # (N, m + 1) the calibration embeddings as `EmbeddingModel.coordinates(x, m)` (float16
    # on disk, m = ProfileConfig.reference_coordinates): the sample embedding-drift tests use
    reference_coordinates: np.ndarray
    predicted_defect_rate: float  # share with P(defect) > DEFECT_CUT
    mean_p_defect: float
    predicted_class_rates: dict[str, float]  # class -> share whose most likely class it is
    confidence_edges: tuple[float, ...]  # CONFIDENCE_BINS + 1 edges of [0, 1]
    confidence_histogram: tuple[int, ...]  # counts of the top class's probability per bin
    p_defect_edges: tuple[float, ...]  # P_DEFECT_BINS
    p_defect_histogram: tuple[int, ...]  # counts of P(defect) per bin, the last bin closed
    extra: dict[str, Any] = field(default_factory=dict)  # lineage (split seeds, data folder)
    # JOINT_METRICS together; None in a profile made before it existed (or from metric rows
    # without those metrics): the gate then checks each metric alone
    joint_metrics: JointMetrics | None = None
    # the edge layout's reference; None in a profile made before it existed (or from outputs
    # without layouts): the gate then does not check the layout
    layout: LayoutReference | None = None

    def metric_quantile(self, metric: str, level: float) -> float:
        """A metric's reference quantile at any level, interpolated between stored levels."""
        return float(np.interp(level, self.quantile_levels, self.metric_quantiles[metric]))

    def ood_quantile(self, level: float) -> float:
        """The OOD distance at a reference quantile level (interpolated between levels)."""
        return float(np.interp(level, self.quantile_levels, self.ood_quantiles))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_version": self.model_version,
            "source": self.source,
            "n_images": self.n_images,
            "quantile_levels": list(self.quantile_levels),
            "metric_quantiles": {k: list(v) for k, v in self.metric_quantiles.items()},
            "embedding": self.embedding.to_dict(),
            "ood_score": "mahalanobis distance of the gate embedding under a PPCA Gaussian",
            "ood_quantiles": list(self.ood_quantiles),
            "reference_coordinates": _encode(self.reference_coordinates, "float16"),
            "predicted_defect_rate": self.predicted_defect_rate,
            "mean_p_defect": self.mean_p_defect,
            "predicted_class_rates": dict(self.predicted_class_rates),
            "confidence_edges": list(self.confidence_edges),
            "confidence_histogram": list(self.confidence_histogram),
            "p_defect_edges": list(self.p_defect_edges),
            "p_defect_histogram": list(self.p_defect_histogram),
            "extra": dict(self.extra),
            **(
                {"joint_metrics": self.joint_metrics.to_dict()}
                if self.joint_metrics is not None
                else {}
            ),
            **({"layout": self.layout.to_dict()} if self.layout is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        if d.get("format") != FORMAT:
            raise ProfileError(f"not a reference profile (format {d.get('format')!r})")
        try:
            return cls(
                model_version=str(d["model_version"]),
                source=str(d["source"]),
                n_images=int(d["n_images"]),
                quantile_levels=tuple(float(v) for v in d["quantile_levels"]),
                metric_quantiles={
                    str(k): tuple(float(x) for x in v) for k, v in d["metric_quantiles"].items()
                },
                embedding=EmbeddingModel.from_dict(d["embedding"]),
                ood_quantiles=tuple(float(v) for v in d["ood_quantiles"]),
                reference_coordinates=_decode(d["reference_coordinates"]),
                predicted_defect_rate=float(d["predicted_defect_rate"]),
                mean_p_defect=float(d["mean_p_defect"]),
                predicted_class_rates={
                    str(k): float(v) for k, v in d["predicted_class_rates"].items()
                },
                confidence_edges=tuple(float(v) for v in d["confidence_edges"]),
                confidence_histogram=tuple(int(v) for v in d["confidence_histogram"]),
                p_defect_edges=tuple(float(v) for v in d["p_defect_edges"]),
                p_defect_histogram=tuple(int(v) for v in d["p_defect_histogram"]),
                extra=dict(d.get("extra", {})),
                joint_metrics=(
                    JointMetrics.from_dict(d["joint_metrics"]) if "joint_metrics" in d else None
                ),
                layout=LayoutReference.from_dict(d["layout"]) if "layout" in d else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"malformed reference profile: {exc!r}") from exc


def cross_fitted_distances(
    embeddings: np.ndarray, config: ProfileConfig, components: int | None = None
) -> np.ndarray:
    """(N,) distance of each row under a PPCA of `components` directions (default: the
    config's, for the embedding) fitted on the other folds."""
    from sklearn.model_selection import KFold

    out = np.empty(embeddings.shape[0])
    folds = KFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    for fit_idx, score_idx in folds.split(embeddings):
        model = EmbeddingModel.fit(
            embeddings[fit_idx], config.components if components is None else components
        )
        out[score_idx] = model.distance(embeddings[score_idx])
    return out


def _quantiles(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(q) for q in np.quantile(values, QUANTILE_LEVELS))


def profile_from_outputs(
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    metrics: Sequence[Mapping[str, float]],
    *,
    model_version: str,
    source: str,
    class_names: Sequence[str] = CLASS_NAMES,
    config: ProfileConfig | None = None,
    extra: Mapping[str, Any] | None = None,
    layouts: np.ndarray | None = None,
) -> ReferenceProfile:
    """The profile of N images from what the model and the metrics said about them:
    (N, C) calibrated probabilities, (N, D) embeddings and N rows of input metrics, and
    optionally their (N, LAYOUT_GRID**2) edge layouts (`edge_layout`; without them the
    profile has no layout reference)."""
    config = config or ProfileConfig()
    n = probabilities.shape[0]
    if not (embeddings.shape[0] == len(metrics) == n):
        raise ValueError(
            f"{n} probability rows, {embeddings.shape[0]} embeddings, {len(metrics)} metric rows"
        )
    if layouts is not None and len(layouts) != n:
        raise ValueError(f"{n} images but {len(layouts)} edge layouts")
    if n < min_profile_images(config):
        raise ValueError(f"a profile needs at least {min_profile_images(config)} images, got {n}")
    names = list(metrics[0])
    if any(list(row) != names for row in metrics):
        raise ValueError("every metric row must name the same metrics in the same order")
    table = np.array([[float(row[k]) for k in names] for row in metrics])  # (N, M)

    ok = list(class_names).index(DefectClass.OK)
    p_defect = np.clip(1.0 - probabilities[:, ok], 0.0, 1.0)
    predicted = probabilities.argmax(axis=1)
    confidence_edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    model = EmbeddingModel.fit(embeddings, config.components)
    joint = None
    if all(m in names for m in JOINT_METRICS):
        columns = [names.index(m) for m in JOINT_METRICS]
        joint = JointMetrics.fit(table[:, columns], JOINT_METRICS, config)
    # np.histogram closes the last bin: a probability of exactly 1.0 is counted
    return ReferenceProfile(
        model_version=model_version,
        source=source,
        n_images=n,
        quantile_levels=QUANTILE_LEVELS,
        metric_quantiles={k: _quantiles(table[:, j]) for j, k in enumerate(names)},
        embedding=model,
        ood_quantiles=_quantiles(cross_fitted_distances(embeddings, config)),
        reference_coordinates=model.coordinates(embeddings, config.reference_coordinates),
        predicted_defect_rate=float((p_defect > DEFECT_CUT).mean()),
        mean_p_defect=float(p_defect.mean()),
        predicted_class_rates={
            c: float((predicted == i).mean()) for i, c in enumerate(class_names)
        },
        confidence_edges=tuple(float(e) for e in confidence_edges),
        confidence_histogram=tuple(
            int(c) for c in np.histogram(probabilities.max(axis=1), bins=confidence_edges)[0]
        ),
        p_defect_edges=P_DEFECT_BINS,
        p_defect_histogram=tuple(int(c) for c in np.histogram(p_defect, bins=P_DEFECT_BINS)[0]),
        extra=dict(extra or {}),
        joint_metrics=joint,
        layout=None if layouts is None else LayoutReference.fit(layouts, config),
    )


def min_profile_images(config: ProfileConfig | None = None) -> int:
    """The fewest calibration images a profile can be computed on: two per cross-fitting
    fold. Training checks it before it loads a single image, not after an hour's work."""
    return 2 * (config or ProfileConfig()).folds


def compute_profile(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    metrics: Sequence[Mapping[str, float]],
    *,
    source: str,
    config: ProfileConfig | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ReferenceProfile:
    """Run `predictor` over decoded BGR `images` exactly as the service does and profile them.

    `metrics`: one row per image, measured by the service's ``input_stats(image).metrics()``
    (passed in because ``models`` does not import the service). The edge layouts are
    computed here (`edge_layout`, which the service's ``input_stats`` calls too).
    """
    config = config or ProfileConfig()
    probabilities, embeddings = [], []
    for start in range(0, len(images), config.batch_size):
        predictions, emb = predictor.predict_with_embeddings(
            images[start : start + config.batch_size]
        )
        probabilities.append(
            [[p.probabilities[c] for c in predictor.class_names] for p in predictions]
        )
        embeddings.append(emb)
    return profile_from_outputs(
        np.concatenate([np.asarray(p, dtype=np.float64) for p in probabilities]),
        np.concatenate(embeddings),
        metrics,
        model_version=predictor.version,
        source=source,
        class_names=predictor.class_names,
        config=config,
        extra=extra,
        layouts=np.stack([edge_layout(image) for image in images]),
    )


def profile_path(checkpoint: Path) -> Path:
    """Where a checkpoint's profile lives: ``default.pt`` -> ``default.profile.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def write_profile(profile: ReferenceProfile, checkpoint: Path) -> Path:
    """Write the sidecar atomically (a reader never sees half a file); returns its path."""
    path = profile_path(checkpoint)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(profile.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_profile(checkpoint: Path, *, version: str | None = None) -> ReferenceProfile | None:
    """The profile beside `checkpoint`, or None when it has none. With `version` (the loaded
    checkpoint's), a profile made for other weights is refused: gating on another model's
    reference would refuse or pass the wrong frames."""
    path = profile_path(checkpoint)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path} is not a readable profile: {exc}") from exc
    profile = ReferenceProfile.from_dict(raw)
    if version is not None and profile.model_version != version:
        raise ProfileError(
            f"{path} was made for model {profile.model_version}, not {version}: "
            "regenerate it with `inspect-app profile`"
        )
    if not all(math.isfinite(q) for q in profile.ood_quantiles):
        raise ProfileError(f"{path} has non-finite OOD quantiles")
    joint = profile.joint_metrics
    if joint is not None and not all(math.isfinite(q) for q in joint.quantiles):
        raise ProfileError(f"{path} has non-finite joint-metric quantiles")
    if profile.layout is not None and not all(math.isfinite(q) for q in profile.layout.quantiles):
        raise ProfileError(f"{path} has non-finite edge-layout quantiles")
    return profile

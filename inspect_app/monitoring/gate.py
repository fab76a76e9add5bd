"""The image gate: is this frame a usable picture of a part like the ones the model knows?
(design.md section 10)

A model answers every frame, and answers confidently where it has no business to: measured
with the default weights before this gate, a black, a white and a mid-grey frame (lamp off,
overexposure, empty fixture) were auto-passed at P(ok) = 0.997, and noise and photographs of
other things auto-failed as "crack" at ~0.99. The gate runs between the model and routing and
refuses such frames for automation: the part goes to a human with the reason, and the
refusal counts as a missing output.

Three kinds of check, each against the model version's reference profile
(``models/profile.py``: its calibration images, as the camera and the network saw them):

- **input metrics** (``inspect_app.imaging.InputStats.metrics()``): each must lie within the
  reference's range, widened by a margin; which side it leaves by says what is wrong (too
  dark: under-exposed; no contrast: blank; no detail: out of focus; the part's outline on one
  side of the frame only: the part is cut off by it; its edges turned from the frame's axes:
  the part is turned in its fixture; ...);
- **the edge layout** (``models.profile.edge_layout``, measured at decode beside the metrics):
  where the frame's edges lie on a 16x16 grid, whose Mahalanobis distance from the
  calibration images' layouts must not exceed the reference's own at a stated quantile. A
  signal in pixel space, independent of the network: a half of a phone stretched to fill
  the frame, or its zoomed-in centre, has edges where a whole phone in its fixture has none,
  though each metric and the embedding may find it ordinary;
- **the embedding** (``models.defect_cnn.gate_embedding``): its Mahalanobis distance from the
  calibration embeddings must not exceed the reference's own distances at a stated quantile.
  This catches what no single metric shows: a photograph of something else, a phone seen
  zoomed-in or turned, a drawing.

Pure: numbers in, a verdict out; no I/O, no model. The service computes the metrics and the
edge layout at decode, the embedding in the model's forward pass, and calls `ImageGate.check`
per part. A check whose input is missing (no model run, a profile made before it) is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np

from models.profile import ReferenceProfile


class GateCode(StrEnum):
    """Why a frame was refused, for metrics and alarms (the reason's words are for people)."""

    SIZE = "size"
    BLANK = "blank"
    UNDEREXPOSED = "underexposed"
    OVEREXPOSED = "overexposed"
    BLURRED = "blurred"
    DIRECTIONAL = "directional"  # detail along one direction only: shake, stretch, turned part
    FRAMING = "framing"  # the part not whole in the frame: cut off, shifted, zoomed in
    TILTED = "tilted"  # the part turned in its fixture, further than a fixture lets it turn
    # the frame's edges not where a whole part's lie: cut off, zoomed in, stretched, or not a
    # phone at all (the edge layout, a check in pixel space beside the embedding's)
    LAYOUT = "layout"
    NOISY = "noisy"
    HIGH_CONTRAST = "high_contrast"
    COLOUR = "colour"
    OUT_OF_DISTRIBUTION = "out_of_distribution"


@dataclass(frozen=True)
class GateConfig:
    """Where the gate's limits sit relative to the reference profile.

    Chosen on the tuning part of the off-distribution frames (``data/off_distribution.py``,
    seed 1, 850 frames) and a clean tuning set (generator seed 31337, 2,000 parts), and since
    the framing rules also on spent held-out seeds 4-7 and clean seeds 4242, 2718, 1618 and
    8080; ``bench/image_gate.py`` prints the figures, and those on seeds nothing was chosen
    on are the ones to quote. "Through" below means: passed the gate and then auto-decided
    at pass >= 0.95 / fail >= 0.95, the outcome the gate exists to prevent.

    As a whole (2026-12-01, default weights), before the tilt and the joint check (framing
    margin 0.25, ood_level 0.99): through 20 tuning frames / 1, 1, 0, 3 on held-out seeds
    4-7; clean parts refused 0.35, 0.55, 0.85, 0.65, 1.05% (seeds 31337, 4242, 2718, 1618,
    8080; mean 0.69%). With the tilt, the joint check and the levels below: through 5 (bands
    of phones stretched to fill the frame) / 0, 0, 0, 0; clean refused 0.20, 0.45, 0.90,
    0.80, 1.10% (mean 0.69%: the embedding 0.32%, framing 0.17%, detail in one direction
    0.13%, blank 0.04%). On seeds nothing was chosen on (held-out 31, clean 9393): through 2
    of 1,000 (a half of a phone, a phone's zoomed-in centre), clean refused 1.10% (the gate
    before: 2 and 1.00%): both targets (0 and <= 1%) still missed there.

    The edge layout (`layout_level`) and the margins of the gradient balance's upper bound and
    of the colours were then chosen on all of those seeds (tuning part; held-out 4-7 and 31;
    clean 31337, 4242, 2718, 1618, 8080, 9393): through 3 tuning frames (bands of phones) / 0
    on each held-out seed; clean refused 0.25, 0.50, 0.95, 0.70, 1.00, 0.75% (mean 0.69%,
    where the gate before it refused 0.76%). Measured once on seeds never used before
    (2026-12-02; off-distribution 53, clean 6007; ``bench/image_gate.py``): **0 of 1,000
    through** (none even passed the gate) and **0.65% of clean parts refused** (13 of 2,000,
    95% CI 0.35-1.11%: framing 7, the embedding 5, the layout 1): both targets met there.
    """

    # Each input metric's range is its reference quantiles at these levels (0.1% and 99.9%:
    # with 800 calibration images, about the smallest and largest)...
    low_level: float = 0.001
    high_level: float = 0.999
    # ...widened on each side by this fraction of the distance from the median to that bound
    # (on a log scale for contrast and sharpness, which vary by factors): 800 images do not
    # show a metric's extreme tail. Measured on the tuning sets (at ood_level 0.99): margin 0
    # refused 2.0% of clean parts; 0.1 refused none on a metric and let 29 tuning frames
    # through; 0.25, 33; 0.5, 40 (under-exposed phones among them).
    margin: float = 0.1
    # Clipped shares are refused above the widened reference or this share, whichever is
    # larger: glare on a phone's glass clips up to 10% of a clean part's pixels, a tail 800
    # calibration images barely show (their 99.9th percentile is 0.5%); a lamp far too bright
    # clips a third of the frame or more.
    clipped_floor: float = 0.15
    # The framing metrics' margin (``end_balance``, ``side_balance``, in place of `margin`):
    # log ratios of one outline edge's strength to another's, whose clean tail is long (a dark
    # phone on a dark belt, where a camera module, a crack or a scratch at one end outshines
    # the outline) and which 800 images show only in part; a part cut off by the frame lies
    # far outside. Alone, no margin both refused the halves of phones (stretched to fill the
    # frame) and kept within the clean budget: on held-out seeds 4, 5 and 6, at 0.1: 0, 0, 0
    # halves through / 0.65-1.20% clean refused; 0.25: 1, 0, 0 / 0.55-0.85%. The joint check
    # (`joint_level`) now refuses those halves, so each metric alone only needs to catch what
    # lies far out: with the joint check, end margins 0.25, 0.5 and 1.0 let the same frames
    # through and refuse the same clean parts, and the sides' rule at 0.1 refused 0.13% of
    # clean parts and not one off-distribution frame that nothing else refused.
    framing_margin: float = 1.0
    # The tilt's margin (``tilt``, in degrees, in place of `margin`): the reference's 0.1% and
    # 99.9% quantiles (about -6 and 6 degrees for the default weights: the generator turns
    # parts by up to 7) widened by half, to about -9 and 9. Measured: no clean part of 10,800
    # (the validation split and five generator seeds) beyond 8 degrees; the tuning part's
    # phones turned by 18-25 degrees measure 11 or more, the held-out seeds' 25-65 degree ones
    # 19 or more (an angle beyond 45 reads as its rest from 90).
    tilt_margin: float = 0.5
    # The gradient balance's upper bound (detail lost up and down) is widened by this, in
    # place of `margin`; its lower bound keeps `margin`. Clean parts reach far up (a dark
    # phone's vertical edges outshine its ends: 11 of 12,000 refused on that side alone at
    # 0.1), and what lies there off distribution (halves and bands of phones stretched up and
    # down) the joint check and the edge layout refuse: on the tuning and spent held-out sets
    # (below), 0.2, 0.5, 1.0 and no upper bound at all let the same frames through, each
    # refusing 0.07% fewer clean parts than 0.1. The lower side stays: at 0.3 a band of a
    # phone with its detail lost across got through.
    balance_high_margin: float = 1.0
    # The colour means' margin (``mean_blue``, ``mean_green``, ``mean_red``, in place of
    # `margin`): a light or dark phone on a light or dark fixture tints the whole frame, and
    # no off-distribution frame of the sets was refused by a colour alone; 0.3 and 0.5 both
    # refused 0.03% fewer clean parts than 0.1 and let nothing more through.
    colour_margin: float = 0.3
    # Width, height and aspect must lie within the reference's range, give or take this
    # fraction: the model was trained at one camera format, and another one resizes parts.
    size_tolerance: float = 0.01
    # The embedding's distance is refused above the reference's own (cross-fitted) distances
    # at this quantile. Cross-fitted distances come from PPCAs fitted on 4/5 of the images,
    # so a fresh part scores a little closer than they do, and the share of clean parts
    # refused is below 1 - ood_level. Measured first on the tuning sets (at margin 0.1):
    # 99.9%: 41 frames through, 0% clean refused; 99.5%: 31, 0.2%; 99%: 29, 0.2%; 98%: 22,
    # 0.65%; 97%: 15, 1.5%. With the tilt and the joint check (seeds above): 99% and 99.5%
    # let the same frames through (5 / 0, 0, 0, 0) and 99.5% refuses 0.05% fewer clean parts;
    # 99.9% let phones shifted out of view and washed-out ones through (measured before the
    # joint check). Scored otherwise on
    # the same sets, nothing did better: a class-conditional Mahalanobis (a tied covariance
    # round each class's mean), a shrinkage covariance (Ledoit-Wolf), 32 or 128 PPCA
    # directions, a square root of the activations, and the distance to the 1st or 5th
    # nearest calibration embedding each let as many or more through at the same share of
    # clean parts refused.
    ood_level: float = 0.995
    # The joint check of end balance and gradient balance (``models.profile.JOINT_METRICS``)
    # refuses a frame whose Mahalanobis distance under the reference's Gaussian of the pair
    # exceeds the reference's own (cross-fitted) distances at this quantile. A half of a phone
    # stretched to fill the frame has one end's outline weaker than the other's and its
    # detail smeared along the stretch, each within its own range, together beyond it: the
    # halves that got through on seeds 4-7 measured |end balance| 1.4-2.0 with gradient
    # balance 1.7-1.95, where under 1% of clean parts lie on each. Measured (with the tilt,
    # ood_level 0.995): 99.5%: through 4 / 0, 0, 0, 0, clean refused 0.97%; 99.8%: 4 / 0s,
    # 0.83%; 99.9%: 5 / 0s, 0.69%; the largest reference distance (100%): 7 / 0, 0, 0, 1,
    # 0.56%. Checking the sides and the tilt jointly as well let more halves through at the
    # same share of clean parts refused.
    joint_level: float = 0.999
    # The edge layout (``models.profile.edge_layout``: where the frame's edges lie on a 16x16
    # grid) is refused when its Mahalanobis distance under the reference's PPCA of layouts
    # exceeds the reference's own (cross-fitted) distances at this quantile. It is a second
    # signal, in pixel space and independent of the network, of what a whole phone in its
    # fixture looks like: a half of one or its zoomed-in centre has edges where a whole phone
    # has none. The two frames held-out seed 31 let through (each within every other limit)
    # score 55.5 and 57.6, beyond the largest reference distance (49.8; 99.9th percentile
    # 47.3). Measured with the rest of the gate as it was (through on the tuning part / held-
    # out seeds 4-7 and 31; clean refused, mean over the six clean seeds below): no layout
    # check: 5 / 0, 0, 0, 0, 2, 0.76%; 99.5%: 3 / 0s, 0.97%; 99.9%: 3 / 0s, 0.80%; 100%: 3 /
    # 0s, 0.78%. Tried and dropped: the grey levels at 16x16 or 32x32 (standardised or not)
    # in place of the gradient (one or both of those frames through), a 32x32 grid (more
    # clean parts refused), 16 or 64 PPCA directions (``models.profile.ProfileConfig``).
    layout_level: float = 0.999

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_level < 0.5 < self.high_level <= 1.0:
            raise ValueError("low_level must be within [0, 0.5) and high_level within (0.5, 1]")
        margins = (self.margin, self.framing_margin, self.tilt_margin, self.balance_high_margin,
                   self.colour_margin, self.size_tolerance)  # fmt: skip
        if min(margins) < 0:
            raise ValueError("the margins and size_tolerance must be non-negative")
        if not 0.0 < self.clipped_floor <= 1.0:
            raise ValueError("clipped_floor must be within (0, 1]")
        if not all(0.5 <= v <= 1.0 for v in (self.ood_level, self.joint_level, self.layout_level)):
            raise ValueError("ood_level, joint_level and layout_level must be within [0.5, 1]")


@dataclass(frozen=True)
class GateVerdict:
    """`usable` False means: do not let the model decide this part. `reasons` are in plant
    words, `codes` the same reasons for machines (one code per reason, in the same order)."""

    usable: bool
    reasons: tuple[str, ...] = ()
    codes: tuple[GateCode, ...] = ()
    ood_distance: float | None = None  # the embedding's Mahalanobis distance, when checked
    layout_distance: float | None = None  # the edge layout's, when checked

    @property
    def code(self) -> GateCode | None:
        """The first (most telling) reason's code, or None for a usable frame."""
        return self.codes[0] if self.codes else None


Scale = Literal["linear", "log", "share"]


@dataclass(frozen=True)
class _Rule:
    """One input metric's check: its scale, and what leaving its range low or high means."""

    metric: str
    scale: Scale
    low: tuple[GateCode, str] | None  # (code, words with {value} and {bound})
    high: tuple[GateCode, str] | None


# In the order reasons are reported: the first is the verdict's `code`. Blank before blurred
# (a blank frame has no detail either) and exposure before colour (a dark frame is dark in
# every channel).
_RULES: tuple[_Rule, ...] = (
    _Rule(
        "contrast", "log",
        (GateCode.BLANK,
         "blank or nearly uniform frame (contrast {value:.1f}, reference >= {bound:.1f})"),
        (GateCode.HIGH_CONTRAST,
         "unusually high contrast ({value:.0f}, reference <= {bound:.0f})"),
    ),
    _Rule(
        "brightness", "linear",
        (GateCode.UNDEREXPOSED, "under-exposed (mean grey {value:.0f}, reference >= {bound:.0f})"),
        (GateCode.OVEREXPOSED, "over-exposed (mean grey {value:.0f}, reference <= {bound:.0f})"),
    ),
    _Rule(
        "clipped_dark", "share",
        None,
        (GateCode.UNDEREXPOSED,
         "under-exposed (black-clipped {value:.0%} of pixels, reference <= {bound:.0%})"),
    ),
    _Rule(
        "clipped_bright", "share",
        None,
        (GateCode.OVEREXPOSED,
         "over-exposed (clipped {value:.0%} of pixels, reference <= {bound:.0%})"),
    ),
    _Rule(
        "sharpness", "log",
        (GateCode.BLURRED, "out of focus (sharpness {value:.1f}, reference >= {bound:.1f})"),
        (GateCode.NOISY,
         "noisy or grainy picture (sharpness {value:.0f}, reference <= {bound:.0f})"),
    ),
    _Rule(
        "gradient_balance", "linear",
        (GateCode.DIRECTIONAL, "detail lost across the frame: motion blur, shake, a stretched "
         "or turned picture (gradient balance {value:.2f}, reference >= {bound:.2f})"),
        (GateCode.DIRECTIONAL, "detail lost up and down: motion blur, shake, a stretched "
         "or turned picture (gradient balance {value:.2f}, reference <= {bound:.2f})"),
    ),
    # The part's outline on opposite sides of the frame (``inspect_app.imaging``'s framing
    # metrics): a part cut off by the frame has one end or side only. Each piece in view looks
    # like a part, so the embedding let such frames through (stretched halves of phones).
    _Rule(
        "end_balance", "linear",
        (GateCode.FRAMING, "part not whole in the frame: its outline is missing at the top "
         "(cut off, shifted or too close; end balance {value:.2f}, reference >= {bound:.2f})"),
        (GateCode.FRAMING, "part not whole in the frame: its outline is missing at the bottom "
         "(cut off, shifted or too close; end balance {value:.2f}, reference <= {bound:.2f})"),
    ),
    _Rule(
        "side_balance", "linear",
        (GateCode.FRAMING, "part not whole in the frame: its outline is missing on the left "
         "(cut off, shifted or too close; side balance {value:.2f}, reference >= {bound:.2f})"),
        (GateCode.FRAMING, "part not whole in the frame: its outline is missing on the right "
         "(cut off, shifted or too close; side balance {value:.2f}, reference <= {bound:.2f})"),
    ),
    # The part's edges turned from the frame's axes (``inspect_app.imaging``'s tilt): a phone
    # turned by 18-25 degrees still looks like a phone to the embedding.
    _Rule(
        "tilt", "linear",
        (GateCode.TILTED, "part turned in its fixture: {size:.0f} degrees anticlockwise "
         "(tilt {value:.0f}, reference >= {bound:.0f})"),
        (GateCode.TILTED, "part turned in its fixture: {size:.0f} degrees clockwise "
         "(tilt {value:.0f}, reference <= {bound:.0f})"),
    ),
    *(
        _Rule(
            f"mean_{channel}", "linear",
            (GateCode.COLOUR,
             f"unusual colour (mean {channel} {{value:.0f}}, reference >= {{bound:.0f}})"),
            (GateCode.COLOUR,
             f"unusual colour (mean {channel} {{value:.0f}}, reference <= {{bound:.0f}})"),
        )
        for channel in ("blue", "green", "red")
    ),
)  # fmt: skip

_SIZE_METRICS = ("width", "height", "aspect")
FRAMING_METRICS = ("end_balance", "side_balance")
COLOUR_METRICS = ("mean_blue", "mean_green", "mean_red")


def _widened(
    profile: ReferenceProfile, metric: str, scale: Scale, config: GateConfig
) -> tuple[float, float]:
    """A metric's allowed range: its reference quantiles at the config's levels, widened by
    `margin` times the distance from the median (on a log scale where `scale` says)."""
    lo, med, hi = (
        profile.metric_quantile(metric, level)
        for level in (config.low_level, 0.5, config.high_level)
    )
    if scale == "log":
        # a metric at 0 (a perfectly flat frame) is far below any positive bound
        lo, med, hi = (math.log(max(v, 1e-6)) for v in (lo, med, hi))
    margin = (
        config.framing_margin
        if metric in FRAMING_METRICS
        else config.tilt_margin
        if metric == "tilt"
        else config.colour_margin
        if metric in COLOUR_METRICS
        else config.margin
    )
    low, high = lo - margin * (med - lo), hi + margin * (hi - med)
    if metric == "gradient_balance":
        high = hi + config.balance_high_margin * (hi - med)
    if scale == "log":
        return math.exp(low), math.exp(high)
    if scale == "share":
        return -math.inf, max(high, config.clipped_floor)
    return low, high


class ImageGate:
    """The gate of one model version: limits computed once from its profile and a config."""

    def __init__(self, profile: ReferenceProfile, config: GateConfig | None = None) -> None:
        self.profile = profile
        self.config = config or GateConfig()
        known = profile.metric_quantiles
        # a profile without a metric (made before the metric existed) does not check it
        self.limits: dict[str, tuple[float, float]] = {
            rule.metric: _widened(profile, rule.metric, rule.scale, self.config)
            for rule in _RULES
            if rule.metric in known
        }
        tol = self.config.size_tolerance
        for metric in _SIZE_METRICS:
            if metric in known:
                values = known[metric]
                self.limits[metric] = (min(values) * (1 - tol), max(values) * (1 + tol))
        self.ood_threshold = profile.ood_quantile(self.config.ood_level)
        joint = profile.joint_metrics
        self.joint_threshold = (
            joint.quantile(self.config.joint_level) if joint is not None else math.inf
        )
        layout = profile.layout
        self.layout_threshold = (
            layout.quantile(self.config.layout_level) if layout is not None else math.inf
        )

    def check(
        self,
        metrics: Mapping[str, float],
        embedding: np.ndarray | None = None,
        layout: np.ndarray | None = None,
    ) -> GateVerdict:
        """One frame: its input metrics, (when the model ran) its (D,) embedding and (when
        measured: ``InputStats.edge_layout``) its edge layout."""
        return self.check_batch(
            [metrics],
            None if embedding is None else np.asarray(embedding)[None],
            None if layout is None else np.asarray(layout)[None],
        )[0]

    def check_batch(
        self,
        metrics: Sequence[Mapping[str, float]],
        embeddings: np.ndarray | None = None,
        layouts: np.ndarray | None = None,
    ) -> list[GateVerdict]:
        """A micro-batch: N rows of metrics, (N, D) embeddings and (N, L) edge layouts (each
        may be None: that check is then skipped), in order."""
        n = len(metrics)
        for name, rows in (("embeddings", embeddings), ("edge layouts", layouts)):
            if rows is not None and len(rows) != n:
                raise ValueError(f"{n} metric rows but {len(rows)} {name}")
        if n == 0:
            return []
        distances: Sequence[float | None] = (
            [None] * n
            if embeddings is None
            else [float(d) for d in self.profile.embedding.distance(np.asarray(embeddings))]
        )
        reference = self.profile.layout
        layout_distances: Sequence[float | None] = (
            [None] * n
            if layouts is None or reference is None
            else [float(d) for d in reference.distance(np.asarray(layouts))]
        )
        return [
            self._verdict(row, d, s)
            for row, d, s in zip(metrics, distances, layout_distances, strict=True)
        ]

    def _verdict(
        self, metrics: Mapping[str, float], distance: float | None, layout: float | None = None
    ) -> GateVerdict:
        found: dict[GateCode, str] = {}  # one reason per code: the first rule that fired

        size = self._size_reason(metrics)
        if size is not None:
            found[GateCode.SIZE] = size
        for rule in _RULES:
            if rule.metric not in self.limits or rule.metric not in metrics:
                continue
            value = float(metrics[rule.metric])
            low, high = self.limits[rule.metric]
            # NaN fails both comparisons, so test "inside" and refuse whatever is not
            if low <= value <= high:
                continue
            side, bound = (rule.low, low) if not value > high else (rule.high, high)
            if side is not None and side[0] not in found:
                found[side[0]] = side[1].format(value=value, bound=bound, size=abs(value))
        joint = self._joint_reason(metrics)
        if joint is not None and GateCode.FRAMING not in found:
            found[GateCode.FRAMING] = joint
        if layout is not None and not layout <= self.layout_threshold:
            found[GateCode.LAYOUT] = (
                "not laid out like a whole part in its fixture: cut off, zoomed in, stretched "
                f"or not a part (edge layout distance {layout:.0f}, reference "
                f"{_ordinal_percentile(self.config.layout_level)} percentile "
                f"{self.layout_threshold:.0f})"
            )
        if distance is not None and not distance <= self.ood_threshold:
            found[GateCode.OUT_OF_DISTRIBUTION] = (
                f"not like the model's training images (Mahalanobis {distance:.0f}, reference "
                f"{_ordinal_percentile(self.config.ood_level)} percentile "
                f"{self.ood_threshold:.0f})"
            )
        return GateVerdict(
            usable=not found,
            reasons=tuple(found.values()),
            codes=tuple(found),
            ood_distance=distance,
            layout_distance=layout,
        )

    def _joint_reason(self, metrics: Mapping[str, float]) -> str | None:
        """Why the frame's end and gradient balance together are unlike the reference's, or
        None (also for a profile without the joint check, or metrics without the pair)."""
        joint = self.profile.joint_metrics
        if joint is None or not all(m in metrics for m in joint.metrics):
            return None
        values = np.array([float(metrics[m]) for m in joint.metrics])
        distance = float(joint.distance(values[None])[0])
        if distance <= self.joint_threshold:  # NaN fails it: refused, not waved through
            return None
        shown = ", ".join(
            f"{m.replace('_', ' ')} {v:.2f}" for m, v in zip(joint.metrics, values, strict=True)
        )
        return (
            f"part not whole in the frame, or stretched ({shown}: together unlike the "
            f"reference, distance {distance:.1f}, reference "
            f"{_ordinal_percentile(self.config.joint_level)} percentile "
            f"{self.joint_threshold:.1f})"
        )

    def _size_reason(self, metrics: Mapping[str, float]) -> str | None:
        outside = [
            m
            for m in _SIZE_METRICS
            if m in self.limits
            and m in metrics
            and not self.limits[m][0] <= float(metrics[m]) <= self.limits[m][1]
        ]
        if not outside:
            return None
        w, h = metrics.get("width"), metrics.get("height")
        got = f"{w:.0f}x{h:.0f}" if w is not None and h is not None else "this frame"
        known = self.profile.metric_quantiles
        if "width" in known and "height" in known:
            ref = f"{_span(known['width'])}x{_span(known['height'])}"
        else:
            ref = f"aspect {_span(known['aspect'], '.2f')}"
        return f"wrong size/aspect ({got}, reference {ref})"


def _span(values: Sequence[float], fmt: str = ".0f") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}-{hi:{fmt}}"


def _ordinal_percentile(level: float) -> str:
    """0.995 -> '99.5th', 0.99 -> '99th'."""
    return f"{100 * level:g}th"

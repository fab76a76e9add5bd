"""Procedural line-camera photos of phones with labeled defects (design.md section 7).

No dataset or pretrained weights can be downloaded, so the product trains on images drawn here:
a phone (one of several models and colours, seen from the front or the back) lying on a conveyor
belt or in a fixture pocket, lit, posed, focused and exposed a little differently each time, with
a defect drawn in: a scratch, a crack, pits or a discoloration, from obvious to faint.

Everything is deterministic by seed, and the scene comes from the seed alone, so
``render_sample(s, "ok")`` is the exact defect-free twin of ``render_sample(s, "pit")``. That rests
on the rendering order:

    scene albedo and shading       (seed only)
    -> defect                      (seed and class), drawn in image coordinates
    -> lighting                    pointwise gain
    -> focus blur                  Gaussian kernel truncated at radius r = ceil(2.5 sigma)
    -> sensor noise                one normal field from the seed; its std is a pointwise function
                                   of the signal (read noise + shot noise) plus a fixed column
                                   pattern (each pixel of a line sensor has its own offset)
    -> quantisation to uint8       pointwise

Every step after the defect is pointwise except the blur, which moves a change by at most r pixels.
So the twins differ only inside the defect's drawn footprint dilated by r, and that is the box
recorded for it: computed from the drawn geometry, never from the difference of the images.

All difficulty knobs live in :class:`SynthConfig`; change difficulty there and nowhere else.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from data.dataset import MANIFEST_NAME, Box
from inspect_app.domain import CLASS_NAMES, DefectClass

logger = logging.getLogger(__name__)

IMAGE_SIZE = 256  # pixels, square; the CNN's input size and what the replay camera sends
MANIFEST_COLUMNS = ("file", "class", "boxes", "seed", "params")
IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "bmp": ".bmp"}


@dataclass
class SynthConfig:
    """Every knob that makes the data easier or harder, with the reason for its default.

    The model engineer asks for difficulty changes here; nothing else in this module should
    need to change for that.
    """

    # The class mix of a generated dataset (fractions, normalised). Ok is the largest class
    # because a line sees mostly good parts; the defects share the rest equally so that the
    # model does not learn a prior against the rarer kinds.
    class_mix: dict[str, float] = field(
        default_factory=lambda: {
            "ok": 0.40,
            "scratch": 0.15,
            "crack": 0.15,
            "pit": 0.15,
            "discoloration": 0.15,
        }
    )
    # Severity in [0, 1] drives each defect's contrast and size. A good share are faint (drawn
    # from faint_severity) because those are the parts that escape on a real line and the
    # ones that decide whether the model may automate; the rest spread over strong_severity.
    # The faint range starts at 0.12 (model engineer's tuning): below that, pits and
    # discolorations sank under the sensor noise at 256 px, labels nobody could verify.
    faint_share: float = 0.3
    faint_severity: tuple[float, float] = (0.12, 0.3)
    strong_severity: tuple[float, float] = (0.3, 1.0)
    # Multiplies every defect's contrast: one number to make all defects fainter (< 1) or
    # stronger (> 1) without changing their shapes. 1.0 keeps the faintest defects at about two
    # to three noise standard deviations after blur: hard, but present.
    contrast_scale: float = 1.0
    # Focus: Gaussian blur sigma in pixels. A line camera is focused once for the fixture, so
    # parts stay near focus; 1.3 px is what a part lying a little high or low looks like.
    blur_sigma: tuple[float, float] = (0.3, 1.3)
    # Sensor noise in grey levels (0..255): read noise std, and shot-noise variance per grey level
    # of signal (std = sqrt(read^2 + gain * signal)). The ranges span a well-exposed industrial
    # camera (low end) to a short exposure with gain (high end).
    read_noise: tuple[float, float] = (1.0, 3.0)
    shot_noise_gain: tuple[float, float] = (0.01, 0.05)
    # Fixed column pattern of a line sensor (std of per-column offsets, grey levels).
    column_noise: tuple[float, float] = (0.2, 1.2)
    # Lighting: overall gain, strength of a linear brightness gradient across the field of view,
    # and colour temperature. Plants re-lamp and lamps age; the model must not rely on exposure.
    brightness: tuple[float, float] = (0.8, 1.15)
    light_gradient: tuple[float, float] = (0.0, 0.25)
    colour_temperature_k: tuple[float, float] = (4000.0, 6500.0)
    # Pose: fixtures and belts place parts roughly, not exactly.
    max_rotation_deg: float = 7.0
    max_shift_px: float = 6.0
    phone_height_frac: tuple[float, float] = (0.70, 0.80)  # of the image height
    upside_down_share: float = 0.5  # parts arrive either way round
    back_share: float = 0.4  # share of parts photographed from the back (else the screen side)

    def __post_init__(self) -> None:
        unknown = set(self.class_mix) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(
                f"class_mix has unknown classes {sorted(unknown)}; known: {CLASS_NAMES}"
            )
        if any(v < 0 for v in self.class_mix.values()) or sum(self.class_mix.values()) <= 0:
            raise ValueError("class_mix fractions must be non-negative and not all zero")
        if not 0.0 <= self.faint_share <= 1.0:
            raise ValueError("faint_share must be in [0, 1]")
        for name in (
            "faint_severity",
            "strong_severity",
            "blur_sigma",
            "read_noise",
            "shot_noise_gain",
            "column_noise",
            "brightness",
            "light_gradient",
            "colour_temperature_k",
            "phone_height_frac",
        ):
            lo, hi = getattr(self, name)
            if not (0.0 <= lo <= hi):
                raise ValueError(f"{name} must be a (low, high) range with 0 <= low <= high")
        for name in ("faint_severity", "strong_severity"):
            if getattr(self, name)[1] > 1.0:
                raise ValueError(f"{name} must lie within [0, 1]")
        if self.phone_height_frac[1] > 0.85:
            raise ValueError("phone_height_frac above 0.85 pushes the phone out of the image")
        if self.contrast_scale <= 0:
            raise ValueError("contrast_scale must be positive")


@dataclass(frozen=True, eq=False)
class SynthSample:
    """One rendered photo with its label, defect boxes and everything needed to explain it."""

    image: np.ndarray  # (H, W, 3) uint8, BGR
    label: str
    boxes: list[Box]  # empty for ok
    params: dict[str, Any]  # JSON-serialisable generation parameters


# --------------------------------------------------------------------------------------------
# Phones
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneModel:
    """Geometry of one phone model; lengths are fractions of the phone's width."""

    name: str
    aspect: float  # height / width
    corner: float  # corner radius
    rim: float  # metal frame visible around the front glass
    bezel: tuple[float, float, float]  # black border around the display: sides, top, bottom
    cutout: str  # notch | punch_hole_center | punch_hole_corner | bezel (camera in the forehead)
    lenses: int  # rear camera lenses
    module: str  # rear camera module: square | pill | bar | none


PHONE_MODELS: dict[str, PhoneModel] = {
    m.name: m
    for m in (
        PhoneModel(
            "aurora", 2.05, 0.15, 0.030, (0.035, 0.045, 0.050), "punch_hole_center", 3, "square"
        ),
        PhoneModel("brio", 2.16, 0.11, 0.025, (0.030, 0.030, 0.045), "notch", 2, "pill"),
        PhoneModel("civa", 1.80, 0.17, 0.035, (0.055, 0.170, 0.170), "bezel", 1, "none"),
        PhoneModel("dorn", 2.22, 0.09, 0.020, (0.025, 0.030, 0.035), "punch_hole_corner", 3, "bar"),
    )
}

# Body albedo, BGR grey levels (what a neutral light shows at gain 1).
PHONE_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (40.0, 38.0, 36.0),
    "white": (204.0, 206.0, 208.0),
    "silver": (178.0, 179.0, 175.0),
    "blue": (140.0, 88.0, 48.0),
    "gold": (132.0, 176.0, 206.0),
    "green": (104.0, 134.0, 96.0),
    "red": (52.0, 46.0, 158.0),
    "purple": (168.0, 128.0, 150.0),
}

_GLASS_BLACK = np.array([9.0, 9.0, 10.0], np.float32)  # bezel / notch: black ink under glass
_DISPLAY_OFF = np.array([24.0, 20.0, 18.0], np.float32)  # a switched-off panel is a bluish grey
_LENS_GLASS = np.array([14.0, 13.0, 13.0], np.float32)
_REFLECTION = np.array([1.0, 0.97, 0.93], np.float32)  # daylight-ish reflected light, BGR


@dataclass(frozen=True)
class Scene:
    """Every parameter of a scene, sampled from the seed alone (recorded in ``params``)."""

    model: str
    colour: str
    body_bgr: tuple[float, float, float]
    face: str  # front | back
    finish: str  # glossy | matte (how strongly the surface mirrors the room)
    background: str  # belt | fixture
    background_level: float  # grey level of the belt or plate
    cx: float  # phone centre in the image, pixels
    cy: float
    angle_deg: float  # rotation of the phone's long axis from the image's vertical
    upside_down: bool
    height_px: float
    brightness: float
    gradient_angle_deg: float
    gradient_strength: float
    colour_temperature_k: float
    vignette: float
    shadow_dx: float
    shadow_dy: float
    shadow_strength: float
    reflection_angle_deg: float
    reflection_bands: tuple[tuple[float, float, float], ...]  # (offset px, width px, amplitude)
    blur_sigma: float
    read_noise: float
    shot_noise_gain: float
    column_noise: float

    @property
    def width_px(self) -> float:
        return self.height_px / PHONE_MODELS[self.model].aspect

    @property
    def blur_radius(self) -> int:
        """How far the blur can move a change; 0 when the image is not blurred."""
        return math.ceil(2.5 * self.blur_sigma) if self.blur_sigma > 0 else 0

    @functools.cached_property
    def _rotation_t(self) -> np.ndarray:
        a = math.radians(self.angle_deg + (180.0 if self.upside_down else 0.0))
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, s], [-s, c]], np.float64)  # transposed, for row vectors

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Phone coordinates (pixels, origin at the centre, v down) to image coordinates."""
        return pts @ self._rotation_t + (self.cx, self.cy)


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _sample_scene(rng: np.random.Generator, config: SynthConfig) -> Scene:
    model = str(rng.choice(list(PHONE_MODELS)))
    colour = str(rng.choice(list(PHONE_COLOURS)))
    jitter = rng.normal(0.0, 4.0, 3) + rng.normal(0.0, 5.0)  # batch-to-batch paint variation
    # exposure is set so that a white phone under the brightest lamp does not clip
    body = np.clip(np.array(PHONE_COLOURS[colour]) + jitter, 10, 212)
    background = "belt" if rng.random() < 0.5 else "fixture"
    background_level = float(rng.uniform(45, 80) if background == "belt" else rng.uniform(105, 165))
    n_bands = int(rng.integers(1, 4))
    bands = tuple(
        (
            float(rng.uniform(-120, 120)),
            float(rng.uniform(2.0, 6.0) if i > 0 else rng.uniform(12.0, 45.0)),
            float(rng.uniform(4.0, 14.0) if i > 0 else rng.uniform(8.0, 30.0)),
        )
        for i in range(n_bands)
    )  # the first is a broad soft reflection, the others thin specular streaks
    light_angle = float(rng.uniform(0, 360))
    shadow_len = float(rng.uniform(1.5, 5.0))
    return Scene(
        model=model,
        colour=colour,
        body_bgr=(float(body[0]), float(body[1]), float(body[2])),
        face="back" if rng.random() < config.back_share else "front",
        finish="glossy" if rng.random() < 0.6 else "matte",
        background=background,
        background_level=background_level,
        cx=IMAGE_SIZE / 2 + float(rng.uniform(-1, 1)) * config.max_shift_px,
        cy=IMAGE_SIZE / 2 + float(rng.uniform(-1, 1)) * config.max_shift_px,
        angle_deg=float(rng.uniform(-1, 1)) * config.max_rotation_deg,
        upside_down=bool(rng.random() < config.upside_down_share),
        height_px=_uniform(rng, config.phone_height_frac) * IMAGE_SIZE,
        brightness=_uniform(rng, config.brightness),
        gradient_angle_deg=light_angle,
        gradient_strength=_uniform(rng, config.light_gradient),
        colour_temperature_k=_uniform(rng, config.colour_temperature_k),
        vignette=float(rng.uniform(0.0, 0.12)),
        shadow_dx=-shadow_len * math.cos(math.radians(light_angle)),
        shadow_dy=-shadow_len * math.sin(math.radians(light_angle)),
        shadow_strength=float(rng.uniform(0.15, 0.45)),
        reflection_angle_deg=float(rng.uniform(20, 70) * rng.choice([-1, 1])),
        reflection_bands=bands,
        blur_sigma=_uniform(rng, config.blur_sigma),
        read_noise=_uniform(rng, config.read_noise),
        shot_noise_gain=_uniform(rng, config.shot_noise_gain),
        column_noise=_uniform(rng, config.column_noise),
    )


# --------------------------------------------------------------------------------------------
# Drawing primitives: anti-aliased masks on the smallest region of interest that holds them
# --------------------------------------------------------------------------------------------

_SHIFT = 4  # OpenCV's fixed-point bits: sub-pixel positions make edges move smoothly
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class _Mask:
    """An alpha mask in [0, 1] placed at (y0, x0) in the image."""

    y0: int
    x0: int
    alpha: np.ndarray  # (h, w) float32

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.alpha.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def footprint(self) -> Box | None:
        """Bounding box of the pixels the mask touches, or None when it touches none."""
        ys = np.flatnonzero(self.alpha.any(axis=1))
        if ys.size == 0:
            return None
        xs = np.flatnonzero(self.alpha.any(axis=0))
        return (
            self.x0 + int(xs[0]),
            self.y0 + int(ys[0]),
            self.x0 + int(xs[-1]) + 1,
            self.y0 + int(ys[-1]) + 1,
        )

    def clipped_to(self, region: np.ndarray) -> _Mask:
        """The mask restricted to a full-image region alpha (e.g. the screen glass)."""
        return _Mask(self.y0, self.x0, self.alpha * region[self.slices])


def _roi(pts: np.ndarray, pad: float) -> tuple[int, int, int, int]:
    x0 = max(math.floor(pts[:, 0].min() - pad), 0)
    y0 = max(math.floor(pts[:, 1].min() - pad), 0)
    x1 = min(math.ceil(pts[:, 0].max() + pad) + 1, IMAGE_SIZE)
    y1 = min(math.ceil(pts[:, 1].max() + pad) + 1, IMAGE_SIZE)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _fixed(pts: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Image coordinates -> OpenCV fixed point, relative to a region's corner."""
    return np.rint((pts - (x0, y0)) * _ONE).astype(np.int32)


def _poly_mask(pts: np.ndarray) -> _Mask:
    x0, y0, x1, y1 = _roi(pts, 2)
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [_fixed(pts, x0, y0)], 255, cv2.LINE_AA, _SHIFT)
    return _Mask(y0, x0, m.astype(np.float32) * (1.0 / 255.0))


def _circle_mask(centre: np.ndarray, radius: float, thickness: int = -1) -> _Mask:
    pad = radius + max(thickness, 1) + 2
    pts = np.array([centre])
    x0, y0, x1, y1 = _roi(pts, pad)
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    c = _fixed(pts, x0, y0)[0]
    cv2.circle(m, (int(c[0]), int(c[1])), round(radius * _ONE), 255, thickness, cv2.LINE_AA, _SHIFT)
    return _Mask(y0, x0, m.astype(np.float32) * (1.0 / 255.0))


def _polyline_mask(
    strokes: Sequence[tuple[np.ndarray, Sequence[float]]], thickness: int
) -> _Mask | None:
    """Anti-aliased polylines; each stroke is (points (N, 2), intensity per segment (N-1))."""
    strokes = [(p, w) for p, w in strokes if len(p) >= 2]
    if not strokes:
        return None
    x0, y0, x1, y1 = _roi(np.concatenate([p for p, _ in strokes]), thickness + 2)
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for pts, weights in strokes:
        q = _fixed(pts, x0, y0)
        for i, wgt in enumerate(weights):
            value = round(255 * min(max(wgt, 0.0), 1.0))
            if value:
                a, b = (int(q[i, 0]), int(q[i, 1])), (int(q[i + 1, 0]), int(q[i + 1, 1]))
                cv2.line(m, a, b, value, thickness, cv2.LINE_AA, _SHIFT)
    return _Mask(y0, x0, m.astype(np.float32) * (1.0 / 255.0))


def _grey3(a: np.ndarray) -> np.ndarray:
    """(h, w) -> (h, w, 3). numpy broadcasts over a trailing axis of 3 ten times slower."""
    return cv2.cvtColor(np.ascontiguousarray(a, np.float32), cv2.COLOR_GRAY2BGR)


def _tinted(a: np.ndarray, bgr: np.ndarray) -> np.ndarray:
    """(h, w) times a BGR vector -> (h, w, 3)."""
    a = np.asarray(a, np.float32)
    return cv2.merge([a * np.float32(bgr[0]), a * np.float32(bgr[1]), a * np.float32(bgr[2])])


def _full(mask: _Mask) -> np.ndarray:
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    out[mask.slices] = mask.alpha
    return out


# A rounded rectangle's outline: 7 points on each quarter circle, corners clockwise from top-right.
_ARC_T = np.concatenate(
    [np.linspace(a, a + math.pi / 2, 7) for a in (-math.pi / 2, 0.0, math.pi / 2, math.pi)]
)
_ARC_UNIT = np.stack([np.cos(_ARC_T), np.sin(_ARC_T)], 1)  # (28, 2)
_ARC_CORNER = np.repeat(np.array([[1, 0], [1, 1], [0, 1], [0, 0]]), 7, axis=0)  # x1?, y1? per point


def _rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    """Polygon (28, 2) of a rounded rectangle, in whatever coordinates the corners are given."""
    r = max(min(r, (x1 - x0) / 2, (y1 - y0) / 2), 0.0)
    lo = np.array([x0 + r, y0 + r])
    hi = np.array([x1 - r, y1 - r])
    return np.where(_ARC_CORNER, hi, lo) + r * _ARC_UNIT


# --------------------------------------------------------------------------------------------
# Scene rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Surfaces:
    """Where defects may go: full-image alphas and the phone-coordinate rectangle to sample in."""

    region: np.ndarray  # (H, W) float32: the screen glass (front) or the back panel (back)
    name: str  # screen | body
    sample_rect: tuple[float, float, float, float]  # u0, v0, u1, v1 in phone coordinates
    base_level: float  # mean grey of the surface, to choose light or dark defect marks


def _bgr(colour: np.ndarray | tuple[float, ...] | float) -> tuple[float, float, float]:
    if isinstance(colour, float | int | np.floating):
        return float(colour), float(colour), float(colour)
    return float(colour[0]), float(colour[1]), float(colour[2])


def _fill(canvas: np.ndarray, pts: np.ndarray, colour: Any) -> None:
    """Anti-aliased polygon straight onto the uint8 canvas: OpenCV blends the edge pixels."""
    cv2.fillPoly(canvas, [_fixed(pts, 0, 0)], _bgr(colour), cv2.LINE_AA, _SHIFT)


def _disc(
    canvas: np.ndarray, centre: np.ndarray, radius: float, colour: Any, thickness: int = -1
) -> None:
    c = _fixed(np.asarray(centre, np.float64)[None], 0, 0)[0]
    cv2.circle(
        canvas,
        (int(c[0]), int(c[1])),
        round(radius * _ONE),
        _bgr(colour),
        thickness,
        cv2.LINE_AA,
        _SHIFT,
    )


def _stroke(canvas: np.ndarray, pts: np.ndarray, colour: Any, closed: bool = False) -> None:
    cv2.polylines(canvas, [_fixed(pts, 0, 0)], closed, _bgr(colour), 1, cv2.LINE_AA, _SHIFT)


def _background(scene: Scene, rng: np.random.Generator, body_pts: np.ndarray) -> np.ndarray:
    """The belt or fixture plate with the phone's shadow on it, as a uint8 canvas.

    Textured in grey (one float channel), tinted once in uint8: a third of the work.
    """
    s = IMAGE_SIZE
    level = scene.background_level
    noise8 = rng.normal(0, 1, (8, 8)).astype(np.float32)
    # Low-frequency blotches: smooth cubic to 32 px, then cheap linear up (a tenth of the cost).
    blotches = cv2.resize(noise8, (32, 32), interpolation=cv2.INTER_CUBIC)
    grey = cv2.resize(blotches, (s, s), interpolation=cv2.INTER_LINEAR)
    rail = 0
    if scene.background == "belt":
        # Rubber belt running along the image's vertical: streaks along the run, a fine weave.
        tint = np.array([1.0, 1.04, 0.96]) * rng.uniform(0.95, 1.05, 3)
        streaks = cv2.GaussianBlur(rng.normal(0, 1, (1, s)).astype(np.float32), (7, 1), 1.2)
        weave = np.sin(np.arange(s, dtype=np.float32) * np.float32(2 * math.pi / rng.uniform(3, 5)))
        grey *= 3.0
        grey += level
        grey += 3.5 * streaks
        grey += np.outer(1.8 * weave, weave)
        if rng.random() < 0.6:  # guide rails at the belt's edges
            rail = int(rng.integers(8, 18))
            rail_grey = float(rng.uniform(0.7, 1.0))
    else:
        # Anodised aluminium plate: brushed grain and a machined pocket the phone lies in.
        tint = np.array([1.03, 1.0, 0.98])
        grain = cv2.GaussianBlur(rng.normal(0, 1, (s, 1)).astype(np.float32), (1, 3), 0.7)
        grey *= 4.0
        grey += level
        grey += 2.5 * grain
        w, h = scene.width_px + 26, scene.height_px + 22
        x0, y0, x1, y1 = s / 2 - w / 2, s / 2 - h / 2, s / 2 + w / 2, s / 2 + h / 2
        edge = _poly_mask(_rounded_rect(x0 - 1.5, y0 - 1.5, x1 + 1.5, y1 + 1.5, 15))
        pocket = _full(_poly_mask(_rounded_rect(x0, y0, x1, y1, 14)))[edge.slices]
        # the pocket floor lies in shade; its machined edge catches the light
        grey[edge.slices] *= 1.0 + 0.25 * (edge.alpha - pocket) - 0.18 * pocket

    # Soft contact shadow, cast away from the light.
    k = 9
    shadow = _poly_mask(body_pts + np.array([scene.shadow_dx, scene.shadow_dy]))
    blurred = cv2.GaussianBlur(np.pad(shadow.alpha, k), (2 * k + 1, 2 * k + 1), 3.5)
    shadow = _crop_to_image(_Mask(shadow.y0 - k, shadow.x0 - k, blurred))
    grey[shadow.slices] *= 1.0 - scene.shadow_strength * shadow.alpha
    canvas = cv2.cvtColor(cv2.convertScaleAbs(grey), cv2.COLOR_GRAY2BGR)
    cv2.multiply(canvas, (*tint, 0.0), dst=canvas)

    if rail:
        rail_colour = _bgr(np.array([150.0, 152.0, 155.0]) * rail_grey)
        canvas[:, :rail] = rail_colour
        canvas[:, s - rail :] = rail_colour
        canvas[:, rail - 2 : rail] = canvas[:, rail - 2 : rail] // 2  # the gap to the belt
        canvas[:, s - rail : s - rail + 2] = canvas[:, s - rail : s - rail + 2] // 2
    if scene.background == "fixture":  # locating screws in the plate's corners
        for sx, sy in ((14, 14), (s - 14, 14), (14, s - 14), (s - 14, s - 14)):
            centre = np.array([sx, sy], np.float64) + rng.normal(0, 1.5, 2)
            _disc(canvas, centre, 6.5, level * 0.45)
            _disc(canvas, centre, 3.0, level * 0.2)
    for _ in range(int(rng.integers(0, 7))):  # dust on the belt or plate (the phone covers some)
        _disc(canvas, rng.uniform(0, s, 2), float(rng.uniform(0.6, 1.6)), rng.choice([25.0, 200.0]))
    return canvas


def _reflections(scene: Scene, mask: _Mask, gain: float) -> np.ndarray:
    """Additive room reflections on glass: a soft gradient, a broad band, thin streaks.

    They stay put in the image while the phone rotates: they are mirror images of the lamps.
    """
    sy, sx = mask.slices
    a = math.radians(scene.reflection_angle_deg)
    xs = np.arange(sx.start, sx.stop, dtype=np.float32) - IMAGE_SIZE / 2
    ys = np.arange(sy.start, sy.stop, dtype=np.float32) - IMAGE_SIZE / 2
    u = ys[:, None] * math.sin(a) + xs[None, :] * math.cos(a)  # (h, w)
    field = 0.04 * gain * (u + 128.0)
    for offset, width, amplitude in scene.reflection_bands:
        field += gain * amplitude * np.exp(-(((u - offset) / width) ** 2))
    return field


def _lens(canvas: np.ndarray, scene: Scene, centre_uv: tuple[float, float], r: float) -> None:
    c = scene.to_image(np.array([centre_uv]))[0]
    _disc(canvas, c, r + 0.8, 25.0)  # shadow ring
    _disc(canvas, c, r, (120.0, 122.0, 126.0))  # metal ring
    _disc(canvas, c, r * 0.72, _LENS_GLASS)
    _disc(canvas, c, r * 0.35, (48.0, 30.0, 24.0))  # the coating's coloured reflection
    _disc(canvas, c - 0.3 * r, max(0.6, 0.12 * r), 230.0)  # glint


def _render_scene(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, _Surfaces]:
    """The phone on its background, before defects, lighting, blur and noise. Float32 BGR.

    Flat-coloured parts are drawn anti-aliased on a uint8 canvas (fast, and 8 bits are plenty
    for albedo); reflections are added in float afterwards because they are smooth fields.
    """
    m = PHONE_MODELS[scene.model]
    w, h = scene.width_px, scene.height_px
    r = m.corner * w
    body_uv = _rounded_rect(-w / 2, -h / 2, w / 2, h / 2, r)
    body_pts = scene.to_image(body_uv)
    canvas = _background(scene, rng, body_pts)

    body = np.array(scene.body_bgr, np.float32)
    frame = body * 0.9 + 12.0  # the metal frame reads a little lighter and greyer
    mirror = -1.0 if scene.face == "back" else 1.0  # from the back, left and right swap
    for u_side, v0, v1 in ((-1, -0.24, -0.17), (-1, -0.15, -0.08), (1, -0.18, -0.06)):
        u_edge = mirror * u_side * w / 2
        _fill(
            canvas,
            scene.to_image(_rounded_rect(u_edge - 2.2, v0 * h, u_edge + 2.2, v1 * h, 1.5)),
            frame * 0.8,
        )

    _fill(canvas, body_pts, frame if scene.face == "front" else body)
    # A specular edge along the outline and a darker line just inside: the frame is rounded.
    _stroke(canvas, body_pts, frame * 0.45 + (frame * 1.3 + 25.0) * 0.55, closed=True)
    inner = _rounded_rect(-w / 2 + 1.5, -h / 2 + 1.5, w / 2 - 1.5, h / 2 - 1.5, r - 1.5)
    _stroke(canvas, scene.to_image(inner), frame * 0.65 + frame * 0.6 * 0.35, closed=True)

    if scene.face == "front":
        glass, gain, surfaces = _draw_front(canvas, scene, m, w, h, r)
    else:
        glass, gain, surfaces = _draw_back(canvas, scene, m, w, h, r)
    img = canvas.astype(np.float32)
    sy, sx = glass.slices
    img[sy, sx] += _tinted(glass.alpha * _reflections(scene, glass, gain), _REFLECTION)
    return img, surfaces


def _crop_to_image(mask: _Mask) -> _Mask:
    y0, x0 = max(mask.y0, 0), max(mask.x0, 0)
    h, w = mask.alpha.shape
    y1, x1 = min(mask.y0 + h, IMAGE_SIZE), min(mask.x0 + w, IMAGE_SIZE)
    return _Mask(y0, x0, mask.alpha[y0 - mask.y0 : y1 - mask.y0, x0 - mask.x0 : x1 - mask.x0])


def _draw_front(
    canvas: np.ndarray, scene: Scene, m: PhoneModel, w: float, h: float, r: float
) -> tuple[_Mask, float, _Surfaces]:
    """Screen side: cover glass over a black bezel and a switched-off display."""
    rim = max(m.rim * w, 2.0)
    glass_pts = scene.to_image(
        _rounded_rect(-w / 2 + rim, -h / 2 + rim, w / 2 - rim, h / 2 - rim, r - rim)
    )
    _fill(canvas, glass_pts, _GLASS_BLACK)
    side, top, bottom = (b * w for b in m.bezel)
    dx0, dy0, dx1, dy1 = -w / 2 + side, -h / 2 + top, w / 2 - side, h / 2 - bottom
    display_r = max(r - side, 2.0) if m.cutout != "bezel" else 1.5
    _fill(canvas, scene.to_image(_rounded_rect(dx0, dy0, dx1, dy1, display_r)), _DISPLAY_OFF)

    speaker_v = -h / 2 + rim + 0.4 * (top - rim)
    if m.cutout == "notch":
        nw, nh = 0.45 * w, 0.065 * w
        _fill(
            canvas,
            scene.to_image(_rounded_rect(-nw / 2, dy0 - 4, nw / 2, dy0 + nh, 3.0)),
            _GLASS_BLACK,
        )
        cam_uv = (0.12 * w, dy0 + nh * 0.5)
        speaker_v = dy0 + 0.3 * nh
    elif m.cutout == "punch_hole_center":
        cam_uv = (0.0, dy0 + 0.055 * w)
    elif m.cutout == "punch_hole_corner":
        cam_uv = (dx0 + 0.09 * w, dy0 + 0.07 * w)
    else:  # front camera in the forehead, a home button in the chin
        cam_uv = (-0.2 * w, -h / 2 + 0.5 * top + 0.02 * w)
        speaker_v = -h / 2 + 0.5 * top
        _disc(canvas, scene.to_image(np.array([[0.0, h / 2 - 0.5 * bottom]]))[0], 0.1 * w, 60.0, 1)
    cam = scene.to_image(np.array([cam_uv]))[0]
    _disc(canvas, cam, max(0.028 * w, 1.6), 3.0)
    _disc(canvas, cam - 0.4, 0.6, 70.0)
    sw = 0.16 * w
    _stroke(canvas, scene.to_image(np.array([[-sw / 2, speaker_v], [sw / 2, speaker_v]])), 26.0)

    gain = 1.0 if scene.finish == "glossy" else 0.6  # some phones wear an anti-glare film
    glass = _poly_mask(glass_pts)
    inset = r + 3.0
    surfaces = _Surfaces(
        region=_full(glass),
        name="screen",
        sample_rect=(-w / 2 + inset, -h / 2 + inset, w / 2 - inset, h / 2 - inset),
        base_level=float(_DISPLAY_OFF.mean()),
    )
    return glass, gain, surfaces


def _draw_back(
    canvas: np.ndarray, scene: Scene, m: PhoneModel, w: float, h: float, r: float
) -> tuple[_Mask, float, _Surfaces]:
    """Back side: the panel in the body colour and the rear camera."""
    body = np.array(scene.body_bgr, np.float32)
    # Seen from the back, the phone's left edge (u = -w/2 from the front) is on the right.
    x_left = w / 2
    lr = 0.072 * w  # lens radius
    top = -h / 2
    module: np.ndarray | None
    if m.module == "square":
        side = 0.42 * w
        u0, v0 = x_left - 0.07 * w - side, top + 0.06 * w
        module = _rounded_rect(u0, v0, u0 + side, v0 + side, 0.2 * side)
        lenses = [(u0 + side * 0.72, v0 + side * f) for f in (0.28, 0.72)] + [
            (u0 + side * 0.28, v0 + side * 0.5)
        ]
        flash = (u0 + side * 0.25, v0 + side * 0.17)
    elif m.module == "pill":
        mw, mh = 0.22 * w, 0.46 * w
        u0, v0 = x_left - 0.08 * w - mw, top + 0.07 * w
        module = _rounded_rect(u0, v0, u0 + mw, v0 + mh, mw / 2)
        lenses = [(u0 + mw / 2, v0 + mw / 2), (u0 + mw / 2, v0 + mh - mw / 2)]
        flash = (u0 - 0.08 * w, v0 + mh * 0.3)
    elif m.module == "bar":
        mw, mh = 0.84 * w, 0.24 * w
        u0, v0 = -mw / 2, top + 0.08 * w
        module = _rounded_rect(u0, v0, u0 + mw, v0 + mh, mh / 2)
        lenses = [(u0 + mw * f, v0 + mh / 2) for f in (0.82, 0.6, 0.38)]
        flash = (u0 + mw * 0.17, v0 + mh / 2)
    else:
        module = None
        lenses = [(x_left - 0.16 * w, top + 0.14 * w)]
        flash = (x_left - 0.34 * w, top + 0.14 * w)
    assert len(lenses) == m.lenses
    if module is not None:
        mod_pts = scene.to_image(module)
        _fill(canvas, mod_pts + 0.8, body * 0.55)  # the bump's edge in shadow
        _fill(canvas, mod_pts, body * 0.82 + 8.0)
    for centre in lenses:
        _lens(canvas, scene, centre, lr)
    _disc(canvas, scene.to_image(np.array([flash]))[0], 0.035 * w, (168.0, 208.0, 222.0))

    panel = _poly_mask(
        scene.to_image(_rounded_rect(-w / 2 + 2, -h / 2 + 2, w / 2 - 2, h / 2 - 2, r - 2))
    )
    gain = 0.55 if scene.finish == "glossy" else 0.2  # a glass back, or frosted glass / plastic
    # Defects stay off the camera: a mark on a lens is another kind of part and another label.
    region = _full(panel)
    if module is not None:
        keep_out = [_poly_mask(mod_pts + 0.8)]
    else:
        keep_out = [
            _circle_mask(scene.to_image(np.array([c]))[0], lr + 2.0) for c in (*lenses, flash)
        ]
    for mask in keep_out:
        region[mask.slices] *= 1.0 - mask.alpha
    inset = r + 3.0
    surfaces = _Surfaces(
        region=region,
        name="body",
        sample_rect=(-w / 2 + inset, -h / 2 + inset, w / 2 - inset, h / 2 - inset),
        base_level=float(body.mean()),
    )
    return panel, gain, surfaces


# --------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------


def _severity(rng: np.random.Generator, config: SynthConfig) -> float:
    lo_hi = config.faint_severity if rng.random() < config.faint_share else config.strong_severity
    return _uniform(rng, lo_hi)


def _point_in(rng: np.random.Generator, surf: _Surfaces, scene: Scene) -> np.ndarray:
    """A point (phone coordinates) on the open surface, clear of the camera and the edges."""
    u0, v0, u1, v1 = surf.sample_rect
    for _ in range(100):
        p = np.array([rng.uniform(u0, u1), rng.uniform(v0, v1)])
        x, y = scene.to_image(p[None])[0]
        if surf.region[int(y), int(x)] >= 0.999:
            return p
    raise RuntimeError("found no free point on the surface")  # a bug in the geometry


def _inside(p: np.ndarray, rect: tuple[float, float, float, float]) -> bool:
    return rect[0] <= p[0] <= rect[2] and rect[1] <= p[1] <= rect[3]


def _smooth_weights(rng: np.random.Generator, n: int, lo: float) -> list[float]:
    """Intensity along a line that fades in and out: real scratches are intermittent."""
    knots = rng.uniform(lo, 1.0, max(n // 4, 2))
    return [
        float(v) for v in np.interp(np.linspace(0, len(knots) - 1, n), np.arange(len(knots)), knots)
    ]


@dataclass(frozen=True)
class _Mark:
    """One drawn defect instance: where it is and how it changes the pixels under it."""

    mask: _Mask
    kind: str  # add | darken
    value: np.ndarray  # add: a BGR delta; darken: the fraction of light lost


def _apply(img: np.ndarray, mark: _Mark) -> None:
    sy, sx = mark.mask.slices
    a = _grey3(mark.mask.alpha)
    region = img[sy, sx]
    if mark.kind == "add":
        region += a * mark.value
    else:
        region *= 1.0 - a * mark.value


def _line_gain(sigma: float, width: float) -> float:
    """Peak of a line of this width after the focus blur, relative to before it.

    Defects are specified by the contrast they show after blur, so that a blurred image does not
    silently turn a faint defect into an invisible one (a label nobody could verify).
    """
    return math.erf(width / (2.0 * math.sqrt(2.0) * sigma)) if sigma > 0 else 1.0


def _disc_gain(sigma: float, radius: float) -> float:
    """Centre value of a disc after the focus blur, relative to before it."""
    return 1.0 - math.exp(-(radius**2) / (2.0 * sigma**2)) if sigma > 0 else 1.0


def _scratches(
    rng: np.random.Generator, s: float, surf: _Surfaces, scene: Scene, config: SynthConfig
) -> tuple[list[list[_Mark]], dict[str, Any]]:
    count = 1 if rng.random() < 0.75 else 2
    # Scratches scatter light: on dark glass they always show light; on a body either way.
    # Bright bodies show them dark (a light mark on white would clip).
    light = surf.base_level < 80 or (surf.base_level < 180 and rng.random() < 0.6)
    contrast = (10.0 + 45.0 * s) * config.contrast_scale  # as seen, after the focus blur
    instances, lengths = [], []
    for _ in range(count):
        length = 14.0 + 84.0 * s * rng.uniform(0.6, 1.0)
        for _try in range(30):
            mid = _point_in(rng, surf, scene)
            d = rng.normal(size=2)
            d /= np.linalg.norm(d)
            p0, p2 = mid - d * length / 2, mid + d * length / 2
            if _inside(p0, surf.sample_rect) and _inside(p2, surf.sample_rect):
                break
            length *= 0.85
        bend = rng.normal(0.0, 0.1 * length) * np.array([-d[1], d[0]])
        t = np.linspace(0.0, 1.0, 14)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * (mid + bend) + t**2 * p2
        thickness = 2 if rng.random() < 0.2 + 0.3 * s else 1
        weights = _smooth_weights(rng, len(curve) - 1, 0.45)
        mask = _polyline_mask([(scene.to_image(curve), weights)], thickness)
        assert mask is not None
        drawn = min(contrast / _line_gain(scene.blur_sigma, thickness), 150.0)
        delta = np.full(3, drawn if light else -drawn, np.float32)
        instances.append([_Mark(mask.clipped_to(surf.region), "add", delta)])
        lengths.append(round(float(length), 1))
    return instances, {
        "count": count,
        "light": bool(light),
        "contrast": round(contrast, 2),
        "lengths": lengths,
    }


def _crack(
    rng: np.random.Generator, s: float, surf: _Surfaces, scene: Scene, config: SynthConfig
) -> tuple[list[list[_Mark]], dict[str, Any]]:
    impact = _point_in(rng, surf, scene)
    rays = 2 + round(4 * s + rng.uniform(0, 1))
    reach = 14.0 + 70.0 * s
    contrast = (12.0 + 50.0 * s) * config.contrast_scale  # as seen, after the focus blur
    drawn = min(contrast / _line_gain(scene.blur_sigma, 1), 150.0)
    light = surf.base_level < 110 or (surf.base_level < 180 and rng.random() < 0.3)
    strokes: list[tuple[np.ndarray, list[float]]] = []

    def walk(start: np.ndarray, angle: float, length: float, depth: int) -> None:
        pts, p, travelled = [start], start.copy(), 0.0
        while travelled < length:
            step = rng.uniform(2.5, 5.0)
            angle += rng.normal(0.0, 0.22)
            p = p + step * np.array([math.cos(angle), math.sin(angle)])
            if not _inside(p, surf.sample_rect):
                break
            pts.append(p)
            travelled += step
            if depth < 2 and rng.random() < 0.06 + 0.08 * s:
                branch = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
                walk(p, branch, (length - travelled) * rng.uniform(0.3, 0.7), depth + 1)
        if len(pts) >= 2:
            arr = np.array(pts)
            fade = np.linspace(1.0, 0.55, len(arr) - 1) * rng.uniform(0.75, 1.0)
            strokes.append((scene.to_image(arr), [float(f) for f in fade]))

    base = rng.uniform(0, 2 * math.pi)
    for i in range(rays):
        angle = base + 2 * math.pi * i / rays + rng.normal(0.0, 0.35)
        walk(impact, angle, reach * rng.uniform(0.5, 1.0), 0)
    mask = _polyline_mask(strokes, 1)
    if mask is None:  # every ray left the surface at once: keep the impact itself
        mask = _circle_mask(scene.to_image(impact[None])[0], 1.2)
    marks = [
        _Mark(
            mask.clipped_to(surf.region),
            "add",
            np.full(3, drawn if light else -drawn, np.float32),
        )
    ]
    star = _circle_mask(scene.to_image(impact[None])[0], 1.0 + 1.2 * s)  # the chipped impact
    marks.append(_Mark(star.clipped_to(surf.region), "add", np.full(3, 0.8 * drawn, np.float32)))
    params = {
        "rays": rays,
        "reach": round(reach, 1),
        "light": bool(light),
        "contrast": round(contrast, 2),
    }
    return [marks], params


def _pits(
    rng: np.random.Generator, s: float, surf: _Surfaces, scene: Scene, config: SynthConfig
) -> tuple[list[list[_Mark]], dict[str, Any]]:
    count = int(rng.integers(1, 5))
    dark_surface = surf.base_level < 80
    depth = (0.3 + 0.55 * s) * config.contrast_scale  # fraction of light lost, as seen
    rim_contrast = (10.0 + 40.0 * s) * config.contrast_scale  # grey levels, as seen
    rim_drawn = min(rim_contrast / _line_gain(scene.blur_sigma, 1), 150.0)
    centres: list[np.ndarray] = []
    instances, radii = [], []
    for _ in range(count):
        for _try in range(20):
            c = _point_in(rng, surf, scene)
            if all(np.linalg.norm(c - o) > 14 for o in centres):
                break
        centres.append(c)
        radius = float(np.clip(1.5 + 2.5 * s * rng.uniform(0.7, 1.0), 1.5, 4.0))
        centre = scene.to_image(c[None])[0]
        drawn_depth = min(depth / _disc_gain(scene.blur_sigma, radius), 0.95)
        pit = _circle_mask(centre, radius).clipped_to(surf.region)
        marks = [_Mark(pit, "darken", np.float32(drawn_depth))]
        # A chipped rim catches the light; on dark glass it is what makes a pit visible.
        if dark_surface or rng.random() < 0.35:
            ring = _circle_mask(centre, radius + 0.7, 1)
            marks.append(
                _Mark(ring.clipped_to(surf.region), "add", np.full(3, rim_drawn, np.float32))
            )
        instances.append(marks)
        radii.append(round(radius, 2))
    params = {
        "count": count,
        "radii": radii,
        "depth": round(depth, 3),
        "rim_contrast": round(rim_contrast, 2),
    }
    return instances, params


# Directions of a colour shift (BGR, about unit length), by what they look like.
_TINTS = {
    "yellowed": (-1.0, 0.15, 0.55),
    "brown": (-0.75, -0.55, -0.35),
    "faded": (0.6, 0.6, 0.6),
    "darkened": (-0.6, -0.6, -0.6),
    "purple": (0.6, -0.5, 0.45),
    "bluish": (0.75, 0.2, -0.45),
    "purple_haze": (0.8, 0.3, 0.7),  # on dark glass only a light haze can show
    "yellow_haze": (0.25, 0.65, 0.8),
    "milky": (0.6, 0.6, 0.6),
}
_TINTS_BY_SURFACE = {
    "dark": ("purple_haze", "yellow_haze", "milky"),
    "mid": ("yellowed", "brown", "faded", "darkened", "purple", "bluish"),
    "bright": ("yellowed", "brown", "darkened", "purple", "bluish"),
}


def _discoloration(
    rng: np.random.Generator, s: float, surf: _Surfaces, scene: Scene, config: SynthConfig
) -> tuple[list[list[_Mark]], dict[str, Any]]:
    tone = "dark" if surf.base_level < 60 else "bright" if surf.base_level > 180 else "mid"
    tint_name = str(rng.choice(_TINTS_BY_SURFACE[tone]))
    amplitude = (14.0 + 36.0 * s) * config.contrast_scale  # grey levels at the patch's centre
    a = 10.0 + 22.0 * s * rng.uniform(0.7, 1.0)
    b = a * rng.uniform(0.45, 1.0)
    centre_uv = _point_in(rng, surf, scene)
    centre = scene.to_image(centre_uv[None])[0]
    theta = rng.uniform(0, math.pi)
    x0, y0, x1, y1 = _roi(centre[None], a + 1)
    xs = np.arange(x0, x1, dtype=np.float32) - centre[0]
    ys = np.arange(y0, y1, dtype=np.float32) - centre[1]
    c, sn = math.cos(theta), math.sin(theta)
    u = xs[None, :] * c + ys[:, None] * sn
    v = -xs[None, :] * sn + ys[:, None] * c
    q = (u / a) ** 2 + (v / b) ** 2
    # A smooth bump with compact support: soft like a blurred ellipse, but exactly zero outside
    # it, so its footprint is known from the geometry. A second lobe makes the shape irregular.
    alpha = np.clip(1.0 - q, 0.0, None) ** 1.5
    du, dv = rng.uniform(-0.5, 0.5) * a, rng.uniform(-0.5, 0.5) * b
    q2 = ((u - du) / (0.6 * a)) ** 2 + ((v - dv) / (0.6 * b)) ** 2
    alpha = np.maximum(alpha, 0.8 * np.clip(1.0 - q2, 0.0, None) ** 1.5 * (q < 1))
    mask = _Mask(y0, x0, alpha.astype(np.float32)).clipped_to(surf.region)
    delta = amplitude * np.array(_TINTS[tint_name], np.float32)
    params = {
        "tint": tint_name,
        "amplitude": round(amplitude, 2),
        "axes": [round(a, 1), round(b, 1)],
    }
    return [[_Mark(mask, "add", delta)]], params


_DEFECT_DRAWERS = {
    DefectClass.SCRATCH: _scratches,
    DefectClass.CRACK: _crack,
    DefectClass.PIT: _pits,
    DefectClass.DISCOLORATION: _discoloration,
}


# --------------------------------------------------------------------------------------------
# Camera: lighting, focus, noise
# --------------------------------------------------------------------------------------------


def _colour_gains(kelvin: float) -> np.ndarray:
    """BGR gains of a lamp relative to a 5200 K white balance: warm light is red, cold is blue."""
    t = (5200.0 - kelvin) / 1500.0
    return np.array([1.0 - 0.1 * t, 1.0, 1.0 + 0.1 * t], np.float32)


_NOISE_TABLE_SIZE = 1 << 20


@functools.cache
def _noise_table() -> np.ndarray:
    """Two fixed runs of standard normals, drawn once per process."""
    return np.random.default_rng(0x5EED).standard_normal(2 * _NOISE_TABLE_SIZE, dtype=np.float32)


def _gaussian_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal noise: the mean of two windows at seed-chosen offsets of a fixed table.

    Drawing 200k fresh normals per image took half of the time budget; two table windows cost
    a tenth of that. Each window comes from its own half of the table, so within an image the
    values are independent, and the 10^12 offset pairs make repeats between images negligible.
    """
    n = math.prod(shape)
    table = _noise_table()
    o1 = int(rng.integers(0, _NOISE_TABLE_SIZE - n))
    o2 = _NOISE_TABLE_SIZE + int(rng.integers(0, _NOISE_TABLE_SIZE - n))
    z = table[o1 : o1 + n] + table[o2 : o2 + n]
    z *= np.float32(math.sqrt(0.5))
    return z.reshape(shape)


def _expose(img: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    s = IMAGE_SIZE
    coords = (np.arange(s, dtype=np.float32) - s / 2) / (s / 2)  # -1..1
    a = math.radians(scene.gradient_angle_deg)
    gx = scene.gradient_strength * math.cos(a) * coords
    gy = scene.gradient_strength * math.sin(a) * coords
    vx, vy = scene.vignette * coords**2, scene.vignette * coords**2
    gain = np.add.outer(gy - vy, gx - vx)  # (s, s): linear gradient and vignetting
    gain += 1.0
    gain *= scene.brightness
    img *= _grey3(gain)
    rows = img.reshape(s, 3 * s)  # a view; per-channel factors broadcast along a row
    rows *= np.tile(_colour_gains(scene.colour_temperature_k), s)

    r = scene.blur_radius
    if r > 0:
        k = 2 * r + 1
        cv2.GaussianBlur(img, (k, k), scene.blur_sigma, dst=img, borderType=cv2.BORDER_REFLECT_101)

    noise = _gaussian_field(rng, (s, s, 3))
    columns = rng.normal(0.0, scene.column_noise, s).astype(np.float32)
    std = np.maximum(img, 0.0)  # read noise + shot noise, whose variance grows with the signal
    std *= scene.shot_noise_gain
    std += scene.read_noise**2
    np.sqrt(std, out=std)
    noise *= std
    img += noise
    rows += np.repeat(columns, 3)  # one offset per sensor column
    img += 0.5  # rounds to nearest when truncated below
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

# Independent random streams of one sample, so that drawing a defect never shifts the scene.
_STREAM_SCENE, _STREAM_TEXTURE, _STREAM_NOISE, _STREAM_DEFECT = 0, 1, 2, 3


def _stream(seed: int, stream: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *extra])


def _dilate(box: Box, r: int) -> Box:
    x0, y0, x1, y1 = box
    return max(x0 - r, 0), max(y0 - r, 0), min(x1 + r, IMAGE_SIZE), min(y1 + r, IMAGE_SIZE)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def render_sample(seed: int, defect_class: str, config: SynthConfig | None = None) -> SynthSample:
    """Render one photo. The scene depends on ``seed`` (and ``config``) only, the defect on both.

    ``seed`` is a non-negative integer; ``defect_class`` one of ``CLASS_NAMES``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if defect_class not in CLASS_NAMES:
        raise ValueError(f"unknown defect class {defect_class!r}; known: {', '.join(CLASS_NAMES)}")
    config = config or SynthConfig()
    seed = int(seed)
    scene = _sample_scene(_stream(seed, _STREAM_SCENE), config)
    img, surfaces = _render_scene(scene, _stream(seed, _STREAM_TEXTURE))

    boxes: list[Box] = []
    severity: float | None = None
    defect: dict[str, Any] | None = None
    if defect_class != DefectClass.OK:
        rng = _stream(seed, _STREAM_DEFECT, CLASS_NAMES.index(defect_class))
        severity = _severity(rng, config)
        instances, defect = _DEFECT_DRAWERS[DefectClass(defect_class)](
            rng, severity, surfaces, scene, config
        )
        for marks in instances:
            footprints = [fp for mark in marks if (fp := mark.mask.footprint()) is not None]
            if not footprints:
                continue
            for mark in marks:
                _apply(img, mark)
            x0, y0 = min(b[0] for b in footprints), min(b[1] for b in footprints)
            x1, y1 = max(b[2] for b in footprints), max(b[3] for b in footprints)
            boxes.append(_dilate((x0, y0, x1, y1), scene.blur_radius))
        if not boxes:
            raise RuntimeError(f"seed {seed}: the {defect_class} fell outside the part")  # a bug
        defect = {"surface": surfaces.name, **defect}

    image = _expose(img, scene, _stream(seed, _STREAM_NOISE))
    scene_params = {f.name: getattr(scene, f.name) for f in fields(scene)}
    params = _json_ready(
        {
            **scene_params,
            "blur_radius": scene.blur_radius,
            "severity": severity,
            "defect": defect,
        }
    )
    return SynthSample(image=image, label=defect_class, boxes=boxes, params=params)


def class_schedule(n: int, seed: int, class_mix: dict[str, float]) -> list[str]:
    """The class of each image of a dataset: exact proportions (largest remainder), shuffled.

    Exact rather than sampled proportions, so that a small set (the 50 samples) still holds
    every class and two datasets of the same size are equally balanced.
    """
    total = sum(class_mix.values())
    names = [c for c in CLASS_NAMES if class_mix.get(c, 0) > 0]
    quotas = {c: n * class_mix[c] / total for c in names}
    counts = {c: math.floor(q) for c, q in quotas.items()}
    by_remainder = sorted(names, key=lambda c: (-(quotas[c] - counts[c]), CLASS_NAMES.index(c)))
    for c in by_remainder[: n - sum(counts.values())]:
        counts[c] += 1
    schedule = [c for c in names for _ in range(counts[c])]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A, 1]))
    return [schedule[i] for i in rng.permutation(n)]


def image_seeds(n: int, seed: int) -> list[int]:
    """Per-image seeds of a dataset: 63-bit hashes of the dataset seed, so datasets of
    different seeds share no images, and a larger dataset of the same seed extends a smaller."""
    words = np.random.SeedSequence([seed, 0xDA7A, 0]).generate_state(n, dtype=np.uint64)
    return [int(w >> np.uint64(1)) for w in words]


def generate_dataset(
    out: Path,
    n: int,
    seed: int,
    *,
    config: SynthConfig | None = None,
    progress: bool = False,
    image_format: str = "png",
) -> Path:
    """Write ``n`` photos to ``out/<class>/<class>_<index:06d>.<ext>`` plus ``out/manifest.csv``.

    Returns the manifest's path. ``out`` must not hold a dataset already (a manifest or a class
    folder): mixing two runs would leave images the manifest does not list. Other files, such
    as a README, may be there. Boxes refer to the rendered pixels; with ``image_format="jpg"``
    compression may also touch pixels up to a 16 px block away.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}"
        )
    config = config or SynthConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder")
    taken = [p.name for p in (out / MANIFEST_NAME, *(out / c for c in CLASS_NAMES)) if p.exists()]
    if taken:
        raise FileExistsError(
            f"{out} already holds a dataset ({', '.join(taken)}); choose a new --out or delete it"
        )
    ext = IMAGE_FORMATS[image_format]
    write_params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []

    classes = class_schedule(n, seed, config.class_mix)
    seeds = image_seeds(n, seed)
    for c in set(classes):
        (out / c).mkdir(parents=True, exist_ok=True)
    logger.info("generating %d images, seed %d, into %s (%s)", n, seed, out, dict(Counter(classes)))

    start = time.perf_counter()
    rows = []
    for index in tqdm(range(n), desc="generate", unit="img", disable=not progress):
        cls, image_seed = classes[index], seeds[index]
        sample = render_sample(image_seed, cls, config)
        rel = f"{cls}/{cls}_{index:06d}{ext}"
        if not cv2.imwrite(str(out / rel), sample.image, write_params):
            raise OSError(f"could not write {out / rel}")
        rows.append(
            {
                "file": rel,
                "class": cls,
                "boxes": json.dumps([list(b) for b in sample.boxes]),
                "seed": image_seed,
                "params": json.dumps(sample.params, sort_keys=True, separators=(",", ":")),
            }
        )
    elapsed = time.perf_counter() - start

    manifest = out / MANIFEST_NAME
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)  # a manifest exists only once every image it lists does
    logger.info(
        "wrote %d images and %s in %.1f s (%.0f images/s)", n, manifest, elapsed, n / elapsed
    )
    return manifest

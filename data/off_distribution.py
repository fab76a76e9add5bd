"""Frames a line camera may send that are not pictures of a phone like the training images.

The image gate (``inspect_app/monitoring/gate.py``) must refuse these for automation; this
module draws them, deterministically by seed and with nothing downloaded, so that the gate's
defaults are tuned on one part and measured on another (``bench/image_gate.py``):

- blank frames: a dead lamp, a blown-out exposure, an empty fixture seen out of focus;
- random noise: a camera with a broken link or a wild gain;
- photographs of other things: the sample photos bundled with scikit-learn and matplotlib;
- partial views of phones: a corner, a half or the middle of a generated phone, zoomed to fill
  the frame (the part is mispositioned, or the camera zoomed);
- synthetic scenes: shapes, checkerboards, gradients, text;
- phones posed as the fixture never poses them: turned by 90 degrees or tilted by 25-65
  (the generator turns parts by at most 7 degrees and upside down; mirror images are not here
  because training augments with flips, so the model knows them);
- extreme exposure and focus: a phone photographed with the lamp off, overexposed, far out of
  focus or with motion blur;
- the right picture at the wrong size or aspect.

Two parts with nothing in common but the families: **tuning** and **held_out** use different
generators and different source photographs (every matplotlib photo is held out, and of
scikit-learn's two only ``china`` is used for tuning), and a frame's random stream comes from
the part, the source name, the seed and its index, so no held-out frame is a tuning frame.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from data.synth import IMAGE_SIZE, render_sample
from inspect_app.domain import CLASS_NAMES

PARTS = ("tuning", "held_out")

Source = Callable[[np.random.Generator], np.ndarray]  # rng -> (H, W, 3) uint8 BGR


@dataclass(frozen=True)
class OffDistributionFrame:
    image: np.ndarray  # (H, W, 3) uint8 BGR, as the service decodes a camera image
    source: str  # "<family>/<variant>", e.g. "blank/black"

    @property
    def family(self) -> str:
        return self.source.split("/", 1)[0]


# -- helpers ----------------------------------------------------------------------------------


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _phone(rng: np.random.Generator) -> np.ndarray:
    """A freshly generated line-camera photo (any class) from a seed no dataset uses."""
    seed = int(rng.integers(0, 2**62))
    return render_sample(seed, str(rng.choice(CLASS_NAMES))).image


def _fit(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize (stretch) to the camera's size, as a camera zoomed onto the region would."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h * w > size * size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def _square_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square window of 40-100% of the short side, at the camera's size."""
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    return _fit(photo[top : top + side, left : left + side])


def _colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0, 255, 3))  # type: ignore[return-value]


# -- bundled photographs (read once; nothing is downloaded) -----------------------------------


@functools.cache
def _sklearn_photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image(f"{name}.jpg")
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)


@functools.cache
def _matplotlib_photo(name: str) -> np.ndarray:
    """A matplotlib sample file as a BGR image: photos as they are, data as a picture."""
    from matplotlib import cbook, colormaps

    if name == "mri":  # a 256x256 16-bit head scan, big-endian
        with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
            raw = np.frombuffer(f.read(), dtype=">u2").reshape(256, 256)
        grey = _u8(raw.astype(np.float64) * 255.0 / max(int(raw.max()), 1))
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if name == "terrain":  # an elevation map in a colour map, as a screen would show it
        topo = np.asarray(cbook.get_sample_data("topobathy.npz")["topo"], dtype=np.float64)
        unit = (topo - topo.min()) / max(float(np.ptp(topo)), 1e-9)
        rgb = colormaps["terrain"](unit)[:, :, :3] * 255.0
        return cv2.cvtColor(_u8(rgb), cv2.COLOR_RGB2BGR)
    files = {"grace_hopper": "grace_hopper.jpg", "present": "Minduka_Present_Blue_Pack.png"}
    path = cbook.get_sample_data(files[name], asfileobj=False)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"matplotlib sample {path} could not be read")
    return image


def _photo(load: Callable[[str], np.ndarray], name: str) -> Source:
    return lambda rng: _square_crop(load(name), rng)


# -- blank frames -----------------------------------------------------------------------------


def _uniform(level: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    base = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), level, dtype=np.float64)
    return _u8(base + rng.normal(0.0, noise, base.shape)) if noise > 0 else _u8(base)


def _blank_dark(rng: np.random.Generator) -> np.ndarray:
    return _uniform(rng.uniform(0, 40), rng.uniform(0, 3), rng)


def _blank_light(rng: np.random.Generator) -> np.ndarray:
    return _uniform(rng.uniform(215, 255), rng.uniform(0, 3), rng)


def _blank_black(rng: np.random.Generator) -> np.ndarray:
    return _uniform(0.0, 0.0, rng)


def _blank_white(rng: np.random.Generator) -> np.ndarray:
    return _uniform(255.0, 0.0, rng)


def _blank_grey(rng: np.random.Generator) -> np.ndarray:
    return _uniform(float(rng.integers(100, 161)), 0.0, rng)


def _blank_near_uniform(rng: np.random.Generator) -> np.ndarray:
    return _uniform(rng.uniform(40, 215), rng.uniform(1, 4), rng)


# -- noise ------------------------------------------------------------------------------------


def _noise_uniform(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


def _noise_gaussian(rng: np.random.Generator) -> np.ndarray:
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    return _u8(rng.normal(rng.uniform(60, 190), rng.uniform(20, 60), shape))


def _noise_salt_pepper(rng: np.random.Generator) -> np.ndarray:
    image = _uniform(rng.uniform(60, 190), 0.0, rng)
    hit = rng.random((IMAGE_SIZE, IMAGE_SIZE)) < rng.uniform(0.05, 0.3)
    image[hit] = rng.choice(np.array([0, 255], dtype=np.uint8), size=(int(hit.sum()), 1))
    return image


def _noise_smooth(rng: np.random.Generator) -> np.ndarray:
    """Low-frequency colour blotches: random cells blown up by bicubic interpolation."""
    cells = int(rng.integers(3, 12))
    small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
    return _u8(cv2.resize(small, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC))


# -- partial views of phones ------------------------------------------------------------------


def _crop_corner(rng: np.random.Generator) -> np.ndarray:
    phone = _phone(rng)
    half = IMAGE_SIZE // 2
    top, left = (int(v) * half for v in rng.integers(0, 2, 2))
    return _fit(phone[top : top + half, left : left + half])


def _crop_band(rng: np.random.Generator) -> np.ndarray:
    """A band of 55-75% of the frame across one axis, stretched back: a part too close."""
    phone = _phone(rng)
    size = int(IMAGE_SIZE * rng.uniform(0.55, 0.75))
    start = int(rng.integers(0, IMAGE_SIZE - size + 1))
    window = phone[start : start + size] if rng.random() < 0.5 else phone[:, start : start + size]
    return _fit(window)


def _crop_half(rng: np.random.Generator) -> np.ndarray:
    phone = _phone(rng)
    half = IMAGE_SIZE // 2
    which = int(rng.integers(0, 4))
    window = [phone[:, :half], phone[:, half:], phone[:half], phone[half:]][which]
    return _fit(window)


def _crop_zoom_centre(rng: np.random.Generator) -> np.ndarray:
    phone = _phone(rng)
    side = int(IMAGE_SIZE * rng.uniform(0.3, 0.6))
    jitter = rng.integers(-20, 21, 2)
    top = int(np.clip((IMAGE_SIZE - side) // 2 + jitter[0], 0, IMAGE_SIZE - side))
    left = int(np.clip((IMAGE_SIZE - side) // 2 + jitter[1], 0, IMAGE_SIZE - side))
    return _fit(phone[top : top + side, left : left + side])


# -- synthetic scenes -------------------------------------------------------------------------


def _scene_shapes(rng: np.random.Generator) -> np.ndarray:
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = _u8(np.array(_colour(rng)))
    for _ in range(int(rng.integers(3, 15))):
        colour = _colour(rng)
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, IMAGE_SIZE, 4))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
        elif kind == 1:
            cv2.circle(image, (x0, y0), int(rng.integers(5, 80)), colour, -1)
        else:
            cv2.line(image, (x0, y0), (x1, y1), colour, int(rng.integers(1, 8)))
    return image


def _scene_checkerboard(rng: np.random.Generator) -> np.ndarray:
    period = int(rng.integers(8, 64))
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    board = ((yy // period + xx // period) % 2).astype(bool)
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[board] = _u8(np.array(_colour(rng)))
    image[~board] = _u8(np.array(_colour(rng)))
    angle = rng.uniform(0, 90)
    turn = cv2.getRotationMatrix2D((IMAGE_SIZE / 2, IMAGE_SIZE / 2), angle, 1.0)
    return cv2.warpAffine(image, turn, (IMAGE_SIZE, IMAGE_SIZE), borderMode=cv2.BORDER_REFLECT)


def _scene_gradient(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(xx - cx, yy - cy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    a, b = np.array(_colour(rng)), np.array(_colour(rng))
    return _u8(a + (b - a) * t[:, :, None])


_WORDS = ("LOT", "SERIAL", "PASS", "FAIL", "BATCH", "QC", "STATION", "LINE", "0427", "A17")


def _scene_text(rng: np.random.Generator) -> np.ndarray:
    image = _uniform(rng.uniform(0, 255), rng.uniform(0, 3), rng)
    for _ in range(int(rng.integers(2, 8))):
        text = " ".join(str(w) for w in rng.choice(_WORDS, size=int(rng.integers(1, 4))))
        origin = (int(rng.integers(0, IMAGE_SIZE // 2)), int(rng.integers(20, IMAGE_SIZE)))
        cv2.putText(
            image, text, origin, int(rng.integers(0, 8)), rng.uniform(0.5, 1.6),
            _colour(rng), int(rng.integers(1, 4)), cv2.LINE_AA,
        )  # fmt: skip
    return image


# -- phones posed or exposed as the line never sends them --------------------------------------


def _pose_turned(rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(_phone(rng), k=int(rng.choice([1, 3]))))


def _pose_shifted(rng: np.random.Generator) -> np.ndarray:
    """The part pushed 25-40% of the frame off centre, partly out of view (edges repeated)."""
    dx, dy = rng.uniform(0.25, 0.4, 2) * IMAGE_SIZE * rng.choice([-1, 1], 2)
    if rng.random() < 0.5:
        dx, dy = (dx, 0.0) if rng.random() < 0.5 else (0.0, dy)
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return cv2.warpAffine(_phone(rng), move, size, borderMode=cv2.BORDER_REPLICATE)


def _pose_tilted_slightly(rng: np.random.Generator) -> np.ndarray:
    """Turned by 18-25 degrees: more than a fixture allows (the generator turns parts by at
    most 7 degrees and training augments by 6 more)."""
    angle = rng.uniform(18, 25) * rng.choice([-1, 1])
    turn = cv2.getRotationMatrix2D((IMAGE_SIZE / 2, IMAGE_SIZE / 2), angle, 1.0)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return cv2.warpAffine(_phone(rng), turn, size, borderMode=cv2.BORDER_REPLICATE)


def _pose_tilted(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(25, 65) * rng.choice([-1, 1])
    turn = cv2.getRotationMatrix2D((IMAGE_SIZE / 2, IMAGE_SIZE / 2), angle, 1.0)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    return cv2.warpAffine(_phone(rng), turn, size, borderMode=cv2.BORDER_REFLECT_101)


def _exposure_over(rng: np.random.Generator) -> np.ndarray:
    return _u8(_phone(rng).astype(np.float64) * rng.uniform(2.5, 4.0))


def _exposure_under(rng: np.random.Generator) -> np.ndarray:
    return _u8(_phone(rng).astype(np.float64) * rng.uniform(0.05, 0.2))


def _exposure_blown(rng: np.random.Generator) -> np.ndarray:
    """Washed out: a lamp far too bright with the camera's gain up (offset and gain)."""
    phone = _phone(rng).astype(np.float64)
    return _u8(phone * rng.uniform(1.5, 2.5) + rng.uniform(80, 160))


def _exposure_lamp_off(rng: np.random.Generator) -> np.ndarray:
    """Almost no light: a trace of the part under the sensor's read noise."""
    phone = _phone(rng).astype(np.float64)
    return _u8(phone * rng.uniform(0.01, 0.05) + rng.normal(2.0, 1.5, phone.shape))


def _focus_defocus(rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(_phone(rng), (0, 0), rng.uniform(4.0, 8.0))


def _focus_shake(rng: np.random.Generator) -> np.ndarray:
    """The camera shook during the exposure: the frame averaged over an 8-14 px straight path
    along x or y (the generator's focus blur is at most a 1.3 px Gaussian)."""
    length = int(rng.integers(8, 15))
    kernel = np.full((1, length), 1.0 / length, dtype=np.float32)
    if rng.random() < 0.5:
        kernel = kernel.T
    return cv2.filter2D(_phone(rng), -1, kernel, borderType=cv2.BORDER_REFLECT)


def _focus_motion(rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(15, 32))
    kernel = np.zeros((length, length), dtype=np.float32)
    kernel[length // 2, :] = 1.0 / length
    turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return cv2.filter2D(_phone(rng), -1, kernel / max(float(kernel.sum()), 1e-9))


# -- the right picture at the wrong size ------------------------------------------------------


def _size_wide(rng: np.random.Generator) -> np.ndarray:
    return cv2.resize(_phone(rng), (384, 256), interpolation=cv2.INTER_LINEAR)


def _size_small_4_3(rng: np.random.Generator) -> np.ndarray:
    return cv2.resize(_phone(rng), (320, 240), interpolation=cv2.INTER_AREA)


SOURCES: dict[str, dict[str, Source]] = {
    "tuning": {
        "blank/dark": _blank_dark,
        "blank/light": _blank_light,
        "noise/uniform": _noise_uniform,
        "noise/gaussian": _noise_gaussian,
        "photo/china": _photo(_sklearn_photo, "china"),
        "crop/corner": _crop_corner,
        "crop/band": _crop_band,
        "scene/shapes": _scene_shapes,
        "scene/checkerboard": _scene_checkerboard,
        "pose/turned_90": _pose_turned,
        "pose/shifted": _pose_shifted,
        "pose/tilted_slightly": _pose_tilted_slightly,
        "exposure/over": _exposure_over,
        "exposure/under": _exposure_under,
        "focus/defocus": _focus_defocus,
        "focus/shake": _focus_shake,
        "size/wide": _size_wide,
    },
    "held_out": {
        "blank/black": _blank_black,
        "blank/white": _blank_white,
        "blank/grey": _blank_grey,
        "blank/near_uniform": _blank_near_uniform,
        "noise/salt_pepper": _noise_salt_pepper,
        "noise/smooth": _noise_smooth,
        "photo/flower": _photo(_sklearn_photo, "flower"),
        "photo/grace_hopper": _photo(_matplotlib_photo, "grace_hopper"),
        "photo/present": _photo(_matplotlib_photo, "present"),
        "photo/mri": _photo(_matplotlib_photo, "mri"),
        "photo/terrain": _photo(_matplotlib_photo, "terrain"),
        "crop/half": _crop_half,
        "crop/zoom_centre": _crop_zoom_centre,
        "scene/gradient": _scene_gradient,
        "scene/text": _scene_text,
        "pose/tilted": _pose_tilted,
        "exposure/blown": _exposure_blown,
        "exposure/lamp_off": _exposure_lamp_off,
        "focus/motion": _focus_motion,
        "size/small_4_3": _size_small_4_3,
    },
}


def off_distribution_frames(
    part: str, n_per_source: int, seed: int, *, sources: tuple[str, ...] | None = None
) -> list[OffDistributionFrame]:
    """`n_per_source` frames of every source of `part` ("tuning" or "held_out"), in source
    order. The same (part, seed) gives the same frames; `sources` picks a subset by name
    without changing the frames of the others."""
    if part not in SOURCES:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if n_per_source < 0:
        raise ValueError(f"n_per_source must be non-negative, got {n_per_source}")
    chosen = SOURCES[part] if sources is None else {s: SOURCES[part][s] for s in sources}
    part_salt = PARTS.index(part)
    frames = []
    for name, make in chosen.items():
        name_salt = zlib.crc32(name.encode())
        for i in range(n_per_source):
            rng = np.random.default_rng([seed, part_salt, name_salt, i])
            frames.append(OffDistributionFrame(image=make(rng), source=name))
    return frames

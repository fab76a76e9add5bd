"""Validate and decode one camera image, and measure it (design.md section 3).

Cameras are trusted to send images, not to send good ones: the format is sniffed from the
magic bytes, the pixel count is read from the header *before* the full decode (a small
compressed file can expand to gigabytes), and a truncated JPEG is caught by its missing EOI
marker, since libjpeg may "decode" a cut-off file by padding it with grey.

A declared content type that disagrees with the bytes is accepted when the bytes are a
supported image: the bytes are what gets stored and inspected, and camera firmware often
mislabels. The sniffed format is what is recorded. A declared type that is not an image type
we support (``image/gif``, ``text/plain``) is refused before the bytes are looked at.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.profile import edge_layout

logger = logging.getLogger(__name__)

# Declared content types we accept, to the format they name. application/octet-stream (what
# many HTTP clients send for an untyped file part) and no type at all mean "sniff it".
CONTENT_TYPES: dict[str, str] = {
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/png": "png",
    "image/bmp": "bmp",
    "image/x-bmp": "bmp",
    "image/x-ms-bmp": "bmp",
}
SNIFFED_CONTENT_TYPES = frozenset({"application/octet-stream"})
MEDIA_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png", "bmp": "image/bmp"}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_BMP_MAGIC = b"BM"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


class ImageRejected(Exception):
    """The bytes are not an image we inspect. `status_code` is the HTTP status that says why."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: np.ndarray  # (H, W, 3) uint8, BGR as OpenCV decodes it
    format: str  # jpeg | png | bmp, from the bytes
    width: int
    height: int


# Grey levels counted as clipped: at most CLIP_DARK or at least CLIP_BRIGHT. A band of three
# levels rather than exactly 0 and 255, because JPEG's ringing and a sensor's noise and column
# offsets scatter a saturated region over the last few levels (a blown-out JPEG area reads
# 253-255, not 255), so counting only 0 and 255 would miss most of the clipping in a JPEG; the
# band is narrower than a well-exposed camera's read noise, so a good picture has almost none.
CLIP_DARK = 2
CLIP_BRIGHT = 253

# Framing (`InputStats.end_balance`, `side_balance`): is the whole part in the frame? A line
# camera sees the part whole, its outline well inside the frame; a part cut off by the frame
# (mispositioned, shifted, the camera zoomed) is missing the outline on one side, though every
# piece that is in view looks like a part, which the embedding alone does not see (it let
# through top and bottom halves of phones, stretched to fill the frame). So the framing
# metrics compare the outline on opposite sides of the frame. An outline edge is a long one:
# the gradient averaged along the edge over a fifth of the frame (a phone's end spans ~40% of
# the width), which keeps the part's outline and the fixture pocket's and drops what is short
# (screws, pits, a crack's branches, sensor noise). The ends are looked for in the outer 30%
# of the height, where a whole part's ends lie (the generator's phones fill 70-80% of it);
# the sides in each half of the width, because a belt's own edge runs the full height near
# the frame's side and would outshine the part's sides in an outer band.
OUTLINE_RUN = 0.2  # of the frame's side: how long an edge must be to count as an outline
END_BAND = 0.3  # of the height: the top and bottom bands where the part's ends are looked for

# Tilt (`InputStats.tilt`): how far the part is turned from the frame's axes. A fixture holds a
# phone square to the camera (the generator turns parts by at most 7 degrees); one turned by
# 18-25 degrees still looks like a phone to the embedding, which let such frames through. A
# phone's outline, its screen, its camera module and the fixture's pocket are rectangles, so
# the frame's edges point along two perpendicular directions; the tilt is that pair's angle
# from the frame's axes: the mean of 4x the gradients' angles (a right angle apart count as
# one direction), weighted by the gradient's magnitude, divided by 4. Within (-45, 45]
# degrees, positive when the part is turned clockwise as the picture is seen.


@dataclass(frozen=True)
class InputStats:
    """What input-drift monitoring and the image gate watch: a dirty lens, a dead lamp or an
    empty fixture shows here first."""

    width: int
    height: int
    brightness: float  # mean grey level, 0..255
    contrast: float  # standard deviation of the grey level
    sharpness: float  # variance of the Laplacian: falls when the camera is out of focus
    # log(variance of the x-gradient / variance of the y-gradient): a shake or motion blur
    # smears detail along one direction only, which moves this where sharpness barely moves
    gradient_balance: float
    # log((1 + strongest long horizontal edge in the top END_BAND) / (1 + the same in the
    # bottom band)): 0 for a part with both ends in view; far from 0 when one end is out of the
    # frame (positive: the bottom end is missing); 0 for a flat frame, which has neither
    end_balance: float
    # the same for long vertical edges in the left half over the right half (positive: the
    # right side is missing)
    side_balance: float
    # degrees the frame's edges are turned from its axes (the tilt note above): near 0 for a
    # part in its fixture, 18-45 (or -18 to -45) for one turned in it
    tilt: float
    clipped_dark: float  # share of pixels with grey level <= CLIP_DARK: under-exposure
    clipped_bright: float  # share of pixels with grey level >= CLIP_BRIGHT: over-exposure
    mean_blue: float  # mean of each colour channel, 0..255: a lamp's colour shift
    mean_green: float
    mean_red: float
    # where the frame's edges lie (``models.profile.edge_layout``, 256 values): not a metric
    # of its own (no quantiles, no drift test), the image gate compares it with the version's
    # reference layouts.
    edge_layout: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def aspect(self) -> float:
        """Width over height: a camera sending another format shows here."""
        return self.width / self.height

    def metrics(self) -> dict[str, float]:
        """Every input metric by name, as the reference profile and the image gate key them."""
        return {
            "width": float(self.width),
            "height": float(self.height),
            "aspect": self.aspect,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "sharpness": self.sharpness,
            "gradient_balance": self.gradient_balance,
            "end_balance": self.end_balance,
            "side_balance": self.side_balance,
            "tilt": self.tilt,
            "clipped_dark": self.clipped_dark,
            "clipped_bright": self.clipped_bright,
            "mean_blue": self.mean_blue,
            "mean_green": self.mean_green,
            "mean_red": self.mean_red,
        }


def format_for_content_type(content_type: str | None) -> str | None:
    """The format a declared content type names; None means "sniff"; refuses unsupported types."""
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type or media_type in SNIFFED_CONTENT_TYPES:
        return None
    if media_type not in CONTENT_TYPES:
        raise ImageRejected(
            415,
            f"unsupported content type {media_type!r}: send image/jpeg, image/png or image/bmp",
        )
    return CONTENT_TYPES[media_type]


def sniff_format(data: bytes) -> str | None:
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_BMP_MAGIC) and len(data) >= 26:
        return "bmp"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    # The first chunk must be IHDR: length(4) "IHDR"(4) width(4) height(4), big-endian.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageRejected(422, "corrupt PNG: no IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    else:
        # Negative height means rows are stored top-down; the pixel count is the same.
        width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD9)) | {0x01}  # RSTn, SOI, TEM: no length


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageRejected(422, "corrupt JPEG: bad marker before the frame header")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise ImageRejected(422, "corrupt JPEG: no frame header (SOF) found")


def header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) from the header alone, without decoding the pixels."""
    if fmt == "png":
        return _png_size(data)
    if fmt == "bmp":
        return _bmp_size(data)
    return _jpeg_size(data)


def _check_complete(data: bytes, fmt: str) -> None:
    """Refuse a file that was cut off in transit, which some decoders would pad silently."""
    if fmt == "jpeg":
        # FF D9 cannot occur inside entropy-coded data (FF is always stuffed there), so a
        # complete file has its EOI after the last start-of-scan; anything an encoder appends
        # after EOI (padding, a second picture with its own scan and EOI) keeps that true.
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            raise ImageRejected(422, "truncated JPEG: the end-of-image marker (FFD9) is missing")
    elif fmt == "png":
        # The IEND chunk is always these 12 bytes (empty, fixed CRC); data may follow it.
        if _PNG_IEND not in data:
            raise ImageRejected(422, "truncated PNG: the IEND chunk is missing")
    elif fmt == "bmp":
        (declared_size,) = struct.unpack("<I", data[2:6])
        if declared_size and len(data) < declared_size:
            raise ImageRejected(
                422, f"truncated BMP: {len(data)} bytes of the {declared_size} its header declares"
            )


def check_envelope(data: bytes, content_type: str | None, *, max_bytes: int) -> str | None:
    """The checks that need no decoding (declared type, empty, size); returns the declared
    format. Cheap enough to run before anything else looks at the request."""
    declared = format_for_content_type(content_type)
    if not data:
        raise ImageRejected(400, "empty body: no image bytes were sent")
    if len(data) > max_bytes:
        raise ImageRejected(413, f"image is {len(data)} bytes, over the limit of {max_bytes}")
    return declared


def decode_image(
    data: bytes, content_type: str | None, *, max_bytes: int, max_pixels: int
) -> DecodedImage:
    """Validate and decode `data`; raises ImageRejected (a 4xx status and why) for bad input."""
    declared = check_envelope(data, content_type, max_bytes=max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(
            415, "the bytes are not a JPEG, PNG or BMP image (unrecognised file signature)"
        )
    if declared is not None and declared != fmt:
        logger.warning(
            "declared content type %s but the bytes are %s; using %s", declared, fmt, fmt
        )
    width, height = header_size(data, fmt)
    if width <= 0 or height <= 0:
        raise ImageRejected(422, f"corrupt {fmt.upper()}: the header says {width}x{height} pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            413,
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
        )
    _check_complete(data, fmt)
    # IMREAD_COLOR gives 8-bit BGR whatever the file's depth or channels; the EXIF orientation
    # is ignored because a line camera's pixels are what the model was trained on.
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageRejected(422, f"corrupt {fmt.upper()}: OpenCV could not decode it")
    if image.shape[1] != width or image.shape[0] != height:
        raise ImageRejected(
            422,
            f"corrupt {fmt.upper()}: header says {width}x{height}, "
            f"pixels are {image.shape[1]}x{image.shape[0]}",
        )
    return DecodedImage(image=image, format=fmt, width=width, height=height)


def input_stats(image: np.ndarray) -> InputStats:
    """Measure a decoded image (BGR or grey uint8) at its own resolution, on the hot path:
    ~0.4 ms for a 256x256 frame on one core, and ~0.15 ms more for its edge layout (0.9 ms in
    all at a load of ~4.7 on 2 cores; ``bench/image_gate.py`` prints it)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    mean, std = cv2.meanStdDev(grey)
    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_64F))
    dx, dy = cv2.spatialGradient(grey)  # 3x3 Sobel both ways in one pass, int16
    _, dx_std = cv2.meanStdDev(dx)
    _, dy_std = cv2.meanStdDev(dy)
    # a flat frame has no gradient either way: balanced (0), not undefined
    balance = math.log((dx_std[0][0] ** 2 + 1e-6) / (dy_std[0][0] ** 2 + 1e-6))
    end_balance, side_balance, tilt = _outline(grey)
    pixels = grey.size
    # numpy, not cv2.compare: OpenCV takes a 1x1 image for a scalar and refuses the pair.
    dark = np.count_nonzero(grey <= CLIP_DARK) / pixels
    bright = np.count_nonzero(grey >= CLIP_BRIGHT) / pixels
    blue, green, red = cv2.mean(image)[:3] if image.ndim == 3 else (float(mean[0][0]),) * 3
    return InputStats(
        width=int(grey.shape[1]),
        height=int(grey.shape[0]),
        brightness=float(mean[0][0]),
        contrast=float(std[0][0]),
        sharpness=float(laplacian_std[0][0]) ** 2,
        gradient_balance=balance,
        end_balance=end_balance,
        side_balance=side_balance,
        tilt=tilt,
        clipped_dark=dark,
        clipped_bright=bright,
        mean_blue=float(blue),
        mean_green=float(green),
        mean_red=float(red),
        edge_layout=edge_layout(grey),
    )


def _outline(grey: np.ndarray) -> tuple[float, float, float]:
    """(end_balance, side_balance, tilt) of an (H, W) uint8 grey frame; see OUTLINE_RUN and
    the tilt note beside it for what they measure and why. At half resolution: an outline
    survives it, and it costs a quarter of the full frame's filtering on the hot path."""
    if min(grey.shape) >= 4:
        grey = cv2.resize(
            grey, (grey.shape[1] // 2, grey.shape[0] // 2), interpolation=cv2.INTER_AREA
        )
    dx, dy = cv2.spatialGradient(grey)
    h, w = grey.shape
    run_x, run_y = max(1, round(OUTLINE_RUN * w)), max(1, round(OUTLINE_RUN * h))
    # horizontal edges kept where they run on along x; vertical ones where they run along y
    # (unnormalised box sums, int16 in, float32 out: the ratios below do not need the mean)
    across = np.abs(cv2.boxFilter(dy, cv2.CV_32F, (run_x, 1), normalize=False))
    along = np.abs(cv2.boxFilter(dx, cv2.CV_32F, (1, run_y), normalize=False))
    band = max(1, round(END_BAND * h))
    top, bottom = float(across[:band].max()) / run_x, float(across[h - band :].max()) / run_x
    half = max(1, w // 2)
    left, right = float(along[:, :half].max()) / run_y, float(along[:, w - half :].max()) / run_y
    return (
        math.log((1.0 + top) / (1.0 + bottom)),
        math.log((1.0 + left) / (1.0 + right)),
        _tilt(dx, dy),
    )


def _tilt(dx: np.ndarray, dy: np.ndarray) -> float:
    """Degrees the edges of (H, W) gradients `dx`, `dy` are turned from the axes (the tilt
    note beside OUTLINE_RUN says why)."""
    # each pixel's gradient as (magnitude, angle), its angle times 4, back to (x, y): the
    # magnitude-weighted unit vector at 4x the angle (OpenCV's, 5x faster than numpy's)
    magnitude, angle = cv2.cartToPolar(dx.astype(np.float32), dy.astype(np.float32))
    x4, y4 = cv2.polarToCart(magnitude, angle * 4.0)
    x, y = float(x4.sum()), float(y4.sum())
    # a flat frame has no edges: no tilt, not an undefined one
    return math.degrees(math.atan2(y, x)) / 4.0 if x or y else 0.0

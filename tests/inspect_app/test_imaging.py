"""Decoding accepts the three formats and refuses everything else with a status and a reason."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from inspect_app.imaging import ImageRejected, decode_image, input_stats

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}


def phone_like(width: int = 96, height: int = 64) -> np.ndarray:
    """A smooth gradient with a dark bar: libjpeg pads such images plausibly when cut off."""
    x = np.linspace(40, 200, width, dtype=np.float32)
    image = np.repeat(np.tile(x, (height, 1))[:, :, None], 3, axis=2)
    image[height // 3 : height // 2, width // 4 : 3 * width // 4] = 20
    return image.astype(np.uint8)


def encode(ext: str, image: np.ndarray | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, phone_like() if image is None else image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("ext", "content_type", "fmt"),
    [
        (".jpg", "image/jpeg", "jpeg"),
        (".png", "image/png", "png"),
        (".bmp", "image/bmp", "bmp"),
        (".png", None, "png"),  # no declared type: sniffed
        (".jpg", "application/octet-stream", "jpeg"),
        (".png", "image/jpeg", "png"),  # mislabeled: the bytes win
        (".jpg", "image/jpeg; charset=binary", "jpeg"),
    ],
)
def test_supported_formats_decode_to_bgr(ext: str, content_type: str | None, fmt: str) -> None:
    decoded = decode_image(encode(ext), content_type, **LIMITS)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (96, 64)
    assert decoded.image.shape == (64, 96, 3)
    assert decoded.image.dtype == np.uint8


def test_grey_and_16_bit_pngs_become_8_bit_bgr() -> None:
    grey16 = (phone_like()[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    decoded = decode_image(encode(".png", grey16), "image/png", **LIMITS)
    assert decoded.image.shape == (64, 96, 3)
    assert decoded.image.dtype == np.uint8


def rejection(data: bytes, content_type: str | None = "image/jpeg", **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, content_type, **{**LIMITS, **limits})
    return caught.value


def test_empty_body() -> None:
    err = rejection(b"")
    assert err.status_code == 400
    assert "empty" in err.detail


def test_bytes_that_are_not_an_image() -> None:
    err = rejection(b"hello, this is not an image at all", None)
    assert err.status_code == 415
    assert "not a JPEG, PNG or BMP" in err.detail


@pytest.mark.parametrize("content_type", ["image/gif", "text/plain", "image/webp"])
def test_unsupported_declared_type(content_type: str) -> None:
    err = rejection(encode(".png"), content_type)
    assert err.status_code == 415
    assert "unsupported content type" in err.detail


def test_over_the_byte_limit() -> None:
    data = encode(".bmp")
    err = rejection(data, "image/bmp", max_bytes=len(data) - 1)
    assert err.status_code == 413
    assert "bytes" in err.detail


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_over_the_pixel_limit_from_the_header(ext: str) -> None:
    err = rejection(encode(ext), None, max_pixels=96 * 64 - 1)
    assert err.status_code == 413
    assert "96x64" in err.detail


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    # A valid PNG header claiming 100000 x 100000 pixels over a few bytes of data.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )
    err = rejection(png + b"\x00" * 64, "image/png", max_pixels=25_000_000)
    assert err.status_code == 413
    assert "100000x100000" in err.detail


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_jpeg_is_refused(keep: float) -> None:
    data = encode(".jpg")
    err = rejection(data[: int(len(data) * keep)])
    assert err.status_code == 422
    assert "truncated JPEG" in err.detail


def test_a_jpeg_cut_just_before_its_end_marker_is_refused() -> None:
    data = encode(".jpg")
    assert data.endswith(b"\xff\xd9")
    err = rejection(data[:-2])
    assert "truncated JPEG" in err.detail


def test_padding_after_the_jpeg_end_marker_is_accepted() -> None:
    decoded = decode_image(encode(".jpg") + b"\x00" * 16, "image/jpeg", **LIMITS)
    assert decoded.format == "jpeg"


def test_data_after_the_png_end_chunk_is_accepted() -> None:
    decoded = decode_image(encode(".png") + b"camera trailer " * 8, "image/png", **LIMITS)
    assert decoded.format == "png"


@pytest.mark.parametrize(("ext", "name"), [(".png", "PNG"), (".bmp", "BMP")])
def test_truncated_png_and_bmp_are_refused(ext: str, name: str) -> None:
    data = encode(ext)
    err = rejection(data[: len(data) // 2], None)
    assert err.status_code == 422
    assert f"truncated {name}" in err.detail


def test_garbage_after_a_jpeg_signature_is_refused() -> None:
    err = rejection(b"\xff\xd8\xff" + b"\x00" * 200)
    assert err.status_code == 422
    assert "corrupt JPEG" in err.detail


def test_input_stats_measure_brightness_contrast_and_sharpness() -> None:
    flat = np.full((40, 60, 3), 100, dtype=np.uint8)
    stats = input_stats(flat)
    assert (stats.width, stats.height) == (60, 40)
    assert stats.brightness == pytest.approx(100.0)
    assert stats.contrast == pytest.approx(0.0)
    assert stats.sharpness == pytest.approx(0.0)

    edges = np.zeros((40, 60, 3), dtype=np.uint8)
    edges[:, ::2] = 255
    sharp = input_stats(edges)
    blurred = input_stats(cv2.GaussianBlur(edges, (9, 9), 3))
    assert sharp.contrast > 100
    assert sharp.sharpness > blurred.sharpness > 0
    assert sharp.brightness == pytest.approx(127.5)


def test_input_stats_measure_clipping_colour_size_and_direction() -> None:
    frame = np.full((40, 80, 3), (30, 90, 150), dtype=np.uint8)  # BGR
    frame[:10] = 255  # a quarter blown out
    frame[10:14] = 1  # a tenth black
    stats = input_stats(frame)
    assert stats.clipped_bright == pytest.approx(0.25)
    assert stats.clipped_dark == pytest.approx(0.10)
    assert stats.aspect == pytest.approx(2.0)
    assert stats.mean_red > stats.mean_green > stats.mean_blue
    assert set(stats.metrics()) >= {"width", "aspect", "clipped_bright", "gradient_balance"}

    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::4] = 200  # vertical lines: all their detail runs across x
    assert input_stats(stripes).gradient_balance > 3
    assert input_stats(np.ascontiguousarray(stripes.transpose(1, 0, 2))).gradient_balance < -3
    assert input_stats(np.full((20, 20, 3), 7, dtype=np.uint8)).gradient_balance == 0.0


def test_framing_metrics_see_a_part_cut_off_by_the_frame() -> None:
    """A dark part on a grey belt: whole, both ends and sides show and balance; pushed down
    or right until the frame cuts it, the outline on the other side is missing."""
    whole = np.full((256, 256, 3), 120, dtype=np.uint8)
    cv2.rectangle(whole, (80, 30), (176, 226), (30, 30, 30), -1)
    stats = input_stats(whole)
    assert stats.end_balance == pytest.approx(0.0, abs=0.1)
    assert stats.side_balance == pytest.approx(0.0, abs=0.1)
    assert set(stats.metrics()) >= {"end_balance", "side_balance"}

    down = np.full_like(whole, 120)
    down[40:] = whole[:216]  # its bottom end below the frame
    assert input_stats(down).end_balance > 2
    assert input_stats(np.ascontiguousarray(down[::-1])).end_balance < -2  # its top cut off
    right = np.full_like(whole, 120)
    right[:, 100:] = whole[:, :156]  # both sides in the right half, the right one cut off
    assert input_stats(right).side_balance < -2
    assert input_stats(np.ascontiguousarray(right[:, ::-1])).side_balance > 2
    flat = input_stats(np.full((20, 20, 3), 7, dtype=np.uint8))
    assert (flat.end_balance, flat.side_balance) == (0.0, 0.0)


def test_tilt_is_how_far_the_parts_edges_are_turned_from_the_frames_axes() -> None:
    """A dark rectangle on a grey belt: square to the frame it has no tilt; turned by 20
    degrees either way the tilt says so (positive clockwise as seen); a right angle is no
    turn at all (the edges point the same two ways); a flat frame has no edges and no tilt."""
    part = np.full((256, 256, 3), 120, dtype=np.uint8)
    cv2.rectangle(part, (80, 30), (176, 226), (30, 30, 30), -1)
    assert input_stats(part).tilt == pytest.approx(0.0, abs=0.5)
    assert "tilt" in input_stats(part).metrics()

    def turned(degrees: float) -> np.ndarray:  # OpenCV: positive turns anticlockwise
        m = cv2.getRotationMatrix2D((128, 128), degrees, 1.0)
        return cv2.warpAffine(part, m, (256, 256), borderValue=(120, 120, 120))

    assert input_stats(turned(20)).tilt == pytest.approx(-20, abs=1.5)
    assert input_stats(turned(-20)).tilt == pytest.approx(20, abs=1.5)
    assert input_stats(turned(90)).tilt == pytest.approx(0.0, abs=0.5)
    assert input_stats(np.full((20, 20, 3), 7, dtype=np.uint8)).tilt == 0.0

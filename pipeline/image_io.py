"""Image input: load a portrait photo as upright 8-bit RGB, with an error that says what to do when it cannot.

OpenCV decodes the pixels (every depth and channel layout it reads comes out the same as before); Pillow
reads the headers without decoding (size, to refuse huge images first, and the EXIF orientation, from
JPEG APP1, PNG eXIf, WebP EXIF chunks and XMP) and turns the pixels upright with ``ImageOps.exif_transpose``.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

from common.errors import InputError

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 8000
MAX_IMAGE_PIXELS = 40_000_000


def load_image(path: str | os.PathLike, *, max_side: int = 4096) -> np.ndarray:
    """Read a photo as uint8 RGB [H, W, 3].

    PNG, JPEG, WebP, BMP and TIFF; grayscale becomes RGB, alpha is composited over white, 16-bit and float
    images are scaled to 8 bits, and the EXIF orientation is applied. An image whose longer side exceeds
    ``max_side`` is downscaled (aspect kept) with a warning. Raises :class:`InputError` with a fix when the
    file is missing, not an image, corrupt or truncated, smaller than 64 px on a side, or over 8000 px on a
    side or 40 megapixels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}", "check the path given to --image")
    if not path.is_file():
        raise InputError(f"{path} is not a file", "give the path of a photo (png, jpg, webp, bmp, tiff)")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path} ({err.strerror})", "check the file's permissions") from err
    kind = _image_kind(data)
    if kind is None:
        raise InputError(
            f"{path} is not an image this program reads",
            "give a photo as png, jpg, webp, bmp or tiff",
        )
    if kind == "jpeg" and not _jpeg_complete(data):
        raise InputError(f"{path} is a truncated or corrupt JPEG", "re-export or re-download the photo")
    size, orientation = _read_header(path, data)
    if size is not None:
        _check_huge(path, *size)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(f"{path} is corrupt or truncated ({kind})", "re-export or re-download the photo")
    h, w = img.shape[:2]
    _check_huge(path, w, h)
    img = _to_rgb8(img)
    # OpenCV's TIFF decoder applies the TIFF orientation tag (the same tag 274 EXIF uses) itself.
    if kind != "tiff":
        img = _upright(img, orientation)
    h, w = img.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(
            f"image {path} is too small ({w}x{h} px)",
            f"give a photo at least {MIN_IMAGE_SIDE} px on its shorter side (256 px or more looks better)",
        )
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        log.warning("image %s is %dx%d px; downscaling it to %dx%d", path, w, h, nw, nh)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def _check_huge(path: Path, w: int, h: int) -> None:
    if max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image {path} is too large ({w}x{h} px, {w * h / 1e6:.0f} MP)",
            f"downscale it to at most {MAX_IMAGE_SIDE} px on a side and 40 MP (2048 px is plenty)",
        )


def _image_kind(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _jpeg_complete(data: bytes) -> bool:
    """Walk the JPEG markers; False when the data ends before the end-of-image marker."""
    n, i = len(data), 2
    while i + 2 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return True
        if marker in (0x01, *range(0xD0, 0xD8)):
            i += 2
            continue
        if i + 4 > n:
            return False
        seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
        i += 2 + seg_len
        if marker == 0xDA:  # start of scan: skip entropy-coded data up to the next real marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return False
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    i = j + 1 if nxt == 0xFF else j + 2
                    continue
                i = j
                break
    return False


def _read_header(path: Path, data: bytes) -> tuple[tuple[int, int] | None, int]:
    """(width, height) and the EXIF orientation (1-8) from the headers, read by Pillow without decoding the
    pixels; (None, 1) when Pillow cannot read them (OpenCV may still decode the file, and an unreadable
    EXIF block means no orientation)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP on; this program refuses images from 40 MP on, with its own message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as stored:
                orientation = stored.getexif().get(ExifTags.Base.Orientation, 1)
                size = stored.size
    except Image.DecompressionBombError as err:
        raise InputError(
            f"image {path} is too large ({err})",
            f"downscale it to at most {MAX_IMAGE_SIDE} px on a side and 40 MP (2048 px is plenty)",
        ) from err
    except (OSError, ValueError):
        return None, 1
    valid = isinstance(orientation, int) and 1 <= orientation <= 8
    return size, orientation if valid else 1


def _upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` [H, W, 3] uint8 turned upright as EXIF ``orientation`` (1-8) says; [W, H, 3] for 5-8."""
    if orientation == 1:
        return img
    image = Image.fromarray(img)
    image.getexif()[ExifTags.Base.Orientation] = orientation
    return np.array(ImageOps.exif_transpose(image))


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    """OpenCV's decoded BGR / BGRA / gray, any depth -> uint8 RGB, alpha composited over white."""
    if img.ndim == 2:
        img = img[:, :, None]
    c = img.shape[2]
    if img.dtype == np.uint8 and c in (1, 3):  # the common case, no float round trip
        return np.ascontiguousarray(np.repeat(img, 3, axis=2) if c == 1 else img[:, :, ::-1])
    if img.dtype == np.uint8:
        x = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        x = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        x = np.nan_to_num(img.astype(np.float32)).clip(0.0, 1.0)
    elif np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        x = (img.astype(np.float32) - info.min) / float(info.max - info.min)
    else:
        raise InputError(f"unsupported pixel type {img.dtype}", "re-export the photo as an 8-bit png or jpg")
    alpha = None
    if c == 2:
        x, alpha = x[:, :, :1], x[:, :, 1:]
    elif c >= 4:
        x, alpha = x[:, :, :3], x[:, :, 3:4]
    x = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[:, :, ::-1]  # gray -> RGB, BGR -> RGB
    if alpha is not None:
        x = x * alpha + (1.0 - alpha)
    return (x * 255.0 + 0.5).clip(0, 255).astype(np.uint8)

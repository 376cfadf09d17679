"""pipeline.image_io: loading photos of every format and depth upright, and refusing bad ones with a fix."""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from common.errors import InputError
from pipeline.image_io import load_image


def _pattern(h: int = 96, w: int = 128) -> np.ndarray:
    """An RGB picture with no symmetry, so that any flip or turn shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = xx * 255 // (w - 1)
    img[..., 1] = yy * 255 // (h - 1)
    img[: h // 3, : w // 4, 2] = 255
    return img


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


# ------------------------------------------------------------------------------------------------------------
# load_image
# ------------------------------------------------------------------------------------------------------------


def test_load_rgb_png_and_jpeg(tmp_path):
    img = _pattern()
    cv2.imwrite(str(tmp_path / "a.png"), _bgr(img))
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (96, 128, 3)
    np.testing.assert_array_equal(out, img)
    cv2.imwrite(str(tmp_path / "a.jpg"), _bgr(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = load_image(tmp_path / "a.jpg")
    assert out.shape == (96, 128, 3) and np.abs(out.astype(int) - img).mean() < 4


@pytest.mark.parametrize("ext", ["webp", "bmp", "tiff"])
def test_load_other_formats(tmp_path, ext):
    img = _pattern()
    path = tmp_path / f"a.{ext}"
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == "webp" else []  # 101: lossless
    assert cv2.imwrite(str(path), _bgr(img), params)
    out = load_image(path)
    assert out.shape == (96, 128, 3) and np.abs(out.astype(int) - img).mean() < 2


def test_load_gray(tmp_path):
    gray = _pattern()[..., 0]
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = load_image(tmp_path / "g.png")
    assert out.shape == (96, 128, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_load_rgba_composited_over_white(tmp_path):
    img = _pattern()
    alpha = np.zeros((96, 128), np.uint8)
    alpha[:, 64:] = 255
    alpha[:, 32:64] = 128
    bgra = np.dstack([_bgr(img), alpha])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    out = load_image(tmp_path / "a.png")
    assert out.shape == (96, 128, 3)
    assert (out[:, :32] == 255).all()  # transparent -> white
    np.testing.assert_array_equal(out[:, 64:], img[:, 64:])  # opaque -> unchanged
    half = img[:, 32:64].astype(float) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(out[:, 32:64] - half).max() <= 1


def test_load_16bit(tmp_path):
    img = _pattern()
    cv2.imwrite(str(tmp_path / "a16.png"), _bgr(img).astype(np.uint16) * 257)
    out = load_image(tmp_path / "a16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)
    gray16 = (np.arange(128 * 96, dtype=np.uint32).reshape(96, 128) * 5).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    out = load_image(tmp_path / "g16.png")
    assert out.shape == (96, 128, 3)
    assert np.abs(out[..., 0].astype(float) - gray16 / 257.0).max() <= 0.51


def _expected_upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """What PIL's ImageOps.exif_transpose does, spelled with OpenCV."""
    return {
        1: img,
        2: cv2.flip(img, 1),
        3: cv2.rotate(img, cv2.ROTATE_180),
        4: cv2.flip(img, 0),
        5: cv2.transpose(img),
        6: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
        7: cv2.rotate(cv2.transpose(img), cv2.ROTATE_180),
        8: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }[orientation]


# format -> (Pillow's save options, mean tolerance against the stored pixels: JPEG is lossy)
SAVE = {
    "PNG": ({}, 0.0),
    "JPEG": ({"quality": 95}, 4.0),
    "WEBP": ({"lossless": True}, 0.0),
    "TIFF": ({}, 0.0),
}


@pytest.mark.parametrize("fmt", list(SAVE))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_per_format(tmp_path, fmt, orientation):
    """Each format that carries an orientation tag is loaded upright, as Pillow's exif_transpose of
    Pillow's own decoding shows it (TIFF's tag is the same tag 274, turned by OpenCV's TIFF decoder)."""
    img = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o.{fmt.lower()}"
    options, tolerance = SAVE[fmt]
    Image.fromarray(img).save(path, format=fmt, exif=exif.tobytes(), **options)
    assert Image.open(path).getexif()[0x0112] == orientation  # the file does carry the tag
    out = load_image(path)
    upright = _expected_upright(img, orientation)
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() <= tolerance
    pillow = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.abs(out.astype(int) - pillow).mean() <= tolerance


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_of_16_bit_and_gray_tiff(tmp_path, orientation):
    gray = _pattern()[..., 0].astype(np.uint16) * 257 + _pattern()[..., 1] // 2
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(gray).save(tmp_path / "g.tiff", exif=exif.tobytes())
    out = load_image(tmp_path / "g.tiff")
    want = np.round(_expected_upright(gray, orientation) / 257.0)
    assert out.shape == (*want.shape, 3)
    assert np.abs(out[..., 0] - want).max() <= 1


def _app1(orientation: int) -> bytes:
    """An EXIF APP1 segment written by hand (no PIL): a big-endian TIFF header, one IFD entry."""
    tiff = b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
    tiff += (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big")
    tiff += orientation.to_bytes(2, "big") + b"\x00\x00" + (0).to_bytes(4, "big")
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


def test_hand_made_exif_jpeg(tmp_path):
    img = _pattern()
    ok, enc = cv2.imencode(".jpg", _bgr(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = enc.tobytes()
    (tmp_path / "h.jpg").write_bytes(data[:2] + _app1(8) + data[2:])
    out = load_image(tmp_path / "h.jpg")
    assert out.shape == (128, 96, 3)
    assert np.abs(out.astype(int) - _expected_upright(img, 8)).mean() < 4


@pytest.mark.parametrize("damage", ["bad orientation value", "cut IFD", "not a TIFF header"])
def test_unreadable_exif_leaves_the_picture_as_stored(tmp_path, damage):
    img = _pattern()
    _ok, enc = cv2.imencode(".jpg", _bgr(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
    app1 = _app1(6)
    if damage == "bad orientation value":
        app1 = _app1(42)
    elif damage == "cut IFD":
        app1 = app1[:4] + app1[4:20] + bytes(len(app1) - 20)
    else:
        app1 = app1[:10] + b"XX" + app1[12:]
    data = enc.tobytes()
    (tmp_path / "d.jpg").write_bytes(data[:2] + app1 + data[2:])
    out = load_image(tmp_path / "d.jpg")
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - img).mean() < 4


@pytest.mark.parametrize("orientation", [1, 6])
def test_loaded_image_is_a_writable_contiguous_array(tmp_path, orientation):
    img = _pattern()
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", exif=exif.tobytes())
    (tmp_path / "p.png").write_bytes(buf.getvalue())
    out = load_image(tmp_path / "p.png")
    assert out.flags.writeable and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _expected_upright(img, orientation))


def test_downscale_large_image_with_warning(tmp_path, caplog):
    img = cv2.resize(_pattern(), (1000, 600), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / "big.png"), _bgr(img))
    with caplog.at_level(logging.WARNING, logger="pipeline.image_io"):
        out = load_image(tmp_path / "big.png", max_side=500)
    assert out.shape == (300, 500, 3)
    assert any("downscaling" in r.getMessage() for r in caplog.records)


def test_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello, I am not a picture\n" * 20)
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "text.png")
    _ok, enc = cv2.imencode(".jpg", _bgr(_pattern()))
    data = enc.tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_image(tmp_path / "cut.jpg")
    _ok, enc = cv2.imencode(".png", _bgr(_pattern()))
    data = enc.tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt"):
        load_image(tmp_path / "cut.png")
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((40, 200, 3), np.uint8))
    with pytest.raises(InputError, match=r"too small.*at least 64 px"):
        load_image(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_huge_image_refused(tmp_path):
    wide = np.zeros((64, 8200), np.uint8)  # over 8000 px on a side; small file
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    with pytest.raises(InputError, match="too large"):
        load_image(tmp_path / "wide.png")
    many = np.zeros((7000, 7000), np.uint8)  # 49 MP
    _ok, enc = cv2.imencode(".jpg", many)
    (tmp_path / "many.jpg").write_bytes(enc.tobytes())
    with pytest.raises(InputError, match="too large"):
        load_image(tmp_path / "many.jpg")


def test_error_messages_carry_a_fix(tmp_path):
    with pytest.raises(InputError) as info:
        load_image(tmp_path / "missing.png")
    assert info.value.fix and "\n" not in info.value.message

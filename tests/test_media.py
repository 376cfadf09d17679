"""pipeline.media: image loading, atomic mp4 writing, probing and reading videos."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest

from common.errors import InputError, OutputError
from motion.audio import Audio
from pipeline.media import (
    VideoInfo,
    VideoWriter,
    check_output_path,
    load_image,
    probe_video,
    read_video_frames,
)


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


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png(tmp_path, orientation):
    pil_image = pytest.importorskip("PIL.Image")
    pil_ops = pytest.importorskip("PIL.ImageOps")
    img = _pattern()
    exif = pil_image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    pil_image.fromarray(img).save(path, exif=exif.tobytes())
    out = load_image(path)
    np.testing.assert_array_equal(out, _expected_upright(img, orientation))
    np.testing.assert_array_equal(
        out, np.asarray(pil_ops.exif_transpose(pil_image.open(path)).convert("RGB"))
    )


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_orientation_jpeg_webp(tmp_path, fmt):
    pil_image = pytest.importorskip("PIL.Image")
    from PIL import features

    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("PIL without webp")
    img = _pattern()
    exif = pil_image.Exif()
    exif[0x0112] = 6  # stored turned: show it 90 degrees clockwise
    path = tmp_path / f"o.{fmt.lower()}"
    kw = {"quality": 95} if fmt == "JPEG" else {"lossless": True}
    pil_image.fromarray(img).save(path, format=fmt, exif=exif.tobytes(), **kw)
    out = load_image(path)
    assert out.shape == (128, 96, 3)
    assert np.abs(out.astype(int) - _expected_upright(img, 6)).mean() < 4


def test_hand_made_exif_jpeg(tmp_path):
    """An APP1 segment written by hand (no PIL): orientation 8, big-endian TIFF header."""
    img = _pattern()
    ok, enc = cv2.imencode(".jpg", _bgr(img), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    tiff = b"MM\x00*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big")
    tiff += (
        (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + b"\x00\x08\x00\x00"
    )
    tiff += (0).to_bytes(4, "big")
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = enc.tobytes()
    (tmp_path / "h.jpg").write_bytes(data[:2] + app1 + data[2:])
    out = load_image(tmp_path / "h.jpg")
    assert out.shape == (128, 96, 3)
    assert np.abs(out.astype(int) - _expected_upright(img, 8)).mean() < 4


def test_downscale_large_image_with_warning(tmp_path, caplog):
    img = cv2.resize(_pattern(), (1000, 600), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(tmp_path / "big.png"), _bgr(img))
    with caplog.at_level(logging.WARNING, logger="pipeline.media"):
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
    with pytest.raises(InputError, match=r"too small.*256 px"):
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


# ------------------------------------------------------------------------------------------------------------
# check_output_path
# ------------------------------------------------------------------------------------------------------------


def test_check_output_path(tmp_path):
    out = check_output_path(tmp_path / "new" / "deeper" / "v.mp4")
    assert out.parent.is_dir() and out.is_absolute() and out.name == "v.mp4"
    assert check_output_path(tmp_path / "V.MP4").name == "V.MP4"
    with pytest.raises(OutputError, match=r"use a \.mp4 path"):
        check_output_path(tmp_path / "v.avi")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(tmp_path / "dir.mp4")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="cannot"):
        check_output_path(tmp_path / "afile" / "v.mp4")
    assert check_output_path(tmp_path / "x.png", suffix=".png").suffix == ".png"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_path_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output_path(ro / "v.mp4")
        with pytest.raises(OutputError, match="cannot create"):
            check_output_path(ro / "sub" / "v.mp4")
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------------------------------
# VideoWriter, probe_video, read_video_frames
# ------------------------------------------------------------------------------------------------------------

W, H = 128, 96


def _frames(n: int = 50) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    out = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (xx * 2 + i * 3) % 256
        out[i, ..., 1] = (yy * 2) % 256
        out[i, ..., 2] = ((xx + yy + i * 5) % 64) * 4
    return out


def _tone(seconds: float = 2.0, rate: int = 16000) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    return Audio((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def test_writer_round_trip(tmp_path):
    frames = _frames(50)
    path = tmp_path / "out" / "talk.mp4"
    with VideoWriter(path, 25, (W, H), audio=_tone(2.0)) as w:
        w.write(frames[:10])  # a batch
        for f in frames[10:]:
            w.write(f)
    assert sorted(os.listdir(path.parent)) == ["talk.mp4"]  # no temp files left
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height) == (W, H)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p" and info.audio_codec == "aac"
    assert info.num_frames == 50 and info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(2.0, abs=0.04)
    assert info.has_audio and info.audio_duration == pytest.approx(2.0, abs=0.04)
    decoded = list(read_video_frames(path))
    assert len(decoded) == 50 and decoded[0].shape == (H, W, 3) and decoded[0].dtype == np.uint8
    assert np.abs(decoded[0].astype(int) - frames[0]).mean() < 6
    assert np.abs(decoded[49].astype(int) - frames[49]).mean() < 6
    small = next(iter(read_video_frames(path, size=(64, 48))))
    assert small.shape == (48, 64, 3)


def test_writer_audio_fit_to_video_length(tmp_path):
    path = tmp_path / "short.mp4"
    with VideoWriter(path, 25, (W, H), audio=_tone(2.0, rate=48000)) as w:
        w.write(_frames(20))
    info = probe_video(path)
    assert info.num_frames == 20 and info.audio_duration == pytest.approx(0.8, abs=0.04)


def test_writer_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    with VideoWriter(path, 30, (W, H)) as w:
        w.write(_frames(6))
    info = probe_video(path)
    assert info.num_frames == 6 and not info.has_audio and info.audio_codec is None
    assert info.fps == pytest.approx(30.0)


def test_writer_odd_size_error(tmp_path):
    with pytest.raises(OutputError, match="odd"):
        VideoWriter(tmp_path / "odd.mp4", 25, (127, 96))
    assert os.listdir(tmp_path) == []


def test_writer_bad_frames(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", 25, (W, H)) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.write(np.zeros((H, W, 3), np.float32))
        with pytest.raises(ValueError, match="H=96, W=128"):
            w.write(np.zeros((W, H, 3), np.uint8))
        w.write(np.zeros((H, W, 3), np.uint8))
    assert probe_video(tmp_path / "v.mp4").num_frames == 1


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(path, 25, (W, H), audio=_tone(1.0)) as w:
        w.write(_frames(5))
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"the old video")
    with pytest.raises(RuntimeError), VideoWriter(path, 25, (W, H)) as w:
        w.write(_frames(3))
        raise RuntimeError("renderer crashed")
    assert path.read_bytes() == b"the old video"
    assert os.listdir(tmp_path) == ["v.mp4"]
    # ffmpeg itself failing (an unknown preset) is reported with its own message, old file kept
    with (
        pytest.raises(OutputError, match=r"ffmpeg.*no-such-preset") as info,
        VideoWriter(path, 25, (W, H), preset="no-such-preset") as w,
    ):
        for _ in range(200):
            w.write(_frames(1))
    assert "\n" not in info.value.message
    assert path.read_bytes() == b"the old video"
    assert os.listdir(tmp_path) == ["v.mp4"]


def test_successful_write_replaces_existing_file(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"the old video")
    with VideoWriter(path, 25, (W, H)) as w:
        w.write(_frames(2))
    assert probe_video(path).num_frames == 2


def test_writer_output_path_errors(tmp_path):
    with pytest.raises(OutputError, match=r"\.mp4"):
        VideoWriter(tmp_path / "v.mov", 25, (W, H))
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(OutputError, match="folder"):
        VideoWriter(tmp_path / "d.mp4", 25, (W, H))


def test_probe_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        probe_video(tmp_path / "none.mp4")
    (tmp_path / "fake.mp4").write_text("not a video at all\n" * 10)
    with pytest.raises(InputError, match="not a readable video"):
        probe_video(tmp_path / "fake.mp4")
    cv2.imwrite(str(tmp_path / "still.png"), _bgr(_pattern()))
    info = probe_video(tmp_path / "still.png")  # ffmpeg reads a picture as a one-frame video
    assert info.num_frames == 1
    with pytest.raises(InputError, match="not found"):
        next(iter(read_video_frames(tmp_path / "none.mp4")))

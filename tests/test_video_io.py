"""pipeline.video_io: output paths, atomic mp4 writing, probing and reading videos."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from common.errors import InputError, OutputError
from motion.audio import Audio
from pipeline.video_io import VideoInfo, VideoWriter, check_output_path, probe_video, read_video_frames

# ------------------------------------------------------------------------------------------------------------
# check_output_path
# ------------------------------------------------------------------------------------------------------------


def test_check_output_path(tmp_path):
    out = check_output_path(tmp_path / "new" / "deeper" / "v.mp4")
    assert out.is_absolute() and out.name == "v.mp4"
    assert not (tmp_path / "new").exists()  # made when the video is written: a refused run leaves no folder
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
        with pytest.raises(OutputError, match="not writable"):
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
    cv2.imwrite(str(tmp_path / "still.png"), _frames(1)[0])
    info = probe_video(tmp_path / "still.png")  # ffmpeg reads a picture as a one-frame video
    assert info.num_frames == 1
    with pytest.raises(InputError, match="not found"):
        next(iter(read_video_frames(tmp_path / "none.mp4")))


def test_the_writer_makes_the_missing_folders(tmp_path):
    out = check_output_path(tmp_path / "new" / "deeper" / "v.mp4")
    with VideoWriter(out, 25, (64, 64)) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8))
    assert out.is_file()

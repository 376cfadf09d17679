"""Dubbing: timelines, reading frames in any order, the lower-face warp and paste-back, and `dub` end to end
on synthetic footage (length, size, rotation, faces, frames without a face, bad inputs, trained path)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from motion.audio import Audio, ffmpeg_exe
from pipeline.cli import main
from pipeline.timeline import frames_in_order, runs, timeline
from pipeline.video_io import VideoWriter, first_frame_offset, probe_video, read_video_frames
from tests.conftest import first_seconds


# ---- timeline ---------------------------------------------------------------------------------------
def test_timeline_lengths_and_modes():
    assert list(timeline(4, 10, "pingpong")) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert list(timeline(4, 10, "loop")) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert list(timeline(4, 6, "cut")) == [0, 1, 2, 3, 3, 3]
    for mode in ("pingpong", "loop", "cut"):
        assert list(timeline(50, 7, mode)) == list(range(7))  # a shorter speech cuts the video
        assert len(timeline(3, 1000, mode)) == 1000
    pp = timeline(30, 500, "pingpong")
    assert np.abs(np.diff(pp)).max() == 1  # never a jump
    assert list(timeline(1, 3, "pingpong")) == [0, 0, 0]


def test_unknown_timeline_is_an_input_error():
    from common.errors import InputError

    with pytest.raises(InputError, match="pingpong"):
        timeline(5, 5, "bounce")


def test_runs_split_forward_and_backward():
    assert runs(np.array([0, 1, 2, 1, 0, 1])) == [(0, 2, 1), (1, 0, -1), (1, 1, 1)]
    assert runs(np.array([3, 3, 3])) == [(3, 3, 1), (3, 3, 1), (3, 3, 1)]


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """A 40-frame video whose frame k is flat grey level 5k, with sound (AAC's priming starts the file
    before its first frame)."""
    path = tmp_path_factory.mktemp("numbered") / "n.mp4"
    tone = Audio(0.1 * np.sin(np.arange(16000 * 2) * 0.05).astype(np.float32), 16000)
    with VideoWriter(path, 25.0, (64, 48), audio=tone, crf=0) as writer:
        for k in range(40):
            writer.write(np.full((48, 64, 3), 5 * k, np.uint8))
    return path


def test_frames_in_order_follow_any_timeline(numbered, tmp_path):
    # the same video with its picture starting 0.2 s after its sound
    late = tmp_path / "late.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-itsoffset", "0.2", "-i", str(numbered), "-i", str(numbered),
         "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)],
        check=True,
    )  # fmt: skip
    assert first_frame_offset(numbered) == 0
    assert abs(first_frame_offset(late) - 0.2) < 0.02
    for path in (numbered, late):
        offset = first_frame_offset(path)
        for mode in ("pingpong", "loop", "cut"):
            order = timeline(40, 130, mode)
            frames = frames_in_order(path, order, 25.0, offset, window=6)
            got = [round(float(f[24, 32].mean()) / 5) for f in frames]
            assert got == list(order), (path.name, mode)


# ---- the lower-face warp and paste-back -----------------------------------------------------------
@pytest.fixture(scope="module")
def face_points(portrait):
    from motion.tracker import track_portrait

    return track_portrait(portrait).points[:, :2].astype(np.float64)


def test_warp_to_the_same_shape_changes_nothing_and_outside_the_mask_is_the_frame(portrait, face_points):
    from renderers.warp.lower_face import LowerFaceWarp, paste

    warp = LowerFaceWarp(painter=None)
    region = warp.warp(portrait, face_points, face_points)
    x0, y0, x1, y1 = region.box
    assert np.abs(region.patch.astype(int) - portrait[y0:y1, x0:x1]).max() <= 2
    out = paste(portrait, region)
    outside = np.ones(portrait.shape[:2], bool)
    outside[y0:y1, x0:x1] = region.mask == 0
    assert np.array_equal(out[outside], portrait[outside])


def test_open_jaw_moves_the_lower_face_only(portrait, face_points):
    from motion import topology as tp
    from renderers.warp.lower_face import LowerFaceWarp, moving_vertices, paste
    from renderers.warp.mouth import MouthPainter

    target = face_points.copy()
    jaw = moving_vertices()
    chin_drop = 0.12 * (face_points[tp.CHIN, 1] - face_points[tp.NOSE_TIP, 1])
    below = face_points[jaw, 1] > face_points[list(tp.LIPS_LOWER_INNER), 1].min() - 1
    target[jaw[below], 1] += chin_drop  # the lower lip, chin and jaw drop: the mouth opens
    region = LowerFaceWarp(painter=MouthPainter(portrait, face_points)).warp(portrait, face_points, target)
    out = paste(portrait, region)
    changed = np.abs(out.astype(int) - portrait).max(2) > 12
    ys = np.nonzero(changed)[0]
    assert len(ys) > 200
    assert ys.min() > face_points[tp.NOSE_TIP, 1] - 2  # nothing above the nose moved
    # the mouth is open: dark cavity pixels between the lips
    mid = target[[tp.UPPER_LIP_CENTER_INNER, tp.LOWER_LIP_CENTER_INNER]].mean(0).round().astype(int)
    assert out[mid[1], mid[0]].mean() < portrait[mid[1], mid[0]].mean() - 20


def test_fade_around_frames_that_pass_through():
    from pipeline.dub import dub_strength

    usable = np.ones(20, bool)
    usable[8:10] = False
    s = dub_strength(usable, 3)
    assert s[8] == 0 and s[9] == 0 and s[0] == 1 and s[19] == 1
    assert 0 < s[7] < s[6] < s[5] <= 1
    assert np.all(dub_strength(np.ones(5, bool), 3) == 1)


def test_face_point_parsing():
    from common.errors import InputError
    from pipeline.face_follow import parse_point

    assert parse_point("120,45.5") == (120.0, 45.5)
    assert parse_point("") is None
    with pytest.raises(InputError, match="X,Y"):
        parse_point("left")


# ---- end to end -----------------------------------------------------------------------------------
def _reencoding_error(frames: np.ndarray, path) -> np.ndarray:
    """Per frame, the mean largest-channel difference that encoding ``frames`` as ``dub`` does (same writer,
    same quality) leaves on its own: what an unchanged region may differ by."""
    with VideoWriter(path, 25.0, (frames.shape[2], frames.shape[1]), crf=18) as writer:
        for f in frames:
            writer.write(f.astype(np.uint8))
    again = np.stack(list(read_video_frames(path))).astype(np.int16)
    return np.abs(again - frames).max(3)


def _dub(video, audio, out, *extra) -> int:
    return main(["dub", str(video), "--audio", str(audio), "--out", str(out), "-q", *extra])


@pytest.fixture(scope="module")
def speech_6s(tmp_path_factory, demo_speech):
    """6 s of the demo speech: longer than the 4 s footage (the footage walks back)."""
    return first_seconds(demo_speech, 6.0, tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="module")
def dubbed(footage, speech_6s, tmp_path_factory):
    out = tmp_path_factory.mktemp("dub") / "dubbed.mp4"
    assert _dub(footage.path, speech_6s, out, "--renderer", "warp") == 0
    return out


@pytest.mark.slow
def test_dub_is_as_long_as_the_speech_at_the_source_size(dubbed, footage, speech_6s):
    info, source = probe_video(dubbed), probe_video(footage.path)
    assert (info.width, info.height) == (source.width, source.height)
    assert abs(info.fps - source.fps) < 1e-3
    assert info.num_frames == round(6.0 * source.fps)
    assert info.has_audio and abs(info.audio_duration - 6.0) < 0.1
    assert dubbed.with_name("dubbed.config.yaml").is_file()


@pytest.mark.slow
def test_dub_changes_the_mouth_and_keeps_the_rest(dubbed, footage, tmp_path):
    from pipeline.timeline import timeline as order

    out = np.stack(list(read_video_frames(dubbed))).astype(np.int16)
    src = np.stack(list(read_video_frames(footage.path))).astype(np.int16)
    shown = src[order(len(src), len(out), "pingpong")]
    diff = np.abs(out - shown).max(3)  # [T, H, W]
    mouth_y = int(np.median(footage.points[:, 13, 1]))
    eyes_y = int(np.median(footage.points[:, 159, 1]))
    upper = diff[:, : eyes_y + 5].mean(axis=(1, 2))
    alone = _reencoding_error(shown, tmp_path / "again.mp4")[:, : eyes_y + 5].mean(axis=(1, 2))
    # the encoder spends its bits a little differently around a changed mouth: a fraction of a level
    assert np.median(upper - alone) < 0.1 and (upper - alone).max() < 1.0, "the upper face changed"
    near_mouth = diff[:, mouth_y - 15 : mouth_y + 25]
    assert (near_mouth > 25).mean(axis=(1, 2)).max() > 0.01, "the mouth never changed"


@pytest.mark.slow
def test_dub_rotated_phone_video_keeps_its_upright_size(footage, speech_6s, tmp_path):
    """A phone stores the picture sideways with a flag that turns it upright on display."""
    sideways, rotated = tmp_path / "sideways.mp4", tmp_path / "rotated.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(footage.path), "-t", "2", "-vf", "transpose=1",
         "-c:v", "libx264", "-crf", "12", "-c:a", "copy", str(sideways)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i", str(sideways), "-c", "copy",
         str(rotated)],
        check=True,
    )  # fmt: skip
    upright = next(read_video_frames(rotated))
    assert np.abs(upright.astype(int) - next(read_video_frames(footage.path))).mean() < 3
    out = tmp_path / "out.mp4"
    assert _dub(rotated, speech_6s, out, "--renderer", "warp", "--timeline", "loop") == 0
    first = next(read_video_frames(out))
    assert first.shape == upright.shape
    assert np.abs(first.astype(int) - upright).mean() < 4


@pytest.mark.slow
def test_full_range_source_gives_a_full_range_dub(footage, speech_6s, tmp_path):
    """A phone's full-range (0-255) video stays full range, and its picture's levels are kept."""
    full = tmp_path / "full.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(footage.path), "-t", "2", "-vf",
         "scale=out_range=pc,format=yuvj420p", "-c:v", "libx264", "-color_range", "pc", "-c:a", "copy",
         str(full)],
        check=True,
    )  # fmt: skip
    assert probe_video(full, decode=False).color_range == "pc"
    out = tmp_path / "out.mp4"
    assert _dub(full, speech_6s, out, "--renderer", "warp", "--timeline", "loop") == 0
    assert probe_video(out, decode=False).color_range == "pc"
    a, b = next(read_video_frames(full)).astype(int), next(read_video_frames(out)).astype(int)
    assert abs(a.mean() - b.mean()) < 1.5 and np.abs(a - b)[:60].mean() < 3


@pytest.mark.slow
def test_frames_without_the_face_pass_through_and_the_face_is_chosen(footage, speech_6s, tmp_path):
    """Two people side by side (the footage and its mirror, the right one smaller); the right one is picked
    with --face; a stretch of frames shows no one."""
    src = list(read_video_frames(footage.path))[:50]
    size = src[0].shape[0]
    frames = []
    for k, f in enumerate(src):
        right = cv2.resize(f[:, ::-1], None, fx=0.8, fy=0.8)
        canvas = np.full((size, 2 * size, 3), 90, np.uint8)
        canvas[:, :size] = f
        canvas[: right.shape[0], size : size + right.shape[1]] = right
        if 20 <= k < 28:
            canvas[:] = 90  # nobody in shot
        frames.append(canvas)
    two = tmp_path / "two.mp4"
    with VideoWriter(two, 25.0, (2 * size, size), crf=12) as writer:
        for f in frames:
            writer.write(f)
    out = tmp_path / "out.mp4"
    point = f"{size + int(0.4 * size)},{int(0.35 * size)}"
    assert _dub(two, speech_6s, out, "--renderer", "warp", "--timeline", "cut", "--face", point) == 0
    got = np.stack(list(read_video_frames(out)))[:50].astype(int)
    want = np.stack(list(read_video_frames(two))).astype(int)
    diff = np.abs(got - want).max(3)
    alone = _reencoding_error(want, tmp_path / "again.mp4")
    other = diff[:, :, :size].mean(axis=(1, 2)) - alone[:, :, :size].mean(axis=(1, 2))
    assert other.max() < 0.5, "the other person was dubbed"
    assert (diff[:, :, size:] > 25).any(axis=(1, 2)).sum() > 10, "the chosen person was not dubbed"
    assert np.array_equal(diff[20:28], alone[20:28]), "a frame without a face was changed"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["image", "audio_only", "no_face", "silent_speech", "bad_out", "odd_size"])
def test_bad_input_exits_2_with_one_error_line_and_no_output(case, footage, speech_6s, tmp_path, capsys):
    video, audio, out = footage.path, speech_6s, tmp_path / "out.mp4"
    if case == "image":
        video = tmp_path / "still.png"
        cv2.imwrite(str(video), np.zeros((64, 64, 3), np.uint8))
    elif case == "audio_only":
        video = speech_6s
    elif case == "no_face":
        video = tmp_path / "empty.mp4"
        with VideoWriter(video, 25.0, (128, 128)) as writer:
            for k in range(30):
                writer.write(np.full((128, 128, 3), 40 + k, np.uint8))
    elif case == "silent_speech":
        from pipeline.prepare import write_wav

        audio = tmp_path / "quiet.wav"
        write_wav(audio, Audio(np.zeros(16000 * 3, np.float32), 16000))
    elif case == "odd_size":
        video = tmp_path / "odd.mp4"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-i", str(footage.path), "-t", "1",
             "-vf", "format=yuv444p,crop=255:256:0:0", "-c:v", "libx264", "-pix_fmt", "yuv444p", str(video)],
            check=True,
        )  # fmt: skip
    elif case == "bad_out":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out.mp4"
    capsys.readouterr()
    assert _dub(video, audio, out, "--renderer", "warp") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1, err
    assert not out.exists()
    assert not any(p.suffix == ".mp4" for p in tmp_path.glob("*out*")), list(tmp_path.iterdir())


@pytest.mark.slow
def test_trained_dub_prepares_trains_and_goes_on_where_it_stopped(footage, speech_2s, tmp_path):
    """The nerf path on the tiny preset: a run stopped part-way through training goes on from its
    checkpoint at the next dub, and the preparation is not redone."""
    import json

    from pipeline.dub_trained import identity_name

    root = tmp_path / "ids"
    common = ["--renderer", "nerf", "--preset", "tiny", "--workspace", str(root), "--timeline", "cut",
              "--set", "prepare.size=128", "--set", "prepare.chunk_size=32"]  # fmt: skip
    first = tmp_path / "first.mp4"
    # the first run's training stops at step 20 of 40 (as a killed run would have left it)
    assert _dub(footage.path, speech_2s, first, *common, "--set", "train_seconds=0.001") == 0
    ws = root / identity_name(footage.path)
    state = json.loads((ws / "renderers" / "nerf" / "training_state.json").read_text())
    assert 0 < state["step"] < 40
    prepared = json.loads((ws / "identity.json").read_text())["timings"]
    second = tmp_path / "second.mp4"
    assert _dub(footage.path, speech_2s, second, *common) == 0
    state = json.loads((ws / "renderers" / "nerf" / "training_state.json").read_text())
    assert state["step"] == 40
    assert json.loads((ws / "identity.json").read_text())["timings"] == prepared
    info, source = probe_video(second), probe_video(footage.path)
    assert (info.width, info.height) == (source.width, source.height)
    # the renderer's lower face is pasted in (the tiny preset paints a rough one: it shows)
    got = np.stack(list(read_video_frames(second))).astype(int)
    real = np.stack(list(read_video_frames(footage.path))[: len(got)]).astype(int)
    diff = np.abs(got - real).max(3)
    mouth_y, eyes_y = int(np.median(footage.points[:, 13, 1])), int(np.median(footage.points[:, 159, 1]))
    assert diff[:, mouth_y - 10 : mouth_y + 20].mean() > 3 * diff[:, : eyes_y - 5].mean()
    assert info.num_frames == round(2.0 * source.fps) or info.num_frames == round(2.0 * 25)


def test_own_mouth_keeps_upper_teeth_on_the_upper_lip(face_points):
    """A reference mouth whose inside is white in its upper third (teeth) and dark below: a frame opening
    half as wide shows white just under its upper lip and dark just above its lower lip."""
    from motion import topology as tp
    from renderers.warp.mouth import OwnMouth

    ref_points = face_points.copy()
    ref_points[list(tp.LIPS_LOWER_INNER[1:-1]), 1] += 24  # wide open (the corners stay)
    image = np.full((256, 256, 3), 200, np.uint8)
    upper, lower = ref_points[list(tp.LIPS_UPPER_INNER)], ref_points[list(tp.LIPS_LOWER_INNER)]
    top, bottom = int(upper[5, 1]), int(lower[5, 1])  # at the middle of the mouth
    image[top - 8 : top + 8, :] = (250, 250, 245)
    image[top + 8 : bottom + 8, :] = (60, 10, 10)
    mouth = OwnMouth(image, ref_points)
    frame = np.full((256, 256, 3), 128, np.uint8)
    target_upper, target_lower = upper.copy(), upper.copy()
    target_lower[:, 1] = upper[:, 1] + 12 * np.sin(np.linspace(0, np.pi, len(upper)))
    mouth.paint(frame, target_upper, target_lower)
    x = round(float(upper[5, 0]))
    y_top, y_bottom = int(np.ceil(upper[5, 1])) + 1, int(np.floor(target_lower[5, 1])) - 1
    assert frame[y_top, x].mean() > 200, "no teeth under the upper lip"
    assert frame[y_bottom, x].mean() < 90, "no cavity above the lower lip"
    assert np.array_equal(
        frame[: int(upper[:, 1].min()) - 2], np.full_like(frame[: int(upper[:, 1].min()) - 2], 128)
    )


@pytest.mark.slow
def test_eval_dub_measures_the_held_out_footage(prepared, tmp_path, capsys):
    import json

    out = tmp_path / "report"
    code = main(["eval", "--identity", prepared.name, "--workspace", str(prepared.path.parent), "--dub",
                 "--out", str(out), "-q"])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["renderer"] == "warp"
    assert 20 < report["psnr"] < 100 and 0.5 < report["ssim"] <= 1
    assert report["psnr_mouth"] < report["psnr"]  # the mouth is where the dub differs
    assert np.isfinite(report["lmd_mouth_px_at_512"]) and -1 <= report["mouth_opening_correlation"] <= 1
    assert report["drawn_vs_intended_correlation"] > 0.6, "the pasted mouth does not open as it was meant to"
    for name in ("frames.png", "mouths.png", "mouth.png", "side_by_side.mp4", "dubbed.mp4"):
        assert (out / name).is_file(), name
    assert "mouth-opening correlation" in capsys.readouterr().out


def _written_chunk(path: Path) -> bool:
    """A chunk file in place, not one still being written (those are hidden `.NNNNN.PID.tmp.npz`)."""
    return path.suffix == ".npz" and not path.name.startswith(".")


@pytest.mark.slow
def test_killed_dub_goes_on_where_it_stopped(footage, speech_2s, tmp_path):
    """SIGTERM while dub prepares the video as an identity: exit 143, no video; the next dub keeps the
    chunks already written and goes on from there to a trained renderer and the video."""
    import signal
    import sys
    import time

    from pipeline.dub_trained import identity_name

    root, out = tmp_path / "ids", tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "pipeline.cli", "dub", str(footage.path), "--audio", str(speech_2s),
           "--out", str(out), "--renderer", "nerf", "--preset", "tiny", "--workspace", str(root), "-q",
           "--set", "prepare.size=128", "--set", "prepare.chunk_size=16", "--timeline", "cut"]  # fmt: skip
    chunks = root / identity_name(footage.path) / "chunks"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if chunks.is_dir() and any(map(_written_chunk, chunks.iterdir())):
            break
        time.sleep(0.02)
    first = sorted(filter(_written_chunk, chunks.iterdir()))[0]
    written = first.stat().st_mtime_ns
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    assert not out.exists()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert first.stat().st_mtime_ns == written, "a chunk written before the kill was made again"
    assert (chunks.parent / "renderers" / "nerf" / "model.safetensors").is_file()
    assert out.is_file()

"""Hostile input per command, and runs killed part way: each ends in one ``error:`` line (or the interrupted
line) with its exit status, and leaves every file as it was: nothing written, nothing replaced, no temporary
left behind, neither next to the output nor in the temp directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------
# inputs, made once per session and copied into each test's folder
# ----------------------------------------------------------------------------------------------------


def _write_clip(path: Path, seconds: float, speech: Path | None, fps: float = 25.0) -> None:
    """A grey 64 px video of ``seconds`` (with ``speech``'s audio when given): no face in it."""
    from motion.audio import load_audio
    from pipeline.video_io import VideoWriter

    audio = load_audio(speech) if speech is not None else None
    frames = round(seconds * fps)
    with VideoWriter(path, fps, (64, 64), audio=audio) as writer:
        writer.write(np.full((frames, 64, 64, 3), 120, np.uint8))


@pytest.fixture(scope="session")
def media(tmp_path_factory, portrait_path, demo_speech) -> Path:
    folder = tmp_path_factory.mktemp("hostile_media")
    shutil.copy(portrait_path, folder / "photo.jpg")
    shutil.copy(portrait_path, folder / "photo.mp4")  # a JPEG under a video's name: read by its content
    shutil.copy(demo_speech, folder / "speech.flac")
    _write_clip(folder / "clip.mp4", 3.0, demo_speech)
    _write_clip(folder / "mute.mp4", 1.0, None)
    (folder / "bad.yaml").write_text("motion:\n  jaw_gain: [1, 2\nsize: {\n")
    np.savez(folder / "notmotion.npz", weights=np.zeros(3))
    (folder / "junk.npz").write_text("not a zip file")
    return folder


@pytest.fixture()
def inputs(media, tmp_path) -> Path:
    folder = tmp_path / "in"
    shutil.copytree(media, folder)
    (folder / "link.mp4").symlink_to(folder / "clip.mp4")
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) by relative path -> SHA-1 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert fragment in lines[0], lines[0]


def refused(argv: list[str], folder: Path, capfd) -> str:
    """Run the command in-process; it must exit 2 leaving ``folder`` as it was. Returns stderr."""
    before = snapshot(folder)
    code = main(argv)
    err = capfd.readouterr().err
    assert code == 2, err
    assert snapshot(folder) == before, "a file was written or changed"
    return err


# ----------------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--fps", "0"], "--fps 0.0 is out of range"),
        (["--fps", "-5"], "--fps -5.0 is out of range"),
        (["--fps", "nan"], "--fps nan is out of range"),
        (["--fps", "inf"], "--fps inf is out of range"),
        (["--fps", "0.5"], "--fps 0.5 is out of range"),  # the video would outlast the audio
        (["--fps", "500"], "--fps 500.0 is out of range"),
        (["--size", "40000"], "--size 40000 is not usable"),  # aborted inside OpenCV after a minute
        (["--size", "4098"], "--size 4098 is not usable"),
        (["--set", "crf=99"], "crf 99 is out of range"),
        (["--set", "fps=["], "has a value YAML cannot read"),
    ],
)
def test_generate_settings_out_of_range(inputs, capfd, extra, fragment):
    argv = ["generate", "--image", str(inputs / "photo.jpg"), "--audio", str(inputs / "speech.flac"),
            "--out", str(inputs / "out.mp4"), "-q", *extra]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), fragment)


@pytest.mark.parametrize(
    "image, audio, out",
    [
        ("photo.jpg", "clip.mp4", "clip.mp4"),  # replaced the source video
        ("photo.jpg", "link.mp4", "clip.mp4"),  # the same through a symlink
        ("photo.mp4", "speech.flac", "photo.mp4"),  # the photo itself
    ],
)
def test_generate_output_over_an_input_is_refused(inputs, capfd, image, audio, out):
    argv = ["generate", "--image", str(inputs / image), "--audio", str(inputs / audio),
            "--out", str(inputs / out), "--size", "64", "-q"]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), "would destroy the input")


def test_generate_motion_output_over_the_audio_is_refused(inputs, capfd):
    # --save-motion writes <name>.motion.npz next to the video: here that is the given --audio
    audio = inputs / "out.motion.npz"
    shutil.copy(inputs / "speech.flac", audio)
    argv = ["generate", "--image", str(inputs / "photo.jpg"), "--audio", str(audio),
            "--out", str(inputs / "out.mp4"), "--save-motion", "--size", "64", "-q"]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), "would destroy the input")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--audio", "mute.mp4"], "has no audio stream"),  # was ffmpeg's "Error opening output files"
        (["--audio", "speech.flac", "--set", "max_seconds=1"], "--set max_seconds=11"),  # no --max-seconds
        (["--audio", "speech.flac", "--config", "bad.yaml"], "(line 3, column 5: expected ',' or ']'"),
    ],
)
def test_generate_messages_say_what_to_do(inputs, capfd, extra, fragment, monkeypatch):
    monkeypatch.chdir(inputs)
    argv = ["generate", "--image", "photo.jpg", "--out", "out.mp4", "-q", *extra]
    assert_one_error_line(refused(argv, inputs, capfd), fragment)


def test_image_too_small_message_agrees_with_readme(tmp_path):
    import cv2

    from common.errors import InputError
    from pipeline.image_io import MIN_IMAGE_SIDE, load_image

    readme = (REPO / "README.md").read_text()
    assert f"any size from {MIN_IMAGE_SIDE} px up" in readme
    cv2.imwrite(str(tmp_path / "small.png"), np.full((MIN_IMAGE_SIDE - 1, 300, 3), 90, np.uint8))
    with pytest.raises(InputError) as caught:
        load_image(tmp_path / "small.png")
    assert f"at least {MIN_IMAGE_SIDE} px on its shorter side" in caught.value.message


# ----------------------------------------------------------------------------------------------------
# prepare, render, eval, train
# ----------------------------------------------------------------------------------------------------


def test_prepare_force_spares_a_video_inside_the_identity(inputs, capfd):
    folder = inputs / "ws" / "andrew"
    folder.mkdir(parents=True)
    shutil.copy(inputs / "clip.mp4", folder / "talk.mp4")
    argv = ["prepare", str(folder / "talk.mp4"), "--identity", "andrew", "--workspace", str(inputs / "ws"),
            "--force", "-q", "--set", "min_seconds=1"]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), "lies inside")


@pytest.mark.parametrize(
    "poses, fragment",
    [
        ("missing.npz", "--poses file not found"),
        ("notmotion.npz", "is not a motion file"),
        ("junk.npz", "is not a motion file"),
        ("sideways", "neither footage, static nor a .npz"),
    ],
)
def test_render_poses_checked_before_work(inputs, capfd, poses, fragment, monkeypatch):
    # no identity is prepared: the poses are refused before the workspace is even opened
    monkeypatch.chdir(inputs)
    argv = ["render", "--identity", "nobody", "--workspace", "ws", "--audio", "speech.flac",
            "--poses", poses, "--out", "out.mp4", "-q"]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), fragment)


@pytest.mark.parametrize(
    "background, fragment",
    [("missing.png", "neither a colour nor an image file"), ("junk.npz", "cannot read the background image")],
)
def test_render_background_checked_before_work(inputs, capfd, background, fragment, monkeypatch):
    monkeypatch.chdir(inputs)
    argv = ["render", "--identity", "nobody", "--workspace", "ws", "--audio", "speech.flac",
            "--background", background, "--out", "out.mp4", "-q"]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), fragment)


def test_render_output_over_its_audio_is_refused(inputs, capfd):
    argv = ["render", "--identity", "nobody", "--workspace", str(inputs / "ws"),
            "--audio", str(inputs / "clip.mp4"), "--out", str(inputs / "link.mp4"), "-q"]  # fmt: skip
    assert_one_error_line(refused(argv, inputs, capfd), "would destroy the input")


@pytest.mark.parametrize(
    "out, fragment",
    [
        ("speech.flac", "is a file, not a folder"),  # was FileExistsError from mkdir as training began
        ("ws", "over the workspace"),
        ("ws/andrew", "over the workspace"),
    ],
)
def test_train_out_checked_before_work(inputs, capfd, out, fragment, monkeypatch):
    import json

    from pipeline.workspace import SCHEMA_VERSION

    monkeypatch.chdir(inputs)
    (inputs / "ws" / "andrew").mkdir(parents=True)
    (inputs / "ws" / "andrew" / "identity.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    argv = ["train", "--identity", "andrew", "--workspace", "ws", "--preset", "tiny", "--out", out, "-q"]
    assert_one_error_line(refused(argv, inputs, capfd), fragment)


def test_eval_max_frames_out_of_range(inputs, capfd):
    argv = ["eval", "--identity", "nobody", "--workspace", str(inputs / "ws"), "--max-frames", "0", "-q"]
    assert_one_error_line(refused(argv, inputs, capfd), "--max-frames 0 is out of range")


def test_renderer_weights_that_are_not_safetensors(tmp_path):
    import json

    from common.errors import InputError
    from renderers.base import RENDERER_SCHEMA_VERSION, load_renderer

    config = {"class": "warp", "schema_version": RENDERER_SCHEMA_VERSION, "model": {}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 4)  # shorter than a safetensors header
    with pytest.raises(InputError, match="corrupt"):
        load_renderer(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"<html>not found</html>" * 4)  # a failed download
    with pytest.raises(InputError, match="corrupt"):
        load_renderer(tmp_path)


# ----------------------------------------------------------------------------------------------------
# the command as a user runs it: a process of its own, library logs, signals
# ----------------------------------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.slow
def test_library_log_lines_do_not_precede_the_error(inputs):
    # mediapipe loads its face models here and, through absl, wrote "W0000 ... inference_feedback_manager"
    argv = ["prepare", str(inputs / "clip.mp4"), "--identity", "grey", "--workspace", str(inputs / "ws"),
            "--set", "min_seconds=1", "-q"]  # fmt: skip
    proc = subprocess.run(
        _command(*argv),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=inputs,
        timeout=300,
    )
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "a face was found on only 0")


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def _temp_dirs(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"tp-*-{pid}-*"))


def _start_generate(inputs: Path, out: Path) -> subprocess.Popen:
    # 60 frames/s at 256 px: the video is being written for about a second
    argv = ["generate", "--image", str(inputs / "photo.jpg"), "--audio", str(inputs / "speech.flac"),
            "--out", str(out), "--size", "256", "--fps", "60", "-q"]  # fmt: skip
    return subprocess.Popen(
        _command(*argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=inputs,
    )


def _wait_for_temporary(proc: subprocess.Popen, folder: Path, limit: float = 120.0) -> None:
    """Return once the video's hidden temporary exists next to the output (the frames are streaming)."""
    end = time.monotonic() + limit
    while not _temporaries(folder):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the video was never started"
        time.sleep(0.005)


@pytest.mark.slow
def test_sigterm_while_the_video_is_written(inputs, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = snapshot(inputs)
    proc = _start_generate(inputs, out_dir / "talk.mp4")
    _wait_for_temporary(proc, out_dir)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and err.strip().splitlines() == [
        "terminated; nothing half-written was kept"
    ]
    assert list(out_dir.iterdir()) == []
    assert _temp_dirs(proc.pid) == []
    assert snapshot(inputs) == before


@pytest.mark.slow
def test_sigterm_while_starting(inputs, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_generate(inputs, out_dir / "talk.mp4")
    time.sleep(1.0)  # loading its libraries, the photo, the speech
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []
    assert _temp_dirs(proc.pid) == []


@pytest.mark.slow
def test_sigkill_leftovers_are_removed_by_the_next_run(inputs, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "talk.mp4"
    proc = _start_generate(inputs, out)
    _wait_for_temporary(proc, out_dir)
    proc.kill()
    proc.communicate(timeout=60)
    left = _temporaries(out_dir)
    assert left and not out.exists()  # a run killed outright cannot clean up after itself
    rerun = _start_generate(inputs, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert out.is_file()
    assert _temporaries(out_dir) == []
    assert _temp_dirs(proc.pid) == []


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_atomic_write_removes_what_a_killed_writer_left(tmp_path):
    from common.files import write_json

    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".state.{dead}.tmp.json"
    busy = tmp_path / f".state.{alive}.tmp.json"  # another run writing the same file right now
    stale.write_text("{half")
    busy.write_text("{half")
    write_json(tmp_path / "state.json", {"step": 3})
    assert not stale.exists() and busy.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [busy.name, "state.json"]


def test_stale_temporaries_of_dead_processes_only(tmp_path):
    from common.files import remove_stale_temporaries

    dead, alive = _dead_pid(), os.getppid()
    names = [f".talk.{dead}.tmp.mp4", f".talk.{dead}.tmp.video.mp4", f".talk.{alive}.tmp.mp4", "talk.mp4",
             f"notes.{dead}.tmp.txt"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])

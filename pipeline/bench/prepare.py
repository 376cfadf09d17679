"""``bench prepare``: identity preparation end to end, a fresh process per run, with its peak RAM, beside a
bare pass of the face mesh over the same frames (the work no preparation can skip).

The bare pass (``python -m pipeline.bench.prepare VIDEO FILTERS``) is a fresh process too: it imports the
tracker and the video reader, builds ``MediapipeTracker(video=True, max_faces=1)``, decodes the frames
prepare stores (the same ffmpeg crop and scale, :func:`pipeline.prepare.frame_filters`) and runs the face
mesh on each. Both sides are timed the same way, from process start to exit (Python start-up, imports and
model loading included, the interpreter's teardown left out on both); the bare process also reports its
decode + face-mesh loop alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.errors import InputError
from pipeline.bench.measure import machine

DEFAULT_CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "talk_andrew_a.mp4"
"""The clip measured when none is given: ``../shared/data/talk_andrew_a.mp4`` beside the repository."""


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of it and its children, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024.0, proc.returncode


def upscaled_copies(video: str, root: Path) -> list[tuple[str, Path]]:
    """``video`` scaled to 512x512, and that copy looped to three times its length (made once in ``root``)."""
    from motion.audio import ffmpeg_exe

    up = root / "upscaled_512.mp4"
    longer = root / "upscaled_512_x3.mp4"
    if not up.is_file():
        subprocess.run(
            [
                ffmpeg_exe(),
                "-v",
                "error",
                "-y",
                "-i",
                video,
                "-vf",
                "scale=512:512:flags=lanczos",
                "-c:v",
                "libx264",
                "-crf",
                "16",
                "-c:a",
                "copy",
                str(up),
            ],
            check=True,
        )
    if not longer.is_file():
        loop = ["-stream_loop", "2", "-i", str(up), "-c", "copy", str(longer)]
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *loop], check=True)
    return [("upscaled 512", up), ("upscaled 512, 3x long", longer)]


def hd_copy(video: str, root: Path, seconds: float = 12.0) -> tuple[str, Path]:
    """``video`` scaled to 1080x1080, padded to 1920x1080 and cut to ``seconds`` (made once in ``root``)."""
    from motion.audio import ffmpeg_exe

    out = root / f"hd_1920x1080_{seconds:g}s.mp4"
    if not out.is_file():
        chain = "scale=1080:1080:flags=lanczos,pad=1920:1080:(ow-iw)/2:0"
        cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", video, "-t", f"{seconds:g}", "-vf", chain]
        cmd += ["-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-c:a", "aac", str(out)]
        subprocess.run(cmd, check=True)
    return (f"1920x1080, {seconds:g} s", out)


def face_mesh_pass(video: str, filters: str) -> dict[str, float]:
    """Decode ``video`` through ``filters`` and run the face mesh on every frame: frames, and seconds of the
    tracker's start-up and of the decode + face-mesh loop."""
    t0 = time.perf_counter()
    from motion.tracker import MediapipeTracker
    from pipeline.video_io import read_video_frames

    tracker = MediapipeTracker(video=True, max_faces=1)
    t1 = time.perf_counter()
    frames = 0
    try:
        for rgb in read_video_frames(video, filters=filters):
            tracker.detect(rgb)
            frames += 1
    finally:
        tracker.close()
    return {"frames": frames, "startup_s": t1 - t0, "loop_s": time.perf_counter() - t1}


def bare_once(path: Path, filters: str) -> dict[str, float]:
    """:func:`face_mesh_pass` in a fresh process: its numbers, and the process's wall seconds."""
    cmd = [sys.executable, "-m", "pipeline.bench.prepare", str(path), filters]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the bare face-mesh pass failed on {path}: {proc.stderr.strip()[-500:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": wall}


def ratio_line(label: str, prepare_s: float, bare: dict[str, float]) -> str:
    """One line comparing a prepare run with the bare face-mesh pass over the same frames."""
    return (
        f"{label}: prepare {prepare_s:.1f} s / bare face mesh {bare['seconds']:.1f} s = "
        f"{prepare_s / bare['seconds']:.2f}x (both fresh processes, start-up included; the bare pass's "
        f"decode + face-mesh loop alone {bare['loop_s']:.1f} s over {bare['frames']} frames, "
        f"prepare / loop {prepare_s / bare['loop_s']:.2f}x)"
    )


def prepare_once(config, label: str, path: Path, root: Path) -> dict[str, float]:
    """One ``talking-portrait prepare --force`` process on ``path`` into ``root/ws``: prints a line, returns
    frames, seconds, frames/s and peak RSS."""
    from pipeline.video_io import probe_video

    info = probe_video(path)
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "prepare",
        str(path),
        "--identity",
        "bench",
        "--workspace",
        str(root / "ws"),
        "--force",
        "-q",
        "--size",
        str(config.size),
        "--fps",
        str(config.fps),
    ]
    wall, rss, code = run_measured(cmd)
    if code != 0:
        raise RuntimeError(f"prepare failed on {path} (exit {code})")
    summary = json.loads((root / "ws" / "bench" / "report" / "summary.json").read_text())
    frames = summary["frames"]
    steps = ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items())
    print(
        f"{label}: {path.name} {info.width}x{info.height} {info.fps:g} fps, {frames} frames -> "
        f"{wall:.1f} s = {frames / wall:.1f} frames/s end to end (process start included), "
        f"peak RSS {rss:.0f} MB; steps (s): {steps}"
    )
    result = {"frames": frames, "seconds": wall, "fps": frames / wall, "peak_rss_mb": rss}
    from pipeline.prepare import frame_filters

    info = json.loads((root / "ws" / "bench" / "identity.json").read_text())
    bare = bare_once(path, frame_filters(info, config.size, config.fps))
    if bare["frames"] != frames:
        raise RuntimeError(f"the bare pass decoded {bare['frames']} frames, prepare stored {frames}")
    print(ratio_line(label, wall, bare))
    return {
        **result,
        "bare_seconds": bare["seconds"],
        "bare_loop_seconds": bare["loop_s"],
        "ratio": wall / bare["seconds"],
    }


def bench_prepare(
    config, video: str | None = None, upscaled: bool = True, out: str = "outputs/bench_prepare"
):
    """Time ``talking-portrait prepare`` end to end (a fresh process per run), read its peak RAM, and time
    a bare face-mesh pass over the same frames (see the module): ``prepare wall / bare wall`` per input.

    Runs on ``video`` (default the shared talk_andrew_a.mp4), on a 512x512 upscaled copy of it, on that
    copy looped to three times the length (to show that peak RAM does not grow with the clip), and on a
    12 s 1920x1080 copy (the face in the middle, scaled to 1080x1080).
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = str(DEFAULT_CLIP)
        if not Path(video).is_file():
            raise InputError(f"{video} is not present", "pass --video with a clip of one person talking")
    inputs = [("source", Path(video))]
    if upscaled:
        inputs += [*upscaled_copies(video, root), hd_copy(video, root)]
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}, frame size {config.size}, {config.fps:g} fps")
    return {label: prepare_once(config, label, path, root) for label, path in inputs}


if __name__ == "__main__":
    print(json.dumps(face_mesh_pass(sys.argv[1], sys.argv[2])), flush=True)
    os._exit(0)  # no interpreter teardown, as after prepare (pipeline.cli.run)

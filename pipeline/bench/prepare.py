"""``bench prepare``: identity preparation end to end, a fresh process per run, with its peak RAM."""

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
    return {"frames": frames, "seconds": wall, "fps": frames / wall, "peak_rss_mb": rss}


def bench_prepare(
    config, video: str | None = None, upscaled: bool = True, out: str = "outputs/bench_prepare"
):
    """Time ``talking-portrait prepare`` end to end (a fresh process per run) and read its peak RAM.

    Runs on ``video`` (default the shared talk_andrew_a.mp4), on a 512x512 upscaled copy of it, and on
    that copy looped to three times the length, to show that peak RAM does not grow with the clip.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = str(DEFAULT_CLIP)
        if not Path(video).is_file():
            raise InputError(f"{video} is not present", "pass --video with a clip of one person talking")
    inputs = [("source", Path(video))]
    if upscaled:
        inputs += upscaled_copies(video, root)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}, frame size {config.size}, {config.fps:g} fps")
    return {label: prepare_once(config, label, path, root) for label, path in inputs}

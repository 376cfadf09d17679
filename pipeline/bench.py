"""Benchmarks behind ``talking-portrait bench``: they print figures; BENCHMARKS.md records them."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path


def machine() -> str:
    """One line describing this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def bench_oneshot(config, image: str | None = None, audio: str | None = None, repeats: int = 3,
                  out: str = "outputs/bench_oneshot.mp4") -> dict[str, float]:  # fmt: skip
    """Time the warp render stage alone, then the whole generate command, at ``config.size``."""
    from motion.audio2motion import audio_to_motion
    from motion.face_model import FaceModel
    from motion.tracker import track_portrait
    from pipeline.audio import load_audio
    from pipeline.framing import frame_square
    from pipeline.media import load_image
    from pipeline.oneshot import demo_inputs, generate
    from renderers.warp.renderer import WarpRenderer

    demo_photo, demo_speech, transcript = demo_inputs()
    image = image or str(demo_photo)
    audio_path = audio or str(demo_speech)
    if audio:
        transcript = None

    speech = load_audio(audio_path)
    photo = load_image(image)
    framed = frame_square(photo, track_portrait(photo), config.size, config.zoom)
    fit = FaceModel().fit(track_portrait(framed))
    motion = audio_to_motion(speech, config.fps, config=config.motion)
    renderer = WarpRenderer(framed, fit, config.warp)
    render_fps = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in renderer.render(motion))
        render_fps.append(n / (time.perf_counter() - start))

    ratios, walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(image, audio_path, out, transcript=transcript, config=config)
        wall = time.perf_counter() - start
        walls.append(wall)
        ratios.append(wall / speech.duration)
    result = {
        "render_fps": statistics.median(render_fps),
        "command_seconds": statistics.median(walls),
        "command_over_audio": statistics.median(ratios),
        "audio_seconds": speech.duration,
        "frames": len(motion),
    }
    print(f"machine: {machine()}")
    print(
        f"input: {Path(image).name} + {Path(audio_path).name} ({speech.duration:.2f} s, {len(motion)} frames)"
    )
    print(f"size: {config.size}x{config.size} at {config.fps:g} fps, threads {config.warp.threads}")
    print(f"render stage: {result['render_fps']:.1f} frames/s (median of {repeats})")
    print(
        f"generate (in-process, after start-up): {result['command_seconds']:.2f} s = "
        f"{result['command_over_audio']:.3f} x audio duration (median of {repeats})"
    )
    return result

"""``bench oneshot``: single-portrait generation with the warp renderer, render stage and whole command."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from pipeline.bench.measure import machine


def frame_rms(samples: np.ndarray, rate: int, num_frames: int, fps: float) -> np.ndarray:
    """Plain RMS of the audio over each video frame's time slice: [T]. Independent of the motion model."""
    edges = np.round(np.arange(num_frames + 1) * rate / fps).astype(int)
    out = np.zeros(num_frames)
    for i in range(num_frames):
        chunk = samples[edges[i] : edges[i + 1]]
        out[i] = np.sqrt(np.mean(chunk**2)) if chunk.size else 0.0
    return out


def lipsync_correlation(video: str | os.PathLike, audio) -> float:
    """Pearson correlation between the mouth opening measured on ``video``'s frames with the project's
    tracker and the audio's frame RMS envelope (smoothed over 3 frames, as the mouth cannot follow faster)."""
    from motion.lip_measures import mouth_opening
    from motion.tracker import track_frames
    from pipeline.video_io import probe_video, read_video_frames

    info = probe_video(video)
    opening = mouth_opening(track_frames(read_video_frames(video)))
    env = frame_rms(audio.samples, audio.rate, len(opening), info.fps)
    env = np.convolve(env, np.ones(3) / 3, "same")
    ok = ~np.isnan(opening)
    return float(np.corrcoef(opening[ok], env[ok])[0, 1])


def render_stage_fps(config, image: str, speech, repeats: int) -> tuple[list[float], int]:
    """Frames/s of the warp renderer alone over the whole motion of ``speech`` (an Audio), once per repeat,
    and the number of frames."""
    from motion.audio2motion import audio_to_motion
    from motion.face_model import FaceModel
    from motion.tracker import track_portrait
    from pipeline.framing import frame_square
    from pipeline.image_io import load_image
    from renderers.warp.renderer import WarpRenderer

    photo = load_image(image)
    framed = frame_square(photo, track_portrait(photo), config.size, config.zoom)
    fit = FaceModel().fit(track_portrait(framed))
    motion = audio_to_motion(speech, config.fps, config=config.motion)
    renderer = WarpRenderer(framed, fit, config.warp)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in renderer.render(motion))
        rates.append(n / (time.perf_counter() - start))
    return rates, len(motion)


def command_seconds(config, image: str, audio: str, transcript: str | None, out: str, repeats: int) -> list:
    """Wall seconds of the whole in-process ``generate`` call, once per repeat."""
    from pipeline.oneshot import generate

    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(image, audio, out, transcript=transcript, config=config)
        walls.append(time.perf_counter() - start)
    return walls


def bench_oneshot(
    config,
    image: str | None = None,
    audio: str | None = None,
    repeats: int = 3,
    out: str = "outputs/bench_oneshot.mp4",
) -> dict[str, float]:
    """Time the warp render stage alone, then the whole generate command, at ``config.size``."""
    from motion.audio import load_audio
    from pipeline.oneshot import demo_inputs

    demo_photo, demo_speech, transcript = demo_inputs()
    image = image or str(demo_photo)
    audio_path = audio or str(demo_speech)
    if audio:
        transcript = None
    speech = load_audio(audio_path)
    render_fps, frames = render_stage_fps(config, image, speech, repeats)
    walls = command_seconds(config, image, audio_path, transcript, out, repeats)
    result = {
        "lipsync_correlation": lipsync_correlation(out, speech),
        "render_fps": statistics.median(render_fps),
        "command_seconds": statistics.median(walls),
        "command_over_audio": statistics.median([wall / speech.duration for wall in walls]),
        "audio_seconds": speech.duration,
        "frames": frames,
    }
    _print_oneshot(result, config, image, audio_path, repeats)
    return result


def _print_oneshot(result: dict[str, float], config, image: str, audio: str, repeats: int) -> None:
    print(f"machine: {machine()}")
    print(
        f"input: {Path(image).name} + {Path(audio).name} ({result['audio_seconds']:.2f} s, "
        f"{result['frames']} frames)"
    )
    print(f"size: {config.size}x{config.size} at {config.fps:g} fps, threads {config.warp.threads}")
    print(f"render stage: {result['render_fps']:.1f} frames/s (median of {repeats})")
    print(
        f"generate (in-process, after start-up): {result['command_seconds']:.2f} s = "
        f"{result['command_over_audio']:.3f} x audio duration (median of {repeats})"
    )
    r = result["lipsync_correlation"]
    print(f"mouth opening (tracked on the output) vs audio RMS envelope: r = {r:.3f}")

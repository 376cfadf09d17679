"""Single-portrait generation: one photo + one speech clip -> a talking video. No training.

>>> from pipeline import generate
>>> result = generate("photo.png", "speech.wav", "outputs/talk.mp4")
>>> result.video
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.config import save_config
from common.errors import InputError
from common.progress import Stages
from motion.audio import load_audio
from motion.audio2motion import Audio2MotionConfig, audio_to_motion, require_speech
from motion.face_model import FaceModel
from motion.sequence import MotionSequence
from motion.tracker import make_tracker, track_portrait
from pipeline.checks import check_fps, check_motion_file, check_range, check_size, check_writes_spare_reads
from pipeline.compositor import Compositor
from pipeline.framing import frame_square
from pipeline.image_io import load_image
from pipeline.video_io import VideoWriter, check_output_path
from renderers import registry
from renderers.warp.renderer import WarpConfig

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """Settings of single-portrait generation."""

    size: int = 512
    """Output width and height in pixels (even)."""
    fps: float = 25.0
    """Output frame rate."""
    zoom: float = 2.6
    """Framing: side of the square crop over the face's height."""
    tracker: str = "mediapipe"
    """Landmark tracker: mediapipe (offline default) or face-alignment (needs its weights)."""
    crf: int = 18
    """H.264 quality (lower is better and larger)."""
    max_seconds: float = 600.0
    """Longest audio accepted, in seconds."""
    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """Audio-to-motion settings."""
    warp: WarpConfig = field(default_factory=WarpConfig)
    """Warp renderer settings."""
    renderer: str = "warp"
    """warp (no training), or diffusion: a diffusion renderer trained on several people (``checkpoint``).
    The section of this config named after the renderer (``warp``) holds its settings."""
    checkpoint: str = ""
    """The trained diffusion renderer's folder, for ``renderer: diffusion``."""


@dataclass
class GenerateResult:
    """What :func:`generate` made and how long each stage took (seconds)."""

    video: Path
    config: Path
    motion: MotionSequence
    num_frames: int
    audio_seconds: float
    timings: dict[str, float]


def generate(
    image: str | os.PathLike,
    audio: str | os.PathLike,
    out: str | os.PathLike = "outputs/talking.mp4",
    *,
    transcript: str | None = None,
    config: GenerateConfig | None = None,
    progress: bool = False,
    save_motion: bool = False,
    motion: str | os.PathLike | None = None,
) -> GenerateResult:
    """Make a talking video of the face in ``image`` saying ``audio``.

    The video (H.264 + AAC mp4, ``config.size`` square, as long as the audio) is written atomically to
    ``out``; the resolved config goes next to it as ``<name>.config.yaml``. ``motion``, a MotionSequence
    ``.npz`` (``talking-portrait motion``), drives the face instead of the motion stage; the video then
    takes its frame rate. Bad inputs raise :class:`common.errors.UserError` before anything is written.
    """
    config = config or GenerateConfig()
    check_size(config.size)
    check_fps(config.fps)
    check_range(config.zoom, "--set zoom", 1.0, 10.0)
    check_range(config.crf, "--set crf", 0, 51)
    check_range(config.max_seconds, "--set max_seconds", 0.1, 24 * 3600)
    check_writes_spare_reads([image, audio, motion], output_paths(out, save_motion=save_motion))
    given = _motion_file(motion) if motion is not None else None
    stages = Stages()
    stages.start("load")

    out = check_output_path(out, ".mp4")
    speech = load_audio(audio, max_seconds=config.max_seconds)
    require_speech(speech, str(audio), config.motion)
    photo = load_image(image)
    stages.start("track")

    tracker = make_tracker(config.tracker)
    face = track_portrait(photo, tracker, source=str(image))
    framed = frame_square(photo, face, config.size, config.zoom)
    face = track_portrait(framed, tracker, source=f"{image} (framed)")
    fit = FaceModel().fit(face)
    stages.start("motion")

    if given is None:
        motion = audio_to_motion(
            speech, config.fps, transcript=transcript, config=config.motion, progress=progress
        )
    else:
        motion = given
        _check_motion_length(motion, speech.duration, str(audio))
        config.fps = motion.fps
    stages.start("prepare")

    build = registry.entry(config.renderer).portrait_builder()
    renderer = build(framed, fit, getattr(config, config.renderer, None), config.checkpoint)
    compositor = Compositor(framed)
    stages.start("render")

    frames = renderer.render(motion, progress=progress)
    with VideoWriter(out, config.fps, (config.size, config.size), audio=speech, crf=config.crf) as writer:
        for head in frames:
            writer.write(compositor.compose(head))
    timings = stages.end()

    _, config_path, motion_path = output_paths(out, save_motion=True)
    save_config(config, config_path)
    if save_motion:
        motion.save(motion_path)
    return GenerateResult(out, config_path, motion, len(motion), speech.duration, timings)


def _motion_file(path: str | os.PathLike) -> MotionSequence:
    """The MotionSequence in ``path``, checked to be one a photo can be driven with."""
    check_motion_file(path, "--motion")
    motion = MotionSequence.load(path)
    if motion.pose_kind != "relative":
        raise InputError(
            f"--motion {path} holds camera poses (tracked footage), a photo is driven with relative ones",
            "write it with talking-portrait motion --audio SPEECH --out MOTION.npz",
        )
    check_fps(motion.fps)
    return motion


def _check_motion_length(motion: MotionSequence, seconds: float, audio: str) -> None:
    if abs(motion.duration - seconds) > 0.5:
        raise InputError(
            f"--motion lasts {motion.duration:.2f} s and {audio} {seconds:.2f} s",
            "write the motion from the same speech: talking-portrait motion --audio SPEECH --out MOTION.npz",
        )


def output_paths(out: str | os.PathLike, save_motion: bool = False) -> list[Path]:
    """What a video job writes for ``out``: the video, ``<name>.config.yaml`` and (with ``save_motion``)
    ``<name>.motion.npz``."""
    out = Path(out)
    paths = [out, out.with_name(out.stem + ".config.yaml")]
    return [*paths, out.with_name(out.stem + ".motion.npz")] if save_motion else paths


def demo_inputs() -> tuple[Path, Path, str]:
    """The embedded default: a photo that ships with matplotlib and the project's own speech clip."""
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    speech = Path(__file__).resolve().parent.parent / "assets" / "demo_speech.flac"
    transcript = (
        "Hello, and welcome. This portrait speaks from a single photo. "
        "Every word moves the lips, and the mouth rests when the voice stops."
    )
    return photo, speech, transcript

"""Rendering a trained identity saying new audio: motion from speech, poses and backdrop from its footage.

Per output frame: the expression comes from the audio (the motion stage, rescaled to the range this person's
own mouth moves in), the head pose and the backdrop (torso, background) from a frame of the identity's
footage, walked back and forth so the video is as long as the audio. The footage frame's own head is first
removed: where the new head does not cover it, the neck is extended up from below, or the background plate
shows beside it; the rendered head is painted over with its neck seam feathered and colour-matched, and
the background can be swapped for a colour or an image (:class:`pipeline.compositor.FootageCompositor`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.config import save_config
from common.errors import InputError
from motion.audio import load_audio
from motion.audio2motion import Audio2MotionConfig, require_speech
from motion.sequence import MotionSequence
from pipeline.compositor import FootageCompositor
from pipeline.drive import backdrop_frames, composed, retarget
from pipeline.speech_motion import speech_motion
from pipeline.video_io import VideoWriter, check_output_path
from pipeline.workspace import Workspace, identity_dir
from renderers.base import load_renderer


@dataclass
class IdentityRenderConfig:
    """Settings of ``talking-portrait render``."""

    renderer: str = "nerf"
    """Which trained renderer of the identity to use."""
    poses: str = "footage"
    """Head poses: footage (the identity's own, walked back and forth), static, or a MotionSequence .npz
    (camera poses as they are; relative head motion about the identity's calmest pose)."""
    match_identity_range: bool = True
    """Rescale the mouth coefficients from the audio to the range the identity's footage shows."""
    resolution: int = 0
    """Side the head is rendered at before scaling to the frame (0: the trained renderer's own setting)."""
    background: str = ""
    """Replace the footage's background: a colour (#RRGGBB or R,G,B) or an image file; empty keeps it."""
    crf: int = 18
    """H.264 quality."""
    max_seconds: float = 600.0
    """Longest audio accepted."""
    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """Audio-to-motion settings."""


def parse_background(value: str) -> tuple[int, int, int] | np.ndarray | None:
    """The ``background`` setting as the compositor takes it: None, an RGB colour or an RGB image."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("#") and len(value) == 7:
        try:
            return tuple(int(value[k : k + 2], 16) for k in (1, 3, 5))  # type: ignore[return-value]
        except ValueError:
            pass
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)  # type: ignore[return-value]
    if os.path.isfile(value):
        image = cv2.imread(value, cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read the background image {value}", "give a PNG or JPEG file")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise InputError(
        f"background {value!r} is neither a colour nor an image file",
        "use a colour like #00b140 or 0,177,64, or the path of a PNG or JPEG",
    )


def render_identity(
    identity: str,
    audio: str | os.PathLike,
    out: str | os.PathLike,
    workspace: str | os.PathLike | None = None,
    config: IdentityRenderConfig | None = None,
    transcript: str | None = None,
    progress: bool = False,
) -> Path:
    """Write ``out``: the trained ``identity`` saying ``audio`` (H.264 + AAC, at the workspace size, fps)."""
    config = config or IdentityRenderConfig()
    ws = Workspace.open(identity_dir(identity, workspace))
    ws.require("report")
    ws.require_intact()
    model_dir = ws.trained_renderer_dir(config.renderer)
    out = check_output_path(out, ".mp4")
    speech = load_audio(audio, max_seconds=config.max_seconds)
    require_speech(speech, str(audio), config.motion)
    renderer = load_renderer(
        model_dir, render={"resolution": config.resolution} if config.resolution else None
    )
    fit = ws.fit()
    spoken = speech_motion(speech, ws.fps, ws=ws, config=config.motion, transcript=transcript)
    given = MotionSequence.load(config.poses) if config.poses.endswith(".npz") else None
    frames = backdrop_frames(ws, fit, len(spoken.motion), "static" if given else config.poses)
    scale = config.match_identity_range and not spoken.in_person_scale
    driven = retarget(spoken.motion, fit, frames, None, scale, given)
    compositor = FootageCompositor(ws.background(), background=parse_background(config.background))
    with VideoWriter(out, ws.fps, (ws.size, ws.size), audio=speech, crf=config.crf) as writer:
        for frame in composed(renderer, driven, ws, frames, compositor, progress):
            writer.write(frame)
    save_config(config, out.with_name(out.stem + ".config.yaml"))
    return out

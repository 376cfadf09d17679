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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.config import save_config
from common.errors import InputError
from motion.audio import load_audio
from motion.audio2motion import Audio2MotionConfig, audio_to_motion, require_speech
from motion.blendshapes import MOUTH_NAMES
from motion.sequence import MotionSequence
from pipeline.compositor import FootageCompositor
from pipeline.video_io import VideoWriter, check_output_path
from pipeline.workspace import Workspace, identity_dir


@dataclass
class IdentityRenderConfig:
    """Settings of ``talking-portrait render``."""

    renderer: str = "nerf"
    """Which trained renderer of the identity to use."""
    poses: str = "footage"
    """Head poses: footage (the identity's own, walked back and forth), static, or a MotionSequence .npz."""
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


def ping_pong(frames: np.ndarray, length: int) -> np.ndarray:
    """``length`` indices walking ``frames`` forward, then back, and so on (no jump at the turns)."""
    if len(frames) == 1:
        return np.repeat(frames, length)
    cycle = np.concatenate([frames, frames[-2:0:-1]])
    return cycle[np.arange(length) % len(cycle)]


def adapt_to_identity(expression: np.ndarray, names: tuple[str, ...], tracked: np.ndarray) -> np.ndarray:
    """Scale each mouth coefficient of predicted motion so its typical active value matches the identity's.

    The audio-to-motion stage speaks in generic magnitudes; a person who barely opens their mouth would
    otherwise be driven past anything the renderer saw in training. Values are compared where the
    coefficient is active (some are used by few phones, e.g. the lower lip tucked in for f and v, and their
    plain percentiles are about 0), and the gain stays within [1/4, 4].
    """
    out = expression.copy()
    for name in MOUTH_NAMES:
        if name not in names:
            continue
        k = names.index(name)
        predicted, own = expression[:, k], tracked[:, k]
        if (predicted > 0.02).sum() < 3 or (own > 0.02).sum() < 3:
            continue
        gain = np.percentile(own[own > 0.02], 90) / np.percentile(predicted[predicted > 0.02], 90)
        out[:, k] = predicted * np.clip(gain, 0.25, 4.0)
    return out


def within_trained_range(expression: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """Each coefficient clipped to the range the identity's footage showed: a trained renderer cannot paint
    a face it never saw (a field driven far outside its range turns into a translucent ghost)."""
    return np.clip(expression, tracked.min(0), tracked.max(0))


def with_footage_expression(
    expression: np.ndarray, names: tuple[str, ...], tracking: dict[str, np.ndarray], frames: np.ndarray
) -> np.ndarray:
    """Speech drives the mouth and the blinks; everything else (smiles, brows) comes from the footage frame
    that gives the pose and backdrop, so the face stays in the states the renderer was trained on (a
    habitual smile is not forced to zero) and matches its backdrop. The mouth coefficients from speech are
    added to the identity's own resting mouth."""
    out = tracking["expression"][frames].astype(np.float32).copy()
    valid = tracking["expression"][tracking["valid"]]
    for name in MOUTH_NAMES:
        if name in names:
            k = names.index(name)
            out[:, k] = np.percentile(valid[:, k], 10) + expression[:, k]
    for name in ("blink_left", "blink_right"):
        if name in names:
            out[:, names.index(name)] = expression[:, names.index(name)]
    return out


def _pose_frames(ws: Workspace, tracking: dict[str, np.ndarray], length: int, poses: str) -> np.ndarray:
    train = ws.tracked_frames("train", tracking)
    if len(train) == 0:
        raise InputError(f"identity {ws.path.name} has no usable frames", "prepare a longer clip")
    if poses == "footage":
        return ping_pong(train, length)
    if poses == "static":
        rot = tracking["rotation"][train]
        calmest = train[int(np.argmin(np.linalg.norm(rot - np.median(rot, 0), axis=1)))]
        return np.full(length, calmest)
    raise InputError(f"unknown pose source {poses!r}", "use --poses footage, static or a .npz MotionSequence")


def composed(
    renderer,
    motion: MotionSequence,
    ws: Workspace,
    frames: np.ndarray,
    compositor: FootageCompositor,
    progress: bool = False,
) -> Iterator[np.ndarray]:
    """Output frames: each rendered head of ``motion`` composed into footage frame ``frames[t]`` of ``ws``."""
    for t, head in enumerate(renderer.render(motion, progress=progress)):
        _, frame, masks = next(ws.iter_frames([int(frames[t])]))
        yield compositor.compose(head, frame, masks)


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
    from renderers.base import load_renderer

    config = config or IdentityRenderConfig()
    ws = Workspace.open(identity_dir(identity, workspace))
    ws.require("report")
    model_dir = ws.path / "renderers" / config.renderer
    if not (model_dir / "model.safetensors").is_file():
        raise InputError(
            f"identity {identity!r} has no trained {config.renderer} renderer ({model_dir} is empty)",
            f"train it first: talking-portrait train --identity {identity} --renderer {config.renderer}",
        )
    out = check_output_path(out, ".mp4")
    speech = load_audio(audio, max_seconds=config.max_seconds)
    require_speech(speech, str(audio), config.motion)
    renderer = load_renderer(model_dir)
    if config.resolution and hasattr(renderer, "config"):
        renderer.config.render.resolution = config.resolution
    tracking = ws.tracking()
    names = tuple(str(n) for n in tracking["names"])
    motion = audio_to_motion(speech, ws.fps, transcript=transcript, config=config.motion).with_names(names)
    expression = motion.expression
    if config.match_identity_range:
        expression = adapt_to_identity(expression, names, tracking["expression"][tracking["valid"]])
    if config.poses.endswith(".npz"):
        given = MotionSequence.load(config.poses)
        index = np.minimum(np.arange(len(motion)), len(given) - 1)
        pose = given.pose[index]
        frames = _pose_frames(ws, tracking, len(motion), "static")
    else:
        frames = _pose_frames(ws, tracking, len(motion), config.poses)
        pose = np.concatenate([tracking["rotation"][frames], tracking["translation"][frames]], 1)
    expression = with_footage_expression(expression, names, tracking, frames)
    expression = within_trained_range(expression, tracking["expression"][tracking["valid"]])
    driven = MotionSequence(ws.fps, expression.astype(np.float32), pose.astype(np.float32), names)
    compositor = FootageCompositor(ws.background(), background=parse_background(config.background))
    with VideoWriter(out, ws.fps, (ws.size, ws.size), audio=speech, crf=config.crf) as writer:
        for frame in composed(renderer, driven, ws, frames, compositor, progress):
            writer.write(frame)
    save_config(config, out.with_name(out.stem + ".config.yaml"))
    return out

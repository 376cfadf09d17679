"""Rendering a trained identity saying new audio: motion from speech, poses and backdrop from its footage.

Per output frame: the expression comes from the audio (the motion stage, rescaled to the range this person's
own mouth moves in), the head pose and the backdrop (torso, background) from a frame of the identity's
footage, walked back and forth so the video is as long as the audio. The footage frame's own head is first
replaced by the background plate, so nothing of the old head shows where the new one does not reach; the
rendered head (soft matte, cut softly at the neck as it was trained) is then painted over it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from motion.audio2motion import Audio2MotionConfig, audio_to_motion
from motion.blendshapes import MOUTH_NAMES
from motion.sequence import MotionSequence
from pipeline.audio import load_audio
from pipeline.compositor import Compositor
from pipeline.config import save_config
from pipeline.errors import InputError
from pipeline.media import VideoWriter, check_output_path
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
    crf: int = 18
    """H.264 quality."""
    max_seconds: float = 600.0
    """Longest audio accepted."""
    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """Audio-to-motion settings."""


def ping_pong(frames: np.ndarray, length: int) -> np.ndarray:
    """``length`` indices walking ``frames`` forward, then back, and so on (no jump at the turns)."""
    if len(frames) == 1:
        return np.repeat(frames, length)
    cycle = np.concatenate([frames, frames[-2:0:-1]])
    return cycle[np.arange(length) % len(cycle)]


def adapt_to_identity(expression: np.ndarray, names: tuple[str, ...], tracked: np.ndarray) -> np.ndarray:
    """Scale each mouth coefficient of predicted motion so its 95th percentile matches the identity's.

    The audio-to-motion stage speaks in generic magnitudes; a person who barely opens their mouth would
    otherwise be driven past anything the renderer saw in training.
    """
    out = expression.copy()
    for name in MOUTH_NAMES:
        if name not in names:
            continue
        k = names.index(name)
        predicted = np.percentile(expression[:, k], 95)
        own = np.percentile(tracked[:, k], 95)
        if predicted > 1e-3 and own > 1e-3:
            out[:, k] = expression[:, k] * (own / predicted)
    return out


def _with_footage_expression(
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
    valid = tracking["valid"]
    train = np.array([i for i in ws.split("train") if valid[i]])
    if len(train) == 0:
        raise InputError(f"identity {ws.path.name} has no usable frames", "prepare a longer clip")
    if poses == "footage":
        return ping_pong(train, length)
    if poses == "static":
        rot = tracking["rotation"][train]
        calmest = train[int(np.argmin(np.linalg.norm(rot - np.median(rot, 0), axis=1)))]
        return np.full(length, calmest)
    raise InputError(f"unknown pose source {poses!r}", "use --poses footage, static or a .npz MotionSequence")


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
    expression = _with_footage_expression(expression, names, tracking, frames)
    driven = MotionSequence(ws.fps, expression.astype(np.float32), pose.astype(np.float32), names)
    plate = ws.background().astype(np.float32)
    compositor = Compositor(plate.astype(np.uint8), feather=0)
    grow = np.ones((5, 5), np.uint8)
    with VideoWriter(out, ws.fps, (ws.size, ws.size), audio=speech, crf=config.crf) as writer:
        for t, head in enumerate(renderer.render(driven, progress=progress)):
            _, backdrop, masks = next(ws.iter_frames([int(frames[t])]))
            old_head = cv2.dilate(masks.head_alpha, grow).astype(np.float32)[..., None] / 255.0
            base = backdrop.astype(np.float32) * (1 - old_head) + plate * old_head
            writer.write(compositor.compose(head, background=np.clip(base + 0.5, 0, 255).astype(np.uint8)))
    save_config(config, out.with_name(out.stem + ".config.yaml"))
    return out

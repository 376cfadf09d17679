"""Synthetic talking-head footage with known motion and a known background, for preparation tests.

A real portrait is driven by the warp renderer with a chosen :class:`MotionSequence` (head rotation, jaw,
blinks); the person (matted once from the rest frame) slides sideways over a textured background that is
known everywhere, so a background plate can be checked against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.sequence import MotionSequence


@dataclass
class Footage:
    path: Path
    motion: MotionSequence
    background: np.ndarray  # uint8 [S, S, 3] RGB, the truth behind the person
    shift: np.ndarray  # [T] horizontal slide of the person in pixels
    points: np.ndarray  # [T, 478, 2] where the renderer put the face model's vertices, in pixels


def known_motion(num_frames: int, fps: float) -> MotionSequence:
    """Head turns and nods, a talking jaw, two blinks; rest pose at frame 0."""
    t = np.arange(num_frames) / fps
    expr = np.zeros((num_frames, len(EXPRESSION_NAMES)), np.float32)
    expr[:, EXPRESSION_INDEX["jaw_open"]] = 0.7 * np.clip(np.sin(2 * np.pi * 1.1 * t), 0, None) ** 1.5
    for centre in (1.2, 2.9):
        closed = np.clip(1 - np.abs(t - centre) / 0.1, 0, 1)
        expr[:, EXPRESSION_INDEX["blink_left"]] = np.maximum(expr[:, EXPRESSION_INDEX["blink_left"]], closed)
        expr[:, EXPRESSION_INDEX["blink_right"]] = np.maximum(
            expr[:, EXPRESSION_INDEX["blink_right"]], closed
        )
    pose = np.zeros((num_frames, 6), np.float32)
    pose[:, 0] = 0.08 * np.sin(2 * np.pi * 0.45 * t)  # nod
    pose[:, 1] = 0.14 * np.sin(2 * np.pi * 0.3 * t)  # turn
    pose[:, 2] = 0.04 * np.sin(2 * np.pi * 0.2 * t + 0.5) - 0.04 * np.sin(0.5)  # tilt
    return MotionSequence(fps, expr, pose)


def textured_background(size: int, seed: int = 3) -> np.ndarray:
    """A smooth, colourful background with some structure (gradients and soft blobs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.4 * x, 0.5 + 0.3 * y, 0.6 - 0.3 * x * y], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.15)
        colour = rng.uniform(0, 1, 3)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))[..., None]
        img = img * (1 - 0.6 * blob) + colour * 0.6 * blob
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_footage(portrait: np.ndarray, fit, path: Path, audio=None, seconds: float = 4.0, fps: float = 25.0):
    """Write the synthetic clip to ``path`` (H.264 mp4, with ``audio`` when given)."""
    from pipeline.compositor import Compositor
    from pipeline.masks import PersonSegmenter
    from pipeline.video_io import VideoWriter
    from renderers.warp.renderer import WarpRenderer

    size = portrait.shape[0]
    num_frames = round(seconds * fps)
    motion = known_motion(num_frames, fps)
    renderer = WarpRenderer(portrait, fit)
    compositor = Compositor(portrait)
    seg = PersonSegmenter()
    matte = seg.segment(portrait)
    seg.close()
    matte = cv2.dilate((matte > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(np.float32)
    matte = cv2.GaussianBlur(matte, (5, 5), 0)[..., None]
    background = textured_background(size)
    shift = np.round(0.12 * size * np.sin(2 * np.pi * np.arange(num_frames) / num_frames)).astype(int)
    points = np.stack(
        [renderer.vertex_pixels(e, p) for e, p in zip(motion.expression, motion.pose, strict=True)]
    )
    points[..., 0] += shift[:, None]
    with VideoWriter(path, fps, (size, size), audio=audio, crf=14) as writer:
        for t, head in enumerate(renderer.render(motion)):
            person = compositor.compose(head)
            m = np.roll(matte, shift[t], axis=1)
            if shift[t] > 0:
                m[:, : shift[t]] = matte[:, :1]  # the body keeps entering from the edge it touches
            elif shift[t] < 0:
                m[:, shift[t] :] = matte[:, -1:]
            moved = np.roll(person, shift[t], axis=1)
            frame = m * moved + (1 - m) * background
            writer.write(frame.round().astype(np.uint8))
    return Footage(path, motion, background, shift, points)

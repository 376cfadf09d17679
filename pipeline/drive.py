"""Driving a trained identity: speech motion retargeted onto its footage, rendered and composed.

``render``, ``eval`` and every later job (dubbing, batches) drive an identity the same way:

1. :func:`backdrop_frames` picks, per output frame, the footage frame that gives the head pose and the
   backdrop (the footage walked back and forth, or its calmest frame held);
2. :func:`retarget` turns speech motion into what the identity's renderer is driven with: the mouth scaled to
   the range this person's own mouth moves in, the rest of the face from the backdrop frame, every
   coefficient within what the renderer saw, and the backdrop frame's camera pose;
3. :func:`composed` renders each frame and composes it into its backdrop frame.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from common.errors import InputError
from motion.blendshapes import MOUTH_NAMES
from motion.clip_fit import ClipFit
from motion.lip_measures import mouth_opening, resting_mouth
from motion.sequence import POSE_CAMERA, MotionSequence, neck_pivot, to_camera
from pipeline.compositor import FootageCompositor
from pipeline.workspace import Workspace
from renderers.base import Renderer

POSE_SOURCES = ("footage", "static")
"""Where the head poses come from when no motion file gives them."""


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
    expression: np.ndarray, names: tuple[str, ...], footage: ClipFit, frames: np.ndarray
) -> np.ndarray:
    """Speech drives the mouth and the blinks; everything else (smiles, brows) comes from the footage frame
    that gives the pose and backdrop, so the face stays in the states the renderer was trained on (a
    habitual smile is not forced to zero) and matches its backdrop. The mouth coefficients from speech are
    added to the identity's own resting mouth, lips closed (:func:`motion.lip_measures.resting_mouth`)."""
    out = footage.expression[frames].astype(np.float32).copy()
    rest = resting_mouth(footage.expression[footage.valid], mouth_opening(footage.landmarks[footage.valid]))
    for name in MOUTH_NAMES:
        if name in names:
            k = names.index(name)
            out[:, k] = rest[k] + expression[:, k]
    for name in ("blink_left", "blink_right"):
        if name in names:
            out[:, names.index(name)] = expression[:, names.index(name)]
    return out


def backdrop_frames(ws: Workspace, fit: ClipFit, length: int, poses: str) -> np.ndarray:
    """``length`` footage frame indices of ``ws`` that give each output frame its pose and backdrop:
    ``footage`` walks the training frames back and forth, ``static`` holds the calmest one."""
    train = ws.tracked_frames("train", fit)
    if len(train) == 0:
        raise InputError(f"identity {ws.name} has no usable frames", "prepare a longer clip")
    if poses == "footage":
        return ping_pong(train, length)
    if poses == "static":
        rot = fit.rotation[train]
        calmest = train[int(np.argmin(np.linalg.norm(rot - np.median(rot, 0), axis=1)))]
        return np.full(length, calmest)
    raise InputError(f"unknown pose source {poses!r}", "use --poses footage, static or a .npz MotionSequence")


def retarget(
    speech: MotionSequence,
    footage: ClipFit,
    frames: np.ndarray,
    trained: ClipFit | None = None,
    match_identity_range: bool = True,
    poses: MotionSequence | None = None,
) -> MotionSequence:
    """The motion an identity's renderer is driven with, for speech motion over backdrop ``frames``.

    Args:
        speech: motion from the motion stage (its pose is not used).
        footage: the clip fit of the footage the frames come from (the identity's own or another clip of
            the same person).
        frames: int [T] footage frame per output frame (:func:`backdrop_frames`); T == len(speech).
        trained: the clip fit the renderer was trained on (default ``footage``): the range every
            coefficient is kept within.
        match_identity_range: rescale the mouth to the range ``footage`` shows (:func:`adapt_to_identity`).
        poses: head motion to use instead of the backdrop frames' poses; relative motion turns about the
            identity's neck from the first backdrop frame's pose (:func:`motion.sequence.to_camera`).
    Returns:
        A :class:`MotionSequence` in the footage's coefficient names with camera poses.
    """
    trained = trained or footage
    names = footage.names
    expression = speech.with_names(names).expression
    if match_identity_range:
        expression = adapt_to_identity(expression, names, footage.expression[footage.valid])
    expression = with_footage_expression(expression, names, footage, frames)
    expression = within_trained_range(expression, trained.expression[trained.valid])
    if poses is None:
        pose = footage.pose[frames]
    else:
        rest = int(frames[0])
        camera = to_camera(
            poses, footage.rotation[rest], footage.translation[rest], neck_pivot(footage.shape)
        )
        pose = camera.pose[np.minimum(np.arange(len(frames)), len(camera) - 1)]
    return MotionSequence(speech.fps, expression.astype(np.float32), pose, names, pose_kind=POSE_CAMERA)


def composed(
    renderer: Renderer,
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

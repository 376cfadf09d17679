"""Dubbing with a renderer trained on the footage itself: the person's own lips and teeth.

The source video is prepared as an identity once (its workspace is named after the file and its
fingerprint, so a second dub of the same video finds it; ``--identity`` names it instead), a renderer is
trained on it when it has none (or its training was cut short: it resumes), and each output frame's mouth
comes from that renderer driven by the speech, with the head pose, eyes and brows of the workspace frame
that matches the source frame it replaces. The rendered head is mapped from the workspace's square crop
back to the source's own resolution and only its lower face is pasted, through the same jaw-following,
feathered mask as the warp path, its colour matched to the frame at the mask's edge.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from common.config import CONFIG_DIR, from_dict, load_config
from motion.sequence import MotionSequence
from pipeline.drive import retarget
from pipeline.prepare import PrepareConfig, fingerprint, prepare
from pipeline.timeline import frames_in_order
from pipeline.workspace import IDENTITY_FILE, Workspace, identity_dir
from renderers import registry
from renderers.base import load_renderer
from renderers.training import load_training_state
from renderers.warp.lower_face import (
    ColourMatch,
    LowerFaceConfig,
    LowerFaceWarp,
    WarpedRegion,
    feather_width,
    feathered_mask,
    paste,
    region_box,
)

log = logging.getLogger(__name__)


def identity_name(video: str | os.PathLike) -> str:
    """The workspace name a source video gets: its file name and the start of its fingerprint."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(video).stem).strip("_") or "video"
    return f"dub-{stem[:40]}-{fingerprint(Path(video))[:8]}"


def prepared_identity(
    video: str | os.PathLike,
    identity: str,
    workspace: str | os.PathLike | None,
    config: PrepareConfig,
    progress: bool,
) -> Workspace:
    """The identity workspace of ``video``: prepared now (with ``config``), or resumed or found done with the
    settings it was prepared with (an identity prepared by hand with other settings is used as it is)."""
    folder = identity_dir(identity, workspace)
    if (folder / IDENTITY_FILE).is_file():
        info = Workspace.open(folder).info
        if info.get("source", {}).get("fingerprint") == fingerprint(Path(video)) and "config" in info:
            config = from_dict(PrepareConfig, info["config"])
    return prepare(video, identity, workspace, config, progress=progress)


def trained_renderer(ws: Workspace, renderer: str, preset: str, train_seconds: float, progress: bool) -> Path:
    """The folder of ``ws``'s trained ``renderer``, training it with ``preset`` first when it has none or
    its run stopped before its last step (it goes on from its checkpoint)."""
    config_type, train = registry.entry(renderer).trainer()
    overrides = [f"max_seconds={train_seconds}"] if train_seconds > 0 else []
    config = load_config(config_type, CONFIG_DIR / f"{renderer}_{preset}.yaml", overrides)
    folder = ws.renderer_dir(renderer)
    state = load_training_state(folder)
    if state is None or int(state.get("step", 0)) < config.iterations:
        log.info("training the %s renderer of %s (%s preset)", renderer, ws.name, preset)
        train(ws, folder, config, progress=progress)
    return ws.trained_renderer_dir(renderer)


class CropMap:
    """The workspace's square crop of the source: a workspace pixel p is source pixel p * scale + offset."""

    def __init__(self, ws: Workspace) -> None:
        crop = ws.info["crop"]
        source = ws.info["source"]["video"]
        side = float(crop["side"])
        pad = np.zeros(2)
        if side > min(source["width"], source["height"]):  # prepare padded the frame to the square first
            pad = np.array([(side - source["width"]) // 2, (side - source["height"]) // 2], np.float64)
        self.scale = side / ws.size
        self.offset = np.array([crop["x"], crop["y"]], np.float64) - pad


def trained_frames(
    video: str | os.PathLike,
    fps: float,
    frames: np.ndarray,
    source,
    target: np.ndarray,
    strength: np.ndarray,
    *,
    ws: Workspace,
    model_dir: Path,
    speech: MotionSequence,
    lower_face: LowerFaceConfig,
    match_identity_range: bool = True,
    resolution: int = 0,
    progress: bool = False,
) -> Iterator[np.ndarray]:
    """Output frames of the trained path: each source frame with its lower face from ``ws``'s renderer."""
    fit = ws.fit()
    crop = CropMap(ws)
    ws_frames = np.clip(np.round((frames + source.first) * ws.fps / fps).astype(int), 0, ws.num_frames - 1)
    valid = fit.valid[ws_frames]
    if not valid.all():  # a frame the fit could not use takes the nearest one it could
        good = np.flatnonzero(fit.valid)
        ws_frames = np.where(valid, ws_frames, good[np.abs(good[None] - ws_frames[:, None]).argmin(1)])
    driven = retarget(speech, fit, ws_frames, None, match_identity_range)
    renderer = load_renderer(model_dir, render={"resolution": resolution} if resolution else None)
    heads = renderer.render(driven, progress=progress)
    outline = LowerFaceWarp(lower_face, None)
    colour = ColourMatch()
    for t, frame in enumerate(frames_in_order(video, frames + source.first, fps, source.offset)):
        head = next(heads)
        i = int(frames[t])
        if strength[t] <= 0:
            yield frame
            continue
        moved = source.points[i] + source.displacement(frames[t : t + 1], target[t : t + 1])[0]
        region = _head_region(frame, head, crop, outline, source.points[i], moved, lower_face)
        if region is None:
            yield frame
            continue
        x0, y0, x1, y1 = region.box
        region.patch[:] = colour(region.patch, frame[y0:y1, x0:x1], region.mask)
        yield paste(frame, region, strength[t])


def _head_region(frame, head, crop: CropMap, outline: LowerFaceWarp, points, moved, config: LowerFaceConfig):
    """The rendered head resampled into the source frame over the lower-face region, with the mask."""
    ring = outline.outline(points, moved)
    box = region_box(ring, frame.shape)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    # source pixel -> workspace pixel -> the head's own pixels (a renderer may paint its box at a lower
    # resolution than the box's size: the head's rgb is then scaled over it); pixel centres throughout
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    bx0, by0, bx1, by1 = head.box
    hh, hw = head.rgb.shape[:2]
    wx = (gx + 0.5 - crop.offset[0]) / crop.scale
    wy = (gy + 0.5 - crop.offset[1]) / crop.scale
    mx = ((wx - bx0) * hw / (bx1 - bx0) - 0.5).astype(np.float32)
    my = ((wy - by0) * hh / (by1 - by0) - 0.5).astype(np.float32)
    patch = cv2.remap(head.rgb, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.remap(head.alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = feathered_mask(ring, box, feather_width(moved, config))
    return WarpedRegion(patch, (mask * np.clip(alpha, 0, 1)).astype(np.float32), box)

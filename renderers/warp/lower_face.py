"""Re-animating the lower face of a real video frame: the mouth and jaw moved to a new shape, the rest kept.

Given a frame, its tracked landmarks and where the landmarks of the mouth, lips, jaw and chin should be,
the region below the nose is warped piecewise-affinely: the moving landmarks and a ring of still anchors
around the region (below the chin far enough for the jaw to open into) are triangulated in their target
positions, and each output pixel is fetched from the source through its triangle's affine map (an exact
backward warp, no iteration). The map is computed at a working resolution and scaled up, then the frame is
resampled at its own resolution, so the lips and skin keep the video's full detail. The mouth interior is
painted where the target lips part (the frame's own interior belongs to the old speech). The warp reaches
zero displacement at the anchors and the mask is feathered inside them, so nothing shows at its edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy.spatial import Delaunay

from motion import topology as tp
from motion.face_model import FaceModel
from renderers.warp.mouth import MouthPainter, OwnMouth

LOWER_ARC = (323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93)
"""The face oval from one cheek at nose level, round the chin, to the other."""
UNDER_NOSE = (205, 98, 2, 327, 425)
"""The region's top edge: cheek, nostril, below the nose tip, nostril, cheek (subject's right to left)."""


@dataclass
class LowerFaceConfig:
    """Settings of the lower-face warp."""

    chin_room: float = 0.45
    """How far below the jaw line the still anchors sit, as a share of the mouth-to-jaw distance (room for
    the chin to drop as the jaw opens)."""
    side_room: float = 0.12
    """How far outside the jaw line the anchors sit at the cheeks, as the same share."""
    feather: float = 0.35
    """Width of the mask's soft edge, as a share of the room between the jaw line and the anchors."""
    work_pixels: int = 192
    """The warp map is computed with the region's longer side at this many pixels, then scaled up."""
    mouth_interior: bool = True
    """Paint teeth, tongue and cavity where the lips part."""


@lru_cache(maxsize=1)
def moving_vertices() -> np.ndarray:
    """The mesh vertices below the nose that speech moves (in the mean shape's frame), without the region's
    edge points."""
    mean = FaceModel().mean
    below = np.flatnonzero(mean[:, 1] < mean[2, 1] - 0.05)
    edge = set(LOWER_ARC) | set(UNDER_NOSE)
    return np.array([i for i in below if i not in edge], np.int64)


@dataclass
class WarpedRegion:
    """One warped lower face: ``patch`` replaces ``frame[y0:y1, x0:x1]`` with weight ``mask``."""

    patch: np.ndarray
    """uint8 [h, w, 3] RGB."""
    mask: np.ndarray
    """float32 [h, w] in [0, 1]."""
    box: tuple[int, int, int, int]
    """(x0, y0, x1, y1) in frame pixels."""


def region_outline(points: np.ndarray, config: LowerFaceConfig) -> np.ndarray:
    """The still anchors [K, 2] around the lower face of landmarks ``points`` [478, 2]: the jaw line pushed
    outward (most below the chin) and closed under the nose."""
    mouth = points[[tp.UPPER_LIP_CENTER_INNER, tp.LOWER_LIP_CENTER_INNER]].mean(0)
    eyes = points[[tp.LEFT_EYE_CORNERS[0], tp.RIGHT_EYE_CORNERS[0]]].mean(0)
    down = mouth - eyes
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    arc = points[list(LOWER_ARC)]
    offset = arc - mouth
    downness = np.clip((offset @ down) / np.maximum(np.linalg.norm(offset, axis=1), 1e-6), 0, 1)
    grow = config.side_room + (config.chin_room - config.side_room) * downness
    anchors = arc + offset * grow[:, None]
    return np.concatenate([anchors, points[list(UNDER_NOSE)[::-1]]])


def _affines(target: np.ndarray, source: np.ndarray, simplices: np.ndarray) -> np.ndarray:
    """Per triangle, the 2x3 map from target to source pixels: [K, 2, 3]."""
    t = np.concatenate([target[simplices], np.ones((*simplices.shape, 1))], 2)  # [K, 3, 3]
    s = source[simplices]  # [K, 3, 2]
    det = np.linalg.det(t)
    t[np.abs(det) < 1e-9] += np.eye(3)[None] * 1e-3  # a degenerate (closed) triangle covers no pixel
    return np.transpose(np.linalg.solve(t, s), (0, 2, 1))


def feathered_mask(outline: np.ndarray, box: tuple[int, int, int, int], width: float) -> np.ndarray:
    """float32 mask over ``box``: 1 inside ``outline`` more than ``width`` pixels from its edge, 0 outside,
    a smooth ramp between."""
    x0, y0, x1, y1 = box
    hard = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(hard, [np.round((outline - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    if width < 1:
        return hard.astype(np.float32) / 255
    inside = cv2.distanceTransform((hard > 127).astype(np.uint8), cv2.DIST_L2, 5)
    ramp = np.clip(inside / width, 0, 1)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)


def region_box(outline: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) around a region's ``outline`` [K, 2] with a margin, clipped to a frame of
    ``shape``; None when too little of it is on the frame."""
    h, w = shape[:2]
    x0, y0 = np.floor(outline.min(0)).astype(int) - 2
    x1, y1 = np.ceil(outline.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
    return None if x1 - x0 < 8 or y1 - y0 < 8 else (x0, y0, x1, y1)


def feather_width(points: np.ndarray, config: LowerFaceConfig) -> float:
    """The mask's soft edge in pixels for a face with landmarks ``points`` [478, 2]."""
    mouth = points[[tp.UPPER_LIP_CENTER_INNER, tp.LOWER_LIP_CENTER_INNER]].mean(0)
    return config.feather * config.chin_room * float(np.linalg.norm(points[tp.CHIN] - mouth))


class LowerFaceWarp:
    """Moves the lower face of video frames (see the module's notes).

    Args:
        painter: paints the mouth's inside where the lips part (the person's own from an open-mouth frame,
            or one painted in their colours), or None.
    """

    def __init__(
        self, config: LowerFaceConfig | None = None, painter: MouthPainter | OwnMouth | None = None
    ) -> None:
        self.config = config or LowerFaceConfig()
        self.painter = painter if self.config.mouth_interior else None
        self._moving = moving_vertices()

    def outline(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The region's anchors for a frame: outside both the source's and the target's jaw line."""
        a, b = region_outline(source, self.config), region_outline(target, self.config)
        mouth = source[[tp.UPPER_LIP_CENTER_INNER, tp.LOWER_LIP_CENTER_INNER]].mean(0)
        farther = np.linalg.norm(b - mouth, axis=1) > np.linalg.norm(a - mouth, axis=1)
        return np.where(farther[:, None], b, a)

    def warp(
        self,
        frame: np.ndarray,
        source: np.ndarray,
        target: np.ndarray,
        image: np.ndarray | None = None,
        image_points: np.ndarray | None = None,
    ) -> WarpedRegion | None:
        """The lower face of ``frame`` moved from landmarks ``source`` [478, 2] to ``target`` [478, 2] (frame
        pixels; only the vertices below the nose should differ). None when the region is off the frame.

        With ``image`` (and its landmarks ``image_points``), the lower face's pixels are fetched from that
        other frame of the person instead (a closed-mouth one: the frame's own mouth then never shows),
        its still anchors placed by the similarity that takes the frame's face onto the image's."""
        outline = self.outline(source, target)
        box = region_box(outline, frame.shape)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0

        # Triangles over the target positions; each maps back to the source affinely.
        tgt = np.concatenate([target[self._moving], outline]).astype(np.float64)
        if image is None:
            image = frame
            src = np.concatenate([source[self._moving], outline]).astype(np.float64)
        else:
            rigid = [*tp.FACE_OVAL, tp.NOSE_TIP, tp.NOSE_BRIDGE]
            m, _ = cv2.estimateAffinePartial2D(
                source[rigid].astype(np.float32), image_points[rigid].astype(np.float32), method=cv2.LMEDS
            )
            anchors = outline @ m[:, :2].T + m[:, 2]
            src = np.concatenate([image_points[self._moving], anchors]).astype(np.float64)
        tgt = tgt + np.random.default_rng(0).normal(0, 1e-3, tgt.shape)  # coincident lips stay triangulable
        tri = Delaunay(tgt)
        maps = _affines(tgt, src, tri.simplices)

        scale = min(1.0, self.config.work_pixels / max(bw, bh))
        sw, sh = max(2, round(bw * scale)), max(2, round(bh * scale))
        u = (np.arange(sw, dtype=np.float64) + 0.5) * bw / sw - 0.5 + x0
        v = (np.arange(sh, dtype=np.float64) + 0.5) * bh / sh - 0.5 + y0
        gx, gy = np.meshgrid(u, v)
        q = np.stack([gx.ravel(), gy.ravel()], 1)
        simplex = tri.find_simplex(q)
        inside = simplex >= 0
        fetched = q.copy()
        a = maps[simplex[inside]]  # [P, 2, 3]
        fetched[inside] = np.einsum("pij,pj->pi", a[:, :, :2], q[inside]) + a[:, :, 2]
        lookup = fetched.reshape(sh, sw, 2).astype(np.float32)
        if (sw, sh) != (bw, bh):
            lookup = cv2.resize(lookup, (bw, bh), interpolation=cv2.INTER_LINEAR)
        patch = cv2.remap(
            image, lookup[..., 0], lookup[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )

        if self.painter is not None:
            offset = np.array([x0, y0], np.float64)
            upper = target[list(tp.LIPS_UPPER_INNER)] - offset
            lower = target[list(tp.LIPS_LOWER_INNER)] - offset
            self.painter.paint(patch, upper, lower)

        return WarpedRegion(patch, feathered_mask(outline, box, feather_width(target, self.config)), box)


def paste(frame: np.ndarray, region: WarpedRegion, strength: float = 1.0) -> np.ndarray:
    """``frame`` with ``region`` blended in (a new array; pixels where the mask is 0 are the frame's own)."""
    out = frame.copy()
    x0, y0, x1, y1 = region.box
    weight = region.mask * np.float32(strength)
    under = np.ascontiguousarray(out[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = cv2.blendLinear(region.patch, under, weight, 1 - weight)
    return out


class ColourMatch:
    """A per-channel gain that brings a rendered patch to the frame's colour where both should agree (the
    mask's soft edge), averaged over frames so it never flickers."""

    def __init__(self, smoothing: float = 0.85, limits: tuple[float, float] = (0.6, 1.6)) -> None:
        self.smoothing = smoothing
        self.limits = limits
        self.gain: np.ndarray | None = None

    def __call__(self, patch: np.ndarray, under: np.ndarray, mask: np.ndarray) -> np.ndarray:
        band = (mask > 0.05) & (mask < 0.9)
        if band.sum() >= 16:
            ours = patch[band].astype(np.float64).mean(0) + 1.0
            theirs = under[band].astype(np.float64).mean(0) + 1.0
            gain = np.clip(theirs / ours, *self.limits)
            s = self.smoothing if self.gain is not None else 0.0
            self.gain = gain if self.gain is None else s * self.gain + (1 - s) * gain
        if self.gain is None:
            return patch
        return np.clip(patch.astype(np.float32) * self.gain.astype(np.float32), 0, 255).astype(np.uint8)

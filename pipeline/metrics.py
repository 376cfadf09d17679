"""Lip-sync and region metrics: evaluating rendered talking-head frames against real footage.

Image quality (PSNR, SSIM) is :mod:`renderers.image_quality`, which the trainers use too.

Landmark metrics (:func:`mouth_opening`, :func:`mouth_landmark_distance`) take the tracker's 478-point
landmarks ``[T, 478, >=2]`` in pixels and use their image-plane coordinates (x, y) only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from motion import topology as tp
from motion.lip_measures import image_points

# Outer and inner lip contours, each point once (the contours share their corners).
MOUTH_POINTS = tuple(
    sorted(set(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER + tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER))
)


def face_box(landmarks, size, margin: float = 0.1) -> tuple[int, int, int, int]:
    """Integer box ``(x0, y0, x1, y1)`` around the face-oval landmarks, grown by ``margin`` of its size.

    ``landmarks`` is ``[478, >=2]`` or ``[T, 478, >=2]`` (the box then holds every frame's face); ``size`` is
    the image's ``(width, height)`` or one number for a square image, and the box is clipped to it. The
    box's far edges are exclusive, so ``img[y0:y1, x0:x1]`` is the crop.
    """
    lo, hi = _extent(landmarks, tp.FACE_OVAL, "face-oval")
    grow = (hi - lo) * margin
    return _clipped_box(lo - grow, hi + grow, size)


def mouth_box(landmarks, size, zoom: float = 2.0) -> tuple[int, int, int, int]:
    """Square box ``(x0, y0, x1, y1)`` centred on the lips, ``zoom`` times the mouth's width on a side (the
    lips, teeth and the skin around them); ``landmarks`` and ``size`` as in :func:`face_box`."""
    lo, hi = _extent(landmarks, tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER, "lip")
    half = 0.5 * zoom * max(hi[0] - lo[0], hi[1] - lo[1])
    centre = 0.5 * (lo + hi)
    return _clipped_box(centre - half, centre + half, size)


def _extent(landmarks, points, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest x, y of ``points`` over every frame of ``landmarks``."""
    pts = np.asarray(landmarks, np.float64)[..., list(points), :2].reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        raise ValueError(f"no finite {what} landmarks")
    return pts.min(0), pts.max(0)


def _clipped_box(lo: np.ndarray, hi: np.ndarray, size) -> tuple[int, int, int, int]:
    width, height = (size, size) if np.isscalar(size) else size
    x0 = int(np.clip(np.floor(lo[0]), 0, width))
    y0 = int(np.clip(np.floor(lo[1]), 0, height))
    x1 = int(np.clip(np.ceil(hi[0]), 0, width))
    y1 = int(np.clip(np.ceil(hi[1]), 0, height))
    return x0, y0, x1, y1


def crop(img, box: tuple[int, int, int, int]):
    """``img`` cut to ``box`` (from :func:`face_box`): numpy ``[H, W, ...]`` or torch ``[..., H, W]``."""
    x0, y0, x1, y1 = box
    if isinstance(img, torch.Tensor):
        return img[..., y0:y1, x0:x1]
    return np.asarray(img)[y0:y1, x0:x1]


def temporal_error(fake, real, boxes) -> float:
    """Flicker: the mean of ``|(fake_t - fake_t-1) - (real_t - real_t-1)|`` over the boxes (0-1 scale).

    An error that stays put from frame to frame cancels out; what changes between frames and does not change
    in the real footage (shimmer, popping, a mouth that jumps) counts. ``fake`` and ``real`` are sequences of
    ``[H, W, C]`` images (uint8 or in [0, 1]); ``boxes[t]`` (from :func:`face_box`) is where frames ``t - 1``
    and ``t`` are compared. nan for fewer than two frames.
    """
    if len(fake) != len(real) or len(boxes) != len(real):
        raise ValueError(f"{len(fake)} rendered frames, {len(real)} real ones and {len(boxes)} boxes")
    scale = lambda img: np.asarray(img, np.float32) / (255.0 if np.asarray(img).dtype == np.uint8 else 1.0)
    errors = []
    for t in range(1, len(real)):
        a, b, c, d = (scale(crop(x, boxes[t])) for x in (fake[t], fake[t - 1], real[t], real[t - 1]))
        errors.append(float(np.abs((a - b) - (c - d)).mean()))
    return float(np.mean(errors)) if errors else math.nan


# ------------------------------------------------------------------------------------------------------------
# lip-sync metrics
# ------------------------------------------------------------------------------------------------------------


def face_height(landmarks) -> float:
    """The face's height in pixels over frames of landmarks [T, 478, >=2]: the median over frames of the
    face oval's vertical extent (frames with a missing point are skipped). Landmark distances are scaled by it
    to compare faces filmed at different sizes."""
    ys = image_points(landmarks)[..., list(tp.FACE_OVAL), 1]
    return float(np.nanmedian(np.ptp(ys, axis=-1)))


def mouth_landmark_distance(pred, real, align: bool = True) -> float:
    """Mouth landmark distance (LMD): how far the predicted lips are from the real ones, in pixels.

    For each frame of ``pred`` and ``real`` (``[T, 478, >=2]``, same pixel coordinates) takes the 40 lip
    points of :data:`MOUTH_POINTS` (outer and inner contours) in x, y; with ``align``, subtracts from each
    set its own mouth centre (the mean of those points) so that head position does not count, only the
    mouth's shape and its size. The distance is the Euclidean distance between corresponding points,
    averaged over the points of a frame and then over the frames. Frames with a non-finite coordinate in
    either set are skipped; nan when none is left.
    """
    p, r = image_points(pred), image_points(real)
    if p.shape != r.shape:
        raise ValueError(f"landmark shapes differ: {p.shape} vs {r.shape}")
    p = p[..., MOUTH_POINTS, :].reshape(-1, len(MOUTH_POINTS), 2)
    r = r[..., MOUTH_POINTS, :].reshape(-1, len(MOUTH_POINTS), 2)
    if align:
        p = p - p.mean(1, keepdims=True)
        r = r - r.mean(1, keepdims=True)
    per_frame = np.linalg.norm(p - r, axis=-1).mean(1)
    per_frame = per_frame[np.isfinite(per_frame)]
    return float(per_frame.mean()) if len(per_frame) else math.nan


def pearson(a, b) -> float:
    """Pearson correlation of two 1D series over the positions where both are finite.

    nan when fewer than 3 such pairs remain or either series is constant there.
    """
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series lengths differ: {len(x)} vs {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(np.clip((x @ y) / denom, -1.0, 1.0))

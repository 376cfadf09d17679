"""How open a mouth is, measured the same way on tracked landmarks and on the face model's own vertices.

:func:`mouth_opening` is the lip-sync measure every evaluation uses (tracked footage, rendered video);
:func:`model_mouth_opening` applies it to expression coefficients through the face model, so the motion stage
can report the opening its coefficients mean without rendering a frame.
"""

from __future__ import annotations

import numpy as np

from motion import topology as tp

# Inner-lip point pairs (upper, lower) around the lip centre: the central three of the corner-to-corner
# contours, whose i-th points face each other.
_CENTRE = len(tp.LIPS_UPPER_INNER) // 2
MOUTH_GAP_PAIRS = tuple(zip(tp.LIPS_UPPER_INNER, tp.LIPS_LOWER_INNER, strict=True))[_CENTRE - 1 : _CENTRE + 2]


def image_points(landmarks) -> np.ndarray:
    """float64 [..., 478, 2]: the image-plane coordinates (x, y) of landmarks [..., 478, >=2], checked."""
    arr = np.asarray(landmarks, np.float64)
    if arr.ndim < 2 or arr.shape[-2] != tp.NUM_POINTS or arr.shape[-1] < 2:
        raise ValueError(f"expected landmarks [..., {tp.NUM_POINTS}, >=2], got shape {arr.shape}")
    return arr[..., :2]


def mouth_opening(landmarks) -> np.ndarray:
    """Per-frame mouth opening ``[T]`` from landmarks ``[T, 478, >=2]`` (``[478, >=2]`` gives a 0-d array).

    The inner-lip gap (mean distance of the three central facing pairs of inner upper / lower lip points,
    :data:`MOUTH_GAP_PAIRS`) divided by the mouth width (outer corner to outer corner), in the image plane:
    scale- and translation-free. About 0 for closed lips; nan where the width is 0 or a point is missing.
    """
    xy = image_points(landmarks)
    upper = xy[..., [u for u, _ in MOUTH_GAP_PAIRS], :]
    lower = xy[..., [lo for _, lo in MOUTH_GAP_PAIRS], :]
    gap = np.linalg.norm(upper - lower, axis=-1).mean(-1)
    width = np.linalg.norm(xy[..., tp.MOUTH_CORNERS[1], :] - xy[..., tp.MOUTH_CORNERS[0], :], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, gap / np.where(width > 0, width, 1.0), np.nan)


def model_mouth_opening(model, expression: np.ndarray) -> np.ndarray:
    """float [T]: :func:`mouth_opening` of ``model``'s vertices (a :class:`motion.face_model.FaceModel`) moved
    to each row of ``expression`` [T, E], seen from the front. Only the lip points are computed."""
    points = [u for u, _ in MOUTH_GAP_PAIRS] + [lo for _, lo in MOUTH_GAP_PAIRS] + list(tp.MOUTH_CORNERS)
    expression = np.atleast_2d(np.asarray(expression, np.float64))
    lips = model.mean[points].astype(np.float64) + np.tensordot(
        expression, model.basis[:, points], axes=([-1], [0])
    )
    full = np.zeros((len(expression), tp.NUM_POINTS, 2))
    full[:, points] = lips[..., :2]
    return mouth_opening(full)


def resting_mouth(expression: np.ndarray, opening: np.ndarray, share: float = 0.1) -> np.ndarray:
    """float32 [E]: a person's mouth at rest, with the lips closed: the median of ``expression`` [T, E] over
    the frames whose measured ``opening`` [T] (:func:`mouth_opening` of their tracked landmarks) is in the
    lowest ``share``. One real pose, unlike each coefficient's own low percentile (which mixes frames and
    can leave the lips apart). All frames count where no opening was measured."""
    expression = np.asarray(expression, np.float32)
    opening = np.asarray(opening, np.float64)
    known = np.isfinite(opening)
    if len(expression) == 0:
        raise ValueError("no frames to find the resting mouth in")
    if known.sum() < 3:
        return np.median(expression, 0).astype(np.float32)
    closed = known & (opening <= np.percentile(opening[known], 100 * share))
    return np.median(expression[closed], 0).astype(np.float32)


__all__ = ["MOUTH_GAP_PAIRS", "image_points", "model_mouth_opening", "mouth_opening", "resting_mouth"]

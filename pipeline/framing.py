"""Framing: a square head-and-shoulders crop of a photo around its face, at the output size."""

from __future__ import annotations

import cv2
import numpy as np

from motion.tracker import FaceLandmarks


def square_around_face(
    box: tuple[float, float, float, float],
    image_size: tuple[int, int],
    zoom: float = 2.6,
    margin: float = 0.0,
) -> tuple[float, float, float]:
    """The head-and-shoulders square for a face box: ``(left, top, side)`` in pixels.

    The side is ``zoom`` times the face's height plus ``margin`` (room for the head to move), shifted down
    to take in the neck and shoulders, and kept inside the image where the image is large enough (it may
    reach outside only when the image is smaller than the square).

    Args:
        box: (x0, y0, x1, y1) of the face's landmarks.
        image_size: (height, width).
    """
    h, w = image_size
    x0, y0, x1, y1 = box
    face_h = max(y1 - y0, x1 - x0)
    side = min(zoom * face_h + margin, float(min(h, w)))
    side = max(side, 1.15 * face_h)
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 + 0.18 * face_h
    left = float(np.clip(cx - side / 2, 0, max(w - side, 0))) if side <= w else cx - side / 2
    top = float(np.clip(cy - side / 2, 0, max(h - side, 0))) if side <= h else cy - side / 2
    return left, top, side


def frame_square(image: np.ndarray, face: FaceLandmarks, size: int, zoom: float = 2.6) -> np.ndarray:
    """Crop a square around the face and resize it to ``size`` x ``size``.

    The square's side is ``zoom`` times the face height, shifted down to take in the neck and shoulders,
    kept inside the photo where the photo is large enough (padded by edge replication only where not).

    Args:
        image: uint8 [H, W, 3] RGB.
        face: landmarks of the face in ``image``.
    Returns:
        uint8 [size, size, 3] RGB.
    """
    h, w = image.shape[:2]
    left, top, side = square_around_face(face.box, (h, w), zoom)
    scale = size / side
    affine = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]], np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.warpAffine(image, affine, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)

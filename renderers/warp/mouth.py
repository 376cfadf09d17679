"""A synthesised mouth interior for the warp renderer: dark cavity, upper and lower teeth, tongue.

A single photo usually shows a closed mouth, so when the warp opens the jaw there is nothing to warp into
the gap. This paints it from colours sampled off the subject's own lips and skin, shaded so the teeth
recede at the corners, the upper lip casts a shadow, and the tongue shows only as the jaw opens.
"""

from __future__ import annotations

import cv2
import numpy as np

from motion import topology as tp


def _sample(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    if mask.sum() < 4:
        return np.median(image.reshape(-1, 3), 0).astype(np.float32)
    return np.median(image[mask > 0], 0).astype(np.float32)


def _round_corners(polygon: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Chaikin corner cutting of a closed polygon [N, 2]: the lip corners of an open mouth are round."""
    for _ in range(iterations):
        nxt = np.roll(polygon, -1, axis=0)
        polygon = np.stack([0.75 * polygon + 0.25 * nxt, 0.25 * polygon + 0.75 * nxt], 1).reshape(-1, 2)
    return polygon


class MouthPainter:
    """Paints the mouth interior inside the inner-lip contour of each frame.

    Args:
        image: uint8 [H, W, 3] RGB photo (the colours are sampled from it once).
        rest_points: float [478, 2] pixel landmarks of the photo.
    """

    def __init__(self, image: np.ndarray, rest_points: np.ndarray) -> None:
        upper_out = rest_points[list(tp.LIPS_UPPER_OUTER)]
        lower_out = rest_points[list(tp.LIPS_LOWER_OUTER)]
        lips = np.concatenate([upper_out, lower_out[::-1]])
        self.lip_colour = _sample(image, lips)
        cheek = np.array([rest_points[50], rest_points[280], rest_points[205], rest_points[425]])
        skin = np.median([image[int(y), int(x)] for x, y in cheek], 0).astype(np.float32)
        luma = float(skin @ np.array([0.299, 0.587, 0.114]))
        # Teeth: off-white at a brightness that matches the photo's exposure.
        base = 0.88 * np.array([236.0, 230.0, 212.0]) + 0.12 * self.lip_colour  # warm, never blue-white
        self.teeth_colour = np.clip(base * min(1.0, 0.55 + luma / 300.0), 0, 240)
        self.cavity_colour = self.lip_colour * np.array([0.42, 0.24, 0.24])
        self.tongue_colour = self.lip_colour * np.array([0.85, 0.55, 0.55]) + np.array([20.0, 0.0, 0.0])
        self.rest_width = float(
            np.linalg.norm(rest_points[tp.MOUTH_CORNERS[1]] - rest_points[tp.MOUTH_CORNERS[0]])
        )

    def paint(self, frame: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
        """Paint in place.

        Args:
            frame: uint8 [H, W, 3] RGB, modified in place.
            upper, lower: float [11, 2] inner-lip contours (corner to corner) in ``frame`` pixels.
        """
        gap = lower[:, 1] - upper[:, 1]  # pixels, > 0 where the lips part
        if gap.max() < 0.75:
            return
        poly = _round_corners(np.concatenate([upper, lower[::-1]]))
        x0, y0 = np.floor(poly.min(0)).astype(int) - 2
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 3 or y1 - y0 < 2:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        local = np.round((poly - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [local], 255, lineType=cv2.LINE_AA, shift=4)
        alpha = mask.astype(np.float32)[..., None] / 255.0

        xs = np.arange(x0, x1, dtype=np.float32) + 0.5
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        order_u, order_l = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
        top = np.interp(xs, upper[order_u, 0], upper[order_u, 1])[None, :]
        bottom = np.interp(xs, lower[order_l, 0], lower[order_l, 1])[None, :]
        left, right = min(upper[0, 0], upper[-1, 0]), max(upper[0, 0], upper[-1, 0])
        u = np.clip((xs - left) / max(right - left, 1.0), 0, 1)[None, :]  # 0..1 across the mouth
        side = np.abs(u - 0.5) * 2  # 0 centre, 1 corners
        width = max(right - left, 1.0)
        opening = np.clip((bottom - top), 0, None)

        # Cavity: darker toward the back and the corners.
        depth = np.clip((ys - top) / np.maximum(opening, 1.0), 0, 1)
        cavity = (
            self.cavity_colour * (0.75 + 0.25 * (1 - side[..., None] ** 2)) * (1.0 - 0.25 * depth[..., None])
        )
        out = cavity.astype(np.float32)

        # Tongue: a rounded mound rising from the lower lip, visible as the jaw opens.
        tongue_h = 0.45 * opening
        tongue_top = bottom - tongue_h * np.sqrt(np.clip(1 - (side / 0.75) ** 2, 0, 1))
        tongue = np.clip((ys - tongue_top) / 2.0, 0, 1) * (ys < bottom)
        tongue_shade = 0.7 + 0.3 * np.clip((ys - tongue_top) / np.maximum(tongue_h, 1.0), 0, 1)
        out = (
            out * (1 - tongue[..., None]) + (self.tongue_colour * tongue_shade[..., None]) * tongue[..., None]
        )

        # Upper teeth hang from the upper lip; lower teeth show once the jaw drops further.
        teeth_span = np.clip((0.82 - side) / 0.18, 0, 1) ** 0.7
        up_h = 0.11 * width
        upper_teeth = np.clip((top + up_h - ys) / 1.5, 0, 1) * np.clip((ys - top + 1.0), 0, 1) * teeth_span
        lo_h = 0.07 * width * np.clip((opening - 0.12 * width) / (0.1 * width), 0, 1)
        lower_teeth = np.clip((ys - (bottom - lo_h)) / 1.5, 0, 1) * (ys < bottom) * teeth_span * (lo_h > 0.5)
        lower_teeth = lower_teeth * (side < 0.7)
        # Faint gaps between teeth, about eight across the visible arch.
        seams = 1 - 0.18 * np.exp(-(((u * 8.0) % 1.0 - 0.5) ** 2) / 0.004)
        tooth_shade = (1 - 0.45 * side**2) * seams
        upper_shade = tooth_shade * (0.8 + 0.2 * np.clip((ys - top) / max(up_h, 1.0), 0, 1))  # lip shadow
        out = (
            out * (1 - upper_teeth[..., None])
            + (self.teeth_colour * upper_shade[..., None]) * upper_teeth[..., None]
        )
        out = (
            out * (1 - lower_teeth[..., None])
            + (self.teeth_colour * 0.78 * tooth_shade[..., None]) * lower_teeth[..., None]
        )
        out = cv2.GaussianBlur(out, (3, 3), 0.7)

        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + out * alpha, 0, 255).astype(np.uint8)


def _mouth_frame(upper: np.ndarray, lower: np.ndarray):
    """The mouth's own axes: origin at the first inner corner, e1 along the mouth, e2 across it (down);
    returns (origin, e1, e2, width, upper curve, lower curve) with the curves as (a, b) sorted by a."""
    origin = upper[0]
    along = upper[-1] - upper[0]
    width = max(float(np.linalg.norm(along)), 1e-6)
    e1 = along / width
    e2 = np.array([-e1[1], e1[0]])
    if e2[1] < 0:
        e2 = -e2

    def curve(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = (points - origin) @ e1, (points - origin) @ e2
        order = np.argsort(a)
        return a[order], b[order]

    return origin, e1, e2, width, curve(upper), curve(lower)


class OwnMouth:
    """Fills the mouth's inside from the person's own: a frame of their footage where the mouth is wide
    open gives the teeth, tongue and cavity, fetched into each frame's inner-lip contour. The upper teeth
    stay with the upper lip and the lower teeth with the lower lip (a mouth opening less hides more of
    them instead of squashing them), both scaled with the mouth's width.

    Args:
        image: uint8 [H, W, 3] RGB frame showing the mouth open.
        points: float [478, 2] its landmarks.
    """

    def __init__(self, image: np.ndarray, points: np.ndarray) -> None:
        upper = points[list(tp.LIPS_UPPER_INNER)].astype(np.float64)
        lower = points[list(tp.LIPS_LOWER_INNER)].astype(np.float64)
        lo = np.floor(np.concatenate([upper, lower]).min(0)).astype(int) - 4
        hi = np.ceil(np.concatenate([upper, lower]).max(0)).astype(int) + 5
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [image.shape[1], image.shape[0]])
        self.image = np.ascontiguousarray(image[lo[1] : hi[1], lo[0] : hi[0]])
        self._geometry = _mouth_frame(upper - lo, lower - lo)
        lips = np.concatenate([points[list(tp.LIPS_UPPER_OUTER)], points[list(tp.LIPS_LOWER_OUTER)][::-1]])
        self.lip_colour = _sample(image, lips)

    def paint(self, frame: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> None:
        """Fill the inside of the inner-lip contours ``upper``, ``lower`` [11, 2] of ``frame`` in place."""
        gap = lower[:, 1] - upper[:, 1]
        if gap.max() < 0.75:
            return
        poly = np.concatenate([upper, lower[::-1]])
        x0, y0 = np.floor(poly.min(0)).astype(int) - 1
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 2
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 3 or y1 - y0 < 2:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        if not mask.any():
            return
        origin, e1, e2, width, (ua, ub), (la, lb) = _mouth_frame(
            upper.astype(np.float64), lower.astype(np.float64)
        )
        r_origin, r_e1, r_e2, r_width, (rua, rub), (rla, rlb) = self._geometry
        scale = r_width / width
        gx, gy = np.meshgrid(np.arange(x0, x1) + 0.0, np.arange(y0, y1) + 0.0)
        rel = np.stack([gx - origin[0], gy - origin[1]], -1)
        a, b = rel @ e1, rel @ e2
        top, bottom = np.interp(a, ua, ub), np.interp(a, la, lb)
        ra = a * scale
        r_top, r_bottom = np.interp(ra, rua, rub), np.interp(ra, rla, rlb)
        from_top = r_top + (b - top) * scale
        from_bottom = r_bottom - (bottom - b) * scale
        share = np.clip((b - top) / np.maximum(bottom - top, 1e-6), 0, 1)
        share = share * share * (3 - 2 * share)  # the two halves meet smoothly (no seam where they join)
        rb = (1 - share) * from_top + share * from_bottom
        rb = np.clip(rb, r_top, np.maximum(r_bottom, r_top))
        sx = (r_origin[0] + ra * r_e1[0] + rb * r_e2[0]).astype(np.float32)
        sy = (r_origin[1] + ra * r_e1[1] + rb * r_e2[1]).astype(np.float32)
        inside = cv2.remap(self.image, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = mask.astype(np.float32)[..., None] / 255.0
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + inside * alpha, 0, 255).astype(np.uint8)

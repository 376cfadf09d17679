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


# Where the teeth meet, as fractions of the mouth's rest width out from its centre, seen from the front:
# central and lateral incisors, canine, two premolars, molars (the arch turns away, so they narrow).
_UPPER_EDGES = np.array([0.0, 0.16, 0.27, 0.355, 0.42, 0.47, 0.515, 0.555, 0.6])
_LOWER_EDGES = np.array([0.0, 0.1, 0.205, 0.3, 0.375, 0.435, 0.49, 0.535, 0.58])
# Per tooth (same order): how long it shows, how bright it is (the arch turns into shadow), how pointed.
_UPPER_LENGTH = np.array([1.0, 0.88, 0.97, 0.8, 0.74, 0.66, 0.6, 0.6])
_LOWER_LENGTH = np.array([1.0, 1.0, 0.96, 0.86, 0.8, 0.72, 0.66, 0.66])
_BRIGHTNESS = np.array([1.0, 0.95, 0.82, 0.58, 0.4, 0.28, 0.2, 0.16])
_CUSP = np.array([0.0, 0.0, 1.0, 0.35, 0.35, 0.2, 0.2, 0.2])


def _teeth_row(offset: np.ndarray, edges: np.ndarray, length: np.ndarray, gap_px: float, scale: float):
    """One row of teeth along the columns at ``offset`` (signed, in rest mouth widths from the centre):
    returns per column the visible length (a fraction of the row's), the brightness across each tooth
    (its curve, the dark line where two teeth meet, the arch turning away) and the tooth's index."""
    q = np.interp(np.abs(offset), edges, np.arange(len(edges)))
    k = np.minimum(q.astype(int), len(length) - 1)
    frac = q - k
    edge = np.abs(2 * frac - 1)  # 0 mid-tooth, 1 where two teeth meet
    tooth_px = np.diff(edges)[k] * scale
    meet_px = np.minimum(frac, 1 - frac) * tooth_px
    seam = 1 - 0.4 * np.exp(-((meet_px / gap_px) ** 2))
    # Rounded corners at the biting edge open small dark notches between teeth; canines come to a point.
    shape = length[k] * (1 - 0.22 * edge**3 - 0.16 * _CUSP[k] * edge)
    curve = 0.84 + 0.16 * np.sqrt(np.clip(1 - edge**2, 0, 1))
    return shape, _BRIGHTNESS[k] * curve * seam, k


class MouthPainter:
    """Paints the mouth interior inside the inner-lip contour of each frame.

    Two rows of teeth, each tooth drawn on its own (incisors at the front, canines, then premolars and
    molars narrowing and darkening as the arch turns away), the upper row hanging from the upper lip and
    the lower row standing on the lower lip; the tongue behind the lower teeth, showing more as the jaw
    drops; a dark cavity behind. Everything is sized by the mouth's rest width, so it scales with the face,
    and is a pure function of the lip contours (no per-frame noise).

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
        self.teeth_colour = np.clip(base * min(1.0, 0.55 + luma / 300.0), 0, 240).astype(np.float32)
        self.edge_colour = (self.teeth_colour * np.array([0.78, 0.8, 0.84])).astype(np.float32)  # translucent
        self.cavity_colour = (self.lip_colour * np.array([0.36, 0.18, 0.18])).astype(np.float32)
        self.tongue_colour = (
            self.lip_colour * np.array([0.8, 0.58, 0.58]) + np.array([14.0, 4.0, 4.0])
        ).astype(np.float32)
        self.inner_lip_colour = (self.lip_colour * np.array([0.62, 0.42, 0.42])).astype(np.float32)
        self.rest_width = float(
            np.linalg.norm(rest_points[tp.MOUTH_CORNERS[1]] - rest_points[tp.MOUTH_CORNERS[0]])
        )
        self.rest_inner_width = float(
            np.linalg.norm(rest_points[tp.INNER_MOUTH_CORNERS[1]] - rest_points[tp.INNER_MOUTH_CORNERS[0]])
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
        if not mask.any():
            return
        alpha = mask.astype(np.float32)[..., None] / 255.0

        xs = np.arange(x0, x1, dtype=np.float32) + 0.5
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        order_u, order_l = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
        top = np.interp(xs, upper[order_u, 0], upper[order_u, 1]).astype(np.float32)
        bottom = np.interp(xs, lower[order_l, 0], lower[order_l, 1]).astype(np.float32)
        opening = np.clip(bottom - top, 0, None)
        left, right = min(upper[0, 0], upper[-1, 0]), max(upper[0, 0], upper[-1, 0])
        width = max(right - left, 1.0)
        scale = (
            self.rest_width
        )  # pixels per rest mouth width: the teeth's size follows the face, not the lips
        centre = float(upper[len(upper) // 2, 0])
        offset = (xs - centre) / scale
        side = np.clip(np.abs(xs - (left + right) / 2) / (width / 2), 0, 1)  # 0 centre, 1 corners
        # Rounded lips pushed forward (a narrower mouth than at rest) leave the teeth further back: less of
        # them shows, in more shadow.
        forward = float(np.clip((self.rest_inner_width - width) / (0.3 * self.rest_inner_width), 0, 1))
        gap_px = max(0.5, 0.008 * scale)

        # Cavity: darkest in the middle of the opening (the back of the mouth) and in the corners.
        depth = np.clip((ys - top) / np.maximum(opening, 1.0), 0, 1)
        back = 1 - 0.45 * np.sin(np.pi * depth) * (1 - 0.5 * side)
        out = self.cavity_colour * (back * (0.7 + 0.3 * (1 - side**2)))[..., None]

        # Upper teeth hang from the upper lip.
        up_len = 0.13 * scale * (1 - 0.5 * forward)
        shape, bright, _ = _teeth_row(offset, _UPPER_EDGES, _UPPER_LENGTH, gap_px, scale)
        tip = top + up_len * shape
        along = np.clip((ys - top) / np.maximum(up_len * shape, 1.0), 0, 1)  # 0 at the lip, 1 at the edge
        upper_cover = np.clip(tip - ys + 0.5, 0, 1)
        lip_shadow = 0.58 + 0.42 * np.clip(along / 0.45, 0, 1) ** 0.8
        gloss = 0.14 * np.exp(-(((along - 0.4) / 0.13) ** 2)) * np.clip(1 - 2.5 * np.abs(offset), 0, 1)
        upper_shade = bright * (1 - 0.8 * side**2.5) * lip_shadow * (1 - 0.45 * forward) + gloss * (
            1 - forward
        )
        translucent = np.clip((along - 0.78) / 0.22, 0, 1)[..., None] * 0.6

        # Tongue: a mound behind the lower teeth, rising as the jaw opens, a groove down its middle.
        lo_len = 0.06 * scale * (1 - 0.5 * forward) * np.clip((opening - 0.08 * scale) / (0.12 * scale), 0, 1)
        mound = np.sqrt(np.clip(1 - (offset / 0.34) ** 2, 0, 1))
        tongue_h = (0.35 * opening + lo_len) * mound
        tongue_top = bottom - tongue_h
        tongue = np.clip(ys - tongue_top, 0, 1) * (tongue_h > 0.5)
        rise = np.clip((ys - tongue_top) / np.maximum(tongue_h, 1.0), 0, 1)
        groove = 1 - 0.18 * np.exp(-((offset / 0.03) ** 2)) * rise
        tongue_shade = (0.42 + 0.38 * np.sqrt(rise)) * groove
        out = out + tongue[..., None] * (self.tongue_colour * tongue_shade[..., None] - out)

        # Lower teeth stand on the lower lip, once the jaw has dropped far enough; in the upper row's shade.
        shape_l, bright_l, _ = _teeth_row(offset, _LOWER_EDGES, _LOWER_LENGTH, gap_px, scale)
        shape_l = shape_l * np.clip((0.36 - np.abs(offset)) / 0.08, 0, 1)  # the lower lip hides the rest
        l_tip = bottom - lo_len * shape_l
        lower_cover = np.clip(ys - l_tip + 0.5, 0, 1) * (lo_len * shape_l > 0.5)
        l_along = np.clip((ys - l_tip) / np.maximum(lo_len * shape_l, 1.0), 0, 1)  # 0 at the edge
        lower_shade = bright_l * (1 - 0.8 * side**2.5) * (0.95 - 0.2 * l_along) * (1 - 0.5 * forward)
        colour_l = self.teeth_colour * lower_shade[..., None]
        out = out + lower_cover[..., None] * (colour_l - out)

        colour_u = self.teeth_colour + translucent * (self.edge_colour - self.teeth_colour)
        out = out + upper_cover[..., None] * (colour_u * upper_shade[..., None] - out)
        # Just under the upper lip a sliver of its wet inside shows, with its shadow.
        under_lip = np.exp(-np.clip(ys - top, 0, None) / max(0.015 * scale, 0.5))
        out = out + (0.5 * under_lip)[..., None] * (self.inner_lip_colour - out)
        out = cv2.GaussianBlur(out.astype(np.float32), (3, 3), 0.5)

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

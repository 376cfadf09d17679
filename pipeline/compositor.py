"""The compositor: paints rendered heads over the background frame with a seamless, colour-stable edge."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.masks import LABEL_BACKGROUND, LABEL_NECK, LABEL_TORSO, FrameMasks
from renderers.base import HeadFrame


def fit_to_box(
    head: HeadFrame, tight: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """The head's rgb [h, w, 3] and alpha [h, w] at the size of its box (resized where they differ), and
    the box.

    Args:
        head: the head frame.
        tight: crop to where alpha > 1/255 (the box shrinks to match); the crop is scaled alone, with the
            same geometry as scaling the whole, which is much cheaper when the box is mostly empty.
    """
    x0, y0, x1, y1 = head.box
    rgb, alpha = head.rgb, head.alpha
    if tight and alpha.size:
        ax, ay, aw, ah = cv2.boundingRect((alpha > 1 / 255).astype(np.uint8))
        sx, sy = (x1 - x0) / alpha.shape[1], (y1 - y0) / alpha.shape[0]
        # the box pixels whose bilinear sample touches that crop (the sample of x is at (x + 0.5) / s - 0.5)
        cx0, cy0 = max(int(np.floor((ax - 0.5) * sx)), 0), max(int(np.floor((ay - 0.5) * sy)), 0)
        cx1 = min(int(np.ceil((ax + aw + 0.5) * sx)), x1 - x0)
        cy1 = min(int(np.ceil((ay + ah + 0.5) * sy)), y1 - y0)
        if cx1 <= cx0 or cy1 <= cy0:
            return rgb[:0, :0], alpha[:0, :0], (x0, y0, x0, y0)
        inverse = np.array([[1 / sx, 0, (cx0 + 0.5) / sx - 0.5], [0, 1 / sy, (cy0 + 0.5) / sy - 0.5]])
        flags, size = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, (cx1 - cx0, cy1 - cy0)
        rgb = cv2.warpAffine(rgb, inverse, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(alpha, inverse, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        return rgb, alpha, (x0 + cx0, y0 + cy0, x0 + cx1, y0 + cy1)
    if rgb.shape[:2] != (y1 - y0, x1 - x0):
        rgb = cv2.resize(rgb, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return rgb, alpha, (x0, y0, x1, y1)


class Compositor:
    """Blend head frames into a background.

    Args:
        background: uint8 [H, W, 3] RGB frame the heads are painted into (the photo, or a plate).
        feather: pixels over which a head region fades in from its box edge, so a patch never shows a seam.
        colour_match: match the head's colour to the background along the seam (gain per channel,
            smoothed over time so colours never flicker); for renderers whose colours can drift.
        colour_smoothing: weight of the previous frame's gain in that running average.
    """

    def __init__(
        self,
        background: np.ndarray,
        feather: int = 8,
        colour_match: bool = False,
        colour_smoothing: float = 0.9,
    ) -> None:
        self.background = np.ascontiguousarray(background, np.uint8)
        self.feather = feather
        self.colour_match = colour_match
        self.colour_smoothing = colour_smoothing
        self._gain: np.ndarray | None = None
        self._edge_cache: dict[tuple[int, int], np.ndarray] = {}

    def _edge_ramp(self, h: int, w: int) -> np.ndarray:
        """[h, w] 0 at the box edge rising to 1 at ``feather`` pixels in."""
        key = (h, w)
        if key not in self._edge_cache:
            f = max(self.feather, 1)
            ys = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
            xs = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
            ramp = np.clip(np.minimum(ys, xs) / f, 0, 1).astype(np.float32)
            self._edge_cache[key] = ramp * ramp * (3 - 2 * ramp)
        return self._edge_cache[key]

    def compose(self, head: HeadFrame, background: np.ndarray | None = None) -> np.ndarray:
        """One output frame: uint8 [H, W, 3] RGB."""
        frame = (self.background if background is None else background).copy()
        x0, y0, x1, y1 = head.box
        rgb, alpha, _ = fit_to_box(head)
        bg = frame[y0:y1, x0:x1]
        at_edge = np.array([x0 > 0, y0 > 0, x1 < frame.shape[1], y1 < frame.shape[0]])
        a = alpha * self._edge_ramp(*alpha.shape) if at_edge.any() and self.feather > 0 else alpha
        head_rgb = rgb.astype(np.float32)
        if self.colour_match:
            head_rgb = head_rgb * self._seam_gain(head_rgb, bg, alpha)
        a3 = a[..., None]
        frame[y0:y1, x0:x1] = np.clip(head_rgb * a3 + bg.astype(np.float32) * (1 - a3) + 0.5, 0, 255).astype(
            np.uint8
        )
        return frame

    def _seam_gain(self, head: np.ndarray, bg: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """Per-channel gain [3] that makes the head agree with the background along its seam."""
        seam = (alpha > 0.05) & (alpha < 0.95)
        if seam.sum() < 50:
            return self._gain if self._gain is not None else np.ones(3, np.float32)
        gain = (bg[seam].astype(np.float32).mean(0) + 1) / (head[seam].mean(0) + 1)
        gain = np.clip(gain, 0.8, 1.25)
        s = self.colour_smoothing
        self._gain = gain if self._gain is None else s * self._gain + (1 - s) * gain
        return self._gain


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FootageCompositor:
    """Paint rendered heads into frames of the identity's own footage, which give the torso, neck and room.

    Per frame: the footage's background may be swapped for a new one (soft, along the person matte); the
    footage's own head (its head matte, slightly grown) is removed; what of it the new head leaves uncovered
    (a chin that moved up, a narrower jaw) is filled from the neck and torso where it lies nearer to them
    than to the background (their texture mirrored across the hole's edge, so a neck grows up under the
    chin) and from the background elsewhere; the rendered head's lower edge is feathered where body lies
    behind it, and its colour is matched to the footage neck it covers (a per-channel gain, smoothed over
    time, fading out up the face). Every length scales with the head's size (the square root of the area of
    the footage's head matte), so the result does not depend on the frame size or the head's pose.

    Args:
        plate: uint8 [H, W, 3] RGB background plate of the footage (the room without the person).
        background: None keeps the footage's room; an RGB colour (3 numbers, 0..255) or an image (uint8
            [h, w, 3] RGB, resized to the frame) replaces it, and also fills where the old head was.
        seam: feather the head's lower edge and match its colour to the footage neck.
        grow: how far the footage head matte is grown before removal, in head sizes.
        feather: vertical blur of the head's lower edge where body lies behind it, in head sizes.
        fill_softness: width of the blend between body fill and background fill, and blur of the body
            fill's texture, in head sizes.
        colour_reach: how far up the head the seam's colour correction fades out, in head sizes.
        colour_smoothing: weight of the previous frame's colour gain in its running average.
    """

    def __init__(
        self,
        plate: np.ndarray,
        background: tuple[float, float, float] | np.ndarray | None = None,
        seam: bool = True,
        grow: float = 0.012,
        feather: float = 0.025,
        fill_softness: float = 0.02,
        colour_reach: float = 0.45,
        colour_smoothing: float = 0.9,
    ) -> None:
        self.plate = np.ascontiguousarray(plate, np.uint8)
        if background is not None:
            if not isinstance(background, np.ndarray | tuple | list):
                raise TypeError(f"background must be None, an RGB colour or an image, not {type(background)}")
            shape = np.shape(background)
            if shape != (3,) and (len(shape) != 3 or shape[2] < 3):
                raise ValueError(
                    f"background must be an RGB colour (3 numbers) or an [h, w, 3] image, not {shape}"
                )
        self.background = background
        self.seam = seam
        self.grow = grow
        self.feather = feather
        self.fill_softness = fill_softness
        self.colour_reach = colour_reach
        # keeps the running colour gain of the seam (Compositor._seam_gain)
        self._gains = Compositor(self.plate, feather=0, colour_match=True, colour_smoothing=colour_smoothing)
        self._room: tuple[np.ndarray, np.ndarray] | None = None

    def room(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """What shows where the room shows (the plate, or the new background) at ``shape``: uint8 and float32
        [H, W, 3]."""
        if self._room is None or self._room[0].shape[:2] != tuple(shape):
            h, w = shape
            source = self.plate if self.background is None else np.asarray(self.background)
            if source.ndim == 1:
                image = np.empty((h, w, 3), np.uint8)
                image[:] = np.clip(np.round(source.astype(np.float32)), 0, 255).astype(np.uint8)
            else:
                image = np.ascontiguousarray(source[..., :3], np.uint8)
                if image.shape[:2] != (h, w):
                    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            self._room = (image, image.astype(np.float32))
        return self._room

    def compose(self, head: HeadFrame, frame: np.ndarray, masks: FrameMasks) -> np.ndarray:
        """One output frame: uint8 [H, W, 3] RGB.

        Args:
            head: the rendered head, its box in ``frame``'s pixels.
            frame: uint8 [H, W, 3] RGB footage frame giving the pose's backdrop.
            masks: that frame's masks.
        """
        h, w = frame.shape[:2]
        room8, room = self.room((h, w))
        labels = masks.labels
        rgb, alpha, box = fit_to_box(head, tight=True)
        alpha = alpha.astype(np.float32, copy=False)
        x0, y0, x1, y1 = box
        size = self._head_size(masks.head_alpha, alpha, (h, w))
        if self.background is None:
            base = np.array(frame, np.uint8)
        else:
            person = masks.person_alpha.astype(np.float32) * (1 / 255)
            base = cv2.blendLinear(np.ascontiguousarray(frame, np.uint8), room8, person, 1 - person)
        # the most the lower edge is feathered (where only body lies behind it)
        soft = self._feathered(alpha, size) if self.seam else alpha
        grow = max(1, round(self.grow * size))
        removed = cv2.dilate(masks.head_alpha, _disc(grow))
        body = (labels == LABEL_NECK) | (labels == LABEL_TORSO)
        body_share = np.zeros((h, w), np.float32)  # how much of the fill is body, inside the removed head
        rx, ry, rw, rh = cv2.boundingRect(removed)
        if rw and rh:
            roi = (slice(ry, ry + rh), slice(rx, rx + rw))
            weighted = self._fill(base, room, labels, body, removed, roi, soft, box, size)
            body_share[roi] = weighted[..., 3]
            r = removed[roi].astype(np.float32) * (1 / 255)
            # the room everywhere, then where the fill is body: footage (1 - r) + r (room (1 - share) +
            # share * colour) = that + r (share * colour - share * room)
            base[roi] = cv2.blendLinear(np.ascontiguousarray(base[roi]), room8[roi], 1 - r, r)
            bx, by, bw, bh = cv2.boundingRect((weighted[..., 3] > 1 / 512).astype(np.uint8))
            sub, at = (
                (slice(by, by + bh), slice(bx, bx + bw)),
                (slice(ry + by, ry + by + bh), slice(rx + bx, rx + bx + bw)),
            )
            change = weighted[sub][..., :3] - weighted[sub][..., 3:] * room[at]
            base[at] = np.clip(base[at] + r[sub][..., None] * change + 0.5, 0, 255).astype(np.uint8)
        if not alpha.size:
            return base
        if self.seam:
            r = removed[y0:y1, x0:x1].astype(np.float32) * (1 / 255)
            under = body[y0:y1, x0:x1].astype(np.float32)
            behind = under + r * (body_share[y0:y1, x0:x1] - under)  # body (footage or fill) behind the head
            alpha = alpha + behind * (soft - alpha)
            neck = labels[y0:y1, x0:x1] == LABEL_NECK
            rgb = self._match_colour(rgb, alpha, frame[y0:y1, x0:x1], neck, behind > 0.5, size)
        base[y0:y1, x0:x1] = cv2.blendLinear(
            np.ascontiguousarray(rgb), np.ascontiguousarray(base[y0:y1, x0:x1]), alpha, 1 - alpha
        )
        return base

    @staticmethod
    def _head_size(head_alpha: np.ndarray, alpha: np.ndarray, shape: tuple[int, int]) -> float:
        """Length of the head, pixels: the square root of the footage's (else the render's) head area."""
        area = float(np.count_nonzero(head_alpha >= 128))
        if area < 16:
            area = float(alpha.sum())
        return float(np.sqrt(area)) if area >= 16 else 0.25 * min(shape)

    def _feathered(self, alpha: np.ndarray, size: float) -> np.ndarray:
        """The head matte with its upper and lower edges softened by a vertical blur (never raised)."""
        sigma = self.feather * size
        if sigma < 0.5 or not alpha.size:
            return alpha
        k = 2 * int(np.ceil(2.5 * sigma)) + 1
        blurred = cv2.GaussianBlur(alpha, (1, k), sigmaX=0, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
        return np.minimum(alpha, blurred)

    def _fill(
        self,
        image: np.ndarray,
        room: np.ndarray,
        labels: np.ndarray,
        body: np.ndarray,
        removed: np.ndarray,
        roi: tuple[slice, slice],
        alpha: np.ndarray,
        box: tuple[int, int, int, int],
        size: float,
    ) -> np.ndarray:
        """Body fill of the removed head within ``roi``: float32 [h, w, 4], share * body colour and share.

        Computed on a grid a few pixels coarse (scaled with the head) where the new head does not hide the
        removed one, blurred by ``fill_softness`` head sizes (which also hides the grid), and scaled up.
        """
        ry, rx = roi[0].start, roi[1].start
        rh, rw = removed[roi].shape
        step = self._step(size)
        blur = self.fill_softness * size / step
        x0, y0, x1, y1 = box
        covered = np.zeros(labels.shape, np.uint8)
        covered[y0:y1, x0:x1] = alpha >= 0.995
        # what the new head does not hide, grown by the blur so that the fill's edge lies under the head
        covered = cv2.erode(covered[roi][::step, ::step], _disc(int(np.ceil(2 * blur))))
        gy, gx = np.nonzero((removed[roi][::step, ::step] > 0) & (covered == 0))
        weighted = np.zeros((*covered.shape, 4), np.float32)
        if len(gy):
            colour, share = self._fill_from_body(
                image, labels, body, removed >= 128, gy * step + ry, gx * step + rx, size
            )
            weighted[gy, gx, :3] = colour * share[:, None]
            weighted[gy, gx, 3] = share
            if blur >= 0.3:
                weighted = cv2.GaussianBlur(weighted, (0, 0), blur)
        if step > 1:
            weighted = cv2.resize(weighted, (rw, rh), interpolation=cv2.INTER_LINEAR)
        return weighted

    @staticmethod
    def _step(size: float) -> int:
        """Side in pixels of the coarse grid the fill is worked out on."""
        return max(1, int(size // 96))

    def _fill_from_body(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        body: np.ndarray,
        hole: np.ndarray,
        py: np.ndarray,
        px: np.ndarray,
        size: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Body colour for the pixels (py, px) of the removed head, and how much of them is body, not room.

        Each pixel takes the colour of its mirror image across the nearest body pixel outside the hole, so
        a neck continues upward with its own texture (the nearest body pixel itself where the mirror image
        is not body of the same label: the mirror of a neck pixel that falls onto the collar). Its body
        share is 1 where that body pixel is nearer than any background pixel outside the hole, 0 where the
        background is nearer, with a soft change between. Distances are computed on a grid a few pixels
        coarse (scaled with the head), which is plenty for a fill that soft.

        Returns:
            float32 [N, 3] body colour and float32 [N] body share.
        """
        h, w = labels.shape
        n = len(py)
        step = self._step(size)
        body_src = body & ~hole
        small_body = body_src[::step, ::step]
        if not small_body.any():
            return np.zeros((n, 3), np.float32), np.zeros(n, np.float32)
        cy, cx = py // step, px // step
        d_body, nearest = cv2.distanceTransformWithLabels(
            (~small_body).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
        )
        # DIST_LABEL_PIXEL numbers the source pixels 1, 2, ... in raster order
        sy, sx = np.divmod(np.flatnonzero(small_body)[nearest[cy, cx] - 1], small_body.shape[1])
        sy, sx = sy * step, sx * step
        qy, qx = np.clip(2 * sy - py, 0, h - 1), np.clip(2 * sx - px, 0, w - 1)
        mirrored = body_src[qy, qx] & (labels[qy, qx] == labels[sy, sx])
        colour = image[np.where(mirrored, qy, sy), np.where(mirrored, qx, sx)].astype(np.float32)
        small_room = ((labels == LABEL_BACKGROUND) & ~hole)[::step, ::step]
        if not small_room.any():
            return colour, np.ones(n, np.float32)
        d_room = cv2.distanceTransform((~small_room).astype(np.uint8), cv2.DIST_L2, 5)
        margin = (d_room[cy, cx] - d_body[cy, cx]) * step
        share = _smoothstep(0.5 + margin / max(2 * self.fill_softness * size, 1.0))
        return colour, share.astype(np.float32)

    def _match_colour(
        self,
        rgb: np.ndarray,
        alpha: np.ndarray,
        footage: np.ndarray,
        neck: np.ndarray,
        over_body: np.ndarray,
        size: float,
    ) -> np.ndarray:
        """The head's rgb (uint8 [h, w, 3], over its box) times a colour gain that makes it agree with the
        footage's neck where it is opaque over it; the gain (a running average over frames) applies fully
        where the head lies over the body, fading out ``colour_reach`` head sizes up the face."""
        band = (alpha > 0.6) & neck  # opaque head over the footage's neck skin
        head = rgb[band].astype(np.float32)
        gain = self._gains._seam_gain(head, footage[band], np.full(len(head), 0.5, np.float32))
        over = over_body & (alpha > 0.05)
        if not over.any() or np.abs(gain - 1).max() < 1e-3:
            return rgb
        step = self._step(size)
        small = over[::step, ::step]
        distance = cv2.distanceTransform((~small).astype(np.uint8), cv2.DIST_L2, 3)
        weight = 1 - _smoothstep(distance * (step / max(self.colour_reach * size, 1.0)))
        weight = cv2.resize(weight, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        graded = cv2.multiply(rgb, (*(float(g) for g in gain), 0.0))
        return cv2.blendLinear(graded, np.ascontiguousarray(rgb), weight, 1 - weight)


def _disc(radius: int) -> np.ndarray:
    """uint8 elliptic structuring element of the given radius."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))

"""The compositor: paints rendered heads over the background frame with a seamless, colour-stable edge."""

from __future__ import annotations

import cv2
import numpy as np

from renderers.base import HeadFrame


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
        rgb, alpha = head.rgb, head.alpha
        if rgb.shape[:2] != (y1 - y0, x1 - x0):
            rgb = cv2.resize(rgb, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            alpha = cv2.resize(alpha, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
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

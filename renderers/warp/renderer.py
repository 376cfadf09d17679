"""The ``warp`` renderer: drives one photo with motion by warping it along the fitted face model.

Per frame: pose and expression move the 478 model vertices; their pixel displacements, together with a
ring of anchors around the head that follows head pose (hair) and an outer ring that stays still (neck,
shoulders, background), are interpolated piecewise-linearly over a Delaunay triangulation of the photo;
the backward map is found by fixed-point iteration of that forward field, and the photo is resampled.
The mouth interior is painted where the lips part. Needs no training.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import sparse
from scipy.spatial import Delaunay

from common.progress import bar as progress_bar
from motion import topology as tp
from motion.blendshapes import EXPRESSION_NAMES
from motion.face_model import FaceFit, FaceModel
from motion.geometry import axis_angle_to_matrix
from motion.sequence import POSE_RELATIVE, MotionSequence, neck_pivot
from renderers.base import HeadFrame, Renderer
from renderers.warp.mouth import MouthPainter


@dataclass
class WarpConfig:
    """Settings of the warp renderer."""

    head_ring: float = 1.45
    """Size of the ring of anchors that moves rigidly with the head (hair), relative to the face oval."""
    hair_lift: float = 1.35
    """Extra upward reach of that ring above the eyes, for hair."""
    outer_ring: float = 2.3
    """Size of the still ring where all motion has faded out, relative to the face oval."""
    neck_follow: float = 0.5
    """How much of the head's motion the anchors below the mouth (the neck) follow."""
    pivot_below_eyes: float = 9.0
    """Head rotation pivot: model units below the eye line (top of the neck)."""
    pivot_depth: float = 6.0
    """Head rotation pivot: model units behind the face."""
    inverse_iterations: int = 3
    """Fixed-point iterations that invert the forward warp field."""
    mouth_interior: bool = True
    """Paint teeth, tongue and cavity where the lips part."""
    threads: int = 2
    """Frames warped in parallel."""


@dataclass
class WarpModelConfig:
    """What ``config.json`` holds for a saved warp renderer (the photo and its fit are in the tensors)."""

    render: WarpConfig = field(default_factory=WarpConfig)
    """The warp's settings."""
    scale: float = 1.0
    """The photo fit's scale: pixels per model unit."""
    residual: float = 0.0
    """The photo fit's landmark residual in pixels."""


class WarpRenderer(Renderer):
    """Warp a photo along the face model.

    Args:
        image: uint8 [H, W, 3] RGB photo (already framed to the output size).
        fit: the face model fitted to ``image``.
        config: settings.
    """

    name = "warp"
    config_type = WarpModelConfig
    pose_kind = POSE_RELATIVE

    def __init__(self, image: np.ndarray, fit: FaceFit, config: WarpConfig | None = None) -> None:
        self.image = np.ascontiguousarray(image, dtype=np.uint8)
        self.fit = fit
        self.config = config or WarpConfig()
        self.model = FaceModel().for_identity(fit.shape)
        self._rot = axis_angle_to_matrix(fit.rotation)
        self._prepare()

    # ---- geometry -------------------------------------------------------------------------------------
    def _to_pixels(self, local: np.ndarray, pose: np.ndarray | None) -> np.ndarray:
        """Head-frame points [N, 3] -> pixels [N, 2] under a pose delta [6] about the neck pivot."""
        if pose is not None and np.any(pose):
            delta = axis_angle_to_matrix(pose[:3])
            local = (local - self._pivot) @ delta.T + self._pivot + pose[3:]
        world = local @ self._rot.T
        return self.fit.centre + world[:, :2] * self.fit.scale * np.array([1.0, -1.0])

    def _prepare(self) -> None:
        cfg = self.config
        h, w = self.image.shape[:2]
        rest = self.model.vertices(self.fit.expression).astype(np.float64)  # [478, 3] head frame
        eye_y = rest[[tp.LEFT_EYE_CORNERS[0], tp.RIGHT_EYE_CORNERS[0]], 1].mean()
        mouth_y = rest[[tp.UPPER_LIP_CENTER_INNER, tp.LOWER_LIP_CENTER_INNER], 1].mean()
        self._pivot = neck_pivot(rest, cfg.pivot_below_eyes, cfg.pivot_depth)
        self._rest_local = rest
        self.rest_points = self._to_pixels(rest, None)  # [478, 2]

        # Head ring: the face oval pushed outward (more upward, for hair); moves with the head.
        oval = rest[list(tp.FACE_OVAL)]
        centre = np.array([0.0, (eye_y + mouth_y) / 2, oval[:, 2].mean()])
        offset = oval - centre
        lift = np.where(offset[:, 1] > 0, cfg.hair_lift, 1.0)
        ring = centre + offset * np.stack(
            [np.full(len(oval), cfg.head_ring), cfg.head_ring * lift, np.ones(len(oval))], 1
        )
        self._ring_local = ring
        self._ring_follow = np.where(ring[:, 1] < mouth_y, cfg.neck_follow, 1.0)
        ring_px = self._to_pixels(ring, None)

        # Outer ring: still.
        face_px = self.rest_points[list(tp.FACE_OVAL)]
        c2 = face_px.mean(0)
        outer = c2 + (face_px - c2) * cfg.outer_ring
        x0, y0 = np.floor(np.minimum(outer.min(0), ring_px.min(0)) - 2).astype(int)
        x1, y1 = np.ceil(np.maximum(outer.max(0), ring_px.max(0)) + 2).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        self.box = (int(x0), int(y0), int(x1), int(y1))
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)
        edges = np.concatenate(
            [np.stack([np.linspace(x0, x1, 9), np.full(9, yy)], 1) for yy in (y0, y1)]
            + [np.stack([np.full(9, xx), np.linspace(y0, y1, 9)], 1) for xx in (x0, x1)]
        )
        still = np.concatenate([outer, corners, edges])
        points = np.concatenate([self.rest_points, ring_px, still])
        # Tiny jitter keeps Delaunay happy with coincident projected vertices.
        points = points + np.random.default_rng(0).normal(0, 1e-4, points.shape)
        self._num_moving = len(self.rest_points) + len(ring_px)
        self._num_points = len(points)

        tri = Delaunay(points)
        gy, gx = np.mgrid[y0:y1, x0:x1]
        pix = np.stack([gx.ravel() + 0.0, gy.ravel() + 0.0], 1)
        simplex = tri.find_simplex(pix)
        inside = simplex >= 0
        t = tri.transform[simplex[inside]]  # [M, 3, 2]
        bary2 = np.einsum("mij,mj->mi", t[:, :2], pix[inside] - t[:, 2])
        bary = np.concatenate([bary2, 1 - bary2.sum(1, keepdims=True)], 1)
        rows = np.repeat(np.nonzero(inside)[0], 3)
        cols = tri.simplices[simplex[inside]].ravel()
        self._interp = sparse.csr_matrix(
            (bary.ravel().astype(np.float32), (rows, cols)), shape=(len(pix), len(points))
        )
        self._shape = (y1 - y0, x1 - x0)
        gx32, gy32 = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
        self._grid = np.stack([gx32, gy32], -1)  # [h, w, 2] ROI-local pixel centres
        self._roi = np.ascontiguousarray(self.image[y0:y1, x0:x1])
        self._mouth = MouthPainter(self.image, self.rest_points) if cfg.mouth_interior else None
        self._name_order = None

    # ---- rendering ------------------------------------------------------------------------------------
    def vertex_pixels(self, expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Pixel positions [478, 2] of the model vertices for one frame's coefficients [E] and pose [6]."""
        local = self.model.vertices(expression).astype(np.float64)
        return self._to_pixels(local, pose)

    def displacement(self, expression: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward displacement field [h, w, 2] over the ROI and the posed vertex pixels [478, 2]."""
        moved = self.vertex_pixels(expression, pose)
        d = np.zeros((self._num_points, 2), np.float32)
        d[: len(moved)] = moved - self.rest_points
        if np.any(pose):
            ring_now = self._to_pixels(self._ring_local, pose)
            ring_rest = self._to_pixels(self._ring_local, None)
            d[len(moved) : self._num_moving] = (ring_now - ring_rest) * self._ring_follow[:, None]
        field = (self._interp @ d).reshape(*self._shape, 2)
        return field, moved

    def render_frame(self, expression: np.ndarray, pose: np.ndarray) -> HeadFrame:
        """One frame: coefficients [E] in :data:`EXPRESSION_NAMES` order and pose [6]."""
        field, moved = self.displacement(expression, pose)
        # Backward map: find s with s + D(s) = q by fixed-point iteration s <- q - D(s).
        src = self._grid - field
        for _ in range(self.config.inverse_iterations - 1):
            d_at = cv2.remap(
                field, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            src = self._grid - d_at
        out = cv2.remap(self._roi, src[..., 0], src[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if self._mouth is not None:
            offset = np.array(self.box[:2], np.float64)
            upper = moved[list(tp.LIPS_UPPER_INNER)] - offset
            lower = moved[list(tp.LIPS_LOWER_INNER)] - offset
            self._mouth.paint(out, upper, lower)
        alpha = np.ones(self._shape, np.float32)
        return HeadFrame(out, alpha, self.box)

    def render(self, motion: MotionSequence, progress: bool = False) -> Iterator[HeadFrame]:
        self.check_motion(motion)
        motion = motion.with_names(EXPRESSION_NAMES) if motion.names != EXPRESSION_NAMES else motion
        frames = progress_bar(range(len(motion)), desc="render", unit="frame", enabled=progress)
        if self.config.threads <= 1:
            for t in frames:
                yield self.render_frame(motion.expression[t], motion.pose[t])
            return
        cv2.setNumThreads(1)
        with ThreadPoolExecutor(self.config.threads) as pool:
            pending = []
            for t in frames:
                pending.append(pool.submit(self.render_frame, motion.expression[t], motion.pose[t]))
                if len(pending) >= 2 * self.config.threads:
                    yield pending.pop(0).result()
            for job in pending:
                yield job.result()

    # ---- persistence ----------------------------------------------------------------------------------
    def model_config(self) -> WarpModelConfig:
        return WarpModelConfig(
            render=self.config, scale=float(self.fit.scale), residual=float(self.fit.residual)
        )

    def state_tensors(self) -> dict[str, np.ndarray]:
        return {
            "image": self.image,
            "shape": self.fit.shape.astype(np.float32),
            "expression": self.fit.expression.astype(np.float32),
            "rotation": self.fit.rotation.astype(np.float64),
            "translation": self.fit.translation.astype(np.float64),
            "centre": self.fit.centre.astype(np.float64),
        }

    @classmethod
    def from_saved(cls, config: WarpModelConfig, tensors: dict[str, np.ndarray]) -> WarpRenderer:
        fit = FaceFit(
            shape=tensors["shape"],
            expression=tensors["expression"],
            rotation=tensors["rotation"],
            translation=tensors["translation"],
            scale=config.scale,
            centre=tensors["centre"],
            residual=config.residual,
        )
        return cls(tensors["image"], fit, config.render)


def portrait_renderer(
    photo: np.ndarray, fit: FaceFit, settings: WarpConfig | None = None, checkpoint: str = ""
) -> WarpRenderer:
    """The warp renderer for one framed photo (uint8 [S, S, 3]) and its fitted face; needs no checkpoint."""
    return WarpRenderer(photo, fit, settings)

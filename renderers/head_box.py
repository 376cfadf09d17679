"""The box around an identity's head, in its model frame: where the NeRF casts rays and the diffusion
renderer's window is cut from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from motion import topology as tp
from motion.camera import project_points


@dataclass
class HeadBox:
    """Axis-aligned box in the head frame that holds the head, hair and the top of the neck.

    Attributes:
        lo, hi: float32 [3] corners in model units.
    """

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def from_shape(cls, shape: np.ndarray) -> HeadBox:
        """A box around an identity's neutral face [478, 3], grown for hair, ears, the back of the head and
        the neck (proportions of the face's own size, so any head scale works)."""
        oval = shape[list(tp.FACE_OVAL)]
        width = float(np.ptp(oval[:, 0]))
        height = float(np.ptp(oval[:, 1]))
        centre_x = float(oval[:, 0].mean())
        front = float(shape[:, 2].max())
        lo = np.array([centre_x - 0.85 * width, oval[:, 1].min() - 0.6 * height, front - 1.25 * height])
        hi = np.array([centre_x + 0.85 * width, oval[:, 1].max() + 0.45 * height, front + 0.1 * height])
        return cls(lo.astype(np.float32), hi.astype(np.float32))

    def pixel_bounds(
        self, rotation: np.ndarray, translation: np.ndarray, focal: float, size: int
    ) -> tuple[int, int, int, int]:
        """Pixel bounds (x0, y0, x1, y1) of the box seen from a pose in a ``size`` image with ``focal``
        (pixels at that size), clipped to the image."""
        lo, hi = self.lo, self.hi
        corners = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        px = project_points(
            corners[None], rotation[None], translation[None], focal, (size, size), numpy=True
        )[0]
        x0, y0 = np.floor(px.min(0)).astype(int)
        x1, y1 = np.ceil(px.max(0)).astype(int)
        return max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)

    def normalise(self, points: torch.Tensor) -> torch.Tensor:
        """Head-frame points [..., 3] -> [-1, 1]^3 inside the box."""
        lo = torch.as_tensor(self.lo, dtype=points.dtype, device=points.device)
        hi = torch.as_tensor(self.hi, dtype=points.dtype, device=points.device)
        return (points - lo) / (hi - lo) * 2.0 - 1.0

    def intersect(
        self, origins: torch.Tensor, dirs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slab test: (near [M], far [M], hit [M] bool) of rays with the box (near >= 0)."""
        lo = torch.as_tensor(self.lo, dtype=origins.dtype, device=origins.device)
        hi = torch.as_tensor(self.hi, dtype=origins.dtype, device=origins.device)
        inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t0 = (lo - origins) * inv
        t1 = (hi - origins) * inv
        near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
        far = torch.maximum(t0, t1).amin(-1)
        return near, far, far > near

"""Cameras, rays and volume rendering in the head's own frame.

The head is static in its model frame and the camera moves: a frame's tracked pose (``Xc = R @ X + t``,
camera looking down -z, see :mod:`motion.clip_fit`) puts the camera at ``-R^T t`` in the head frame with
its axes rotated by ``R^T``. Rays are cast only inside the head's bounding box; samples are spread
densely between the box's entry and exit, and composited with nerfacc's volume-rendering weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from motion import topology as tp


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
        from motion.clip_fit import project_points

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


def camera_rays(
    rotation: torch.Tensor,
    translation: torch.Tensor,
    focal: float,
    image_size: tuple[int, int],
    pixels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-frame rays through pixel positions.

    Args:
        rotation: [M, 3] axis-angle (model -> camera) per ray (or [3] for all).
        translation: [M, 3] per ray (or [3]).
        focal: pixels. image_size: (height, width); the principal point is the image centre.
        pixels: [M, 2] (x, y) positions, pixel centres at +0.5.
    Returns:
        origins [M, 3], unit directions [M, 3].
    """
    from motion.clip_fit import _rotation_matrices

    h, w = image_size
    m = len(pixels)
    rot = _rotation_matrices(rotation.reshape(-1, 3).to(pixels.dtype)).expand(m, 3, 3)
    trans = translation.reshape(-1, 3).to(pixels.dtype).expand(m, 3)
    d_cam = torch.stack(
        [(pixels[:, 0] - w / 2) / focal, -(pixels[:, 1] - h / 2) / focal, -torch.ones_like(pixels[:, 0])], -1
    )
    rt = rot.transpose(1, 2)
    origins = -torch.einsum("mij,mj->mi", rt, trans)
    dirs = torch.einsum("mij,mj->mi", rt, d_cam)
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)


def volume_render(
    field,
    box: HeadBox,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    expression: torch.Tensor,
    appearance: torch.Tensor,
    samples: int,
    stratified: bool = False,
    occupancy=None,
) -> dict[str, torch.Tensor]:
    """Render rays through the field with dense samples between box entry and exit.

    Args:
        field: a :class:`renderers.nerf.field.TriPlaneField`.
        origins, dirs: [M, 3] head-frame rays. expression: [M, E]. appearance: [M, A].
        samples: points per ray. stratified: jitter sample positions (training).
        occupancy: a filled :class:`renderers.nerf.occupancy.Occupancy` grid, or None. With one, rays
            are marched through occupied cells only on CUDA, and dense samples in empty cells are skipped
            on a CPU.
    Returns:
        ``rgb`` [M, 3] premultiplied by ``opacity`` [M] (0 for rays that miss the box), ``depth`` [M].
    """
    from nerfacc import accumulate_along_rays, render_weight_from_density

    near, far, hit = box.intersect(origins, dirs)
    m = len(origins)
    rgb = origins.new_zeros(m, 3)
    opacity = origins.new_zeros(m)
    depth = origins.new_zeros(m)
    if not bool(hit.any()):
        return {"rgb": rgb, "opacity": opacity, "depth": depth}
    o, d, n, f = origins[hit], dirs[hit], near[hit], far[hit]
    if occupancy is not None and o.is_cuda:
        from renderers.nerf.occupancy import marcher_available

        if marcher_available():
            out = occupancy.march(field, o, d, n, f, expression[hit], appearance[hit], stratified)
            rgb[hit], opacity[hit], depth[hit] = out["rgb"].to(rgb.dtype), out["opacity"], out["depth"]
            return {"rgb": rgb, "opacity": opacity, "depth": depth}
    steps = torch.linspace(0.0, 1.0, samples + 1, device=o.device, dtype=o.dtype)
    edges = n[:, None] + (f - n)[:, None] * steps[None]  # [H, S + 1]
    if stratified:
        jitter = (torch.rand_like(edges[:, :-1]) - 0.5) * (edges[:, 1:] - edges[:, :-1])
        mids = (edges[:, :-1] + edges[:, 1:]) / 2 + jitter
    else:
        mids = (edges[:, :-1] + edges[:, 1:]) / 2
    points = o[:, None] + d[:, None] * mids[..., None]  # [H, S, 3]
    rays = len(o)
    flat = points.reshape(-1, 3)
    if occupancy is None:
        density, colour, _ = field(
            box.normalise(flat),
            expression[hit].repeat_interleave(samples, 0),
            appearance[hit].repeat_interleave(samples, 0),
        )
    else:  # evaluate only the samples in occupied cells
        keep = occupancy.occupied(flat).nonzero()[:, 0]
        ray_of = keep // samples
        d_keep, c_keep, _ = field(box.normalise(flat[keep]), expression[hit][ray_of], appearance[hit][ray_of])
        density = flat.new_zeros(len(flat), dtype=d_keep.dtype).index_put((keep,), d_keep)
        colour = flat.new_zeros(len(flat), 3, dtype=c_keep.dtype).index_put((keep,), c_keep)
    weights, _, _ = render_weight_from_density(edges[:, :-1], edges[:, 1:], density.view(rays, samples))
    rgb[hit] = accumulate_along_rays(weights, colour.view(rays, samples, 3))
    opacity[hit] = weights.sum(-1)
    depth[hit] = (weights * mids).sum(-1)
    return {"rgb": rgb, "opacity": opacity, "depth": depth}

"""Cameras, rays and volume rendering in the head's own frame.

The head is static in its model frame and the camera moves: a frame's tracked pose (``Xc = R @ X + t``,
camera looking down -z, see :mod:`motion.camera`) puts the camera at ``-R^T t`` in the head frame with
its axes rotated by ``R^T``. Rays are cast only inside the head's bounding box; samples are spread
densely between the box's entry and exit, and composited with nerfacc's volume-rendering weights.
"""

from __future__ import annotations

import torch

from motion.camera import rotation_matrices
from renderers.head_box import HeadBox
from renderers.nerf.occupancy import marcher_available


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
    h, w = image_size
    m = len(pixels)
    rot = rotation_matrices(rotation.reshape(-1, 3).to(pixels.dtype)).expand(m, 3, 3)
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
    if occupancy is not None and o.is_cuda and marcher_available():
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

"""Pure-PyTorch reference of the 2D multiresolution hash-grid encoding (the ground truth for the kernels).

One 2D grid has ``L`` levels; level ``l`` has resolution ``R_l`` cells a side, so ``(R_l + 1)^2`` vertices.
A vertex (i, j) reads row ``i + j * (R_l + 1)`` of the level's table when the level fits densely in its
``T`` rows, else row ``(i XOR j * 2654435761) mod T`` in unsigned 32-bit arithmetic (the spatial hash of
Müller et al. 2022, as the CUDA kernel computes it).
A point's feature at each level is the bilinear blend of its cell's four vertices; the levels' features
are concatenated.
"""

from __future__ import annotations

import torch

HASH_PRIME = 2654435761


def level_rows(resolution: int, table_size: int) -> tuple[int, bool]:
    """Rows a level uses and whether it is hashed."""
    dense = (resolution + 1) ** 2
    return (dense, False) if dense <= table_size else (table_size, True)


def vertex_rows(i: torch.Tensor, j: torch.Tensor, resolution: int, table_size: int) -> torch.Tensor:
    """Table rows of integer vertex coordinates ``i``, ``j`` (int64, any shape) at one level."""
    _, hashed = level_rows(resolution, table_size)
    if not hashed:
        return i + j * (resolution + 1)
    return (torch.bitwise_xor(i, j * HASH_PRIME) & 0xFFFFFFFF) % table_size


def hash_grid_2d(coords: torch.Tensor, tables: torch.Tensor, resolutions: list[int]) -> torch.Tensor:
    """Encode 2D points.

    All levels are gathered at once from the flattened tables (four gathers in all, not four per level),
    which keeps this reference usable for training on a CPU.

    Args:
        coords: float [N, 2] in [0, 1] (clamped).
        tables: float [L, T, F] per-level feature tables.
        resolutions: L cell counts per side.
    Returns:
        [N, L * F] features, differentiable in ``tables`` (and in ``coords`` inside cells).
    """
    num_levels, table_size, num_features = tables.shape
    n = coords.shape[0]
    res = torch.tensor(resolutions, dtype=coords.dtype, device=coords.device)  # [L]
    res_int = torch.tensor(resolutions, dtype=torch.int64, device=coords.device)
    hashed = torch.tensor(
        [level_rows(r, table_size)[1] for r in resolutions], dtype=torch.bool, device=coords.device
    )
    pos = coords.clamp(0.0, 1.0)[:, None, :] * res[None, :, None]  # [N, L, 2]
    cell = pos.detach().floor().minimum((res - 1)[None, :, None])
    frac = pos - cell
    i0 = cell[..., 0].long()
    j0 = cell[..., 1].long()
    offsets = (torch.arange(num_levels, device=coords.device) * table_size)[None, :]  # [1, L]
    flat = tables.reshape(num_levels * table_size, num_features)
    feats = 0.0
    for di in (0, 1):
        for dj in (0, 1):
            i, j = i0 + di, j0 + dj
            dense = i + j * (res_int + 1)[None, :]
            spread = (torch.bitwise_xor(i, j * HASH_PRIME) & 0xFFFFFFFF) % table_size
            rows = torch.where(hashed[None, :], spread, dense) + offsets  # [N, L]
            wx = frac[..., 0] if di else 1 - frac[..., 0]
            wy = frac[..., 1] if dj else 1 - frac[..., 1]
            feats = feats + (wx * wy)[..., None] * flat.index_select(0, rows.reshape(-1)).view(
                n, num_levels, -1
            )
    return feats.reshape(n, num_levels * num_features)

"""2D multiresolution hash-grid encoding and the tri-plane encoding built from three of them.

Three layers, as for every GPU op here: a lazy backend loader (the CUDA kernel in ``hashgrid.cu``, built
just in time by torch's extension builder the first time it is needed and cached by it), an autograd
wrapper, and the pure-PyTorch reference in :mod:`renderers.nerf.ops._torch_impl`. ``implementation``:

- ``torch``: the reference (any device; the CPU path);
- ``cuda``: our kernel (CUDA tensors; if it cannot be built, one warning and the reference);
- ``tcnn``: tiny-cuda-nn's grid encoding when the package is installed (its own parameter layout);
- ``auto``: ``cuda`` for CUDA tensors, ``torch`` otherwise.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from renderers.nerf.ops._torch_impl import hash_grid_2d

log = logging.getLogger(__name__)
IMPLEMENTATIONS = ("auto", "cuda", "torch", "tcnn")


@functools.lru_cache(maxsize=1)
def cuda_extension():
    """The compiled kernel module, or None (with one warning) when it cannot be built here."""
    if not torch.cuda.is_available():
        return None
    try:
        from torch.utils.cpp_extension import load

        return load(
            name="talking_portrait_hashgrid",
            sources=[str(Path(__file__).with_name("hashgrid.cu"))],
            extra_cuda_cflags=["-O3", "--use_fast_math"],
            verbose=False,
        )
    except Exception as err:  # a missing compiler, ninja or header: fall back, say so once
        warnings.warn(
            f"the CUDA hash-grid kernel could not be built ({type(err).__name__}: {err}); "
            "using the PyTorch reference (slower). Install ninja and a CUDA toolkit matching torch to fix.",
            stacklevel=2,
        )
        return None


class _HashGridFunction(torch.autograd.Function):
    """Autograd wrapper of the CUDA kernel: gradients for the tables (coordinates are inputs, not trained)."""

    @staticmethod
    def forward(ctx, coords: torch.Tensor, tables: torch.Tensor, resolutions: torch.Tensor) -> torch.Tensor:
        ext = cuda_extension()
        coords = coords.contiguous().float()
        ctx.save_for_backward(coords, resolutions)
        ctx.table_size = tables.shape[1]
        return ext.forward(coords, tables.contiguous(), resolutions)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        coords, resolutions = ctx.saved_tensors
        grad_tables = cuda_extension().backward(
            coords, grad_out.contiguous().float(), resolutions, ctx.table_size
        )
        return None, grad_tables, None


def level_resolutions(levels: int, base: int, finest: int) -> list[int]:
    """Cells per side of each level: a geometric series from ``base`` to ``finest``."""
    if levels == 1:
        return [base]
    growth = math.exp((math.log(finest) - math.log(base)) / (levels - 1))
    return [math.floor(base * growth**level + 1e-6) for level in range(levels)]


class HashGrid2D(nn.Module):
    """A 2D multiresolution hash grid: points [N, 2] in [0, 1] -> features [N, levels * features].

    Args:
        levels: resolution levels. features: features per level. log2_table_size: rows per level's table.
        base_resolution, finest_resolution: cells per side of the coarsest and finest levels.
        implementation: ``auto``, ``cuda``, ``torch`` or ``tcnn``.
    """

    def __init__(
        self,
        levels: int = 16,
        features: int = 2,
        log2_table_size: int = 17,
        base_resolution: int = 16,
        finest_resolution: int = 2048,
        implementation: str = "auto",
    ) -> None:
        super().__init__()
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.implementation = implementation
        self.resolutions = level_resolutions(levels, base_resolution, finest_resolution)
        self.table_size = 2**log2_table_size
        self.features = features
        self.output_dim = levels * features
        self.register_buffer("_res", torch.tensor(self.resolutions, dtype=torch.int32), persistent=False)
        self._tcnn = None
        if implementation == "tcnn":
            self._tcnn = _tcnn_encoding(levels, features, log2_table_size, base_resolution, self.resolutions)
            self.tables = None
        else:
            tables = torch.empty(levels, self.table_size, features).uniform_(-1e-4, 1e-4)
            self.tables = nn.Parameter(tables)

    def backend(self, device: torch.device) -> str:
        """The implementation that runs for tensors on ``device``."""
        if self.implementation == "tcnn":
            return "tcnn"
        wants_cuda = self.implementation == "cuda" or (
            self.implementation == "auto" and device.type == "cuda"
        )
        if wants_cuda and device.type == "cuda" and cuda_extension() is not None:
            return "cuda"
        if self.implementation == "cuda" and device.type != "cuda":
            log.debug("implementation 'cuda' asked for %s tensors: using the reference", device.type)
        return "torch"

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        backend = self.backend(coords.device)
        if backend == "tcnn":
            return self._tcnn(coords.float()).float()
        if backend == "cuda":
            return _HashGridFunction.apply(coords, self.tables, self._res.to(coords.device))
        return hash_grid_2d(coords, self.tables, self.resolutions)


def _tcnn_encoding(levels: int, features: int, log2_table_size: int, base: int, resolutions: list[int]):
    try:
        import tinycudann as tcnn
    except ImportError as err:
        raise ImportError(
            "implementation 'tcnn' needs tiny-cuda-nn (pip install tinycudann); use 'cuda' or 'torch' instead"
        ) from err
    scale = math.exp((math.log(resolutions[-1]) - math.log(base)) / max(levels - 1, 1))
    return tcnn.Encoding(
        2,
        {
            "otype": "HashGrid",
            "n_levels": levels,
            "n_features_per_level": features,
            "log2_hashmap_size": log2_table_size,
            "base_resolution": base,
            "per_level_scale": scale,
        },
    )


class TriPlaneEncoding(nn.Module):
    """Three 2D hash grids on the xy, yz and xz planes: points [N, 3] in [-1, 1]^3 -> [N, 3 * grid dim].

    A tri-plane keeps memory quadratic in resolution where a 3D grid is cubic, and a talking head's
    detail (lips, teeth, eyes) lives mostly in the frontal plane, which the xy grid resolves finely.
    """

    PLANES = ((0, 1), (1, 2), (0, 2))

    def __init__(self, **grid_settings) -> None:
        super().__init__()
        self.grids = nn.ModuleList(HashGrid2D(**grid_settings) for _ in self.PLANES)
        self.output_dim = sum(g.output_dim for g in self.grids)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        unit = (points.clamp(-1.0, 1.0) + 1.0) * 0.5
        return torch.cat(
            [grid(unit[:, list(axes)]) for grid, axes in zip(self.grids, self.PLANES, strict=True)], 1
        )

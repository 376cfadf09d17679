"""Hash-grid encoding: the PyTorch reference against hand-computed values and finite differences; the CUDA
kernel against the reference (on a GPU only)."""

from __future__ import annotations

import pytest
import torch

from renderers.nerf.ops._torch_impl import HASH_PRIME, hash_grid_2d, vertex_rows
from renderers.nerf.ops.hashgrid import HashGrid2D, TriPlaneEncoding, cuda_extension, level_resolutions


def test_dense_level_by_hand():
    # 1 level of 2 x 2 cells (9 vertices, dense in a 16-row table); row r holds the value r
    tables = torch.arange(16, dtype=torch.float64).view(1, 16, 1)
    coords = torch.tensor([[0.25, 0.5], [1.0, 1.0], [0.0, 0.0], [0.5, 0.75]], dtype=torch.float64)
    out = hash_grid_2d(coords, tables, [2])
    # (0.25, 0.5) -> grid (0.5, 1.0): halfway between vertices (0,1)=row 3 and (1,1)=row 4
    # (0.5, 0.75) -> grid (1.0, 1.5): halfway between (1,1)=row 4 and (1,2)=row 7
    torch.testing.assert_close(out[:, 0], torch.tensor([3.5, 8.0, 0.0, 5.5], dtype=torch.float64))


def test_hashed_level_by_hand():
    table_size = 16
    tables = torch.randn(1, table_size, 3, dtype=torch.float64)
    out = hash_grid_2d(torch.tensor([[0.3, 0.7]], dtype=torch.float64), tables, [10])  # vertex (3, 7)
    row = ((3 ^ (7 * HASH_PRIME)) & 0xFFFFFFFF) % table_size  # unsigned 32-bit spatial hash
    torch.testing.assert_close(out[0], tables[0, row])
    assert int(vertex_rows(torch.tensor(3), torch.tensor(7), 10, table_size)) == row


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    tables = torch.randn(3, 64, 2, dtype=torch.float64, requires_grad=True)
    # keep points away from cell edges, where the bilinear blend has a kink
    coords = (torch.rand(20, 2, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    resolutions = [3, 5, 11]  # 16 and 36 vertices fit densely, 144 are hashed into 64 rows
    assert torch.autograd.gradcheck(lambda c, t: hash_grid_2d(c, t, resolutions), (coords, tables))


def test_levels_and_tri_plane_layout():
    assert level_resolutions(4, 16, 128) == [16, 32, 64, 128]
    grid = HashGrid2D(levels=4, features=2, log2_table_size=10, base_resolution=4, finest_resolution=32)
    assert grid.output_dim == 8 and grid.backend(torch.device("cpu")) == "torch"
    tri = TriPlaneEncoding(levels=2, features=2, log2_table_size=8, base_resolution=4, finest_resolution=8)
    points = torch.tensor([[0.2, -0.4, 0.9]])
    feats = tri(points)
    assert feats.shape == (1, 12)
    unit = (points + 1) / 2
    torch.testing.assert_close(feats[:, 4:8], tri.grids[1](unit[:, [1, 2]]))  # the yz plane sees (y, z)
    feats.sum().backward()
    assert all(g.tables.grad is not None and g.tables.grad.abs().sum() > 0 for g in tri.grids)


def test_cuda_asked_on_cpu_tensors_uses_the_reference():
    grid = HashGrid2D(
        levels=2, log2_table_size=8, base_resolution=4, finest_resolution=8, implementation="cuda"
    )
    coords = torch.rand(5, 2)
    torch.testing.assert_close(grid(coords), hash_grid_2d(coords, grid.tables, grid.resolutions))
    with pytest.raises(ValueError, match="implementation"):
        HashGrid2D(implementation="fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernel_matches_reference_forward_and_backward():
    assert cuda_extension() is not None, "the CUDA kernel did not build"
    torch.manual_seed(0)
    grid = HashGrid2D(levels=16, features=2, log2_table_size=15, base_resolution=16, finest_resolution=1024)
    grid = grid.cuda()
    with torch.no_grad():
        grid.tables.normal_()
    coords = torch.rand(100_000, 2, device="cuda")
    out = grid(coords)
    ref = hash_grid_2d(coords, grid.tables, grid.resolutions)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    kernel_grad = grid.tables.grad.clone()
    grid.tables.grad = None
    (hash_grid_2d(coords, grid.tables, grid.resolutions) * weights).sum().backward()
    torch.testing.assert_close(kernel_grad, grid.tables.grad, rtol=1e-4, atol=1e-4)

"""The occupancy grid on a field with known geometry: it marks the cells that hold density, and rendering
that skips the others gives the same picture as dense sampling."""

from __future__ import annotations

import math

import numpy as np
import torch

from renderers.head_box import HeadBox
from renderers.nerf.occupancy import Occupancy
from renderers.nerf.rays import camera_rays, volume_render


class Ball(torch.nn.Module):
    """Density 40 inside a ball of radius 0.5 (normalised box units) centred at ``centre``; the ball's
    radius grows with the first expression coefficient (an opening mouth)."""

    def __init__(self, centre=(0.2, -0.1, 0.0)):
        super().__init__()
        self.centre = torch.tensor(centre)

    def density(self, points, expression):
        radius = 0.5 + 0.3 * expression[:, 0]
        return 40.0 * ((points - self.centre).norm(dim=-1) < radius).float()

    def forward(self, points, expression, appearance):
        colour = (points * 0.5 + 0.5).clamp(0, 1)
        return self.density(points, expression), colour, torch.zeros_like(expression)


def _grid(samples=48):
    box = HeadBox(np.array([-1.0, -2.0, -3.0], np.float32), np.array([1.0, 2.0, 1.0], np.float32))
    return box, Occupancy(box, resolution=32, samples=samples)


def test_grid_marks_the_ball_and_the_cells_only_some_expressions_fill():
    torch.manual_seed(0)
    box, grid = _grid()
    assert not grid.ready
    expressions = torch.tensor([[0.0], [0.0], [0.0], [1.0]])  # the wide ball in one frame of four
    grid.refresh(Ball(), expressions, rounds=16)
    assert grid.ready
    assert abs(grid.occupied_fraction() - 4 / 3 * math.pi * 0.8**3 / 8) < 0.05
    lo, hi = torch.tensor(box.lo), torch.tensor(box.hi)

    def world(p):
        return lo + (torch.tensor(p) + 1) / 2 * (hi - lo)

    probe = torch.stack([world([0.2, -0.1, 0.0]), world([0.2 + 0.7, -0.1, 0.0]), world([-0.9, 0.9, 0.9])])
    assert grid.occupied(probe).tolist() == [True, True, False]  # centre, wide-ball shell, corner
    assert not grid.occupied(torch.tensor([[5.0, 0.0, 0.0]])).item()  # outside the box


def test_skipping_empty_cells_renders_what_dense_sampling_renders():
    torch.manual_seed(0)
    box, grid = _grid()
    field = Ball()
    grid.refresh(field, torch.tensor([[0.0], [0.5]]))
    size = 40
    gy, gx = torch.meshgrid(torch.arange(size.__float__()), torch.arange(size.__float__()), indexing="ij")
    pixels = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1) + 0.5
    origins, dirs = camera_rays(torch.tensor([0.3, 0.4, 0.0]), torch.tensor([0.0, 0.0, -12.0]), 60.0,
                                (size, size), pixels)  # fmt: skip
    n = len(pixels)
    expression, appearance = torch.full((n, 1), 0.5), torch.zeros(n, 6)
    dense = volume_render(field, box, origins, dirs, expression, appearance, 96)
    skipped = volume_render(field, box, origins, dirs, expression, appearance, 96, occupancy=grid)
    assert dense["opacity"].max() > 0.99 and (dense["opacity"] < 0.01).float().mean() > 0.2
    # cells a random probe missed at the ball's hard edge may differ a little; nothing else may
    assert (dense["opacity"] - skipped["opacity"]).abs().max() < 0.05
    assert (dense["rgb"] - skipped["rgb"]).abs().mean() < 1e-3

"""NeRF renderer pieces on the CPU: head box, camera rays (consistent with the tracker's projection) and
volume rendering through the expression-conditioned tri-plane field."""

from __future__ import annotations

import numpy as np
import torch

from motion.camera import project_points
from motion.face_model import FaceModel
from renderers.head_box import HeadBox
from renderers.nerf.field import FieldConfig, TriPlaneField
from renderers.nerf.rays import camera_rays, volume_render

TINY = FieldConfig(levels=4, log2_table_size=10, base_resolution=8, finest_resolution=64, hidden=32)


def test_rays_pass_through_the_points_the_tracker_projects():
    shape = FaceModel().mean
    rotation = np.array([[0.1, -0.25, 0.05]])
    translation = np.array([[1.5, -0.8, -58.0]])
    focal, size = 1100.0, (512, 512)
    pixels = project_points(shape[None], rotation, translation, focal, size, numpy=True)[0]  # [478, 2]
    origins, dirs = camera_rays(
        torch.tensor(rotation[0]),
        torch.tensor(translation[0]),
        focal,
        size,
        torch.tensor(pixels, dtype=torch.float64),
    )
    # distance of each model vertex from its ray
    to_point = torch.tensor(shape, dtype=torch.float64) - origins
    along = (to_point * dirs).sum(-1, keepdim=True)
    miss = (to_point - along * dirs).norm(dim=-1)
    assert miss.max() < 1e-3
    assert (along > 0).all()  # in front of the camera


def test_head_box_holds_the_face_and_rays_enter_it():
    shape = FaceModel().mean
    box = HeadBox.from_shape(shape)
    assert (shape >= box.lo).all() and (shape <= box.hi).all()
    normalised = box.normalise(torch.tensor(shape))
    assert normalised.abs().max() < 1
    origins = torch.tensor([[0.0, 0.0, 60.0], [0.0, 0.0, 60.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # straight at the face; straight up, missing
    near, far, hit = box.intersect(origins, dirs)
    assert hit.tolist() == [True, False]
    assert abs(float(near[0]) - (60 - box.hi[2])) < 1e-4 and abs(float(far[0]) - (60 - box.lo[2])) < 1e-4


def test_volume_render_shapes_ranges_and_gradients():
    torch.manual_seed(0)
    field = TriPlaneField(TINY, num_frames=3)
    box = HeadBox.from_shape(FaceModel().mean)
    pixels = torch.tensor([[256.0, 256.0], [250.0, 300.0], [2.0, 2.0]])
    origins, dirs = camera_rays(torch.zeros(3), torch.tensor([0.0, 0.0, -60.0]), 1100.0, (512, 512), pixels)
    expression = torch.zeros(3, 14)
    expression[:, 0] = 0.5
    out = volume_render(field, box, origins, dirs, expression, field.appearance(torch.tensor([0, 1, 2])), 16)
    assert out["rgb"].shape == (3, 3) and out["opacity"].shape == (3,)
    assert (out["opacity"] >= 0).all() and (out["opacity"] <= 1 + 1e-6).all()
    assert float(out["opacity"][2].detach()) == 0.0  # the corner ray misses the head box
    (out["rgb"].sum() + out["opacity"].sum()).backward()
    assert field.encoding.grids[0].tables.grad.abs().sum() > 0
    assert field.attention[0].weight.grad is not None

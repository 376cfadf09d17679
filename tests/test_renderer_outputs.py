"""Pinned output slices of the three renderers on tiny fixed inputs (the way diffusers' pipeline tests pin an
``expected_slice``): a change to a renderer's arithmetic that moves its pixels fails here, even where every
property test still holds. Each renderer is built in the test from fixed seeds, with no training: a freshly
initialised network under a fixed torch seed renders deterministically.

The tolerances survive the CPU thread count (each test runs with 1 and with 2 threads; the slices came out
the same to every printed digit) but not a real change: a 1% change of one constant in a renderer's
arithmetic moved its slice by 3 to 300 times the tolerance. When a change of the pixels is meant, print the
new slice (as the test cuts it) and paste it here, saying in the commit why the pixels moved.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.face_model import FaceFit, FaceModel
from motion.sequence import POSE_CAMERA, MotionSequence
from renderers.head_box import HeadBox


# Two threads on a machine whose other core is busy can stall every small op at a thread barrier (seconds for
# these tiny networks), so the two-thread run belongs to the full suite, not the quick loop.
@pytest.fixture(params=[1, pytest.param(2, marks=pytest.mark.slow)], ids=["1-thread", "2-threads"])
def threads(request):
    """Run the test with this many torch and OpenCV threads (the slices must not depend on it)."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(request.param)
    cv2.setNumThreads(request.param)
    yield request.param
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def talking_motion(frames: int = 3) -> MotionSequence:
    """A few frames of a jaw opening and a smile while the head turns and nods: every part of a renderer's
    motion path (expression, rotation, translation) moves."""
    expression = np.zeros((frames, len(EXPRESSION_NAMES)), np.float32)
    expression[:, EXPRESSION_INDEX["jaw_open"]] = np.linspace(0.0, 0.8, frames)
    expression[:, EXPRESSION_INDEX["smile_left"]] = np.linspace(0.0, 0.5, frames)
    pose = np.zeros((frames, 6), np.float32)
    pose[:, 0] = np.linspace(0.0, 0.06, frames)  # nod
    pose[:, 1] = np.linspace(0.0, -0.12, frames)  # turn
    pose[:, 3] = np.linspace(0.0, 0.3, frames)  # slide
    return MotionSequence(25.0, expression, pose)


# ------------------------------------------------------------------------------------------------------------
# warp
# ------------------------------------------------------------------------------------------------------------


def warp_renderer():
    """The warp renderer on a 96 x 96 synthetic photo: a fine sinusoidal texture (so any displacement shows
    as a change of value) under the mean face model fitted by hand: frontal, 3 px per model unit (the
    18-unit face spans 54 px), centred a little above the middle."""
    from renderers.warp.renderer import WarpConfig, WarpRenderer

    y, x = np.mgrid[0:96, 0:96].astype(np.float64)
    photo = np.stack(
        [128 + 100 * np.sin(x / 2.7) * np.cos(y / 3.1), 128 + 90 * np.sin((x + y) / 4.3), 60 + y * 1.5], -1
    )
    mean = FaceModel().mean
    fit = FaceFit(
        shape=mean,
        expression=np.zeros(len(EXPRESSION_NAMES), np.float32),
        rotation=np.array([0.02, -0.05, 0.01]),
        translation=np.zeros(3),
        scale=3.0,
        centre=np.array([48.0, 44.0]),
        residual=0.0,
    )
    return WarpRenderer(np.clip(photo, 0, 255).astype(np.uint8), fit, WarpConfig(threads=1))


def test_warp_output_slice(threads):
    frame = list(warp_renderer().render(talking_motion()))[-1]
    assert frame.box == (0, 0, 96, 96)
    # the lower lip and chin: pixels the open jaw drags down (the photo's 3 x 3 there, green channel); the
    # first row is the painted inside of the mouth
    lips = frame.rgb[66:69, 46:49, 1].ravel()
    # a row through the cheek the smile lifts, every 4th pixel (red channel)
    cheek = frame.rgb[58, 52:76:4, 0]
    expected_lips = np.array([108, 104, 66, 125, 140, 156, 152, 172, 190])
    expected_cheek = np.array([203, 130, 77, 80, 175, 207])
    # uint8 pixels: a value at the edge of rounding may flip by one level between platforms
    np.testing.assert_allclose(lips, expected_lips, atol=1, rtol=0)
    np.testing.assert_allclose(cheek, expected_cheek, atol=1, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# nerf
# ------------------------------------------------------------------------------------------------------------


def nerf_renderer():
    """A freshly initialised tiny NeRF (seed 0) around the mean face, seen at 64 x 64 (no occupancy grid:
    dense sampling, 16 samples a ray)."""
    from renderers.nerf.field import FieldConfig
    from renderers.nerf.renderer import NerfModelConfig, NerfRenderConfig, NerfRenderer

    box = HeadBox.from_shape(FaceModel().mean)
    config = NerfModelConfig(
        network=FieldConfig(
            levels=4, log2_table_size=10, base_resolution=8, finest_resolution=64, hidden=32,
            geometry_features=7, attention_hidden=16, implementation="torch",
        ),
        render=NerfRenderConfig(samples=16, device="cpu", occupancy_resolution=0),
        image_size=64,
        focal=90.0,
        box_lo=tuple(float(v) for v in box.lo),
        box_hi=tuple(float(v) for v in box.hi),
        num_frames=2,
    )  # fmt: skip
    torch.manual_seed(0)
    renderer = NerfRenderer(config)
    with torch.no_grad():  # hash tables start near zero; spread them so the field varies over the head
        for grid in renderer.field.encoding.grids:
            grid.tables.normal_(0.0, 1.0)
    return renderer


def nerf_motion() -> MotionSequence:
    """:func:`talking_motion` placed in front of the camera (the NeRF takes camera poses)."""
    motion = talking_motion()
    pose = motion.pose.copy()
    pose[:, 5] -= 60.0
    return MotionSequence(motion.fps, motion.expression, pose, motion.names, pose_kind=POSE_CAMERA)


def test_nerf_output_slice(threads):
    motion = nerf_motion()
    pose, expression = motion.pose[-1], motion.expression[-1]
    rgb, alpha, box = nerf_renderer().render_image(pose[:3], pose[3:], expression, 64)
    # premultiplied red and opacity along the middle row of the head box, every 3rd pixel: the box's edges
    # (short paths through the field, partly transparent) and its inside (colour from the networks)
    row = alpha.shape[0] // 2
    expected_box = (11, 2, 52, 64)
    expected_alpha = np.array([
        0.000000, 0.815724, 0.988558, 0.999644, 0.999917, 0.999935, 0.999929, 0.999925, 0.999932, 0.999942,
        0.999927, 0.999921, 0.999915, 0.929797,
    ])  # fmt: skip
    expected_red = np.array([
        0.000000, 0.403776, 0.489338, 0.494622, 0.494685, 0.494780, 0.494589, 0.494789, 0.494862, 0.494931,
        0.495075, 0.494711, 0.494851, 0.460090,
    ])  # fmt: skip
    assert box == expected_box
    # float32 sums in another order (threads, SIMD width) move the sixth digit at most
    np.testing.assert_allclose(alpha[row, ::3], expected_alpha, atol=1e-5, rtol=0)
    np.testing.assert_allclose(rgb[row, ::3, 0], expected_red, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------------
# diffusion
# ------------------------------------------------------------------------------------------------------------


def diffusion_renderer():
    """A freshly initialised tiny diffusion renderer (seed 0, 16 x 16 paint, 2 DDIM steps) for the mean face
    in a 128 px frame, with a smooth synthetic reference image."""
    from renderers.diffusion.model import DiffusionNetConfig
    from renderers.diffusion.renderer import DiffusionModelConfig, DiffusionRenderConfig, DiffusionRenderer

    config = DiffusionModelConfig(
        network=DiffusionNetConfig(
            sample_size=16, block_out_channels=(16, 32), layers_per_block=1, attention=(False, True),
            mid_attention=False, attention_head_dim=8, norm_num_groups=8,
        ),
        render=DiffusionRenderConfig(steps=2, device="cpu"),
        image_size=128,
        focal=280.0,
        window=(24, 24, 80),
    )  # fmt: skip
    y, x = np.mgrid[0:16, 0:16] / 15.0
    reference = np.stack([x * 2 - 1, y * 2 - 1, x * y - 0.5]).astype(np.float32)  # [3, 16, 16] in [-1, 1]
    torch.manual_seed(0)
    return DiffusionRenderer(config, FaceModel().mean, reference)


def test_diffusion_output_slice(threads):
    frames = list(diffusion_renderer().render(nerf_motion()))
    last = frames[-1]  # painted from the frame before it (the previous-frame input)
    assert last.box == (24, 24, 104, 104) and last.rgb.shape == (16, 16, 3)
    alpha = last.alpha[6:9, 6:9].ravel()
    rgb = last.rgb[6:9, 6:9, 2].ravel()
    expected_alpha = np.array(
        [0.512968, 0.190907, 0.290606, 0.270858, 0.388598, 0.462939, 0.685875, 0.500447, 0.594961]
    )
    expected_rgb = np.array([46, 255, 131, 133, 89, 83, 92, 144, 112])
    np.testing.assert_allclose(alpha, expected_alpha, atol=1e-4, rtol=0)
    np.testing.assert_allclose(rgb, expected_rgb, atol=1, rtol=0)

"""pipeline.metrics: SSIM / PSNR against independent references, mouth opening, LMD, Pearson, face boxes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from motion import topology as tp
from motion.lip_measures import MOUTH_GAP_PAIRS, mouth_opening
from pipeline.metrics import (
    MOUTH_POINTS,
    crop,
    face_box,
    mouth_box,
    mouth_landmark_distance,
    pearson,
    temporal_error,
)
from renderers.image_quality import PSNR_CAP, as_nchw, psnr, ssim

# ------------------------------------------------------------------------------------------------------------
# SSIM
# ------------------------------------------------------------------------------------------------------------


def reference_ssim(
    a: np.ndarray, b: np.ndarray, radius: int = 5, sigma: float = 1.5, data_range=1.0
) -> float:
    """Textbook SSIM of [H, W, C] float64 images with scipy's Gaussian filter, valid region only."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda x: gaussian_filter(x, sigma, truncate=radius / sigma, mode="constant")
    values = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(smap[radius:-radius, radius:-radius])
    return float(np.mean(values))


def test_ssim_of_identical_images_is_one():
    img = torch.rand(2, 3, 32, 40)
    assert abs(float(ssim(img, img)) - 1.0) < 1e-6
    assert torch.allclose(ssim(img, img.clone(), reduce=False), torch.ones(2), atol=1e-6)


def test_ssim_decreases_with_noise():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(gaussian_filter(rng.random((3, 48, 48)), (0, 2, 2))).float()
    noise = torch.from_numpy(rng.standard_normal((3, 48, 48))).float()
    values = [float(ssim(img, img + level * noise)) for level in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert all(later < earlier for earlier, later in itertools.pairwise(values)), values


def test_ssim_matches_an_independent_numpy_implementation():
    rng = np.random.default_rng(1)
    a = rng.random((24, 24, 3))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    expected = reference_ssim(a, b)
    assert 0.1 < expected < 0.95  # a discriminating pair, not a trivial one
    assert float(ssim(a, b)) == pytest.approx(expected, abs=1e-4)  # numpy [H, W, C], float64
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float()
    assert float(ssim(ta, tb)) == pytest.approx(expected, abs=1e-4)  # torch [N, C, H, W], float32
    # data_range scales the constants: uint8-scaled images with data_range=255 give the same value.
    assert float(ssim(a * 255, b * 255, data_range=255.0)) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("size", [5, 16, 32])
def test_kornia_ssim_as_the_nerf_patch_loss_calls_it_agrees(size):
    """The NeRF trainer's mouth-patch loss takes SSIM from kornia (window up to 7, valid positions, no
    epsilon): on premultiplied patches it gives the reference's value, and metrics.ssim's, and the same
    gradient."""
    from kornia.metrics import ssim as kornia_ssim

    rng = np.random.default_rng(5)
    pred = gaussian_filter(rng.random((4, size, size, 3)), (0, 1.5, 1.5, 0))
    target = np.clip(pred + 0.05 * rng.standard_normal(pred.shape), 0, 1)
    alpha = (rng.random((4, size, size, 1)) > 0.2).astype(np.float64)
    pred, target = pred * alpha, target * alpha
    window = min(7, size - (size + 1) % 2)
    pred_t, target_t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() for x in (pred, target))
    pred_t.requires_grad_(True)
    value = kornia_ssim(pred_t, target_t, window, eps=0.0, padding="valid").mean()
    expected = np.mean([reference_ssim(pred[i], target[i], radius=window // 2) for i in range(4)])
    assert value.item() == pytest.approx(expected, abs=1e-5)
    ours_pred = pred_t.detach().clone().requires_grad_(True)
    ours = ssim(ours_pred, target_t, window=window)
    assert value.item() == pytest.approx(ours.item(), abs=1e-5)
    value.backward()
    ours.backward()
    torch.testing.assert_close(pred_t.grad, ours_pred.grad, atol=1e-6, rtol=1e-3)


def test_ssim_of_constant_images_has_the_closed_form():
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    assert float(ssim(a, b)) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-5)


def test_ssim_shrinks_the_window_for_small_images():
    rng = np.random.default_rng(2)
    a = rng.random((8, 6, 1))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    # min side 6 -> odd window 5 -> radius 2
    assert float(ssim(a, b)) == pytest.approx(reference_ssim(a, b, radius=2), abs=1e-6)
    assert float(ssim(a[..., 0], a[..., 0])) == pytest.approx(1.0, abs=1e-6)  # [H, W] grayscale


def test_ssim_per_image_values_and_batch_mean():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.random((3, 2, 20, 20)))
    b = a.clone()
    b[1] += 0.1 * torch.from_numpy(rng.standard_normal((2, 20, 20)))
    b[2] = torch.from_numpy(rng.random((2, 20, 20)))
    per = ssim(a, b, reduce=False)
    assert per.shape == (3,)
    assert per[0] == pytest.approx(1.0, abs=1e-9)
    assert 1.0 > per[1] > per[2]
    for i in range(3):
        assert float(ssim(a[i], b[i])) == pytest.approx(float(per[i]), abs=1e-12)
    assert float(ssim(a, b)) == pytest.approx(float(per.mean()), abs=1e-12)


def test_ssim_is_differentiable():
    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.random((1, 3, 24, 24))).float()
    pred = (target + 0.2 * torch.rand_like(target)).requires_grad_(True)
    loss = 1 - ssim(pred, target)
    loss.backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    # A gradient step raises the SSIM.
    with torch.no_grad():
        stepped = pred - 1.0 * pred.grad / pred.grad.norm()
    assert float(ssim(stepped, target)) > float(ssim(pred.detach(), target))
    # The analytic gradient agrees with finite differences (in both arguments).
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: ssim(p, q), (x, y))


def test_as_nchw_layouts_and_shape_errors():
    hwc = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = as_nchw(hwc)
    assert t.shape == (1, 4, 2, 3) and t.dtype == torch.float32
    assert float(t[0, 1, 1, 2]) == float(hwc[1, 2, 1])
    assert as_nchw(torch.zeros(3, 5, 7)).shape == (1, 3, 5, 7)
    assert as_nchw(torch.zeros(5, 7, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ssim_and_psnr_on_cuda_match_cpu():
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.random((2, 3, 40, 40))).float()
    b = (a + 0.05 * torch.from_numpy(rng.standard_normal((2, 3, 40, 40))).float()).clamp(0, 1)
    gpu = ssim(a.cuda(), b.cuda(), reduce=False)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), ssim(a, b, reduce=False), rtol=1e-5, atol=1e-5)
    assert psnr(a.cuda(), b.cuda()) == pytest.approx(psnr(a, b), abs=1e-4)


# ------------------------------------------------------------------------------------------------------------
# PSNR
# ------------------------------------------------------------------------------------------------------------


def test_psnr_known_values():
    a = torch.rand(2, 3, 16, 16)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, a - 0.01) == pytest.approx(40.0, abs=1e-3)
    img = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(img, img + 10, data_range=255) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-4)
    assert psnr(a, a) == PSNR_CAP == 100.0


def test_masked_psnr_ignores_pixels_outside_the_mask():
    a = torch.rand(1, 3, 16, 16)
    b = a + 0.1
    b[..., :, 8:] = 1 - a[..., :, 8:]  # right half badly wrong
    mask = np.zeros((16, 16), bool)
    mask[:, :8] = True
    assert psnr(a, b, mask=mask) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, b, mask=torch.from_numpy(mask)[None, None]) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, b) < 19.0
    assert math.isnan(psnr(a, b, mask=np.zeros((16, 16))))
    with pytest.raises(ValueError, match="mask"):
        psnr(a, b, mask=np.ones((8, 8)))


# ------------------------------------------------------------------------------------------------------------
# landmarks
# ------------------------------------------------------------------------------------------------------------


def mouth_landmarks(width: float = 60.0, gaps=(12.0, 12.0, 12.0), seed: int = 0) -> np.ndarray:
    """A [478, 3] face: random points, outer lip corners +-width/2 about (200, 300), known inner-lip gaps.

    The inner-lip points of each central pair sit symmetrically about the lip line at its own gap.
    """
    rng = np.random.default_rng(seed)
    lm = np.column_stack([rng.uniform(100, 300, tp.NUM_POINTS), rng.uniform(150, 400, tp.NUM_POINTS)])
    lm = np.column_stack([lm, rng.uniform(-20, 20, tp.NUM_POINTS)])
    cx, cy = 200.0, 300.0
    lm[tp.MOUTH_CORNERS[0], :2] = cx - width / 2, cy
    lm[tp.MOUTH_CORNERS[1], :2] = cx + width / 2, cy
    for (upper, lower), gap, dx in zip(MOUTH_GAP_PAIRS, gaps, (-8.0, 0.0, 8.0), strict=True):
        lm[upper, :2] = cx + dx, cy - gap / 2
        lm[lower, :2] = cx + dx, cy + gap / 2
    return lm


def test_mouth_opening_is_gap_over_width():
    lm = mouth_landmarks(width=60.0, gaps=(9.0, 12.0, 15.0))
    assert float(mouth_opening(lm)) == pytest.approx(12.0 / 60.0, abs=1e-12)
    seq = np.stack([lm, mouth_landmarks(width=50.0, gaps=(0.0, 0.0, 0.0)), mouth_landmarks(40.0, (4, 6, 8))])
    np.testing.assert_allclose(mouth_opening(seq), [0.2, 0.0, 6.0 / 40.0], atol=1e-12)
    assert mouth_opening(seq).shape == (3,)
    assert mouth_opening(seq[..., :2]).shape == (3,)  # 2D landmarks work too


def test_mouth_opening_is_scale_translation_and_rotation_free():
    lm = mouth_landmarks(width=70.0, gaps=(10.0, 14.0, 9.0))
    base = float(mouth_opening(lm))
    angle = 0.3
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = lm.copy()
    moved[:, :2] = 2.7 * lm[:, :2] @ rot.T + np.array([-55.0, 130.0])
    moved[:, 2] *= 2.7
    assert float(mouth_opening(moved)) == pytest.approx(base, rel=1e-12)
    # the z coordinate does not count
    flat = lm.copy()
    flat[:, 2] = 0
    assert float(mouth_opening(flat)) == pytest.approx(base, rel=1e-12)


def test_mouth_opening_of_a_degenerate_frame_is_nan():
    lm = mouth_landmarks()
    lm[tp.MOUTH_CORNERS[1], :2] = lm[tp.MOUTH_CORNERS[0], :2]
    assert math.isnan(float(mouth_opening(lm)))


def _lip_halves() -> tuple[list[int], list[int]]:
    upper = [i for i in tp.LIPS_UPPER_OUTER[1:-1] + tp.LIPS_UPPER_INNER[1:-1]]
    lower = [i for i in tp.LIPS_LOWER_OUTER[1:-1] + tp.LIPS_LOWER_INNER[1:-1]]
    return upper, lower


def test_lmd_zero_for_identical_and_known_for_a_known_deformation():
    real = np.stack([mouth_landmarks(seed=s) for s in range(4)])
    assert len(MOUTH_POINTS) == 40
    assert mouth_landmark_distance(real, real) == 0.0
    assert mouth_landmark_distance(real, real, align=False) == 0.0
    # Open the mouth: every non-corner upper-lip point 3 px up, every lower one 3 px down (centre unchanged).
    upper, lower = _lip_halves()
    assert len(upper) == len(lower) == 18
    pred = real.copy()
    pred[:, upper, 1] -= 3.0
    pred[:, lower, 1] += 3.0
    expected = 36 * 3.0 / 40  # 36 of 40 points moved by 3 px, the 4 corners stayed
    assert mouth_landmark_distance(pred, real) == pytest.approx(expected, abs=1e-12)
    assert mouth_landmark_distance(pred, real, align=False) == pytest.approx(expected, abs=1e-12)
    # Only frame 1 deformed: the mean over 4 frames.
    one = real.copy()
    one[1] = pred[1]
    assert mouth_landmark_distance(one, real) == pytest.approx(expected / 4, abs=1e-12)


def test_lmd_ignores_head_translation_when_aligned():
    real = np.stack([mouth_landmarks(seed=s) for s in range(3)])
    shifted = real.copy()
    shifted[..., :2] += np.array([30.0, -40.0])
    assert mouth_landmark_distance(shifted, real) == pytest.approx(0.0, abs=1e-12)
    assert mouth_landmark_distance(shifted, real, align=False) == pytest.approx(50.0, abs=1e-12)
    # translation plus the known deformation still gives the deformation's distance when aligned
    upper, lower = _lip_halves()
    shifted[:, upper, 1] -= 2.0
    shifted[:, lower, 1] += 2.0
    assert mouth_landmark_distance(shifted, real) == pytest.approx(36 * 2.0 / 40, abs=1e-12)
    # the z coordinate does not count
    deep = real.copy()
    deep[..., 2] += 100.0
    assert mouth_landmark_distance(deep, real, align=False) == 0.0


def test_lmd_skips_untracked_frames():
    real = np.stack([mouth_landmarks(seed=s) for s in range(3)])
    pred = real.copy()
    pred[..., :2] += np.array([3.0, 4.0])
    pred[1, MOUTH_POINTS[0], 0] = np.nan
    assert mouth_landmark_distance(pred, real, align=False) == pytest.approx(5.0, abs=1e-12)
    pred[:, 0, 0] = pred[:, MOUTH_POINTS[0], 0] = np.nan
    assert math.isnan(mouth_landmark_distance(pred, real))


def test_pearson_known_values_and_nan_handling():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert pearson(a, 3 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # A nan on either side drops that pair: the outlier paired with the nan does not count.
    x = np.array([1.0, 2.0, np.nan, 3.0, 4.0, 5.0])
    y = np.array([1.0, 3.0, 100.0, 2.0, 4.0, np.nan])
    assert pearson(x, y) == pytest.approx(0.8)
    assert pearson(y, x) == pytest.approx(0.8)
    assert math.isnan(pearson([1.0, 2.0, np.nan], [1.0, 2.0, 3.0]))  # 2 pairs left
    assert math.isnan(pearson([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]))  # zero variance
    assert math.isnan(pearson([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))


def test_face_box_and_crop():
    lm = np.zeros((tp.NUM_POINTS, 3))
    lm[:, :2] = 150.0  # points off the oval do not count
    oval = np.array(tp.FACE_OVAL)
    lm[oval, 0] = np.linspace(100, 200, len(oval))
    lm[oval, 1] = np.linspace(50, 250, len(oval))[::-1]
    lm[0, :2] = 500.0  # a non-oval point far away
    assert face_box(lm, (640, 480)) == (90, 30, 210, 270)
    assert face_box(lm, 640, margin=0.0) == (100, 50, 200, 250)
    assert face_box(lm, (205, 260)) == (90, 30, 205, 260)  # clipped to the image
    seq = np.stack([lm, lm + np.array([20.0, 0.0, 0.0])])
    assert face_box(seq, 640, margin=0.0) == (100, 50, 220, 250)  # every frame's face
    frac = lm.copy()
    frac[oval, :2] += 0.5
    assert face_box(frac, 640, margin=0.0) == (100, 50, 201, 251)  # grows outward to whole pixels
    img = np.arange(300 * 400 * 3).reshape(300, 400, 3)
    box = face_box(lm, (400, 300))
    assert crop(img, box).shape == (240, 120, 3)
    np.testing.assert_array_equal(crop(img, box), img[30:270, 90:210])
    assert crop(torch.from_numpy(img).permute(2, 0, 1), box).shape == (3, 240, 120)


def test_mouth_box_is_a_square_around_the_lips():
    lm = np.full((tp.NUM_POINTS, 3), 10.0)  # every other point far from the lips
    lips = np.unique(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER)
    lm[lips, 0] = np.linspace(200, 260, len(lips))  # 60 wide
    lm[lips, 1] = np.linspace(300, 320, len(lips))  # 20 high, centre (230, 310)
    assert mouth_box(lm, 512) == (170, 250, 290, 370)
    assert mouth_box(lm, 512, zoom=1.0) == (200, 280, 260, 340)
    assert mouth_box(lm, (280, 512)) == (170, 250, 280, 370)  # clipped to the image
    lm[lips] = np.nan
    with pytest.raises(ValueError, match="lip"):
        mouth_box(lm, 512)


def test_temporal_error_counts_flicker_not_a_steady_error():
    rng = np.random.default_rng(0)
    base = rng.integers(20, 200, (20, 30, 3))
    real = [(base + 2 * t).astype(np.uint8) for t in range(5)]  # a textured face, slowly brightening
    boxes = [(0, 0, 30, 20)] * 5
    assert temporal_error(real, real, boxes) == 0.0
    offset = [np.clip(r.astype(int) + 40, 0, 255).astype(np.uint8) for r in real]
    steady = [np.full_like(r, 128) for r in real]  # wrong, but the same wrong in every frame
    flicker = [np.full_like(r, 128 + 60 * (t % 2)) for t, r in enumerate(real)]
    assert temporal_error(offset, real, boxes) < 0.1  # a constant shift cancels (up to clipping)
    assert temporal_error(steady, real, boxes) < 0.01  # wrong, yet steady: no flicker
    assert temporal_error(flicker, real, boxes) > 0.2
    half = [(0, 0, 15, 20)] * 5  # only the box counts
    flicker_right = [f.copy() for f in steady]
    for t in range(5):
        flicker_right[t][:, 15:] = 255 * (t % 2)
    assert temporal_error(flicker_right, real, half) == temporal_error(steady, real, half)
    assert np.isnan(temporal_error(real[:1], real[:1], boxes[:1]))
    with pytest.raises(ValueError, match="boxes"):
        temporal_error(real, real, boxes[:2])

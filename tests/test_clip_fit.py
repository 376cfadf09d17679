"""The joint clip fit on landmarks projected from known parameters, with tracker noise and failures."""

from __future__ import annotations

import numpy as np
import pytest

from motion.blendshapes import EXPRESSION_INDEX
from motion.camera import project_points, rotation_matrices
from motion.clip_fit import ClipFitConfig, fit_clip, rotation_jitter_deg
from motion.face_model import FaceModel

SIZE = 512

pytestmark = pytest.mark.slow  # the fit of a 200-frame clip takes seconds


@pytest.fixture(scope="module")
def clip():
    """200 frames of a moving, talking head seen by a 2.0-width focal camera, with 1 px landmark noise,
    six frames of garbage landmarks (tracker failure) and four frames without a face."""
    import torch

    rng = np.random.default_rng(0)
    num_frames = 200
    t = np.arange(num_frames) / 25
    shape = FaceModel().mean * np.array([1.04, 0.97, 1.0], np.float32)
    rot = np.stack(
        [0.10 * np.sin(2 * np.pi * 0.3 * t), 0.20 * np.sin(2 * np.pi * 0.17 * t + 1), 0.05 * np.sin(2.5 * t)],
        1,
    )
    focal, depth = 2.0 * SIZE, 60.0
    trans = np.stack([1.0 * np.sin(t), 0.5 * np.cos(0.7 * t), -depth + 2 * np.sin(0.5 * t)], 1)
    expr = np.zeros((num_frames, 14), np.float32)
    expr[:, EXPRESSION_INDEX["jaw_open"]] = 0.8 * np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None)
    expr[:, EXPRESSION_INDEX["smile_left"]] = 0.4 * (t > 4)
    verts = FaceModel(shape).vertices(expr)
    px = project_points(verts, rot, trans, focal, (SIZE, SIZE), numpy=True)
    cam = np.einsum("tij,tnj->tni", rotation_matrices(torch.tensor(rot)).numpy(), verts) + trans[:, None]
    z = -(cam[..., 2] - cam[..., 2].mean(1, keepdims=True)) * focal / depth  # mediapipe-like relative depth
    landmarks = np.concatenate([px + rng.normal(0, 1.0, px.shape), z[..., None]], -1).astype(np.float32)
    valid = np.ones(num_frames, bool)
    valid[100:104] = False
    landmarks[100:104] = 0
    outliers = [40, 41, 42, 150, 151, 152]
    landmarks[outliers, :, :2] += rng.normal(0, 25.0, (len(outliers), landmarks.shape[1], 2))
    return landmarks, valid, rot, expr, focal, outliers


@pytest.fixture(scope="module")
def fitted(clip):
    landmarks, valid, *_ = clip
    return fit_clip(landmarks, valid, (SIZE, SIZE), ClipFitConfig())


def test_pose_is_recovered_and_stable(clip, fitted):
    _, valid, rot, _, _, outliers = clip
    err = np.degrees(np.abs(fitted.rotation - rot))
    assert np.median(err) < 0.5, np.median(err)
    assert err[valid].max() < 2.5, err[valid].max()
    assert err[outliers].max() < 2.5  # garbage landmarks on a frame do not throw its pose
    assert err[100:104].max() < 2.5  # frames without a face are bridged smoothly
    truth_jitter = rotation_jitter_deg(rot, valid)
    assert fitted.stats["rotation_jitter_deg"] < 2 * truth_jitter + 0.02
    assert fitted.stats["rotation_jitter_pnp_deg"] > 3 * fitted.stats["rotation_jitter_deg"]
    assert fitted.weight[outliers].max() < 0.5 and fitted.weight[valid].mean() > 0.9


def test_expression_and_camera_are_recovered(clip, fitted):
    _, valid, _, expr, focal, _ = clip
    jaw = EXPRESSION_INDEX["jaw_open"]
    assert np.corrcoef(fitted.expression[valid, jaw], expr[valid, jaw])[0, 1] > 0.95
    assert np.abs(fitted.expression[valid, jaw] - expr[valid, jaw]).mean() < 0.1
    smile = EXPRESSION_INDEX["smile_left"]
    assert np.abs(fitted.expression[valid, smile] - expr[valid, smile]).mean() < 0.1
    assert abs(fitted.focal / focal - 1) < 0.2
    assert fitted.stats["residual_px"] < 2.5

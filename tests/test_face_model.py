import numpy as np
import pytest

from motion import topology as tp
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.face_model import FaceModel, eye_aperture
from motion.geometry import axis_angle_to_matrix, matrix_to_axis_angle, similarity_align
from motion.tracker import FaceLandmarks


@pytest.fixture(scope="module")
def model():
    return FaceModel()


def coeffs(**values):
    e = np.zeros(len(EXPRESSION_NAMES), np.float32)
    for k, v in values.items():
        e[EXPRESSION_INDEX[k]] = v
    return e


def test_mean_shape_is_symmetric_and_sized(model):
    mean = model.mean
    assert mean.shape == (tp.NUM_POINTS, 3)
    mirrored = mean[model.mirror] * np.array([-1, 1, 1])
    assert np.abs(mirrored - mean).max() < 1e-4
    eyes = np.linalg.norm(mean[tp.LEFT_EYE_CORNERS[0]] - mean[tp.RIGHT_EYE_CORNERS[0]])
    assert eyes == pytest.approx(9.0, rel=1e-3)
    assert mean[tp.FOREHEAD, 1] > mean[tp.NOSE_TIP, 1] > mean[tp.CHIN, 1]  # y up
    assert mean[tp.NOSE_TIP, 2] > mean[tp.LEFT_EYE_CORNERS[0], 2]  # nose toward the viewer
    assert model.triangles.shape[1] == 3 and model.triangles.max() < 468


def test_jaw_opens_lower_lip_only(model):
    rest, opened = model.vertices(coeffs()), model.vertices(coeffs(jaw_open=1.0))
    moved = opened - rest
    assert moved[tp.CHIN, 1] < -1.0  # chin drops over a centimetre
    assert moved[tp.LOWER_LIP_CENTER_INNER, 1] < -1.0
    assert np.abs(moved[tp.UPPER_LIP_CENTER_INNER]).max() < 1e-6
    assert np.abs(moved[list(tp.LEFT_EYE_UPPER + tp.RIGHT_BROW)]).max() < 1e-3
    gap = opened[tp.UPPER_LIP_CENTER_INNER, 1] - opened[tp.LOWER_LIP_CENTER_INNER, 1]
    rest_gap = rest[tp.UPPER_LIP_CENTER_INNER, 1] - rest[tp.LOWER_LIP_CENTER_INNER, 1]
    assert 1.2 < gap - rest_gap < 3.5  # a wide-open vowel: ~2 cm


def test_smiles_mirror_each_other(model):
    left = model.basis[EXPRESSION_INDEX["smile_left"]]
    right = model.basis[EXPRESSION_INDEX["smile_right"]]
    np.testing.assert_allclose(left[model.mirror] * np.array([-1, 1, 1]), right, atol=0.05)
    assert left[tp.MOUTH_CORNERS[1], 1] > 0.3 and left[tp.MOUTH_CORNERS[0], 1] < 0.05


def test_blink_closes_eye_and_lips_shapes_act_on_mouth(model):
    closed = model.vertices(coeffs(blink_left=1.0))
    assert eye_aperture(closed, tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_EYE_CORNERS) < 0.03
    assert eye_aperture(closed, tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_EYE_CORNERS) > 0.15
    wide = model.vertices(coeffs(mouth_wide=1.0))
    pucker = model.vertices(coeffs(pucker=1.0))
    width = lambda v: v[tp.MOUTH_CORNERS[1], 0] - v[tp.MOUTH_CORNERS[0], 0]
    assert width(wide) > width(model.mean) + 0.6 > width(pucker) + 0.6
    assert pucker[tp.UPPER_LIP_CENTER_INNER, 2] > model.mean[tp.UPPER_LIP_CENTER_INNER, 2] + 0.3


def test_rotation_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.normal(size=3) * 0.8
        np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(v)), v, atol=1e-9)
    pts = rng.normal(size=(30, 3))
    r = axis_angle_to_matrix(np.array([0.1, -0.3, 0.2]))
    s, r_est, t = similarity_align(pts, 2.5 * pts @ r.T + [1, 2, 3])
    assert s == pytest.approx(2.5) and np.allclose(r_est, r) and np.allclose(t, [1, 2, 3])


def synthetic_landmarks(model, rotation, expression, scale=12.0, centre=(256.0, 240.0), with_depth=True):
    """Project the model as the tracker would report it (pixels, y down, z toward viewer negative)."""
    verts = model.vertices(expression, np.concatenate([rotation, [0, 0, 0]]))
    pts = np.empty_like(verts)
    pts[:, 0] = centre[0] + scale * verts[:, 0]
    pts[:, 1] = centre[1] - scale * verts[:, 1]
    pts[:, 2] = -scale * verts[:, 2]
    if not with_depth:
        idx = np.array(tp.IBUG68_TO_MESH)
        sub = pts[idx].copy()
        sub[:, 2] = 0
        return FaceLandmarks(sub, idx, (512, 512))
    return FaceLandmarks(pts.astype(np.float32), np.arange(tp.NUM_POINTS), (512, 512))


def test_fit_recovers_pose_scale_and_mouth_opening(model):
    rotation = np.array([0.08, -0.15, 0.05])
    lm = synthetic_landmarks(model, rotation, coeffs(jaw_open=0.4))
    fit = model.fit(lm)
    assert np.abs(fit.rotation - rotation).max() < 0.03
    assert fit.scale == pytest.approx(12.0, rel=0.03)
    assert fit.expression[EXPRESSION_INDEX["jaw_open"]] == pytest.approx(0.4, abs=0.1)
    assert fit.residual < 1.0
    # The neutral identity has the mouth closed again.
    rest_gap = model.mean[tp.UPPER_LIP_CENTER_INNER, 1] - model.mean[tp.LOWER_LIP_CENTER_INNER, 1]
    fit_gap = fit.shape[tp.UPPER_LIP_CENTER_INNER, 1] - fit.shape[tp.LOWER_LIP_CENTER_INNER, 1]
    assert fit_gap == pytest.approx(rest_gap, abs=0.25)


def test_fit_from_68_points_without_depth(model):
    rotation = np.array([0.0, 0.2, 0.0])
    fit = model.fit(
        synthetic_landmarks(model, rotation, coeffs(jaw_open=0.5), with_depth=False), shape=model.mean
    )
    assert np.abs(fit.rotation - rotation).max() < 0.05
    assert fit.expression[EXPRESSION_INDEX["jaw_open"]] == pytest.approx(0.5, abs=0.15)
    assert fit.residual < 1.5


def test_tracker_finds_the_portrait(portrait, portrait_fit):
    from motion.tracker import MediapipeTracker

    faces = MediapipeTracker().detect(portrait)
    assert len(faces) == 1 and faces[0].points.shape == (478, 3)
    assert portrait_fit.residual < 2.0
    assert np.abs(portrait_fit.rotation).max() < 0.4  # a frontal portrait


def test_face_alignment_backend_names_missing_weights(tmp_path, monkeypatch):
    from common.errors import MissingWeightsError
    from motion.tracker import FaceAlignmentTracker

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        FaceAlignmentTracker()
    msg = err.value.message
    assert "2DFAN4-cd938726ad.zip" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "--tracker mediapipe" in msg

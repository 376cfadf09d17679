"""Face-model conditioning images: layout, rasterisation against a z-buffer, geometry of the channels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from motion import topology as tp
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.camera import project_points
from motion.face_model import FaceModel
from renderers.diffusion.conditioning import (
    CHANNEL_INDEX,
    CHANNELS,
    FaceConditioner,
    _mesh,
    canonical_coordinates,
)

SIZE = 512
FOCAL = 1100.0
DEPTH = 78.0  # the 18-unit mean face spans about half of the 512 px frame
ZERO = np.zeros(3)
TRANS = np.array([0.0, 0.0, -DEPTH])
YAW = np.array([0.0, 0.5, 0.0])  # about 29 degrees: the subject's left (+x) turns away


def coeffs(**values: float) -> np.ndarray:
    e = np.zeros(len(EXPRESSION_NAMES), np.float32)
    for k, v in values.items():
        e[EXPRESSION_INDEX[k]] = v
    return e


@pytest.fixture(scope="module")
def mean() -> np.ndarray:
    return FaceModel().mean


@pytest.fixture(scope="module")
def cond(mean) -> FaceConditioner:
    return FaceConditioner(mean, FOCAL, SIZE)


def channel(img: np.ndarray, name: str) -> np.ndarray:
    return img[CHANNEL_INDEX[name]]


def pixels(cond: FaceConditioner, expression, rotation, size: int = SIZE) -> np.ndarray:
    """Projected model vertices [478, 2] in a ``size`` image."""
    return cond.project(cond.camera_vertices(expression, rotation, TRANS), size)[: tp.NUM_POINTS]


def test_layout_ranges_and_background(cond):
    img = cond.render(coeffs(jaw_open=0.6), YAW, TRANS, 256)
    assert img.shape == (len(CHANNELS), 256, 256) and img.dtype == np.float32
    cover = channel(img, "coverage") > 0
    assert 0.1 < cover.mean() < 0.5
    assert (img[:, ~cover] == 0).all()  # background 0 in every channel
    assert img[:3].min() >= -1 and img[:3].max() <= 1
    assert img[3:].min() >= 0 and img[3:].max() <= 1
    regions = sum(channel(img, n) for n in ("skin", "lips", "mouth", "eyes", "brows"))
    np.testing.assert_array_equal(regions, channel(img, "coverage"))  # one region per covered pixel
    assert (channel(img, "irises") <= channel(img, "eyes")).all()
    assert channel(img, "irises").sum() > 0


def test_mesh_is_consistently_wound_with_the_openings_capped():
    mesh = _mesh()
    tris = mesh.triangles
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # no edge runs the same way twice
    undirected, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    border = np.unique(undirected[counts == 1])
    np.testing.assert_array_equal(border, np.sort(tp.FACE_OVAL))  # only the face outline stays open
    assert (counts <= 2).all() and (mesh.neighbours >= 0).sum() == 2 * (counts == 2).sum()


def test_projection_matches_clip_fit(cond, mean):
    e, rot, trans = (
        coeffs(jaw_open=0.4, smile_left=0.5),
        np.array([0.1, -0.3, 0.05]),
        np.array([1.0, -2.0, -70]),
    )
    ours = cond.project(cond.camera_vertices(e, rot, trans), SIZE)[: tp.NUM_POINTS]
    verts = FaceModel(mean).vertices(e[None])
    ref = project_points(verts, rot[None], trans[None], FOCAL, (SIZE, SIZE), numpy=True)[0]
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_coverage_lies_inside_the_landmark_hull(cond):
    for rot in (ZERO, YAW):
        img = cond.render(coeffs(), rot, TRANS, SIZE)
        cover = channel(img, "coverage") > 0
        hull = cv2.convexHull(pixels(cond, coeffs(), rot).astype(np.float32))[:, 0]
        inside = np.zeros((SIZE, SIZE), np.uint8)
        cv2.fillConvexPoly(inside, np.round((hull - 0.5) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)) > 0  # edge pixels count as drawn
        assert cover.sum() > 0.2 * SIZE * SIZE / 4
        assert not (cover & ~inside).any()
        assert cover.sum() > 0.9 * inside.sum()


def sample(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Channel values at the covered pixel nearest to the point ``uv`` (within 2 px)."""
    cover = channel(img, "coverage") > 0
    ys, xs = np.mgrid[0 : img.shape[1], 0 : img.shape[2]]
    d = np.where(cover, (xs + 0.5 - uv[0]) ** 2 + (ys + 0.5 - uv[1]) ** 2, np.inf)
    y, x = np.unravel_index(np.argmin(d), d.shape)
    assert d[y, x] <= 4.0
    return img[:, y, x]


@pytest.mark.parametrize("rotation", [ZERO, YAW], ids=["frontal", "yaw"])
def test_canonical_coordinates_at_vertices(mean, rotation):
    # An identity that differs from the mean still reads the mean face's coordinates at its vertices.
    cond = FaceConditioner(mean * np.array([1.06, 0.95, 1.0], np.float32), FOCAL, SIZE)
    img = cond.render(coeffs(), rotation, TRANS, SIZE)
    px = pixels(cond, coeffs(), rotation)
    canon = canonical_coordinates()
    lo, hi = mean[:468].min(0), mean[:468].max(0)
    np.testing.assert_allclose(canon[: tp.NUM_POINTS], 2 * (mean - lo) / (hi - lo) - 1, atol=1e-5)
    points = [tp.NOSE_TIP, tp.CHIN, *tp.RIGHT_EYE_CORNERS, *tp.LEFT_EYE_CORNERS, tp.MOUTH_CORNERS[0]]
    if rotation is YAW:  # the far eye's inner corner hides behind the nose; the chin is a silhouette
        points = [tp.NOSE_TIP, *tp.RIGHT_EYE_CORNERS, tp.LEFT_EYE_CORNERS[0], tp.MOUTH_CORNERS[0]]
    for v in points:
        np.testing.assert_allclose(sample(img, px[v])[:3], canon[v], atol=0.04, err_msg=f"vertex {v}")


def test_yawed_head_shows_the_turned_side_smaller(cond):
    def sides(rot):
        img = cond.render(coeffs(), rot, TRANS, SIZE)
        cover = channel(img, "coverage") > 0
        x = channel(img, "canon_x")
        return (cover & (x > 0)).sum(), (cover & (x < 0)).sum()

    left, right = sides(ZERO)
    assert abs(left - right) < 0.03 * (left + right)  # the mean face is symmetric
    left, right = sides(YAW)
    assert left < 0.7 * right  # the subject's left turned away
    img = cond.render(coeffs(), YAW, TRANS, SIZE)
    nose_u = pixels(cond, coeffs(), YAW)[tp.NOSE_TIP, 0]
    cols = np.flatnonzero(channel(img, "coverage").any(0))
    assert cols.max() + 1 - nose_u < 0.6 * (nose_u - cols.min())  # the image's right shrinks


def test_back_faces_are_culled(cond):
    # Turned away from the camera, the face mask shows only its inside: nothing is drawn.
    img = cond.render(coeffs(jaw_open=0.5), np.array([0.0, np.pi, 0.0]), TRANS, 128)
    assert not img.any()


def test_mouth_interior_closed_and_open(cond):
    pressed = cond.render(coeffs(lips_together=1.0), ZERO, TRANS, SIZE)
    rest = cond.render(coeffs(), ZERO, TRANS, SIZE)
    opened = cond.render(coeffs(jaw_open=1.0), ZERO, TRANS, SIZE)
    mouth = lambda img: channel(img, "mouth") > 0
    assert mouth(pressed).sum() == 0
    assert channel(pressed, "lips").sum() > 500
    # The model's neutral lips rest slightly apart: a sliver, a small fraction of a wide-open mouth.
    assert mouth(rest).sum() < 0.15 * mouth(opened).sum()
    assert mouth(opened).sum() > 1500
    px = pixels(cond, coeffs(jaw_open=1.0), ZERO)
    ys, xs = np.nonzero(mouth(opened))
    assert px[tp.UPPER_LIP_CENTER_INNER, 1] < ys.mean() + 0.5 < px[tp.LOWER_LIP_CENTER_INNER, 1]
    assert (
        px[tp.INNER_MOUTH_CORNERS[0], 0] < xs.min() + 0.5
        and xs.max() + 0.5 < px[tp.INNER_MOUTH_CORNERS[1], 0]
    )
    lips = (channel(opened, "lips") > 0).astype(np.uint8)
    ring = cv2.dilate(mouth(opened).astype(np.uint8), np.ones((3, 3), np.uint8)) - mouth(opened)
    assert (lips[ring > 0]).mean() > 0.9  # the interior is surrounded by lips


def test_supersampled_masks_follow_a_thin_opening_smoothly(mean):
    from renderers.diffusion.conditioning import ConditioningConfig

    soft = FaceConditioner(mean, FOCAL, SIZE, ConditioningConfig(supersample=4))
    small = 64  # the preview network's size: a nearly closed mouth is under a pixel high here
    openings = [0.0, 0.03, 0.06, 0.09, 0.12, 0.15]
    area = [channel(soft.render(coeffs(jaw_open=j), ZERO, TRANS, small), "mouth").sum() for j in openings]
    assert np.all(np.diff(area) > 0), area  # every step of the jaw shows
    img = soft.render(coeffs(jaw_open=0.06), ZERO, TRANS, small)
    mouth = channel(img, "mouth")
    assert 0 < mouth.max() < 1  # a thin opening is a faint line, not whole pixels
    assert ((mouth > 0) & (mouth < 1)).sum() > 0
    # each pixel is the mean of a 4 x 4 block of a one-sample render at 4x the side
    fine = FaceConditioner(mean, FOCAL, SIZE).render(coeffs(jaw_open=0.06), ZERO, TRANS, small * 4)
    np.testing.assert_allclose(img, fine.reshape(len(CHANNELS), small, 4, small, 4).mean((2, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="supersample"):
        ConditioningConfig(supersample=0)


def test_blink_hides_the_eye(cond):
    img = cond.render(coeffs(blink_left=1.0), ZERO, TRANS, SIZE)
    eyes = channel(img, "eyes") > 0
    mid = SIZE // 2
    assert eyes[:, :mid].sum() > 200  # the subject's right eye (image left) stays open
    irises = channel(img, "irises")
    assert eyes[:, mid:].sum() < 0.05 * eyes[:, :mid].sum()  # the blink shape leaves 5% of the opening
    assert irises[:, mid:].sum() < 0.05 * irises[:, :mid].sum()


def test_depth_channel_order(cond):
    right_cheek, left_cheek, right_side = 205, 425, 93
    img = cond.render(coeffs(), ZERO, TRANS, SIZE)
    px = pixels(cond, coeffs(), ZERO)
    depth = lambda v: sample(img, px[v])[CHANNEL_INDEX["depth"]]
    assert depth(tp.NOSE_TIP) > 0.95
    assert depth(tp.NOSE_TIP) > depth(right_cheek) + 0.2
    assert depth(right_cheek) == pytest.approx(depth(left_cheek), abs=0.01)
    assert depth(right_cheek) > depth(right_side) + 0.2
    assert depth(tp.NOSE_BRIDGE) > depth(tp.LEFT_EYE_CORNERS[0])
    img = cond.render(coeffs(), YAW, TRANS, SIZE)  # the subject's right turns toward the camera
    px = pixels(cond, coeffs(), YAW)
    assert depth(tp.NOSE_TIP) > depth(right_cheek) > depth(left_cheek) + 0.2


def test_batch_equals_single_renders(cond):
    rng = np.random.default_rng(0)
    expr = np.clip(rng.normal(0.2, 0.3, (3, len(EXPRESSION_NAMES))), 0, 1).astype(np.float32)
    rot = rng.normal(0, 0.15, (3, 3))
    trans = TRANS + rng.normal(0, 2, (3, 3))
    batch = cond.render_batch(expr, rot, trans, 128)
    assert batch.shape == (3, len(CHANNELS), 128, 128)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], cond.render(expr[i], rot[i], trans[i], 128))


def test_sizes_agree(cond):
    big = cond.render(coeffs(jaw_open=0.5), YAW, TRANS, 256)
    small = cond.render(coeffs(jaw_open=0.5), YAW, TRANS, 128)
    shrunk = big.reshape(len(CHANNELS), 128, 2, 128, 2).mean((2, 4))
    cover = channel(shrunk, "coverage")
    assert abs(cover.sum() - channel(small, "coverage").sum()) < 0.02 * cover.sum()


def reference_raster(cond: FaceConditioner, expression, rotation, size: int) -> np.ndarray:
    """Per-pixel z-buffer over all front-facing triangles with exact pixel-centre tests: canon [3, S, S]
    and a mask of pixels strictly inside their winning triangle (away from edges)."""
    mesh = _mesh()
    cam = cond.camera_vertices(expression, rotation, TRANS)
    uv, depth = cond.project(cam, size), -cam[:, 2]
    zbuf = np.full((size, size), np.inf)
    canon = np.zeros((3, size, size))
    strict = np.zeros((size, size), bool)
    for k, tri in enumerate(mesh.triangles):
        a, b, c = uv[tri]
        area = (b - a)[0] * (c - a)[1] - (b - a)[1] * (c - a)[0]
        if area >= -1e-9:
            continue
        x0, y0 = np.floor(np.minimum(np.minimum(a, b), c)).astype(int)
        x1, y1 = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
        l1 = ((xs - a[0]) * (c - a)[1] - (ys - a[1]) * (c - a)[0]) / area
        l2 = ((b - a)[0] * (ys - a[1]) - (b - a)[1] * (xs - a[0])) / area
        bary = np.stack([1 - l1 - l2, l1, l2])
        inside = (bary >= 0).all(0)
        w = bary / depth[tri][:, None, None]
        z = 1 / w.sum(0)
        # Openings lie behind the face that borders them (painted first).
        zc = z + (1e3 if mesh.cap[k] else 0.0)
        win = inside & (zc < zbuf[y0:y1, x0:x1])
        zbuf[y0:y1, x0:x1][win] = zc[win]
        vals = np.einsum("kyx,kc->cyx", w / w.sum(0), mesh.canonical[tri])
        canon[:, y0:y1, x0:x1][:, win] = vals[:, win]
        strict[y0:y1, x0:x1][win] = (bary > 0.05).all(0)[win]
    # Leave out pixels next to an occlusion edge (a depth jump), where painting bleeds by a pixel.
    z = np.where(np.isfinite(zbuf), zbuf, 1e4).astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    strict &= cv2.dilate(z, kernel) - cv2.erode(z, kernel) < 1.0
    return canon, strict


@pytest.mark.parametrize(
    "rotation", [ZERO, YAW, np.array([0.3, -0.7, 0.1])], ids=["frontal", "yaw", "turned"]
)
def test_rasterisation_matches_a_z_buffer(cond, rotation):
    size = 160
    e = coeffs(jaw_open=0.7, smile_left=0.4)
    img = cond.render(e, rotation, TRANS, size)
    canon, strict = reference_raster(cond, e, rotation, size)
    assert strict.sum() > 1000
    cover = channel(img, "coverage") > 0
    assert cover[strict].all()
    err = np.abs(img[:3] - canon).max(0)[strict]
    assert (err < 1e-3).mean() > 0.995  # the painter's order agrees with the z-buffer nearly everywhere


def test_mouth_box(cond):
    closed = cond.mouth_box(coeffs(), ZERO, TRANS, SIZE)
    opened = cond.mouth_box(coeffs(jaw_open=1.0), YAW, TRANS, SIZE)
    lips = list(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER)
    for box, e, rot in ((closed, coeffs(), ZERO), (opened, coeffs(jaw_open=1.0), YAW)):
        x0, y0, x1, y1 = box
        px = pixels(cond, e, rot)[lips]
        assert 0 <= x0 < px[:, 0].min() and px[:, 0].max() < x1 <= SIZE
        assert 0 <= y0 < px[:, 1].min() and px[:, 1].max() < y1 <= SIZE
        assert x1 - x0 < SIZE / 3
    assert closed[2] - closed[0] == closed[3] - closed[1]  # square away from the image border
    assert opened[3] > closed[3]  # the jaw drops
    expr = np.stack([coeffs(), coeffs(jaw_open=1.0)])
    batch = cond.mouth_box(expr, np.stack([ZERO, YAW]), np.stack([TRANS] * 2), SIZE)
    np.testing.assert_array_equal(batch, np.stack([closed, opened]))


@pytest.mark.slow
def test_workspace_conditioning_lands_on_the_tracked_face(prepared):
    """On a prepared workspace (synthetic footage of a real portrait), the conditioning drawn from the
    clip fit lies on the face the tracker saw."""
    from motion.clip_fit import fit_points

    fit = prepared.fit()
    cond = FaceConditioner.from_fit(fit)
    size = int(fit.image_size[1])
    frames = np.flatnonzero(fit.valid)
    frames = frames[np.linspace(0, len(frames) - 1, 12).astype(int)]
    fitted = fit_points()
    for i in frames:
        e, r, t = fit.expression[i], fit.rotation[i], fit.translation[i]
        px = cond.project(cond.camera_vertices(e, r, t), size)[: tp.NUM_POINTS]
        landmarks = fit.landmarks[i, :, :2]
        # The conditioner's camera is the clip fit's: its vertices miss the landmarks the fit used by the
        # fit's own per-frame residual (an RMS over those points, about 1 px here), up to the fit's float32
        # arithmetic (measured 0.009 px at most over the clip; a focal 1% off moves it by tenths of a pixel).
        rms = np.sqrt(((px[fitted] - landmarks[fitted]) ** 2).sum(-1).mean())
        assert rms == pytest.approx(float(fit.residual[i]), abs=0.02), f"frame {i}"
        hull = cv2.convexHull(landmarks.astype(np.float32))[:, 0]
        inside = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(inside, np.round((hull - 0.5) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        cover = channel(cond.render(e, r, t, size), "coverage") > 0
        iou = (cover & (inside > 0)).sum() / (cover | (inside > 0)).sum()
        # The face here is about 50 px in radius: an outline off by the fit's 1-1.6 px residual changes the
        # area by 4-6%. Measured 0.94-0.97.
        assert iou > 0.9, f"frame {i}: IoU {iou:.3f}"


def test_a_window_renders_that_part_of_the_frame():
    from motion.face_model import FaceModel

    shape = FaceModel().mean
    conditioner = FaceConditioner(shape, 1100.0, 512)
    expression = np.zeros(len(EXPRESSION_NAMES), np.float32)
    rotation, translation = np.zeros(3, np.float32), np.array([0.0, 0.0, -60.0], np.float32)
    full = conditioner.render(expression, rotation, translation, size=512)
    part = conditioner.cropped((128, 96, 256)).render(expression, rotation, translation, size=256)
    assert part[CHANNEL_INDEX["coverage"]].sum() > 1000  # the face is in the window
    np.testing.assert_allclose(part, full[:, 96:352, 128:384], atol=1e-4)

"""The face model: a 3DMM on the tracker's 478-point topology with named, geometry-built blendshapes.

Model frame: x toward the image's right for a frontal face (the subject's left), y up, z toward the viewer;
units are about centimetres (9 units between the outer eye corners). The mean shape ships in
``motion/data/face_model.npz`` (built from real faces by :mod:`motion.build_face_model`); the expression
basis is built from a face's own geometry (jaw pivot, lip lines, eyelids, brows), so no gated data is needed
and a fitted person gets blendshapes that fit their own proportions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from motion import topology as tp
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.geometry import axis_angle_to_matrix, matrix_to_axis_angle, similarity_align, smoothstep

DATA_FILE = Path(__file__).parent / "data" / "face_model.npz"

# Vertices that stay put under expressions: the pose fit leans on them.
RIGID_POINTS = (
    tp.NOSE_BRIDGE, 6, 197, 195, 5, 4, tp.NOSE_TIP, 33, 133, 263, 362, 127, 356, 234, 454, 10, 151, 9, 8,
)  # fmt: skip


@lru_cache(maxsize=1)
def _load_data() -> dict[str, np.ndarray]:
    with np.load(DATA_FILE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _interp_line(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    order = np.argsort(xs)
    return np.interp(x, xs[order], ys[order])


def build_expression_basis(shape: np.ndarray) -> np.ndarray:
    """Named blendshapes for a neutral ``shape`` [478, 3]: displacements [E, 478, 3] in model units.

    Each shape is the displacement at weight 1. Jaw opening rotates the lower face about a pivot in front
    of the ears; lip shapes act on the lips with a smooth fall-off into the cheeks; blinks bring the upper
    lid down to the lower one; brows slide up the forehead.
    """
    v = np.asarray(shape, np.float64)
    x, y = v[:, 0], v[:, 1]
    unit = np.linalg.norm(v[tp.LEFT_EYE_CORNERS[0]] - v[tp.RIGHT_EYE_CORNERS[0]]) / 9.0
    basis = np.zeros((len(EXPRESSION_NAMES), len(v), 3))

    def put(name: str, disp: np.ndarray) -> None:
        basis[EXPRESSION_INDEX[name]] = disp

    upper_in, lower_in = np.array(tp.LIPS_UPPER_INNER), np.array(tp.LIPS_LOWER_INNER)
    upper_out, lower_out = np.array(tp.LIPS_UPPER_OUTER), np.array(tp.LIPS_LOWER_OUTER)
    corner_r, corner_l = v[tp.MOUTH_CORNERS[0]], v[tp.MOUTH_CORNERS[1]]
    mouth_c = (v[tp.UPPER_LIP_CENTER_INNER] + v[tp.LOWER_LIP_CENTER_INNER]) / 2
    half_w = (corner_l[0] - corner_r[0]) / 2
    # Lip midline y at every x (flat beyond the corners).
    mid_x = (v[upper_in, 0] + v[lower_in, 0]) / 2
    mid_y = (v[upper_in, 1] + v[lower_in, 1]) / 2
    line_y = _interp_line(mid_x, mid_y, x)
    below = line_y - y  # > 0 under the lip line
    lateral = np.maximum(0.0, np.abs(x - mouth_c[0]) - half_w)

    # Jaw: everything below the lip line, hard edge between the lips, soft into the cheeks.
    band = 0.3 * unit + 0.9 * lateral
    jaw_w = smoothstep(0.5 + below / band)
    jaw_w[upper_in] = jaw_w[upper_out] = 0.0
    jaw_w[lower_in] = jaw_w[lower_out] = 1.0
    for c in (*tp.MOUTH_CORNERS, *tp.INNER_MOUTH_CORNERS):
        jaw_w[c] = 0.45
    jaw_w[list(tp.RIGHT_IRIS + tp.LEFT_IRIS)] = 0.0
    pivot = np.array([0.0, v[tp.NOSE_TIP, 1] + 0.8 * unit, mouth_c[2] - 8.5 * unit])
    rot = axis_angle_to_matrix(np.array([0.32, 0.0, 0.0]))  # about 18 degrees: a wide-open vowel
    jaw_disp = ((v - pivot) @ rot.T + pivot - v) * jaw_w[:, None]
    put("jaw_open", jaw_disp)

    # Lip regions: how much of a vertex belongs to the upper / lower lip, fading out over ~1 unit.
    def region(ids: np.ndarray, radius: float) -> np.ndarray:
        d = np.sqrt(((v[:, None, :2] - v[None, ids, :2]) ** 2).sum(-1)).min(1)
        return np.exp(-0.5 * (d / radius) ** 2)

    lips = np.concatenate([upper_in, lower_in, upper_out, lower_out])
    mouth_f = region(lips, 1.1 * unit)  # mouth surroundings
    lip_f = region(lips, 0.35 * unit)  # the lips themselves
    upper_f = lip_f * (below < 0)
    lower_f = lip_f * (below >= 0)
    upper_f[upper_in] = upper_f[upper_out] = 1.0
    lower_f[lower_in] = lower_f[lower_out] = 1.0
    # 1 at the centre of the mouth, 0 at and beyond the corners.
    centre_profile = np.cos(np.clip((x - mouth_c[0]) / half_w, -1, 1) * np.pi / 2)
    side = np.clip((x - mouth_c[0]) / half_w, -1.3, 1.3)  # -1 right corner, +1 left corner
    e = np.zeros_like(v)

    lips_together = np.zeros_like(v)
    lips_together -= 0.3 * jaw_disp * lower_f[:, None]
    lips_together[:, 1] -= 0.12 * unit * upper_f * centre_profile
    lips_together[:, 2] -= 0.1 * unit * lip_f
    put("lips_together", lips_together)

    wide = e.copy()
    wide[:, 0] = 0.55 * unit * side * mouth_f
    wide[:, 1] = -0.12 * (y - mouth_c[1]) * lip_f
    wide[:, 2] = -0.2 * unit * np.abs(side) * mouth_f
    put("mouth_wide", wide)

    # Rounded lips push forward and turn out: seen from the front they grow fuller (the outer lip lines move
    # away from the lip line) while the corners come in.
    fuller = (y - line_y) * lip_f * np.maximum(centre_profile, 0.3)
    # The parting between the inner lips in the neutral face, at every x (0 beyond the corners).
    parting = np.maximum(_interp_line(v[upper_in, 0], v[upper_in, 1] - v[lower_in, 1], x), 0.0)
    parting *= np.abs(x - mouth_c[0]) < half_w

    pucker = e.copy()
    pucker[:, 0] = -0.6 * unit * side * mouth_f
    pucker[:, 1] = 0.15 * fuller
    # the inner lips close in, leaving a small round hole in the middle
    hole = 0.15 * unit * centre_profile**2
    close = 0.5 * np.maximum(parting - hole, 0.0)
    pucker[upper_in, 1] -= close[upper_in]
    pucker[lower_in, 1] += close[lower_in]
    pucker[:, 2] = 0.7 * unit * mouth_f * np.maximum(centre_profile, 0.4)
    put("pucker", pucker)

    funnel = e.copy()
    funnel[:, 0] = -0.5 * unit * side * mouth_f
    # a round opening: the lips part in the middle of the narrowed mouth and stay together near its corners
    round_profile = np.clip(1 - ((x - mouth_c[0]) / (0.75 * half_w)) ** 2, 0, 1)
    funnel[:, 1] = 0.32 * unit * round_profile * (upper_f - lower_f) + 0.1 * fuller
    funnel[:, 2] = 0.45 * unit * mouth_f
    put("funnel", funnel)

    for name, corner, sign in (("smile_left", corner_l, 1.0), ("smile_right", corner_r, -1.0)):
        d2 = ((v - corner) ** 2).sum(1)
        g = np.exp(-0.5 * d2 / (1.3 * unit) ** 2)
        cheek = np.exp(
            -0.5 * ((x - corner[0] * 0.9) ** 2 + (y - (corner[1] + 2.2 * unit)) ** 2) / (1.2 * unit) ** 2
        )
        disp = e.copy()
        disp[:, 0] = sign * 0.35 * unit * g
        disp[:, 1] = 0.55 * unit * g + 0.25 * unit * cheek
        disp[:, 2] = -0.2 * unit * g + 0.1 * unit * cheek
        put(name, disp)

    up = e.copy()
    up[:, 1] = 0.35 * unit * upper_f * np.maximum(centre_profile, 0.2)
    put("upper_lip_up", up)

    down = e.copy()
    down[:, 1] = -0.35 * unit * lower_f * np.maximum(centre_profile, 0.2)
    put("lower_lip_down", down)

    # The lower lip rolls in under the upper teeth: it rises, and its outer line rises further, so less of
    # it shows.
    lower_line = _interp_line(v[lower_in, 0], v[lower_in, 1], x)
    lower_thick = np.maximum(lower_line - _interp_line(v[lower_out, 0], v[lower_out, 1], x), 0.1 * unit)
    rolled = np.clip((lower_line - y) / lower_thick, 0, 1)  # 0 on the inner lip line, 1 on the outer
    tuck = e.copy()
    tuck[:, 1] = unit * lower_f * np.maximum(centre_profile, 0.3) * (0.16 + 0.26 * rolled)
    tuck[:, 2] = -0.35 * unit * lower_f
    put("lower_lip_in", tuck)

    # Blinks: the opening between the lids collapses onto the lower lid; lid skin above follows.
    for name, upper, lower, iris, brow in (
        ("blink_left", tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_IRIS, tp.LEFT_BROW),
        ("blink_right", tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_IRIS, tp.RIGHT_BROW),
    ):
        up_i, lo_i = np.array(upper), np.array(lower)
        y_up = _interp_line(v[up_i, 0], v[up_i, 1], x)
        y_lo = _interp_line(v[lo_i, 0], v[lo_i, 1], x)
        x0, x1 = v[up_i, 0].min(), v[up_i, 0].max()
        inside_x = smoothstep(1 - np.maximum(0, np.maximum(x0 - x, x - x1)) / (0.6 * unit))
        brow_y = v[list(brow), 1].mean()
        gap = np.maximum(y_up - y_lo, 0)
        between = (y <= y_up + 1e-6) & (y >= y_lo - 0.05 * unit)
        above = y > y_up
        fall = np.clip(1 - (y - y_up) / np.maximum(brow_y - y_up, 1e-3), 0, 1) ** 1.5
        dy = np.where(between, -(y - y_lo), 0.0) + np.where(above, -gap * fall, 0.0)
        dy *= 0.95 * inside_x
        dy[list(iris)] = -(v[list(iris), 1] - y_lo[list(iris)]) * 0.95
        disp = e.copy()
        disp[:, 1] = dy
        put(name, disp)

    brow_ids = np.array(tp.LEFT_BROW + tp.RIGHT_BROW)
    brow_y = v[brow_ids, 1].mean()
    eye_top = v[list(tp.LEFT_EYE_UPPER + tp.RIGHT_EYE_UPPER), 1].max()
    top = v[:, 1].max()
    rise = np.where(
        y >= brow_y,
        1 - 0.6 * (y - brow_y) / max(top - brow_y, 1e-3),
        (y - eye_top) / max(brow_y - eye_top, 1e-3),
    )
    rise = np.clip(rise, 0, 1) * (np.abs(x) < 6.5 * unit)
    brows = e.copy()
    brows[:, 1] = 0.5 * unit * rise
    put("brow_up", brows)

    inner = e.copy()
    for ids in (tp.LEFT_BROW_INNER, tp.RIGHT_BROW_INNER):
        c = v[list(ids)].mean(0)
        g = np.exp(-0.5 * ((x - c[0]) ** 2 + (y - c[1]) ** 2) / (1.0 * unit) ** 2) * (y > eye_top)
        inner[:, 1] += 0.45 * unit * g
    put("brow_inner_up", inner)
    return basis.astype(np.float32)


@dataclass
class FaceFit:
    """A face model fitted to one image under a weak-perspective camera.

    ``pixels = centre + scale * (R @ X + t)[:2] * (1, -1)`` for model-frame points X.

    Attributes:
        shape: float32 [478, 3] neutral identity shape in model units.
        expression: float32 [E] coefficients of the image's expression.
        rotation: float64 [3] axis-angle head rotation.
        translation: float64 [3] model units (z unused by the weak-perspective camera).
        scale: pixels per model unit.
        centre: float64 [2] pixel position of the model origin at zero translation.
        residual: RMS landmark error in pixels.
    """

    shape: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    centre: np.ndarray
    residual: float

    def project(self, vertices: np.ndarray) -> np.ndarray:
        """Model-frame points [..., 3] (already posed) -> pixels [..., 2]."""
        xy = vertices[..., :2] * self.scale
        return self.centre + xy * np.array([1.0, -1.0])


class FaceModel:
    """Mean shape, triangles and named expression basis on the 478-point topology.

    Attributes:
        mean: float32 [478, 3]. triangles: int32 [F, 3]. basis: float32 [E, 478, 3].
        names: coefficient names (E). mirror: int32 [478] left-right vertex correspondence.
    """

    def __init__(self, shape: np.ndarray | None = None) -> None:
        data = _load_data()
        self.mean = data["mean"].astype(np.float32) if shape is None else np.asarray(shape, np.float32)
        self.triangles = data["triangles"]
        self.mirror = data["mirror"]
        self.names = EXPRESSION_NAMES
        self.basis = build_expression_basis(self.mean)

    def for_identity(self, shape: np.ndarray) -> FaceModel:
        """The same model centred on a person's own neutral shape, with blendshapes rebuilt for it."""
        return FaceModel(shape)

    def vertices(self, expression: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        """Posed, expressed vertices.

        Args:
            expression: [E] or [T, E] coefficients.
            pose: [6] or [T, 6] axis-angle rotation + translation, or None for the rest pose.
        Returns:
            float32 [478, 3] or [T, 478, 3].
        """
        expression = np.asarray(expression, np.float32)
        # Summed in float64: BLAS sums one frame and a batch of frames in different orders, and float32 would
        # keep that difference (a batch must give the same vertices as its frames one by one).
        offsets = np.tensordot(expression.astype(np.float64), self.basis.astype(np.float64), axes=([-1], [0]))
        verts = self.mean + offsets.astype(np.float32)
        if pose is None:
            return verts.astype(np.float32)
        pose = np.asarray(pose, np.float64)
        rot = axis_angle_to_matrix(pose[..., :3])
        out = np.einsum("...ij,...nj->...ni", rot, verts) + pose[..., None, 3:]
        return out.astype(np.float32)

    def fit(self, landmarks, shape: np.ndarray | None = None) -> FaceFit:
        """Fit pose, identity shape and expression to tracked landmarks.

        Args:
            landmarks: :class:`motion.tracker.FaceLandmarks` (478 points with depth, or a subset such as
                68 points without depth).
            shape: a known neutral identity shape [478, 3]; when None (one photo), the identity is taken
                from the landmarks themselves and only mouth opening and eye closure count as expression.
        """
        pts = np.asarray(landmarks.points, np.float64)
        idx = np.asarray(landmarks.indices)
        ref = self.mean if shape is None else np.asarray(shape)
        weights = rigid_weights()[idx]
        if landmarks.has_depth:
            obs = pts * np.array([1.0, -1.0, -1.0])  # pixels in the model frame's axes
            scale, rot, trans = similarity_align(ref[idx], obs, weights)
        else:
            scale, rot, trans = _weak_perspective_pose(ref[idx], pts[:, :2] * np.array([1.0, -1.0]), weights)
        centre = np.array([trans[0], -trans[1]])
        rotvec = matrix_to_axis_angle(rot)
        if shape is None and landmarks.has_depth and len(idx) == len(self.mean):
            observed = ((obs - trans) / scale) @ rot  # person's landmarks in the model frame
            basis = build_expression_basis(observed)
            expression = self._measure_expression(observed, basis)
            neutral = observed - np.tensordot(expression, basis, axes=([0], [0]))
        else:
            neutral = np.asarray(ref, np.float64).copy()
            # the model's own shape has its basis built already (a video fits every frame to one shape)
            own = shape is not None and np.array_equal(np.asarray(shape, np.float32), self.mean)
            expression = self._fit_expression(
                neutral, rot, scale, pts, idx, centre, self.basis if own else None
            )
        fit = FaceFit(
            shape=neutral.astype(np.float32),
            expression=expression.astype(np.float32),
            rotation=rotvec,
            translation=np.zeros(3),
            scale=float(scale),
            centre=centre,
            residual=0.0,
        )
        model = self.for_identity(fit.shape) if shape is None else self
        posed = model.vertices(fit.expression, np.concatenate([rotvec, [0, 0, 0]]))
        fit.residual = float(np.sqrt(((fit.project(posed)[idx] - pts[:, :2]) ** 2).sum(1).mean()))
        return fit

    def _measure_expression(self, observed: np.ndarray, basis: np.ndarray) -> np.ndarray:
        """Mouth opening and eye closure of a face in the model frame, as coefficients [E]."""
        expr = np.zeros(len(self.names), np.float32)
        jaw = basis[EXPRESSION_INDEX["jaw_open"]]
        rest_gap = np.linalg.norm(self.mean[tp.UPPER_LIP_CENTER_INNER] - self.mean[tp.LOWER_LIP_CENTER_INNER])
        gap = observed[tp.UPPER_LIP_CENTER_INNER, 1] - observed[tp.LOWER_LIP_CENTER_INNER, 1]
        per_unit = jaw[tp.UPPER_LIP_CENTER_INNER, 1] - jaw[tp.LOWER_LIP_CENTER_INNER, 1]
        expr[EXPRESSION_INDEX["jaw_open"]] = np.clip((gap - rest_gap) / per_unit, 0, 1.5)
        for name, upper, lower, corners in (
            ("blink_left", tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_EYE_CORNERS),
            ("blink_right", tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_EYE_CORNERS),
        ):
            aperture = eye_aperture(observed, upper, lower, corners)
            expr[EXPRESSION_INDEX[name]] = np.clip(1 - aperture / 0.28, 0, 1) * (aperture < 0.15)
        return expr

    def _fit_expression(self, neutral, rot, scale, pts, idx, centre, basis=None) -> np.ndarray:
        """Bounded least squares of the coefficients [E] on the 2D landmark residual."""
        from scipy.optimize import lsq_linear

        basis = (build_expression_basis(neutral) if basis is None else basis)[:, idx]  # [E, N, 3]
        proj = lambda p: (p @ rot.T)[..., :2] * scale * np.array([1.0, -1.0])
        base = centre + proj(neutral[idx])
        a = np.stack([proj(b).ravel() for b in basis], 1)  # [2N, E]
        b = (pts[:, :2] - base).ravel()
        lam = 0.01 * scale
        a = np.vstack([a, lam * np.eye(a.shape[1])])
        b = np.concatenate([b, np.zeros(a.shape[1])])
        lower = np.array([-1.0 if n.startswith("brow") else 0.0 for n in self.names])
        # bounded-variable least squares: exact for a problem this small and ten times faster than trf
        return lsq_linear(a, b, bounds=(lower, np.full(len(lower), 1.5)), method="bvls").x


@lru_cache(maxsize=1)
def rigid_weights() -> np.ndarray:
    """Per-vertex weights [478] of the pose fit: stiff upper-face points count, jaw and lids barely."""
    mean = _load_data()["mean"]
    movable = set(tp.LEFT_EYE_UPPER + tp.LEFT_EYE_LOWER + tp.RIGHT_EYE_UPPER + tp.RIGHT_EYE_LOWER)
    movable |= set(tp.LEFT_BROW + tp.RIGHT_BROW + tp.LEFT_IRIS + tp.RIGHT_IRIS)
    w = np.where(mean[:, 1] > mean[tp.NOSE_TIP, 1], 0.3, 0.02)  # the lower face moves with the jaw
    w[list(movable)] = 0.05
    w[list(RIGID_POINTS)] = 1.0
    return w


def eye_aperture(v: np.ndarray, upper, lower, corners) -> float:
    """Eye opening height over eye width for vertices ``v`` [478, >=2]."""
    height = np.mean(v[list(upper[2:-2]), 1] - v[list(lower[2:-2]), 1])
    width = np.linalg.norm(v[corners[0], :2] - v[corners[1], :2])
    return float(height / max(width, 1e-6))


def _weak_perspective_pose(model_pts: np.ndarray, image_pts: np.ndarray, weights: np.ndarray):
    """Scaled-orthographic pose from 2D points (y up): returns (scale, R [3, 3], t [3])."""
    w = weights / weights.sum()
    mu_m = w @ model_pts
    mu_i = w @ image_pts
    m0 = model_pts - mu_m
    i0 = image_pts - mu_i
    sw = np.sqrt(w)[:, None]
    affine, *_ = np.linalg.lstsq(m0 * sw, i0 * sw, rcond=None)  # [3, 2]
    u, s, vt = np.linalg.svd(affine.T, full_matrices=False)  # rows -> nearest scaled orthonormal pair
    rows = u @ vt
    scale = float(s.mean())
    rot = np.vstack([rows, np.cross(rows[0], rows[1])])
    trans = np.array([mu_i[0], mu_i[1], 0.0]) - scale * np.append((rot @ mu_m)[:2], 0)
    return scale, rot, trans

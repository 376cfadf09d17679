"""Joint fit of the face model to a whole tracked clip: one identity, one camera, stable per-frame poses.

Fitting each frame on its own (PnP) turns the tracker's landmark noise into head-pose jitter, which a
renderer trained on those poses learns as shimmer. Here every frame is fitted at once:

- one identity shape for the clip (a neutral face in model units, regularised toward the clip's median
  neutral face), one pinhole focal length (principal point at the image centre);
- per frame a rotation, a translation and the named expression coefficients;
- a robust (Cauchy) reprojection loss, so a badly tracked point or frame cannot drag the solution, plus a
  second-difference penalty on the image motion of rigid anchor points (the stabilisation), measured in
  pixels so its weight means the same at every image size.

Camera convention (OpenGL-like, shared with the renderers): the model frame has x right, y up, z toward the
viewer; a model point X goes to camera coordinates ``Xc = R @ X + t`` with the camera at the origin looking
down -z, and to pixels ``u = cx + f * Xc.x / -Xc.z``, ``v = cy - f * Xc.y / -Xc.z``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from common.errors import InputError
from common.files import save_npz
from motion import topology as tp
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.face_model import RIGID_POINTS, FaceModel, build_expression_basis, eye_aperture, rigid_weights
from motion.geometry import matrix_to_axis_angle
from motion.sequence import POSE_CAMERA, MotionSequence

if TYPE_CHECKING:  # torch loads only when a fit is made or projected (a second of start-up otherwise)
    import torch

TRACKING_SCHEMA_VERSION = 1
"""Version of the ``tracking.npz`` layout (:meth:`ClipFit.save`)."""


@dataclass
class ClipFitConfig:
    """Settings of the joint clip fit."""

    iterations: int = 300
    """Adam steps of the joint optimisation (half before, half after outlier frames are down-weighted)."""
    robust_scale_px: float = 1.5
    """Cauchy loss scale at 512 px: landmark errors well above this count less and less."""
    smoothness: float = 4.0
    """Weight of the second-difference penalty on rigid anchor motion (pixels per frame squared)."""
    expression_smoothness: float = 0.05
    """Weight of the second-difference penalty on expression coefficients."""
    expression_prior: float = 0.05
    """L2 pull of expression coefficients toward 0 (times each coefficient's ``prior_scale``)."""
    secondary_prior_scale: float = 20.0
    """Extra pull on the lip shapes that can mimic the jaw (lips_together, funnel, upper_lip_up,
    lower_lip_down, lower_lip_in), so that mouth opening is explained by jaw_open first."""
    shape_prior: float = 20.0
    """Pull of the identity shape toward the clip's median neutral face (per model unit squared)."""
    focal_prior: float = 0.5
    """Pull of log focal length toward ``focal_guess``."""
    focal_guess: float = 2.2
    """Initial focal length in units of image width (about a 25 degree field of view)."""
    open_eye_percentile: float = 85.0
    """Percentile of the clip's eye opening taken as fully open (blink = 0)."""


@dataclass
class ClipFit:
    """The face model fitted to a clip.

    Attributes:
        shape: float32 [478, 3] neutral identity shape in model units.
        focal: focal length in pixels (principal point at the image centre).
        image_size: (height, width) of the frames.
        rotation: float32 [T, 3] axis-angle head rotation (model -> camera).
        translation: float32 [T, 3] model-frame origin in camera coordinates (z < 0, model units).
        expression: float32 [T, E] coefficients named by ``names``.
        blink: float32 [T, 2] eye closure (subject's left, right) measured from the lids, 0 open, 1 shut.
        residual: float32 [T] RMS reprojection error per frame in pixels.
        weight: float32 [T] how much each frame counted (0 for frames without landmarks; low for outliers).
        names: coefficient names.
        stats: jitter and residual figures.
        valid: bool [T] frames whose pose and expression are usable (tracked, or a short loss bridged).
        found: bool [T] frames where the tracker found the face.
        landmarks: float32 [T, 478, 3] the tracked landmarks the fit was made to (pixels; 0 where none).

    A workspace keeps its fit in ``tracking.npz`` (:meth:`save`, :meth:`load`).
    """

    shape: np.ndarray
    focal: float
    image_size: tuple[int, int]
    rotation: np.ndarray
    translation: np.ndarray
    expression: np.ndarray
    blink: np.ndarray
    residual: np.ndarray
    weight: np.ndarray
    names: tuple[str, ...] = EXPRESSION_NAMES
    stats: dict[str, float] = field(default_factory=dict)
    valid: np.ndarray | None = None
    found: np.ndarray | None = None
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        frames = len(self.rotation)
        if self.valid is None:
            self.valid = self.weight > 0
        if self.found is None:
            self.found = np.asarray(self.valid, bool).copy()
        self.valid = np.asarray(self.valid, bool)
        self.found = np.asarray(self.found, bool)
        if self.landmarks is None:
            self.landmarks = np.zeros((frames, 478, 3), np.float32)

    def __len__(self) -> int:
        return len(self.rotation)

    @property
    def pose(self) -> np.ndarray:
        """float32 [T, 6]: rotation then translation (model -> camera), the :class:`MotionSequence` layout."""
        return np.concatenate([self.rotation, self.translation], 1).astype(np.float32)

    def motion(self, fps: float, frames: np.ndarray | None = None) -> MotionSequence:
        """The tracked motion of ``frames`` (default all) with camera poses (``pose_kind`` "camera")."""
        sel = slice(None) if frames is None else np.asarray(frames)
        return MotionSequence(fps, self.expression[sel], self.pose[sel], self.names, pose_kind=POSE_CAMERA)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tracking.npz`` atomically: the fit, the landmarks and which frames are usable."""
        save_npz(
            path,
            schema_version=np.int32(TRACKING_SCHEMA_VERSION),
            shape=np.asarray(self.shape, np.float32),
            focal=np.float64(self.focal),
            image_size=np.array(self.image_size, np.int32),
            rotation=self.rotation,
            translation=self.translation,
            expression=self.expression,
            names=np.array(self.names),
            blink=self.blink,
            residual=self.residual,
            weight=self.weight,
            valid=self.valid,
            found=self.found,
            landmarks=np.asarray(self.landmarks, np.float32),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClipFit:
        """Read a fit written by :meth:`save`; a missing, damaged or foreign file: :class:`InputError`."""
        try:
            with np.load(path, allow_pickle=False) as d:
                version = int(d["schema_version"])
                if version != TRACKING_SCHEMA_VERSION:
                    raise InputError(
                        f"{path} has tracking schema version {version}; this version reads "
                        f"{TRACKING_SCHEMA_VERSION}",
                        "prepare the identity again with --force",
                    )
                return cls(
                    shape=d["shape"],
                    focal=float(d["focal"]),
                    image_size=tuple(int(v) for v in d["image_size"]),
                    rotation=d["rotation"],
                    translation=d["translation"],
                    expression=d["expression"],
                    blink=d["blink"],
                    residual=d["residual"],
                    weight=d["weight"],
                    names=tuple(str(n) for n in d["names"]),
                    valid=d["valid"],
                    found=d["found"],
                    landmarks=d["landmarks"],
                )
        except (OSError, ValueError, KeyError) as err:
            raise InputError(
                f"tracking file {path} is unreadable ({err})",
                "run prepare again on this identity: it redoes the tracking",
            ) from err

    def project(self, frames: np.ndarray | slice | None = None) -> np.ndarray:
        """Pixels [T, 478, 2] of the fitted, posed, expressed model for the given frames."""
        from motion.camera import project_points

        sel = slice(None) if frames is None else frames
        verts = FaceModel(self.shape).vertices(self.expression[sel])
        return project_points(
            verts, self.rotation[sel], self.translation[sel], self.focal, self.image_size, numpy=True
        )


def _batched_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray):
    """Umeyama per frame: ``target[t] ~ s[t] * R[t] @ source + c[t]``; source [N, 3], target [T, N, 3]."""
    w = weights / weights.sum()
    mu_s = w @ source
    mu_t = np.einsum("n,tnd->td", w, target)
    s0 = source - mu_s
    t0 = target - mu_t[:, None]
    cov = np.einsum("tni,nj->tij", t0 * w[None, :, None], s0)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones_like(d)
    sign[:, -1] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    rot = u @ (sign[:, :, None] * vt)
    scale = (d * sign).sum(1) / (w * (s0**2).sum(1)).sum()
    trans = mu_t - scale[:, None] * np.einsum("tij,j->ti", rot, mu_s)
    return scale, rot, trans


def _second_difference(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x[t+1] - 2 x[t] + x[t-1] where all three frames are valid, zeros elsewhere ([T-2, ...])."""
    d2 = x[2:] - 2 * x[1:-1] + x[:-2]
    ok = (valid[2:] & valid[1:-1] & valid[:-2]).to(x.dtype)
    return d2 * ok.view(-1, *([1] * (x.dim() - 1)))


def measure_blinks(model_frame_points: np.ndarray, open_percentile: float) -> np.ndarray:
    """Eye closure [T, 2] (subject's left, right) from landmarks already in the model frame [T, 478, 3].

    The eye's own open aperture is taken from the clip (a percentile of its opening), so narrow and wide
    eyes both read 0 when open and 1 when shut.
    """
    out = np.zeros((len(model_frame_points), 2), np.float32)
    for k, (upper, lower, corners) in enumerate(
        (
            (tp.LEFT_EYE_UPPER, tp.LEFT_EYE_LOWER, tp.LEFT_EYE_CORNERS),
            (tp.RIGHT_EYE_UPPER, tp.RIGHT_EYE_LOWER, tp.RIGHT_EYE_CORNERS),
        )
    ):
        ap = np.array([eye_aperture(v, upper, lower, corners) for v in model_frame_points])
        if not len(ap):
            continue
        open_ap = max(float(np.percentile(ap, open_percentile)), 1e-3)
        out[:, k] = np.clip((1.0 - ap / open_ap) / 0.85, 0.0, 1.0)
    return out


def fit_clip(
    landmarks: np.ndarray,
    valid: np.ndarray,
    image_size: tuple[int, int],
    config: ClipFitConfig | None = None,
    progress=None,
) -> ClipFit:
    """Fit identity, focal length, per-frame pose and expression to a tracked clip.

    Args:
        landmarks: float32 [T, 478, 3] tracked points (x, y in pixels; z in pixels, mediapipe convention:
            smaller is closer). Rows of invalid frames are ignored.
        valid: bool [T], frames that have landmarks (at least one must).
        image_size: (height, width) of the frames.
        config: settings.
        progress: optional callable(fraction) for progress reporting.
    """
    import torch

    from motion.camera import project_points

    cfg = config or ClipFitConfig()
    pts = np.asarray(landmarks, np.float64)
    valid = np.asarray(valid, bool)
    num_frames = len(pts)
    if not valid.any():
        raise ValueError("no frame has landmarks")
    h, w = image_size
    px_scale = w / 512.0  # loss scales are stated at 512 px
    mean = FaceModel().mean.astype(np.float64)
    rigid_w = rigid_weights()

    # 1. Per-frame similarity fit to the tracker's 3D points: rough pose and the face in the model frame.
    fill = _fill_invalid(pts, valid)
    obs = fill * np.array([1.0, -1.0, -1.0])
    scale, rot, trans = _batched_similarity(mean, obs, rigid_w)
    in_model = np.einsum(
        "tji,tnj->tni", rot, (obs - trans[:, None]) / scale[:, None, None]
    )  # R^T (o - c) / s

    # 2. Identity: median neutral face over the frames with the mouth most closed.
    gap = in_model[:, tp.UPPER_LIP_CENTER_INNER, 1] - in_model[:, tp.LOWER_LIP_CENTER_INNER, 1]
    closed = valid & (gap <= np.percentile(gap[valid], 30))
    shape0 = np.median(in_model[closed], 0)
    blink = measure_blinks(in_model, cfg.open_eye_percentile)

    # 3. Camera: focal guess, each frame's depth from its scale (pixels per model unit).
    focal0 = cfg.focal_guess * w
    depth = focal0 / scale
    centre_px = np.stack([trans[:, 0], -trans[:, 1]], 1)  # pixel position of the model origin
    t0 = np.stack(
        [(centre_px[:, 0] - w / 2) * depth / focal0, -(centre_px[:, 1] - h / 2) * depth / focal0, -depth], 1
    )
    r0 = np.stack([matrix_to_axis_angle(r) for r in rot])

    # 4. Joint robust fit.
    dt = torch.float32
    ids = fit_points()
    target = torch.as_tensor(pts[:, ids, :2], dtype=dt)
    valid_t = torch.as_tensor(valid)
    point_w = torch.as_tensor(np.where(rigid_w[ids] >= 1.0, 1.0, 0.5), dtype=dt)
    shape_ref = torch.as_tensor(shape0[ids], dtype=dt)
    basis = torch.as_tensor(
        build_expression_basis(shape0)[:, ids].reshape(len(EXPRESSION_NAMES), -1), dtype=dt
    )
    names = EXPRESSION_NAMES
    blink_ids = [EXPRESSION_INDEX["blink_left"], EXPRESSION_INDEX["blink_right"]]
    free = torch.ones(len(names), dtype=torch.bool)
    free[blink_ids] = False
    lower = torch.tensor([-1.0 if n.startswith("brow") else 0.0 for n in names], dtype=dt)
    upper = torch.full((len(names),), 1.5, dtype=dt)

    secondary = ("lips_together", "funnel", "upper_lip_up", "lower_lip_down", "lower_lip_in")
    prior_scale = torch.tensor(
        [cfg.secondary_prior_scale if n in secondary else 1.0 for n in names], dtype=dt
    )
    prior_scale[EXPRESSION_INDEX["jaw_open"]] = 0.2
    rotvec = torch.tensor(r0, dtype=dt, requires_grad=True)
    depth_unit = float(np.median(depth))
    trans_n = torch.tensor(t0 / depth_unit, dtype=dt, requires_grad=True)  # translation in depth units
    expr = torch.zeros((num_frames, len(names)), dtype=dt)
    expr[:, blink_ids] = torch.as_tensor(blink, dtype=dt)
    expr.requires_grad_(True)
    expr.register_hook(lambda g: g * free.to(dt))  # blinks are measured from the lids, not fitted
    shape_delta = torch.zeros_like(shape_ref, requires_grad=True)
    log_focal = torch.tensor(np.log(focal0), dtype=dt, requires_grad=True)
    frame_w = torch.as_tensor(valid, dtype=dt)
    anchors = [int(np.flatnonzero(ids == i)[0]) for i in RIGID_POINTS]
    c = cfg.robust_scale_px * px_scale
    n_valid = max(int(valid.sum()), 1)

    def loss_fn():
        focal = log_focal.exp()
        neutral = shape_ref + shape_delta
        e = expr
        translation = trans_n * depth_unit
        verts = neutral + (e @ basis).view(num_frames, -1, 3)
        proj = project_points(verts, rotvec, translation, focal, image_size)
        err2 = ((proj - target) ** 2).sum(-1)  # [T, N]
        robust = torch.log1p(err2 / c**2) * c**2  # Cauchy, in px^2
        data = (robust * point_w).sum(1) / point_w.sum()
        data = (data * frame_w).sum() / n_valid
        rigid = project_points(
            neutral[anchors].expand(num_frames, -1, -1), rotvec, translation, focal, image_size
        )
        smooth = (_second_difference(rigid, valid_t) ** 2).sum(-1).mean(-1).sum() / n_valid
        expr_smooth = (_second_difference(e, valid_t) ** 2).sum() / n_valid
        prior = cfg.expression_prior * ((e**2) * prior_scale).sum() / n_valid
        shape_pen = cfg.shape_prior * (shape_delta**2).sum(1).mean()
        focal_pen = cfg.focal_prior * (log_focal - np.log(focal0)) ** 2
        return (
            data
            + cfg.smoothness * smooth
            + cfg.expression_smoothness * expr_smooth
            + prior
            + shape_pen
            + focal_pen
        )

    step_sizes = {rotvec: 0.004, trans_n: 0.0005, expr: 0.03, shape_delta: 0.002, log_focal: 0.02}
    moments = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in step_sizes}
    for i in range(cfg.iterations):
        for p in step_sizes:
            p.grad = None
        loss_fn().backward()
        _adam_step(moments, step_sizes, i, decay=0.05 ** (i / max(cfg.iterations, 1)))
        with torch.no_grad():
            expr.copy_(torch.maximum(torch.minimum(expr, upper), lower))
        if i == cfg.iterations // 2:
            # From here on, frames far worse than the clip's typical residual (tracker failures) count less.
            with torch.no_grad():
                translation = trans_n * depth_unit
                res = _frame_rms(
                    rotvec, translation, expr, shape_ref + shape_delta, basis, log_focal, target, image_size
                )
                typical = res[valid_t].median()
                frame_w = torch.where(valid_t, 1.0 / (1.0 + (res / (3 * typical + 1e-6)) ** 4), 0.0).to(dt)
        if progress is not None and i % 20 == 0:
            progress(i / cfg.iterations)
    with torch.no_grad():
        translation = trans_n * depth_unit
        expr.copy_(torch.maximum(torch.minimum(expr, upper), lower))
        # the shape offsets were fitted on the subset; carry them to every vertex smoothly
        neutral = _spread_offsets(shape0, ids, shape_delta.numpy().astype(np.float64))
        residual = _frame_rms(
            rotvec, translation, expr, shape_ref + shape_delta, basis, log_focal, target, image_size
        )
    fit = ClipFit(
        shape=neutral.astype(np.float32),
        focal=float(log_focal.detach().exp()),
        image_size=(int(h), int(w)),
        rotation=rotvec.detach().numpy().astype(np.float32),
        translation=translation.detach().numpy().astype(np.float32),
        expression=expr.detach().numpy().astype(np.float32),
        blink=blink,
        residual=np.where(valid, residual.numpy(), np.nan).astype(np.float32),
        weight=frame_w.numpy().astype(np.float32),
        valid=valid,
        landmarks=np.asarray(landmarks, np.float32),
    )
    fit.stats = {
        "residual_px": float(np.nanmedian(fit.residual)),
        "focal_px": fit.focal,
        **pose_jitter(fit, pts, valid),
    }
    return fit


def _adam_step(moments, step_sizes, i: int, decay: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """One Adam update of each parameter with its own step size times ``decay`` (kept here rather than
    ``torch.optim.Adam`` because that one imports the compiler stack, a second and a half per process)."""
    import torch

    with torch.no_grad():
        for p, lr in step_sizes.items():
            m, v = moments[p]
            m.mul_(betas[0]).add_(p.grad, alpha=1 - betas[0])
            v.mul_(betas[1]).addcmul_(p.grad, p.grad, value=1 - betas[1])
            m_hat = m / (1 - betas[0] ** (i + 1))
            v_hat = v / (1 - betas[1] ** (i + 1))
            p.sub_(lr * decay * m_hat / (v_hat.sqrt() + eps))


def _frame_rms(rotvec, translation, expr, neutral, basis, log_focal, target, image_size) -> torch.Tensor:
    from motion.camera import project_points

    verts = neutral + (expr @ basis).view(len(expr), -1, 3)
    proj = project_points(verts, rotvec, translation, log_focal.exp(), image_size)
    return ((proj - target) ** 2).sum(-1).mean(-1).sqrt()


@lru_cache(maxsize=1)
def fit_points() -> np.ndarray:
    """The landmarks the joint fit uses: contours of the face, lips, eyes, brows and nose, plus rigid
    points; a few hundred rather than all 468 keeps a ten-minute clip's fit in seconds."""
    groups = (
        tp.FACE_OVAL,
        tp.LIPS_UPPER_OUTER,
        tp.LIPS_LOWER_OUTER,
        tp.LIPS_UPPER_INNER,
        tp.LIPS_LOWER_INNER,
        tp.LEFT_EYE_UPPER,
        tp.LEFT_EYE_LOWER,
        tp.RIGHT_EYE_UPPER,
        tp.RIGHT_EYE_LOWER,
        tp.LEFT_BROW,
        tp.RIGHT_BROW,
        RIGID_POINTS,
    )
    ids = sorted({int(i) for g in groups for i in g})
    return np.array(ids)


def _spread_offsets(shape: np.ndarray, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``shape`` [478, 3] moved by ``offsets`` [K, 3] known at vertices ``ids``, interpolated elsewhere
    with inverse-distance weights over the nearest known vertices."""
    d = np.linalg.norm(shape[:, None] - shape[ids][None], axis=-1)  # [478, K]
    near = np.argsort(d, 1)[:, :4]
    w = 1.0 / (np.take_along_axis(d, near, 1) + 1e-3) ** 2
    w /= w.sum(1, keepdims=True)
    return shape + (w[..., None] * offsets[near]).sum(1)


def _fill_invalid(pts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows of invalid frames replaced by the nearest valid frame's (only to initialise)."""
    idx = np.flatnonzero(valid)
    nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(pts))), 0, len(idx) - 1)]
    return np.where(valid[:, None, None], pts, pts[nearest])


def per_frame_pnp(fit: ClipFit, landmarks: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame-by-frame PnP poses with the clip's own shape and focal: the unstabilised baseline.

    Returns (rotation [T, 3], translation [T, 3]) in the same convention as :class:`ClipFit`.
    """
    import cv2

    h, w = fit.image_size
    cam = np.array([[fit.focal, 0, w / 2], [0, fit.focal, h / 2], [0, 0, 1]], np.float64)
    # OpenCV's camera looks down +z with y down: flip y and z of the model-to-camera map.
    flip = np.diag([1.0, -1.0, -1.0])
    ids = np.array([i for i in range(468) if rigid_weights()[i] >= 0.3])
    obj = fit.shape[ids].astype(np.float64)
    rot_out = fit.rotation.astype(np.float64).copy()
    trans_out = fit.translation.astype(np.float64).copy()
    for t in np.flatnonzero(valid):
        r_cv = cv2.Rodrigues(flip @ cv2.Rodrigues(fit.rotation[t].astype(np.float64))[0])[0]
        t_cv = flip @ fit.translation[t].astype(np.float64)
        ok, r_cv, t_cv = cv2.solvePnP(
            obj, landmarks[t, ids, :2].astype(np.float64), cam, None, r_cv, t_cv, True, cv2.SOLVEPNP_ITERATIVE
        )
        if ok:
            rot_out[t] = cv2.Rodrigues(flip @ cv2.Rodrigues(r_cv)[0])[0].ravel()
            trans_out[t] = (flip @ t_cv).ravel()
    return rot_out.astype(np.float32), trans_out.astype(np.float32)


def rotation_jitter_deg(rotation: np.ndarray, valid: np.ndarray) -> float:
    """RMS second difference of head rotation over consecutive valid frames, in degrees."""
    import torch

    r = torch.as_tensor(np.asarray(rotation, np.float64))
    d2 = _second_difference(r, torch.as_tensor(np.asarray(valid, bool))).numpy()
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    if not ok.any():
        return 0.0
    return float(np.degrees(np.sqrt((d2[ok] ** 2).sum(1).mean())))


def pose_jitter(fit: ClipFit, landmarks: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Jitter of frame-by-frame PnP poses against the stabilised ones (RMS second differences)."""
    rot_pnp, trans_pnp = per_frame_pnp(fit, landmarks, valid)
    ok = valid[2:] & valid[1:-1] & valid[:-2]

    def trans_jitter(t: np.ndarray) -> float:
        d2 = t[2:] - 2 * t[1:-1] + t[:-2]
        return float(np.sqrt((d2[ok] ** 2).sum(1).mean())) if ok.any() else 0.0

    return {
        "rotation_jitter_pnp_deg": rotation_jitter_deg(rot_pnp, valid),
        "rotation_jitter_deg": rotation_jitter_deg(fit.rotation, valid),
        "translation_jitter_pnp": trans_jitter(trans_pnp),
        "translation_jitter": trans_jitter(fit.translation),
    }

"""Small 3D geometry helpers: rotations and similarity alignment."""

from __future__ import annotations

import numpy as np


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues' formula. rotvec: [..., 3] radians -> [..., 3, 3]."""
    # batched in numpy: cv2.Rodrigues takes one vector (10x slower over 1000 in a loop), kornia's needs a
    # round trip through torch (2x slower over 1000, 5x for one)
    rotvec = np.asarray(rotvec, np.float64)
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)[..., None]  # [..., 1, 1]
    axis = rotvec / np.maximum(theta[..., 0], 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis.shape[:-1], 3, 3)
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`axis_angle_to_matrix` for one [3, 3] rotation -> [3]."""
    # kornia's rotation_matrix_to_axis_angle takes 460 us a call here against 12 us; it is exact near 180
    # degrees where this one is 2e-7 off, an angle a head never turns to.
    matrix = np.asarray(matrix, np.float64)
    cos = np.clip((np.trace(matrix) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos)
    vec = np.array([matrix[2, 1] - matrix[1, 2], matrix[0, 2] - matrix[2, 0], matrix[1, 0] - matrix[0, 1]])
    if theta < 1e-8:
        return vec / 2
    if np.pi - theta < 1e-4:  # near 180 degrees: take the axis from the symmetric part
        w, v = np.linalg.eigh(matrix)
        axis = v[:, np.argmax(w)]
        return axis * theta
    return vec * theta / (2 * np.sin(theta))


def similarity_align(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity transform (Umeyama) with ``target ~ scale * R @ source + t``.

    Args:
        source, target: [N, D] corresponding points.
        weights: optional [N] non-negative weights.
    Returns:
        (scale, R [D, D], t [D]).
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    w = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = w @ source
    mu_t = w @ target
    s0 = source - mu_s
    t0 = target - mu_t
    cov = (t0 * w[:, None]).T @ s0
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(len(d))
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (w * (s0**2).sum(1)).sum()
    scale = float((d * sign).sum() / var)
    return scale, rot, mu_t - scale * rot @ mu_s


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth cubic between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)

"""Image and lip-sync metrics: evaluating rendered talking-head frames against real footage.

Image metrics (:func:`ssim`, :func:`psnr`) run in torch on whatever device their inputs live on; :func:`ssim`
is differentiable. It is this project's own rather than kornia's (which the NeRF trainer's patch loss uses,
and which gives the same value to about 1e-6 on textured images): on frames with a flat bright background
kornia's float32 SSIM is off by up to 7e-5, this one by about 1e-7, and it is a little faster on CPU.

Torch tensors are channel-first (``[N, C, H, W]``, ``[C, H, W]`` or ``[H, W]``); numpy arrays are
channel-last images as OpenCV and imageio give them (``[H, W, C]``, ``[H, W]`` or ``[N, H, W, C]``). Values
are not rescaled: pass ``data_range=255`` for uint8 images.

Landmark metrics (:func:`mouth_opening`, :func:`mouth_landmark_distance`) take the tracker's 478-point
landmarks ``[T, 478, >=2]`` in pixels and use their image-plane coordinates (x, y) only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from motion import topology as tp

K1, K2 = 0.01, 0.03
PSNR_CAP = 100.0  # dB returned for identical images (MSE 0)

# Inner-lip point pairs (upper, lower) around the lip centre: the central three of the corner-to-corner
# contours, whose i-th points face each other.
_CENTRE = len(tp.LIPS_UPPER_INNER) // 2
MOUTH_GAP_PAIRS = tuple(zip(tp.LIPS_UPPER_INNER, tp.LIPS_LOWER_INNER, strict=True))[_CENTRE - 1 : _CENTRE + 2]
# Outer and inner lip contours, each point once (the contours share their corners).
MOUTH_POINTS = tuple(
    sorted(set(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER + tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER))
)


# ------------------------------------------------------------------------------------------------------------
# image metrics
# ------------------------------------------------------------------------------------------------------------


def as_nchw(x, device: torch.device | str | None = None) -> torch.Tensor:
    """An image or batch as a float tensor ``[N, C, H, W]`` (see the module docstring for the layouts).

    Floating tensors keep their dtype (and autograd graph); anything else becomes float32.
    """
    if isinstance(x, torch.Tensor):
        t = x if x.is_floating_point() else x.float()
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t[None]
        elif t.ndim != 4:
            raise ValueError(
                f"expected a tensor [N, C, H, W], [C, H, W] or [H, W], got shape {tuple(t.shape)}"
            )
    else:
        arr = np.asarray(x)
        if arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[None]
        elif arr.ndim != 4:
            raise ValueError(f"expected an array [H, W, C], [H, W] or [N, H, W, C], got shape {arr.shape}")
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float32
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=dtype))
    return t if device is None else t.to(device)


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as ``[N, C, H, W]`` on the device of the first tensor given, in a common float dtype."""
    device = next((x.device for x in (a, b) if isinstance(x, torch.Tensor)), None)
    ta, tb = as_nchw(a, device), as_nchw(b, device)
    if ta.shape != tb.shape:
        raise ValueError(f"image shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    return ta.to(dtype), tb.to(dtype)


def gaussian_window(size: int, sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalised 1D Gaussian ``[size]`` centred on the middle sample."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def ssim(
    a, b, window: int = 11, sigma: float = 1.5, data_range: float = 1.0, reduce: bool = True
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of two images or batches: 1 for identical images.

    Gaussian-weighted local statistics (separable ``window``-tap window of std ``sigma``), K1 = 0.01,
    K2 = 0.03, averaged over the 'valid' positions (no padding) and the channels. An image smaller than the
    window gets the largest odd window that fits. Returns a 0-d tensor (the batch mean), or per-image values
    ``[N]`` when ``reduce`` is False; differentiable in both inputs.
    """
    x, y = _pair(a, b)
    c, h, w = x.shape[1:]
    size = min(window, h, w)
    if size % 2 == 0:
        size -= 1
    if size < 1:
        raise ValueError(f"image {h}x{w} is too small for SSIM")
    # The statistics are taken about a per-image, per-channel offset (SSIM does not depend on it): this
    # keeps E[x^2] - E[x]^2 from cancelling catastrophically in float32 on flat, bright regions.
    offset = ((x + y) / 2).mean((2, 3), keepdim=True).detach()
    xc, yc = x - offset, y - offset
    stack = torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], 1)
    g = gaussian_window(size, sigma, x.dtype, x.device)
    gh = g.view(1, 1, size, 1).expand(5 * c, 1, size, 1)
    gw = g.view(1, 1, 1, size).expand(5 * c, 1, 1, size)
    stats = F.conv2d(F.conv2d(stack, gh, groups=5 * c), gw, groups=5 * c)
    mxc, myc, exx, eyy, exy = stats.split(c, 1)
    var_x = exx - mxc * mxc
    var_y = eyy - myc * myc
    cov = exy - mxc * myc
    mu_x, mu_y = mxc + offset, myc + offset
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    ssim_map = ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    per_image = ssim_map.flatten(1).mean(1)
    return per_image.mean() if reduce else per_image


def psnr(a, b, data_range: float = 1.0, mask=None) -> float:
    """Peak signal-to-noise ratio in dB, from the MSE pooled over every pixel and channel given.

    ``mask`` (``[H, W]``, ``[N, H, W]`` or ``[N, 1, H, W]``; bool or float weights) restricts the MSE to the
    pixels inside it. The result is capped at :data:`PSNR_CAP` (100 dB): identical images give 100 rather than
    infinity, so averages stay finite. An empty mask gives nan.
    """
    x, y = _pair(a, b)
    with torch.no_grad():
        sq = (x - y) ** 2
        if mask is None:
            mse = sq.mean()
        else:
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
            m = m.to(device=x.device, dtype=x.dtype)
            if m.ndim == 2:
                m = m[None, None]
            elif m.ndim == 3:
                m = m[:, None]
            if m.ndim != 4 or m.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"mask shape {tuple(m.shape)} does not fit images {tuple(x.shape)}")
            m = m.expand_as(x)
            total = m.sum()
            if total <= 0:
                return math.nan
            mse = (sq * m).sum() / total
        mse = float(mse)
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(data_range**2 / mse))


def face_box(landmarks, size, margin: float = 0.1) -> tuple[int, int, int, int]:
    """Integer box ``(x0, y0, x1, y1)`` around the face-oval landmarks, grown by ``margin`` of its size.

    ``landmarks`` is ``[478, >=2]`` or ``[T, 478, >=2]`` (the box then holds every frame's face); ``size`` is
    the image's ``(width, height)`` or one number for a square image, and the box is clipped to it. The
    box's far edges are exclusive, so ``img[y0:y1, x0:x1]`` is the crop.
    """
    lo, hi = _extent(landmarks, tp.FACE_OVAL, "face-oval")
    grow = (hi - lo) * margin
    return _clipped_box(lo - grow, hi + grow, size)


def mouth_box(landmarks, size, zoom: float = 2.0) -> tuple[int, int, int, int]:
    """Square box ``(x0, y0, x1, y1)`` centred on the lips, ``zoom`` times the mouth's width on a side (the
    lips, teeth and the skin around them); ``landmarks`` and ``size`` as in :func:`face_box`."""
    lo, hi = _extent(landmarks, tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER, "lip")
    half = 0.5 * zoom * max(hi[0] - lo[0], hi[1] - lo[1])
    centre = 0.5 * (lo + hi)
    return _clipped_box(centre - half, centre + half, size)


def _extent(landmarks, points, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest x, y of ``points`` over every frame of ``landmarks``."""
    pts = np.asarray(landmarks, np.float64)[..., list(points), :2].reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        raise ValueError(f"no finite {what} landmarks")
    return pts.min(0), pts.max(0)


def _clipped_box(lo: np.ndarray, hi: np.ndarray, size) -> tuple[int, int, int, int]:
    width, height = (size, size) if np.isscalar(size) else size
    x0 = int(np.clip(np.floor(lo[0]), 0, width))
    y0 = int(np.clip(np.floor(lo[1]), 0, height))
    x1 = int(np.clip(np.ceil(hi[0]), 0, width))
    y1 = int(np.clip(np.ceil(hi[1]), 0, height))
    return x0, y0, x1, y1


def crop(img, box: tuple[int, int, int, int]):
    """``img`` cut to ``box`` (from :func:`face_box`): numpy ``[H, W, ...]`` or torch ``[..., H, W]``."""
    x0, y0, x1, y1 = box
    if isinstance(img, torch.Tensor):
        return img[..., y0:y1, x0:x1]
    return np.asarray(img)[y0:y1, x0:x1]


def temporal_error(fake, real, boxes) -> float:
    """Flicker: the mean of ``|(fake_t - fake_t-1) - (real_t - real_t-1)|`` over the boxes (0-1 scale).

    An error that stays put from frame to frame cancels out; what changes between frames and does not change
    in the real footage (shimmer, popping, a mouth that jumps) counts. ``fake`` and ``real`` are sequences of
    ``[H, W, C]`` images (uint8 or in [0, 1]); ``boxes[t]`` (from :func:`face_box`) is where frames ``t - 1``
    and ``t`` are compared. nan for fewer than two frames.
    """
    if len(fake) != len(real) or len(boxes) != len(real):
        raise ValueError(f"{len(fake)} rendered frames, {len(real)} real ones and {len(boxes)} boxes")
    scale = lambda img: np.asarray(img, np.float32) / (255.0 if np.asarray(img).dtype == np.uint8 else 1.0)
    errors = []
    for t in range(1, len(real)):
        a, b, c, d = (scale(crop(x, boxes[t])) for x in (fake[t], fake[t - 1], real[t], real[t - 1]))
        errors.append(float(np.abs((a - b) - (c - d)).mean()))
    return float(np.mean(errors)) if errors else math.nan


# ------------------------------------------------------------------------------------------------------------
# lip-sync metrics
# ------------------------------------------------------------------------------------------------------------


def _xy(landmarks) -> np.ndarray:
    arr = np.asarray(landmarks, np.float64)
    if arr.ndim < 2 or arr.shape[-2] != tp.NUM_POINTS or arr.shape[-1] < 2:
        raise ValueError(f"expected landmarks [..., {tp.NUM_POINTS}, >=2], got shape {arr.shape}")
    return arr[..., :2]


def mouth_opening(landmarks) -> np.ndarray:
    """Per-frame mouth opening ``[T]`` from landmarks ``[T, 478, >=2]`` (``[478, >=2]`` gives a 0-d array).

    The inner-lip gap (mean distance of the three central facing pairs of inner upper / lower lip points,
    :data:`MOUTH_GAP_PAIRS`) divided by the mouth width (outer corner to outer corner), in the image plane:
    scale- and translation-free. About 0 for closed lips; nan where the width is 0 or a point is missing.
    """
    xy = _xy(landmarks)
    upper = xy[..., [u for u, _ in MOUTH_GAP_PAIRS], :]
    lower = xy[..., [lo for _, lo in MOUTH_GAP_PAIRS], :]
    gap = np.linalg.norm(upper - lower, axis=-1).mean(-1)
    width = np.linalg.norm(xy[..., tp.MOUTH_CORNERS[1], :] - xy[..., tp.MOUTH_CORNERS[0], :], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, gap / np.where(width > 0, width, 1.0), np.nan)


def mouth_landmark_distance(pred, real, align: bool = True) -> float:
    """Mouth landmark distance (LMD): how far the predicted lips are from the real ones, in pixels.

    For each frame of ``pred`` and ``real`` (``[T, 478, >=2]``, same pixel coordinates) takes the 40 lip
    points of :data:`MOUTH_POINTS` (outer and inner contours) in x, y; with ``align``, subtracts from each
    set its own mouth centre (the mean of those points) so that head position does not count, only the
    mouth's shape and its size. The distance is the Euclidean distance between corresponding points,
    averaged over the points of a frame and then over the frames. Frames with a non-finite coordinate in
    either set are skipped; nan when none is left.
    """
    p, r = _xy(pred), _xy(real)
    if p.shape != r.shape:
        raise ValueError(f"landmark shapes differ: {p.shape} vs {r.shape}")
    p = p[..., MOUTH_POINTS, :].reshape(-1, len(MOUTH_POINTS), 2)
    r = r[..., MOUTH_POINTS, :].reshape(-1, len(MOUTH_POINTS), 2)
    if align:
        p = p - p.mean(1, keepdims=True)
        r = r - r.mean(1, keepdims=True)
    per_frame = np.linalg.norm(p - r, axis=-1).mean(1)
    per_frame = per_frame[np.isfinite(per_frame)]
    return float(per_frame.mean()) if len(per_frame) else math.nan


def pearson(a, b) -> float:
    """Pearson correlation of two 1D series over the positions where both are finite.

    nan when fewer than 3 such pairs remain or either series is constant there.
    """
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series lengths differ: {len(x)} vs {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(np.clip((x @ y) / denom, -1.0, 1.0))

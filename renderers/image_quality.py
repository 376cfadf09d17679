"""Image quality: PSNR and SSIM of rendered frames against real ones, in torch.

Both run on whatever device their inputs live on; :func:`ssim` is differentiable. It is this project's own
rather than kornia's (which the NeRF trainer's mouth-patch loss uses, and which gives the same value to about
1e-6 on textured images): on frames with a flat bright background kornia's float32 SSIM is off by up to 7e-5,
this one by about 1e-7, and it is a little faster on a CPU.

Torch tensors are channel-first (``[N, C, H, W]``, ``[C, H, W]`` or ``[H, W]``); numpy arrays are
channel-last images as OpenCV and imageio give them (``[H, W, C]``, ``[H, W]`` or ``[N, H, W, C]``). Values
are not rescaled: pass ``data_range=255`` for uint8 images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

K1, K2 = 0.01, 0.03
PSNR_CAP = 100.0  # dB returned for identical images (MSE 0)


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

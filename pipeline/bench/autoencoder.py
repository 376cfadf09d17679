"""``bench autoencoder``: what a latent diffusion renderer would gain and lose against the pixel-space one.

A small :class:`diffusers.AutoencoderKL` is trained on the identity's head crops; its held-out
reconstruction bounds what a latent renderer could paint (it cannot paint better than its decoder), and
the cost of painting latents plus one decoder pass is set against painting pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from common.errors import InputError
from pipeline.bench.measure import machine, synchronizer, timed

if TYPE_CHECKING:
    import torch


@dataclass
class CropSet:
    """The identity's head crops at one size: what the autoencoder trains on and is scored on."""

    rgba: torch.Tensor
    """Training crops, float [N, 4, S, S] in [-1, 1]."""
    weight: torch.Tensor
    """Per-pixel loss weight of the training crops (mouth heavier), [N, 1, S, S]."""
    target: torch.Tensor
    """Held-out crops, [H, 4, S, S]."""
    conditioning: np.ndarray
    """The held-out frames' conditioning images (what a pixel renderer paints from)."""
    mouth: torch.Tensor
    """Lips and mouth of the held-out crops, bool [H, 1, S, S]."""


def latent_levels(factor: int) -> int:
    """Encoder levels for latents ``factor`` x smaller (a power of two of at least 2)."""
    levels = round(float(np.log2(factor))) + 1
    if factor < 2 or 2 ** (levels - 1) != factor:
        raise InputError(f"--factor must be a power of two of at least 2, not {factor}", "use 4 or 8")
    return levels


def pixel_renderer(ws, name: str, device):
    """The identity's trained pixel diffusion renderer ``name`` on ``device``, or None when no name."""
    from renderers.base import load_renderer

    if not name:
        return None
    path = ws.renderer_dir(name)
    if not (path / "model.safetensors").is_file():
        raise InputError(f"{path} holds no trained renderer", "name one under the identity's renderers/")
    renderer = load_renderer(path)
    renderer.device = device
    return renderer


def head_crops(ws, size: int, conditioning) -> CropSet:
    """Every training crop of ``ws`` at ``size`` px, and 16 held-out ones spread over the held-out part."""
    import torch

    from renderers.diffusion.data import HeadCrops
    from renderers.training import spread

    crops = HeadCrops(ws, ws.tracked_frames("train"), size, conditioning, mouth_weight=4.0)
    data = [crops.chunk(c) for c in crops.chunks]
    held = spread(list(ws.tracked_frames("holdout")), 16)
    cond = crops.conditioning(np.array(held))
    return CropSet(
        rgba=torch.as_tensor(np.concatenate([d["rgba"] for d in data])),
        weight=torch.as_tensor(np.concatenate([d["weight"] for d in data])),
        target=torch.as_tensor(crops.target(held)),
        conditioning=cond,
        mouth=torch.as_tensor(crops.weight(cond) > 1.0),
    )


def scores(painted, crops: CropSet) -> dict[str, float]:
    """PSNR of ``painted`` against the held-out crops (premultiplied), over the window and the mouth."""
    from renderers import image_quality
    from renderers.diffusion.data import premultiplied

    p, t = premultiplied(painted), premultiplied(crops.target)
    return {"psnr_window": image_quality.psnr(p, t), "psnr_mouth": image_quality.psnr(p, t, mask=crops.mouth)}


def train_autoencoder(crops: CropSet, size: int, levels: int, seconds: float, batch: int, device):
    """A small AutoencoderKL (4 channels, ``levels`` levels) trained on ``crops`` for ``seconds``; returns
    it in eval mode with the steps and seconds it trained."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ae = AutoencoderKL(
        in_channels=4,
        out_channels=4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(64, 128, 256, 256, 512)[:levels],
        sample_size=size,
    ).to(device)
    optimizer = torch.optim.AdamW(ae.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        pick = torch.randint(0, len(crops.rgba), (batch,), generator=generator)
        x, w = crops.rgba[pick].to(device), crops.weight[pick].to(device)
        posterior = ae.encode(x).latent_dist
        recon = ae.decode(posterior.sample(generator=None)).sample
        loss = ((recon - x).abs() * w).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    trained_for = time.perf_counter() - start
    return ae.eval(), step, trained_for


def network_seconds(ae, preset: str, size: int, factor: int, device) -> dict[str, float]:
    """Seconds of one decoder pass and of one pass of the ``preset`` network on pixels (``size``) and on
    latents (``size / factor``, left out when the network's levels do not divide it)."""
    import torch

    from common.config import load_config
    from renderers.diffusion.model import HeadDiffusion
    from renderers.diffusion.train import DiffusionTrainConfig

    sync = synchronizer(device)
    base = load_config(DiffusionTrainConfig, f"diffusion_{preset}.yaml").network
    nets = {}
    for name, side in (("pixel", size), ("latent", size // factor)):
        config = type(base)(**{**base.__dict__, "sample_size": side})
        factor_ok = side % 2 ** (len(config.block_out_channels) - 1) == 0
        nets[name] = HeadDiffusion(config).to(device).eval() if factor_ok else None
    decoder_in = torch.randn(1, 4, size // factor, size // factor, device=device)
    with torch.no_grad():
        times = {"decoder": timed(lambda: ae.decode(decoder_in), 2, sync)}
        for name, net in nets.items():
            if net is None:
                continue
            side = net.config.sample_size
            x = torch.randn(1, 4, side, side, device=device)
            c = torch.rand(1, net.config.conditioning_channels, side, side, device=device)
            r = torch.rand(1, 3, side, side, device=device)
            times[name] = timed(lambda net=net, x=x, c=c, r=r: net(x, 500, c, r), 2, sync)
    return times


def bench_autoencoder(
    identity: str,
    workspace: str | None = None,
    renderer: str = "",
    size: int = 0,
    factor: int = 4,
    seconds: float = 600.0,
    batch: int = 8,
    preset: str = "full",
    steps: int = 4,
    device: str = "auto",
) -> dict:
    """What a latent diffusion renderer would gain and lose against the pixel-space one.

    Trains a small :class:`diffusers.AutoencoderKL` (``factor`` x smaller latents, 4 channels) on the
    identity's head crops for ``seconds``, then reports its reconstruction PSNR on held-out frames over the
    head window and over the lips and mouth (a latent renderer cannot paint better than its decoder), beside
    the same figures for the trained pixel renderer ``renderer`` when given. Also times, per frame at
    ``steps`` steps, the ``preset`` network painting at ``size`` px against the same network on the latent
    grid plus one decoder pass.
    """
    import torch

    from pipeline.workspace import Workspace, identity_dir
    from renderers.device import pick_device
    from renderers.diffusion.conditioning import ConditioningConfig

    levels = latent_levels(factor)
    dev = pick_device(device)
    ws = Workspace.open(identity_dir(identity, workspace))
    pixel = pixel_renderer(ws, renderer, dev)
    if pixel is not None:
        size = size or pixel.config.network.sample_size
    size = size or 128
    if size % factor:
        raise InputError(f"--size {size} is not a multiple of --factor {factor}", "pick sizes that divide")
    crops = head_crops(ws, size, pixel.config.conditioning if pixel is not None else ConditioningConfig())
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    print(
        f"{identity}: {len(crops.rgba)} training crops, {len(crops.target)} held-out, {size} px, "
        f"latents {factor}x smaller"
    )

    ae, trained_steps, trained_for = train_autoencoder(crops, size, levels, seconds, batch, dev)
    with torch.no_grad():
        recon = ae.decode(ae.encode(crops.target.to(dev)).latent_dist.mode()).sample
    results: dict = {"autoencoder": {"steps": trained_steps, "seconds": trained_for, **scores(recon, crops)}}
    a = results["autoencoder"]
    print(
        f"  autoencoder after {trained_for:.0f} s ({trained_steps} steps of {batch}): reconstruction PSNR "
        f"{a['psnr_window']:.2f} dB over the head window, {a['psnr_mouth']:.2f} dB over lips and mouth"
    )
    if pixel is not None:
        p = results["pixel_renderer"] = scores(pixel.paint(crops.conditioning), crops)
        print(
            f"  pixel renderer {renderer} ({pixel.config.render.steps} steps): {p['psnr_window']:.2f} dB "
            f"over the head window, {p['psnr_mouth']:.2f} dB over lips and mouth"
        )

    times = network_seconds(ae, preset, size, factor, dev)
    per_frame = {"pixel": steps * times["pixel"]}
    if "latent" in times:
        per_frame["latent"] = steps * times["latent"] + times["decoder"]
    results["seconds_per_frame"] = per_frame
    _print_cost(per_frame, times, preset, steps, size // factor, dev)
    return results


def _print_cost(per_frame: dict, times: dict, preset: str, steps: int, latent_side: int, device) -> None:
    line = f"  {preset} net, {steps} steps, one frame on {device.type}: pixel {per_frame['pixel']:.3f} s"
    if "latent" in per_frame:
        line += (
            f", latent {per_frame['latent']:.3f} s ({steps} x {times['latent']:.3f} s network + "
            f"{times['decoder']:.3f} s decoder)"
        )
    else:
        line += f" (the {preset} net cannot run on a {latent_side} px latent grid)"
    print(line)

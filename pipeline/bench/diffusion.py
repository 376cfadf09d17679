"""``bench diffusion``: the diffusion renderer's network painting frames, per sample size and step count."""

from __future__ import annotations

from pipeline.bench.measure import machine_with_gpu, synchronizer, timed


def bench_diffusion(
    preset: str = "full",
    sizes: tuple[int, ...] = (256, 512),
    steps: tuple[int, ...] = (1, 2, 4, 8),
    batch: int = 4,
    device: str = "auto",
    sampler: str = "ddim",
) -> dict:
    """Painting speed of the diffusion renderer's network (``preset``'s sizes, random weights: the cost does
    not depend on them): frames/s per sample size and step count, ``batch`` frames at once.

    Returns ``{"<size>px_<n>steps": frames/s}``.
    """
    import torch

    from common.config import load_config
    from renderers.device import pick_device
    from renderers.diffusion.model import HeadDiffusion
    from renderers.diffusion.train import DiffusionTrainConfig

    dev = pick_device(device)
    sync = synchronizer(dev)
    base = load_config(DiffusionTrainConfig, f"diffusion_{preset}.yaml").network
    print(f"machine: {machine_with_gpu(dev)}")
    results: dict = {}
    for size in sizes:
        config = type(base)(**{**base.__dict__, "sample_size": size})
        torch.manual_seed(0)
        net = HeadDiffusion(config).to(dev).eval()
        params = sum(p.numel() for p in net.parameters()) / 1e6
        cond = torch.rand(batch, config.conditioning_channels, size, size, device=dev)
        ref = torch.rand(batch, 3, size, size, device=dev) * 2 - 1
        prev = torch.rand(batch, 4, size, size, device=dev) * 2 - 1 if config.use_previous else None
        inputs = (cond, ref, prev)
        for n in steps:
            took = timed(lambda n=n, x=inputs, m=net: m.sample(*x, steps=n, scheduler=sampler), 2, sync)
            fps = batch / took
            results[f"{size}px_{n}steps"] = fps
            print(
                f"  {preset} net ({params:.1f} M weights) at {size}x{size}, {n} {sampler} steps, "
                f"batch {batch}: {fps:.2f} frames/s"
            )
    return results

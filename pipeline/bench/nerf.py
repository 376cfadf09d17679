"""``bench nerf``: hash-grid encoding speed per implementation, and a trained identity's render frames/s."""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from pipeline.bench.measure import machine_with_gpu, synchronizer, timed


def encoding_implementations(device) -> list[str]:
    """The hash-grid implementations that run on ``device``: the PyTorch reference always, our CUDA kernel
    when it builds, tiny-cuda-nn when installed."""
    from renderers.nerf.ops.hashgrid import cuda_extension

    names = ["torch"] + (["cuda"] if device.type == "cuda" and cuda_extension() is not None else [])
    if device.type == "cuda" and importlib.util.find_spec("tinycudann") is not None:
        names.append("tcnn")
    return names


def encoding_speed(net, device, points: int, repeats: int) -> dict[str, dict[str, float]]:
    """Millions of points/s of the tri-plane encoding with ``net``'s (a FieldConfig) grid sizes, forward and
    forward + backward, per implementation; prints a line for each."""
    import torch

    from renderers.nerf.ops.hashgrid import TriPlaneEncoding

    sync = synchronizer(device)
    x = torch.rand(points, 3, device=device) * 2 - 1  # [N, 3] in the box's [-1, 1] cube
    results = {}
    for name in encoding_implementations(device):
        enc = TriPlaneEncoding(
            levels=net.levels,
            features=net.features,
            log2_table_size=net.log2_table_size,
            base_resolution=net.base_resolution,
            finest_resolution=net.finest_resolution,
            implementation=name,
        ).to(device)

        def forward(enc=enc):
            with torch.no_grad():
                enc(x)

        def backward(enc=enc):
            enc.zero_grad(set_to_none=True)
            enc(x).square().sum().backward()

        fwd, both = timed(forward, repeats, sync), timed(backward, repeats, sync)
        results[name] = {
            "forward_mpts_s": points / fwd / 1e6,
            "forward_backward_mpts_s": points / both / 1e6,
        }
        print(
            f"  encoding [{name}]: forward {points / fwd / 1e6:.2f} M points/s, "
            f"forward+backward {points / both / 1e6:.2f} M points/s"
        )
    return results


def render_speed(identity: str, workspace: str | None, device, resolution: int, frames: int) -> dict:
    """Frames/s of ``identity``'s trained NeRF rendering up to ``frames`` held-out frames (their tracked
    motion) at ``resolution`` (0: the renderer's own), after one warm-up frame; prints a line."""
    from pipeline.workspace import Workspace, identity_dir
    from renderers.base import load_renderer

    sync = synchronizer(device)
    ws = Workspace.open(identity_dir(identity, workspace))
    overrides = {"resolution": resolution} if resolution else None
    renderer = load_renderer(ws.trained_renderer_dir("nerf"), render=overrides)
    renderer.device = device
    idx = np.array(list(ws.split("holdout")) or range(ws.num_frames))[:frames]
    motion = ws.motion(idx)  # the tracked motion, camera poses
    list(renderer.render(ws.motion(idx[:1])))
    sync()
    start = time.perf_counter()
    count = sum(1 for _ in renderer.render(motion))
    sync()
    took = time.perf_counter() - start
    side = renderer.config.render.resolution or renderer.config.image_size
    grid = "occupancy grid" if renderer.skip_grid() is not None else "dense"
    print(
        f"  render {identity} at {side}x{side} on {device.type} ({grid}): {count} frames in {took:.1f} s "
        f"= {count / took:.2f} frames/s"
    )
    return {"resolution": side, "frames": count, "fps": count / took, "sampling": grid}


def bench_nerf(
    identity: str | None = None,
    workspace: str | None = None,
    preset: str = "preview",
    resolution: int = 0,
    frames: int = 20,
    points: int = 0,
    device: str = "auto",
    repeats: int = 5,
) -> dict:
    """Hash-grid encoding speed per implementation (forward, forward + backward) at ``preset``'s sizes, and
    the render speed (frames/s at ``resolution``) of ``identity``'s trained NeRF when one is given."""
    from common.config import load_config
    from renderers.device import pick_device
    from renderers.nerf.field import FieldConfig
    from renderers.nerf.train import NerfTrainConfig

    dev = pick_device(device)
    net: FieldConfig = load_config(NerfTrainConfig, f"nerf_{preset}.yaml").network
    n = points or (1 << 20 if dev.type == "cuda" else 1 << 16)
    print(f"machine: {machine_with_gpu(dev)}")
    print(
        f"date: {time.strftime('%Y-%m-%d')}; {preset} grid: {net.levels} levels x {net.features} features, "
        f"2^{net.log2_table_size} rows, {n} points per call"
    )
    results: dict = {"encoding": encoding_speed(net, dev, n, repeats)}
    if identity:
        results["render"] = render_speed(identity, workspace, dev, resolution, frames)
    return results

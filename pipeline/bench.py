"""Benchmarks behind ``talking-portrait bench``: they print figures; BENCHMARKS.md records them."""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from common.errors import InputError


def machine() -> str:
    """One line describing this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def frame_rms(samples: np.ndarray, rate: int, num_frames: int, fps: float) -> np.ndarray:
    """Plain RMS of the audio over each video frame's time slice: [T]. Independent of the motion model."""
    edges = np.round(np.arange(num_frames + 1) * rate / fps).astype(int)
    out = np.zeros(num_frames)
    for i in range(num_frames):
        chunk = samples[edges[i] : edges[i + 1]]
        out[i] = np.sqrt(np.mean(chunk**2)) if chunk.size else 0.0
    return out


def lipsync_correlation(video: str | os.PathLike, audio) -> float:
    """Pearson correlation between the mouth opening measured on ``video``'s frames with the project's
    tracker and the audio's frame RMS envelope (smoothed over 3 frames, as the mouth cannot follow faster)."""
    from pipeline.oneshot import mouth_opening
    from pipeline.video_io import probe_video, read_video_frames

    info = probe_video(video)
    opening = mouth_opening(list(read_video_frames(video)))
    env = frame_rms(audio.samples, audio.rate, len(opening), info.fps)
    env = np.convolve(env, np.ones(3) / 3, "same")
    ok = ~np.isnan(opening)
    return float(np.corrcoef(opening[ok], env[ok])[0, 1])


def bench_oneshot(config, image: str | None = None, audio: str | None = None, repeats: int = 3,
                  out: str = "outputs/bench_oneshot.mp4") -> dict[str, float]:  # fmt: skip
    """Time the warp render stage alone, then the whole generate command, at ``config.size``."""
    from motion.audio import load_audio
    from motion.audio2motion import audio_to_motion
    from motion.face_model import FaceModel
    from motion.tracker import track_portrait
    from pipeline.framing import frame_square
    from pipeline.image_io import load_image
    from pipeline.oneshot import demo_inputs, generate
    from renderers.warp.renderer import WarpRenderer

    demo_photo, demo_speech, transcript = demo_inputs()
    image = image or str(demo_photo)
    audio_path = audio or str(demo_speech)
    if audio:
        transcript = None

    speech = load_audio(audio_path)
    photo = load_image(image)
    framed = frame_square(photo, track_portrait(photo), config.size, config.zoom)
    fit = FaceModel().fit(track_portrait(framed))
    motion = audio_to_motion(speech, config.fps, config=config.motion)
    renderer = WarpRenderer(framed, fit, config.warp)
    render_fps = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in renderer.render(motion))
        render_fps.append(n / (time.perf_counter() - start))

    ratios, walls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(image, audio_path, out, transcript=transcript, config=config)
        wall = time.perf_counter() - start
        walls.append(wall)
        ratios.append(wall / speech.duration)
    result = {
        "lipsync_correlation": lipsync_correlation(out, speech),
        "render_fps": statistics.median(render_fps),
        "command_seconds": statistics.median(walls),
        "command_over_audio": statistics.median(ratios),
        "audio_seconds": speech.duration,
        "frames": len(motion),
    }
    print(f"machine: {machine()}")
    print(
        f"input: {Path(image).name} + {Path(audio_path).name} ({speech.duration:.2f} s, {len(motion)} frames)"
    )
    print(f"size: {config.size}x{config.size} at {config.fps:g} fps, threads {config.warp.threads}")
    print(f"render stage: {result['render_fps']:.1f} frames/s (median of {repeats})")
    print(
        f"generate (in-process, after start-up): {result['command_seconds']:.2f} s = "
        f"{result['command_over_audio']:.3f} x audio duration (median of {repeats})"
    )
    r = result["lipsync_correlation"]
    print(f"mouth opening (tracked on the output) vs audio RMS envelope: r = {r:.3f}")
    return result


def _run_measured(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB of it and its children, exit code)."""
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024.0, proc.returncode


def bench_prepare(
    config, video: str | None = None, upscaled: bool = True, out: str = "outputs/bench_prepare"
):
    """Time ``talking-portrait prepare`` end to end (a fresh process per run) and read its peak RAM.

    Runs on ``video`` (default the shared talk_andrew_a.mp4), on a 512x512 upscaled copy of it, and on
    that copy looped to three times the length, to show that peak RAM does not grow with the clip.
    """
    import json
    import subprocess
    import sys

    from motion.audio import ffmpeg_exe
    from pipeline.video_io import probe_video

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if video is None:
        video = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "talk_andrew_a.mp4")
        if not Path(video).is_file():
            raise InputError(f"{video} is not present", "pass --video with a clip of one person talking")
    inputs = [("source", Path(video))]
    if upscaled:
        up = root / "upscaled_512.mp4"
        longer = root / "upscaled_512_x3.mp4"
        if not up.is_file():
            subprocess.run(
                [ffmpeg_exe(), "-v", "error", "-y", "-i", video, "-vf", "scale=512:512:flags=lanczos",
                 "-c:v", "libx264", "-crf", "16", "-c:a", "copy", str(up)], check=True,
            )  # fmt: skip
        if not longer.is_file():
            subprocess.run(
                [
                    ffmpeg_exe(),
                    "-v",
                    "error",
                    "-y",
                    "-stream_loop",
                    "2",
                    "-i",
                    str(up),
                    "-c",
                    "copy",
                    str(longer),
                ],
                check=True,
            )
        inputs += [("upscaled 512", up), ("upscaled 512, 3x long", longer)]
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}, frame size {config.size}, {config.fps:g} fps")
    results = {}
    for label, path in inputs:
        info = probe_video(path)
        cmd = [
            sys.executable, "-m", "pipeline.cli", "prepare", str(path), "--identity", "bench",
            "--workspace", str(root / "ws"), "--force", "-q", "--size", str(config.size),
            "--fps", str(config.fps),
        ]  # fmt: skip
        wall, rss, code = _run_measured(cmd)
        if code != 0:
            raise RuntimeError(f"prepare failed on {path} (exit {code})")
        summary = json.loads((root / "ws" / "bench" / "report" / "summary.json").read_text())
        frames = summary["frames"]
        steps = ", ".join(f"{k} {v:.1f}" for k, v in summary["timings_s"].items())
        print(
            f"{label}: {path.name} {info.width}x{info.height} {info.fps:g} fps, {frames} frames -> "
            f"{wall:.1f} s = {frames / wall:.1f} frames/s end to end (process start included), "
            f"peak RSS {rss:.0f} MB; steps (s): {steps}"
        )
        results[label] = {"frames": frames, "seconds": wall, "fps": frames / wall, "peak_rss_mb": rss}
    return results


def _timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    import torch

    from common.config import load_config
    from renderers.device import pick_device
    from renderers.nerf.field import FieldConfig
    from renderers.nerf.ops.hashgrid import TriPlaneEncoding, cuda_extension
    from renderers.nerf.train import NerfTrainConfig

    dev = pick_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    net: FieldConfig = load_config(NerfTrainConfig, f"nerf_{preset}.yaml").network
    n = points or (1 << 20 if dev.type == "cuda" else 1 << 16)
    print(f"machine: {machine()}" + (f", {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""))
    print(f"date: {time.strftime('%Y-%m-%d')}; {preset} grid: {net.levels} levels x {net.features} features, "
          f"2^{net.log2_table_size} rows, {n} points per call")  # fmt: skip
    results: dict = {"encoding": {}}
    names = ["torch"] + (["cuda"] if dev.type == "cuda" and cuda_extension() is not None else [])
    if dev.type == "cuda" and importlib.util.find_spec("tinycudann") is not None:
        names.append("tcnn")
    x = torch.rand(n, 3, device=dev) * 2 - 1
    for name in names:
        enc = TriPlaneEncoding(
            levels=net.levels, features=net.features, log2_table_size=net.log2_table_size,
            base_resolution=net.base_resolution, finest_resolution=net.finest_resolution, implementation=name,
        ).to(dev)  # fmt: skip

        def forward(enc=enc):
            with torch.no_grad():
                enc(x)

        def backward(enc=enc):
            enc.zero_grad(set_to_none=True)
            enc(x).square().sum().backward()

        fwd, both = _timed(forward, repeats, sync), _timed(backward, repeats, sync)
        results["encoding"][name] = {
            "forward_mpts_s": n / fwd / 1e6,
            "forward_backward_mpts_s": n / both / 1e6,
        }
        print(f"  encoding [{name}]: forward {n / fwd / 1e6:.2f} M points/s, "
              f"forward+backward {n / both / 1e6:.2f} M points/s")  # fmt: skip
    if identity:
        from motion.sequence import MotionSequence
        from pipeline.workspace import Workspace, identity_dir
        from renderers.base import load_renderer

        ws = Workspace.open(identity_dir(identity, workspace))
        renderer = load_renderer(ws.path / "renderers" / "nerf")
        renderer.device = dev
        if resolution:
            renderer.config.render.resolution = resolution
        t = ws.tracking()
        idx = np.array(list(ws.split("holdout")) or range(ws.num_frames))[:frames]
        pose = np.concatenate([t["rotation"][idx], t["translation"][idx]], 1).astype(np.float32)
        motion = MotionSequence(ws.fps, t["expression"][idx].astype(np.float32), pose,
                                tuple(str(s) for s in t["names"]))  # fmt: skip
        list(renderer.render(MotionSequence(ws.fps, motion.expression[:1], motion.pose[:1], motion.names)))
        sync()
        start = time.perf_counter()
        count = sum(1 for _ in renderer.render(motion))
        sync()
        took = time.perf_counter() - start
        side = renderer.config.render.resolution or renderer.config.image_size
        grid = "occupancy grid" if renderer.skip_grid() is not None else "dense"
        results["render"] = {"resolution": side, "frames": count, "fps": count / took, "sampling": grid}
        print(f"  render {identity} at {side}x{side} on {dev.type} ({grid}): {count} frames in {took:.1f} s "
              f"= {count / took:.2f} frames/s")  # fmt: skip
    return results


def bench_diffusion(
    preset: str = "full",
    sizes: tuple[int, ...] = (256, 512),
    steps: tuple[int, ...] = (1, 2, 4, 8),
    batch: int = 4,
    device: str = "auto",
    sampler: str = "ddim",
) -> dict:
    """Painting speed of the diffusion renderer's network (``preset``'s sizes, random weights: the cost does
    not depend on them): frames/s per sample size and step count, ``batch`` frames at once."""
    import torch

    from common.config import load_config
    from renderers.device import pick_device
    from renderers.diffusion.model import HeadDiffusion
    from renderers.diffusion.train import DiffusionTrainConfig

    dev = pick_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    base = load_config(DiffusionTrainConfig, f"diffusion_{preset}.yaml").network
    print(f"machine: {machine()}" + (f", {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""))
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
            took = _timed(lambda n=n, x=inputs, m=net: m.sample(*x, steps=n, scheduler=sampler), 2, sync)
            fps = batch / took
            results[f"{size}px_{n}steps"] = fps
            print(f"  {preset} net ({params:.1f} M weights) at {size}x{size}, {n} {sampler} steps, "
                  f"batch {batch}: {fps:.2f} frames/s")  # fmt: skip
    return results


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
    from diffusers import AutoencoderKL

    from common.config import load_config
    from pipeline import metrics
    from pipeline.workspace import Workspace, identity_dir
    from renderers.base import load_renderer
    from renderers.device import pick_device
    from renderers.diffusion.conditioning import ConditioningConfig
    from renderers.diffusion.data import HeadCrops, premultiplied
    from renderers.diffusion.model import HeadDiffusion
    from renderers.diffusion.train import DiffusionTrainConfig
    from renderers.training import spread

    levels = round(float(np.log2(factor))) + 1
    if factor < 2 or 2 ** (levels - 1) != factor:
        raise InputError(f"--factor must be a power of two of at least 2, not {factor}", "use 4 or 8")
    dev = pick_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ws = Workspace.open(identity_dir(identity, workspace))
    pixel = None
    if renderer:
        path = ws.path / "renderers" / renderer
        if not (path / "model.safetensors").is_file():
            raise InputError(f"{path} holds no trained renderer", "name one under the identity's renderers/")
        pixel = load_renderer(path)
        pixel.device = dev
        size = size or pixel.config.network.sample_size
    size = size or 128
    if size % factor:
        raise InputError(f"--size {size} is not a multiple of --factor {factor}", "pick sizes that divide")
    conditioning = pixel.config.conditioning if pixel is not None else ConditioningConfig()
    crops = HeadCrops(ws, ws.tracked_frames("train"), size, conditioning, mouth_weight=4.0)
    data = [crops.chunk(c) for c in crops.chunks]
    rgba = torch.as_tensor(np.concatenate([d["rgba"] for d in data]))
    weight = torch.as_tensor(np.concatenate([d["weight"] for d in data]))
    held = spread(list(ws.tracked_frames("holdout")), 16)
    target = torch.as_tensor(crops.target(held))
    cond = crops.conditioning(np.array(held))
    mouth = torch.as_tensor(crops.weight(cond) > 1.0)
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}")
    print(
        f"{identity}: {len(rgba)} training crops, {len(held)} held-out, {size} px, latents {factor}x smaller"
    )

    def scores(painted: torch.Tensor) -> dict[str, float]:
        p, t = premultiplied(painted), premultiplied(target)
        return {"psnr_window": metrics.psnr(p, t), "psnr_mouth": metrics.psnr(p, t, mask=mouth)}

    torch.manual_seed(0)
    ae = AutoencoderKL(
        in_channels=4, out_channels=4, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(64, 128, 256, 256, 512)[:levels], sample_size=size,
    ).to(dev)  # fmt: skip
    optimizer = torch.optim.AdamW(ae.parameters(), lr=5e-4)
    generator = torch.Generator().manual_seed(0)
    start, step = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        pick = torch.randint(0, len(rgba), (batch,), generator=generator)
        x, w = rgba[pick].to(dev), weight[pick].to(dev)
        posterior = ae.encode(x).latent_dist
        recon = ae.decode(posterior.sample(generator=None)).sample
        loss = ((recon - x).abs() * w).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    trained_for = time.perf_counter() - start
    ae.eval()
    with torch.no_grad():
        recon = ae.decode(ae.encode(target.to(dev)).latent_dist.mode()).sample
    results: dict = {"autoencoder": {"steps": step, "seconds": trained_for, **scores(recon)}}
    a = results["autoencoder"]
    print(
        f"  autoencoder after {trained_for:.0f} s ({step} steps of {batch}): reconstruction PSNR "
        f"{a['psnr_window']:.2f} dB over the head window, {a['psnr_mouth']:.2f} dB over lips and mouth"
    )
    if pixel is not None:
        p = results["pixel_renderer"] = scores(pixel.paint(cond))
        print(
            f"  pixel renderer {renderer} ({pixel.config.render.steps} steps): {p['psnr_window']:.2f} dB "
            f"over the head window, {p['psnr_mouth']:.2f} dB over lips and mouth"
        )

    base = load_config(DiffusionTrainConfig, f"diffusion_{preset}.yaml").network
    nets = {}
    for name, side in (("pixel", size), ("latent", size // factor)):
        config = type(base)(**{**base.__dict__, "sample_size": side})
        factor_ok = side % 2 ** (len(config.block_out_channels) - 1) == 0
        nets[name] = HeadDiffusion(config).to(dev).eval() if factor_ok else None
    decoder_in = torch.randn(1, 4, size // factor, size // factor, device=dev)
    with torch.no_grad():
        times = {"decoder": _timed(lambda: ae.decode(decoder_in), 2, sync)}
        for name, net in nets.items():
            if net is None:
                continue
            side = net.config.sample_size
            x = torch.randn(1, 4, side, side, device=dev)
            c = torch.rand(1, net.config.conditioning_channels, side, side, device=dev)
            r = torch.rand(1, 3, side, side, device=dev)
            times[name] = _timed(lambda net=net, x=x, c=c, r=r: net(x, 500, c, r), 2, sync)
    per_frame = {"pixel": steps * times["pixel"]}
    if "latent" in times:
        per_frame["latent"] = steps * times["latent"] + times["decoder"]
    results["seconds_per_frame"] = per_frame
    line = f"  {preset} net, {steps} steps, one frame on {dev.type}: pixel {per_frame['pixel']:.3f} s"
    if "latent" in per_frame:
        line += (
            f", latent {per_frame['latent']:.3f} s ({steps} x {times['latent']:.3f} s network + "
            f"{times['decoder']:.3f} s decoder)"
        )
    else:
        line += f" (the {preset} net cannot run on a {size // factor} px latent grid)"
    print(line)
    return results

"""``bench gpu``: the one command to run when a GPU is lent for a few minutes.

Stages, in this order, each recorded in ``report.json`` the moment it ends (:mod:`.gpu_report`); a stage
that fails is recorded with its error and the next one runs:

1. ``kernels``: build our hash-grid CUDA kernel and nerfacc's ray marcher (both build on first use and are
   cached on disk, so the tests and the training after them load the builds).
2. ``tests``: ``pytest -m gpu`` in a subprocess: the kernels against their PyTorch references, forward and
   backward; pass, fail, error and skip counts.
3. ``diffusion``: the diffusion network's painting frames/s per size and step count (:mod:`.diffusion`).
4. ``identity``: a clip (``--video``, or the demo portrait saying the demo speech, made by ``generate``
   with the warp renderer) prepared into an identity workspace (on the CPU).
5. ``nerf_train``: the NeRF ``full`` preset trained for the time the run has left; held-out PSNR against
   wall time, read from the trainer's ``train_log.csv``.
6. ``nerf_speed``: hash-grid encoding speed per implementation and the trained NeRF's render frames/s
   (:mod:`.nerf`).
7. ``dub``: the identity's clip dubbed with the demo speech through the trained NeRF (``dub --renderer nerf``,
   frames/s end to end), and ``eval --dub`` on its held-out end (lip sync and image figures).

With ``device="cpu"`` the same stages run at tiny sizes (the NeRF ``tiny`` preset, a 64 px diffusion network)
so that the command is tested on a machine without a GPU.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError, ResourceError
from pipeline.bench.gpu_report import BenchReport, StageFailed, summary_table
from pipeline.bench.measure import machine_with_gpu

REPO = Path(__file__).resolve().parents[2]
IDENTITY = "bench_gpu"
"""Name of the identity the run prepares (under ``OUT/identities/``)."""
PACKAGES = (
    "torch",
    "numpy",
    "opencv-contrib-python",
    "mediapipe",
    "pocketsphinx",
    "imageio-ffmpeg",
    "diffusers",
    "nerfacc",
    "safetensors",
    "tinycudann",
    "pytest",
)
"""Distributions whose versions the report records: a stage that fails for want of one says which."""


@dataclass(frozen=True)
class GpuBenchPlan:
    """Sizes and time shares of a ``bench gpu`` run on one kind of device."""

    nerf_preset: str
    """NeRF training preset (``configs/nerf_<preset>.yaml``)."""
    eval_every: int
    """Training steps between held-out evaluations: the points of the PSNR-against-time curve."""
    checkpoint_every: int
    """Training steps between checkpoints (the log, and the curve in the report, are written then)."""
    min_training_seconds: float
    """Training time given even when the stages before it used up the run's budget."""
    after_training_seconds: float
    """Time kept back from the training for the speed stage after it and the summary."""
    tests_timeout: float
    """Seconds after which the test subprocess is stopped (a hung build or test must not eat the run)."""
    size: int
    """Side of the generated clip and of the workspace frames."""
    clip_seconds: float
    """Length of the generated clip (the demo speech, 10.9 s, cut to it)."""
    dub_seconds: float
    """Length of the speech the dub stage puts in the clip (the demo speech cut to it)."""
    prepare_overrides: tuple[str, ...]
    """``key=value`` settings of :class:`pipeline.prepare.PrepareConfig` beyond ``size``."""
    render_resolution: int
    """Side of the NeRF frames whose render speed is measured."""
    render_frames: int
    """Held-out frames rendered for the speed (the clip holds out its last tenth)."""
    encoding_points: int
    """Points per hash-grid encoding call."""
    diffusion_preset: str
    """Diffusion network preset (``configs/diffusion_<preset>.yaml``)."""
    diffusion_sizes: tuple[int, ...]
    """Sample sizes painted."""
    diffusion_steps: tuple[int, ...]
    """Sampling step counts."""
    diffusion_batch: int
    """Frames painted at once."""


PLANS = {
    "cuda": GpuBenchPlan(
        nerf_preset="full",
        eval_every=500,
        checkpoint_every=1000,
        min_training_seconds=60.0,
        after_training_seconds=100.0,
        tests_timeout=180.0,
        size=512,
        clip_seconds=11.0,
        dub_seconds=11.0,
        prepare_overrides=(),
        render_resolution=512,
        render_frames=25,
        encoding_points=1 << 20,
        diffusion_preset="full",
        diffusion_sizes=(256, 512),
        diffusion_steps=(1, 2, 4),
        diffusion_batch=4,
    ),
    "cpu": GpuBenchPlan(
        nerf_preset="tiny",
        eval_every=10,
        checkpoint_every=20,
        min_training_seconds=8.0,
        after_training_seconds=25.0,
        tests_timeout=120.0,
        size=128,
        clip_seconds=3.0,
        dub_seconds=2.0,
        prepare_overrides=("crop_samples=8", "background_samples=8", "fit.iterations=100"),
        render_resolution=32,
        render_frames=2,
        encoding_points=2048,
        diffusion_preset="tiny",
        diffusion_sizes=(64,),
        diffusion_steps=(1, 2, 4),
        diffusion_batch=1,
    ),
}
"""The GPU run (fits 8 minutes of one H200 with the identity prepared on its CPU) and the CPU run that tests
the command."""


def check_device(name: str):
    """The torch device ``name`` (cuda or cpu); no CUDA GPU for ``cuda`` is a :class:`ResourceError`."""
    import torch

    if name not in ("cuda", "cpu"):
        raise InputError(f"--device {name} is not known", "give cuda, or cpu for a small run")
    if name == "cuda" and not torch.cuda.is_available():
        raise ResourceError(
            f"no CUDA GPU is visible to torch {torch.__version__}",
            "run it on a machine with an NVIDIA GPU and a CUDA build of torch, or give --device cpu for a "
            "small run at tiny sizes",
        )
    return torch.device(name)


def command_line(
    out: str, video: str | None, minutes: float, device: str, tests: Sequence[str] | None
) -> str:
    """The command as a person would type it, for the report and the summary."""
    words = ["talking-portrait bench gpu"]
    if out != "outputs/bench_gpu":
        words.append(f"--out {out}")
    if video:
        words.append(f"--video {video}")
    if minutes != 8:
        words.append(f"--minutes {minutes:g}")
    if device != "cuda":
        words.append(f"--device {device}")
    if tests:
        words.append("--tests " + " ".join(tests))
    return " ".join(words)


def machine_facts(device) -> dict[str, Any]:
    """The machine, the GPU, the CUDA compiler and the versions of :data:`PACKAGES` (None: not installed)."""
    import torch

    facts: dict[str, Any] = {
        "machine": machine_with_gpu(device),
        "cores": os.cpu_count(),
        "torch_cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["gpu"] = props.name
        facts["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    facts["nvcc"] = _nvcc_version()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    facts["packages"] = versions
    return facts


def _nvcc_version() -> str | None:
    home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    nvcc = shutil.which("nvcc") or (str(home / "bin" / "nvcc") if (home / "bin" / "nvcc").is_file() else None)
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in out.splitlines() if "release" in line]
    return lines[-1].strip() if lines else None


# ---- stages --------------------------------------------------------------------------------------------


def build_kernels(device) -> dict[str, Any]:
    """Build (or load the cached build of) our hash-grid kernel and nerfacc's ray marcher; whether each
    loads and how long it took. On a CPU neither is used: the PyTorch reference and dense sampling run."""
    if device.type != "cuda":
        return {"hashgrid_kernel": False, "marcher": False}
    from renderers.nerf.occupancy import marcher_available
    from renderers.nerf.ops.hashgrid import cuda_extension

    start = time.perf_counter()
    kernel = cuda_extension() is not None
    built = time.perf_counter()
    marcher = marcher_available()
    return {
        "hashgrid_kernel": kernel,
        "hashgrid_build_seconds": round(built - start, 1),
        "marcher": marcher,
        "marcher_build_seconds": round(time.perf_counter() - built, 1),
    }


def run_gpu_tests(paths: Sequence[str] | None, out: Path, timeout: float, log) -> dict[str, Any]:
    """``pytest -m gpu`` over ``paths`` (default the repository's tests/) in a subprocess writing to
    ``log``, stopped after ``timeout`` seconds; its counts from the JUnit XML it writes into ``out``."""
    junit = out / "gpu_tests.xml"
    junit.unlink(missing_ok=True)
    targets = [str(Path(p).resolve()) for p in paths] if paths else [str(REPO / "tests")]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-q",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={junit}",
        *targets,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )  # its own process group, so that a stop also ends the compilers it started
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise TimeoutError(f"pytest -m gpu ran past {timeout:.0f} s and was stopped") from None
    if not junit.is_file():
        raise RuntimeError(f"pytest exited with {code} and wrote no report (its output is in the log)")
    return {"exit_code": code, **junit_counts(junit)}


def junit_counts(junit: Path) -> dict[str, Any]:
    """Passed, failed, errors (collection errors included) and skipped counts of a JUnit XML report, and
    the names of the tests that failed or errored."""
    import xml.etree.ElementTree as ET

    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    broken = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in root.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {
        "passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
        "failed": total["failures"],
        "errors": total["errors"],
        "skipped": total["skipped"],
        "not_passed": broken,
    }


def paint_speed(plan: GpuBenchPlan, device) -> dict[str, Any]:
    """The diffusion network's painting frames/s per size and step count (``bench diffusion``)."""
    from pipeline.bench.diffusion import bench_diffusion

    fps = bench_diffusion(
        plan.diffusion_preset, plan.diffusion_sizes, plan.diffusion_steps, plan.diffusion_batch, str(device)
    )
    return {
        "preset": plan.diffusion_preset,
        "batch": plan.diffusion_batch,
        "sampler": "ddim",
        "frames_per_second": {k: round(v, 2) for k, v in fps.items()},
    }


def demo_speech(path: Path, seconds: float) -> tuple[Path, str | None]:
    """The demo speech and its transcript; cut to its first ``seconds`` (written to ``path``, without the
    transcript, which covers the whole) when it is longer."""
    from motion.audio import Audio, load_audio
    from pipeline.oneshot import demo_inputs
    from pipeline.prepare import write_wav

    _, speech, transcript = demo_inputs()
    audio = load_audio(speech)
    keep = int(seconds * audio.rate)
    if keep >= len(audio.samples):
        return speech, transcript
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, Audio(audio.samples[:keep], audio.rate))
    return path, None


def generate_clip(folder: Path, plan: GpuBenchPlan) -> tuple[Path, dict[str, Any]]:
    """The demo portrait saying the demo speech (cut to ``plan.clip_seconds``), made by ``generate`` with the
    warp renderer at ``plan.size``; returns the clip and what it is."""
    from pipeline.oneshot import GenerateConfig, demo_inputs, generate

    photo = demo_inputs()[0]
    speech, transcript = demo_speech(folder / "speech.wav", plan.clip_seconds)
    start = time.perf_counter()
    made = generate(
        photo, speech, folder / "clip.mp4", transcript=transcript, config=GenerateConfig(size=plan.size)
    )
    return made.video, {
        "clip": f"generated: {photo.name} saying {Path(speech).name} (warp renderer)",
        "clip_seconds": round(made.audio_seconds, 2),
        "generate_seconds": round(time.perf_counter() - start, 1),
    }


def make_identity(out: Path, video: str | None, plan: GpuBenchPlan):
    """Prepare ``video`` (or a generated clip) from scratch into ``out/identities/bench_gpu``; returns the
    workspace and the stage's figures."""
    from common.config import load_config
    from pipeline.prepare import PrepareConfig, prepare

    if video is None:
        clip, figures = generate_clip(out / "clip", plan)
    else:
        clip, figures = Path(video), {"clip": str(video)}
    config = load_config(PrepareConfig, None, [f"size={plan.size}", *plan.prepare_overrides])
    start = time.perf_counter()
    ws = prepare(clip, IDENTITY, out / "identities", config, force=True)
    took = time.perf_counter() - start
    figures.update(
        size=ws.size,
        frames=ws.num_frames,
        train_frames=len(ws.split("train")),
        holdout_frames=len(ws.split("holdout")),
        prepare_seconds=round(took, 1),
        prepare_fps=round(ws.num_frames / took, 1),
    )
    return ws, figures


def train_nerf(
    ws, plan: GpuBenchPlan, device, seconds: float, on_curve: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Train the ``plan.nerf_preset`` NeRF on ``ws`` from scratch for at most ``seconds`` of training time;
    figures: steps, times and held-out PSNR against wall time. ``on_curve`` gets the figures so far at
    each checkpoint (the log is written then)."""
    import json

    from common.config import load_config
    from renderers.nerf.train import NerfTrainConfig, train

    overrides = [
        f"device={device.type}",
        f"eval_every={plan.eval_every}",
        f"checkpoint_every={plan.checkpoint_every}",
        f"max_seconds={seconds:.1f}",
    ]
    config = load_config(NerfTrainConfig, f"nerf_{plan.nerf_preset}.yaml", overrides)
    out = ws.renderer_dir("nerf")
    shutil.rmtree(out, ignore_errors=True)  # measure a fresh run, never a resumed one
    start = time.perf_counter()
    elapsed: dict[int, float] = {}  # step -> wall seconds since training began, its evaluation included

    def on_step(step: int) -> None:
        elapsed[step] = time.perf_counter() - start
        if step % config.checkpoint_every == 0:
            on_curve({"psnr_holdout": psnr_curve(out / "train_log.csv", elapsed)})

    renderer = train(ws, out, config, on_step=on_step)
    state = json.loads((out / "training_state.json").read_text())
    steps = int(state["step"])
    return {
        "preset": plan.nerf_preset,
        "size": config.size,
        "rays_per_batch": config.rays_per_batch,
        "budget_seconds": round(seconds, 1),
        "steps": steps,
        "stopped_by": "iterations" if steps >= config.iterations else "time",
        "training_seconds": round(float(state["seconds"]), 1),
        "steps_per_second": round(steps / float(state["seconds"]), 2),
        "sampling": "occupancy grid" if renderer.skip_grid() is not None else "dense",
        "psnr_holdout": psnr_curve(out / "train_log.csv", elapsed),
    }


def psnr_curve(log: Path, elapsed: dict[int, float]) -> list[dict[str, float]]:
    """Held-out PSNR at each evaluation of a training log, with the wall seconds at which it was measured."""
    from renderers.training import read_log

    if not log.is_file():
        return []
    cols = read_log(log)
    if "psnr_holdout" not in cols:
        return []
    return [
        {"step": int(step), "seconds": round(elapsed[int(step)], 1), "psnr": round(float(psnr), 2)}
        for step, psnr in zip(cols["step"], cols["psnr_holdout"], strict=True)
        if np.isfinite(psnr) and int(step) in elapsed
    ]


def nerf_speed(ws, plan: GpuBenchPlan, device) -> dict[str, Any]:
    """Hash-grid encoding speed per implementation and, when ``ws`` holds a trained NeRF, its render
    frames/s at ``plan.render_resolution`` (``bench nerf``)."""
    from pipeline.bench.nerf import bench_nerf

    identity, root = (ws.path.name, str(ws.path.parent)) if ws is not None else (None, None)
    return bench_nerf(
        identity,
        root,
        preset=plan.nerf_preset,
        resolution=plan.render_resolution,
        frames=plan.render_frames,
        points=plan.encoding_points,
        device=str(device),
    )


EVAL_FIGURES = (
    "seconds", "psnr", "ssim", "psnr_mouth", "ssim_mouth", "lmd_mouth_px_at_512", "mouth_opening_correlation",
    "drawn_vs_intended_correlation", "intended_vs_real_correlation",
)  # fmt: skip
"""The ``eval --dub`` figures the dub stage records."""


EVAL_FIGURES = (
    "seconds", "psnr", "ssim", "psnr_mouth", "ssim_mouth", "lmd_mouth_px_at_512", "mouth_opening_correlation",
    "drawn_vs_intended_correlation", "intended_vs_real_correlation",
)  # fmt: skip
"""The ``eval --dub`` figures the dub stage records."""


def dub_with_nerf(ws, plan: GpuBenchPlan, out: Path) -> dict[str, Any]:
    """``dub --renderer nerf`` of ``ws``'s own clip with the demo speech (cut to ``plan.dub_seconds``),
    through the NeRF just trained (used as it is), then ``eval --dub`` on the held-out end; their figures."""
    from common.config import load_config
    from pipeline.dub import DubConfig, dub
    from pipeline.evaluate_dub import evaluate_dub
    from pipeline.prepare import PrepareConfig

    video = Path(ws.info["source"]["path"])
    speech, transcript = demo_speech(out / "dub" / "speech.wav", plan.dub_seconds)
    config = DubConfig(
        renderer="nerf",
        identity=ws.name,
        train=False,
        timeline="pingpong",
        prepare=load_config(PrepareConfig, None, [f"size={plan.size}", *plan.prepare_overrides]),
    )
    start = time.perf_counter()
    made = dub(
        video,
        speech,
        out / "dub" / "dubbed.mp4",
        config=config,
        transcript=transcript,
        workspace=ws.path.parent,
    )
    took = time.perf_counter() - start
    report = evaluate_dub(ws.name, ws.path.parent, "nerf", 250, out / "dub" / "eval")
    return {
        "frames": made.num_frames,
        "seconds": round(took, 1),
        "frames_per_second": round(made.num_frames / took, 2),
        "timings": made.timings,
        "eval": {k: report[k] for k in EVAL_FIGURES},
    }


# ---- the run -------------------------------------------------------------------------------------------


def bench_gpu(
    out: str = "outputs/bench_gpu",
    video: str | None = None,
    minutes: float = 8.0,
    device: str = "cuda",
    tests: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every stage (module docstring) within about ``minutes`` of wall time; the NeRF training gets
    what the other stages leave. Writes ``report.json`` and ``bench_gpu.log`` to ``out``, prints the
    summary table and returns the report."""
    if not minutes > 0:
        raise InputError(f"--minutes {minutes:g} leaves no time", "give a positive budget, e.g. --minutes 8")
    if video is not None and not Path(video).is_file():
        raise InputError(f"video not found: {video}", "check the --video path")
    dev = check_device(device)
    plan = PLANS[dev.type]
    budget = minutes * 60.0
    deadline = time.perf_counter() + budget
    root = Path(out)
    report = BenchReport(
        root,
        {
            "command": command_line(out, video, minutes, device, tests),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "device": dev.type,
            "budget_minutes": minutes,
            "machine": machine_facts(dev),
            "plan": asdict(plan),
        },
    )
    with report.stage("kernels") as figures:
        figures.update(build_kernels(dev))
    with report.stage("tests") as figures:
        figures.update(run_gpu_tests(tests, root, plan.tests_timeout, report.log_file()))
    with report.stage("diffusion") as figures:
        figures.update(paint_speed(plan, dev))
    ws = None
    with report.stage("identity") as figures:
        ws, made = make_identity(root, video, plan)
        figures.update(made)
    with report.stage("nerf_train") as figures:
        if ws is None:
            raise StageFailed("it needs the identity stage, which did not finish")
        seconds = max(plan.min_training_seconds, deadline - time.perf_counter() - plan.after_training_seconds)
        figures.update(train_nerf(ws, plan, dev, seconds, lambda so_far: report.update("nerf_train", so_far)))
    with report.stage("nerf_speed") as figures:
        figures.update(nerf_speed(ws if report.ok("nerf_train") else None, plan, dev))
    with report.stage("dub") as figures:
        if not report.ok("nerf_train"):
            raise StageFailed("it needs the nerf_train stage, which did not finish")
        figures.update(dub_with_nerf(ws, plan, root))
    summary = summary_table(report.data)
    report.finish(summary)
    print(summary)
    return report.data

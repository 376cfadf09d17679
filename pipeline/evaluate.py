"""Evaluating a trained identity on footage it was not trained on: ``talking-portrait eval``.

Two passes over the same held-out frames (the identity's own held-out end, or every frame of another prepared
clip of the same person, ``--on``), each composed into the real frame exactly as ``render`` composes:

- self-reenactment: the renderer driven by the motion tracked on those frames. PSNR and SSIM against the
  real frames over the full frame and over the face box; LPIPS on the face box when its weights are here;
  flicker, the mean difference between the rendered and the real frame-to-frame change in the face box.
  This measures the renderer alone.
- audio-driven: the renderer driven by the motion stage from the clip's own audio (poses, blinks and the
  rest of the face from the footage, as ``render`` does). Landmarks tracked on the output are compared with
  the real ones: mouth landmark distance (LMD, pixels at 512 x 512, mouth centred) and the correlation of
  the mouth opening over time. This measures lip sync end to end.

The report folder holds ``report.json``, ``frames.png`` (real | reenacted | audio-driven), ``mouths.png``
(close-ups of the widest-open mouths, where teeth show), ``mouth.png``
(mouth opening over time) and ``side_by_side.mp4`` (real | audio-driven, with the audio).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.config import save_config
from common.errors import InputError
from common.files import atomic_path, write_json, write_png
from motion.audio import Audio, load_audio
from motion.audio2motion import Audio2MotionConfig, audio_to_motion
from motion.lip_measures import mouth_opening
from motion.sequence import MotionSequence
from motion.tracker import track_frames
from pipeline import metrics
from pipeline.compositor import FootageCompositor
from pipeline.drive import composed, retarget
from pipeline.speech_motion import compared_models, speech_motion
from pipeline.video_io import VideoWriter
from pipeline.workspace import Workspace, identity_dir
from renderers import image_quality
from renderers.base import load_renderer

log = logging.getLogger(__name__)

METRIC_SIZE = 512
"""Landmark distances are reported in pixels of a frame this size, whatever the workspace size."""


@dataclass
class EvalConfig:
    """Settings of ``talking-portrait eval``."""

    renderer: str = "nerf"
    """Which trained renderer of the identity to evaluate."""
    max_frames: int = 250
    """Longest stretch of held-out frames evaluated (contiguous, from the start of the held-out part)."""
    resolution: int = 0
    """Side the NeRF renderer renders the head at (0: the trained renderer's own setting)."""
    steps: int = 0
    """Denoising steps of the diffusion renderer (0: the trained renderer's own setting)."""
    sheet_frames: int = 6
    """Frames shown in ``frames.png``."""
    video: bool = True
    """Write ``side_by_side.mp4``."""
    lpips: bool = True
    """Measure LPIPS on the face box when its weights are on this machine."""
    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """Audio-to-motion settings for the audio-driven pass."""


def held_out_frames(model_ws: Workspace, target: Workspace, limit: int) -> np.ndarray:
    """The evaluated frames of ``target``: its held-out part when it is the training workspace, else all
    of it; the longest valid run from the start, at most ``limit`` frames."""
    split = "holdout" if target.path == model_ws.path else None
    if split and len(target.split(split)) == 0:
        raise InputError(
            f"identity {target.path.name} has no held-out frames",
            "prepare it with --holdout 0.1, or evaluate on another clip of the person with --on",
        )
    frames = target.tracked_frames(split)
    if len(frames) < 3:
        raise InputError(f"{target.path.name} has too few tracked held-out frames", "prepare a longer clip")
    frames = frames[:limit]
    breaks = np.flatnonzero(np.diff(frames) != 1)
    return frames[: breaks[0] + 1] if len(breaks) and breaks[0] + 1 >= 3 else frames


def _segment_audio(target: Workspace, frames: np.ndarray) -> Audio:
    speech = load_audio(target.file("audio.wav"))
    start = round(frames[0] / target.fps * speech.rate)
    stop = round((frames[-1] + 1) / target.fps * speech.rate)
    return Audio(speech.samples[start:stop], speech.rate)


def _image_metrics(fake: np.ndarray, real: np.ndarray, box: tuple[int, int, int, int], lpips) -> dict:
    a = fake.astype(np.float32) / 255
    b = real.astype(np.float32) / 255
    fa, fb = metrics.crop(a, box), metrics.crop(b, box)
    out = {
        "psnr": image_quality.psnr(a, b),
        "ssim": float(image_quality.ssim(a, b)),
        "psnr_face": image_quality.psnr(fa, fb),
        "ssim_face": float(image_quality.ssim(fa, fb)),
    }
    if lpips is not None:
        import torch

        with torch.no_grad():
            out["lpips_face"] = float(lpips(image_quality.as_nchw(fa), image_quality.as_nchw(fb)).mean())
    return out


def _widest_openings(opening: np.ndarray, count: int, gap: int) -> list[int]:
    """Up to ``count`` frames with the widest mouth openings, at least ``gap`` frames apart, in time order
    (where teeth show and renderers differ most)."""
    picked: list[int] = []
    for k in np.argsort(-np.nan_to_num(opening, nan=-np.inf)):
        if len(picked) == count or not np.isfinite(opening[k]):
            break
        if all(abs(int(k) - p) >= gap for p in picked):
            picked.append(int(k))
    return sorted(picked)


def sheet(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    """A grid: one labelled row per pass, one column per frame."""
    cells = []
    for label, images in rows:
        row = np.concatenate(images, 1)
        bar = np.full((22, row.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cells += [bar, row]
    write_png(path, np.concatenate(cells, 0))


def plot_mouth(curves: dict[str, np.ndarray], fps: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3))
    for name, values in curves.items():
        ax.plot(np.arange(len(values)) / fps, values, lw=1.2, label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel("mouth opening (gap / width)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_side_by_side(path: Path, fps: float, left: list, right: list, audio: Audio) -> None:
    """A video of ``left`` and ``right`` frames side by side (real | made), with ``audio``."""
    height, width = left[0].shape[:2]
    with VideoWriter(path, fps, (2 * width, height), audio=audio) as writer:
        for a, b in zip(left, right, strict=True):
            writer.write(np.concatenate([a, b], 1))


def _compose_all(renderer, motion: MotionSequence, target: Workspace, frames: np.ndarray, progress: bool):
    return list(composed(renderer, motion, target, frames, FootageCompositor(target.background()), progress))


def evaluate_identity(
    identity: str,
    workspace: str | os.PathLike | None = None,
    on: str | None = None,
    config: EvalConfig | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``identity``'s trained renderer; returns the report (also written to the report folder).

    Args:
        on: another prepared identity (same root) of the same person to evaluate on, all of its frames;
            None evaluates on the identity's own held-out frames.
        out: report folder (default: the identity's ``report/eval_<renderer>[_on_<clip>]``).
    """
    from renderers.perceptual import LPIPS, available

    config = config or EvalConfig()
    model_ws = Workspace.open(identity_dir(identity, workspace))
    model_dir = model_ws.trained_renderer_dir(config.renderer)
    target = model_ws if on is None else Workspace.open(identity_dir(on, workspace))
    target.require("report")
    for checked in {model_ws.path: model_ws, target.path: target}.values():
        checked.require_intact()
    if target.size != model_ws.size:
        raise InputError(
            f"{target.path.name} was prepared at {target.size} px and {identity} at {model_ws.size} px",
            f"prepare {target.path.name} again with --size {model_ws.size}",
        )
    fit = target.fit()
    overrides = {name: getattr(config, name) for name in ("resolution", "steps") if getattr(config, name)}
    renderer = load_renderer(model_dir, render=overrides, focal=fit.focal)  # the camera of the clip
    frames = held_out_frames(model_ws, target, config.max_frames)
    lpips = LPIPS.load() if config.lpips and available() else None
    report_dir = (
        Path(out)
        if out
        else model_ws.report_dir / (f"eval_{config.renderer}" + ("" if on is None else f"_on_{on}"))
    )
    report_dir.mkdir(parents=True, exist_ok=True)

    # self-reenactment
    tracked = fit.motion(target.fps, frames)
    reenacted = _compose_all(renderer, tracked, target, frames, progress)
    real = [rgb for _, rgb, _ in target.iter_frames([int(i) for i in frames])]
    scale = METRIC_SIZE / target.size
    boxes = [metrics.face_box(fit.landmarks[i], target.size) for i in frames]
    per_frame = [
        _image_metrics(fake, gt, box, lpips) for fake, gt, box in zip(reenacted, real, boxes, strict=True)
    ]

    # audio-driven: by the identity's own motion model and by the generic stage, side by side
    speech = _segment_audio(target, frames)
    trained = fit if target is model_ws else model_ws.fit()  # the same file when evaluated on itself
    real_lm = fit.landmarks[frames]
    reenacted_lm = track_frames(reenacted)
    opening = {
        "real footage": mouth_opening(real_lm),
        "reenacted (tracked motion)": mouth_opening(reenacted_lm),
    }
    models = compared_models(model_ws, config.motion.model)
    first = models[0]
    generic = audio_to_motion(speech, target.fps, len(frames), config=config.motion)  # each model's prior
    spoken_by: dict[str, list[np.ndarray]] = {}
    by_model: dict[str, dict[str, float]] = {}
    for model in models:
        only = dataclasses.replace(config.motion, model=model)
        motion = speech_motion(speech, target.fps, len(frames), model_ws, only, generic=generic)
        driven = retarget(
            motion.motion, fit, frames, trained=trained, match_identity_range=model == "generic"
        )
        spoken = _compose_all(renderer, driven, target, frames, progress)
        spoken_lm = track_frames(spoken)
        opening[f"audio-driven ({model} motion)"] = mouth_opening(spoken_lm)
        spoken_by[model] = spoken
        by_model[model] = {
            "lmd_mouth_px_at_512": metrics.mouth_landmark_distance(spoken_lm * scale, real_lm * scale),
            "mouth_opening_correlation": metrics.pearson(
                opening[f"audio-driven ({model} motion)"], opening["real footage"]
            ),
            "faces_found": float(np.isfinite(spoken_lm[:, 0, 0]).mean()),
        }
    spoken = spoken_by[first]
    mean = {k: float(np.nanmean([m[k] for m in per_frame])) for k in per_frame[0]}
    mean["temporal_error_face"] = metrics.temporal_error(reenacted, real, boxes)
    report = {
        "identity": identity,
        "evaluated_on": target.path.name,
        "renderer": config.renderer,
        "frames": [int(frames[0]), int(frames[-1]) + 1],
        "seconds": len(frames) / target.fps,
        "self_reenactment": mean,
        "motion_model": first,
        "audio_driven": by_model[first],
        "audio_driven_by_motion_model": by_model,
        "reenactment_lip_fidelity": {
            "lmd_mouth_px_at_512": metrics.mouth_landmark_distance(reenacted_lm * scale, real_lm * scale),
            "mouth_opening_correlation": metrics.pearson(
                opening["reenacted (tracked motion)"], opening["real footage"]
            ),
        },
        "lpips": "measured" if lpips is not None else "weights not on this machine",
    }

    picks = np.linspace(0, len(frames) - 1, min(config.sheet_frames, len(frames))).round().astype(int)
    small = lambda images: [cv2.resize(images[k], (192, 192), interpolation=cv2.INTER_AREA) for k in picks]
    sheet(
        [
            ("real", small(real)),
            ("reenacted: tracked motion", small(reenacted)),
            *(
                (f"audio-driven: {model} motion from the clip's speech", small(images))
                for model, images in spoken_by.items()
            ),
        ],
        report_dir / "frames.png",
    )
    wide = _widest_openings(opening["real footage"], config.sheet_frames, round(target.fps / 2))
    boxes = [metrics.mouth_box(real_lm[k], target.size) for k in wide]
    mouths = lambda images: [
        cv2.resize(metrics.crop(images[k], box), (160, 160), interpolation=cv2.INTER_CUBIC)
        for k, box in zip(wide, boxes, strict=True)
    ]
    sheet(
        [
            ("real: the widest-open mouths of the clip", mouths(real)),
            ("reenacted", mouths(reenacted)),
            *((f"audio-driven ({model} motion)", mouths(images)) for model, images in spoken_by.items()),
        ],
        report_dir / "mouths.png",
    )
    plot_mouth(opening, target.fps, report_dir / "mouth.png", f"{identity} on {target.path.name}")
    if config.video:
        write_side_by_side(report_dir / "side_by_side.mp4", target.fps, real, spoken, speech)
    write_json(report_dir / "report.json", report)
    save_config(config, report_dir / "eval.config.yaml")
    report["report_dir"] = str(report_dir)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal."""
    s, r = report["self_reenactment"], report["reenactment_lip_fidelity"]
    lines = [
        f"{report['identity']} ({report['renderer']}) on {report['evaluated_on']}, "
        f"frames {report['frames'][0]}-{report['frames'][1]} ({report['seconds']:.1f} s)",
        f"  self-reenactment: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}; face box PSNR "
        f"{s['psnr_face']:.2f} dB, SSIM {s['ssim_face']:.3f}"
        + (f", LPIPS {s['lpips_face']:.3f}" if "lpips_face" in s else " (LPIPS: weights not here)")
        + f"; flicker {100 * s['temporal_error_face']:.2f} % (frame-to-frame change unlike the footage's)",
        *(
            f"  audio-driven, {model} motion: mouth LMD {a['lmd_mouth_px_at_512']:.2f} px @512, "
            f"mouth-opening correlation {a['mouth_opening_correlation']:.2f} "
            f"(faces found {100 * a['faces_found']:.0f}%)"
            for model, a in report["audio_driven_by_motion_model"].items()
        ),
        f"  reenacted lips: LMD {r['lmd_mouth_px_at_512']:.2f} px, "
        f"correlation {r['mouth_opening_correlation']:.2f}",
        f"  report: {report['report_dir']}",
    ]
    return "\n".join(lines)

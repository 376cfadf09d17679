"""Evaluating dubbing: ``talking-portrait eval --identity NAME --dub``.

The held-out end of the identity's own clip is dubbed with its own speech through the whole ``dub`` path
(face following at the source's resolution, the mouth from the motion stage, paste-back into the original
frames), and the result is compared with the real frames it replaces: PSNR and SSIM over the whole frame
and over the mouth box, mouth landmark distance and the correlation of the mouth opening over time.

The warp path takes the lower face from the person's closed-mouth frame (``mouth_texture=closed``): starting
from each real frame's own mouth would hand the answer to the measurement. The trained paths use the
identity's renderer, trained on the frames before the held-out part.

The report folder holds ``report.json``, ``frames.png`` and ``mouths.png`` (real | dubbed: whole frames,
mouth close-ups),
``mouth.png`` (the mouth opening over time), ``side_by_side.mp4`` and ``dubbed.mp4``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.config import save_config
from common.errors import InputError
from common.files import write_json
from motion.audio import Audio, load_audio
from motion.audio2motion import Audio2MotionConfig
from motion.lip_measures import mouth_opening
from pipeline import metrics
from pipeline.dub import DubConfig, dub
from pipeline.evaluate import held_out_frames, plot_mouth, sheet, write_side_by_side
from pipeline.face_follow import follow_face
from pipeline.prepare import write_wav
from pipeline.speech_motion import compared_models
from pipeline.timeline import read_span
from pipeline.video_io import first_frame_offset, probe_video, read_video_frames
from pipeline.workspace import Workspace, identity_dir
from renderers import image_quality

METRIC_FACE = 512 / 2.6
"""Landmark distances are reported in pixels of a face this tall (the face in a 512 px crop framed like
``prepare``'s), whatever the source's resolution."""


def evaluate_dub(
    identity: str,
    workspace: str | os.PathLike | None,
    renderer: str,
    max_frames: int,
    out: str | os.PathLike | None = None,
    resolution: int = 0,
    progress: bool = False,
    on: str | None = None,
    motion_model: str = "auto",
) -> dict[str, Any]:
    """Dub ``identity``'s held-out footage (or all of ``on``'s, another prepared clip of the same person)
    with its own speech and measure it; returns the report.

    The mouth is made by the identity's own motion model when it has one, and then also by the generic stage,
    each measured (``by_motion_model``); ``motion_model`` (``motion.model``) can ask for one of them.
    """
    model_ws = Workspace.open(identity_dir(identity, workspace))
    ws = model_ws if on is None else Workspace.open(identity_dir(on, workspace))
    for checked in {model_ws.path: model_ws, ws.path: ws}.values():
        checked.require("report")
        checked.require_intact()
    video = Path(ws.info["source"]["path"])
    if not video.is_file():
        raise InputError(
            f"the video {ws.name} was prepared from is not at {video}",
            "put it back there, or prepare the identity again from where it is now",
        )
    if renderer != "warp":
        ws.trained_renderer_dir(renderer)  # evaluated as trained, never trained here
    frames = held_out_frames(model_ws, ws, max_frames)
    start, stop = float(frames[0] / ws.fps), float((frames[-1] + 1) / ws.fps)
    default_dir = f"eval_dub_{renderer}" + ("" if on is None else f"_on_{on}")
    report_dir = Path(out) if out else model_ws.report_dir / default_dir
    report_dir.mkdir(parents=True, exist_ok=True)

    speech = load_audio(ws.file("audio.wav"))
    segment = Audio(speech.samples[round(start * speech.rate) : round(stop * speech.rate)], speech.rate)
    speech_path = report_dir / "speech.wav"
    write_wav(speech_path, segment)
    models = compared_models(model_ws, motion_model)
    first_model = models[0]
    configs, results, dubbed_by = {}, {}, {}
    for model in models:
        configs[model] = DubConfig(
            renderer=renderer,
            start=start,
            timeline="cut",
            identity=ws.name,
            motion_identity=identity,
            mouth_texture="closed",
            resolution=resolution,
            train=False,  # the renderer as it was trained
            motion=dataclasses.replace(Audio2MotionConfig(), model=model),
        )
        name = "dubbed.mp4" if model == first_model else f"dubbed_{model}.mp4"
        results[model] = dub(
            video, speech_path, report_dir / name, config=configs[model], workspace=workspace
        )
        dubbed_by[model] = list(read_video_frames(results[model].video))

    info = probe_video(video, decode=False)
    first = round(start * info.fps)
    n = min(len(d) for d in dubbed_by.values())
    real = list(read_span(video, info.fps, first, n, first_frame_offset(video)))
    n = min(n, len(real))
    real = real[:n]
    real_track = follow_face(real)
    size = real[0].shape[:2]
    box = metrics.mouth_box(real_track.points[real_track.found], (size[1], size[0]))
    scale = METRIC_FACE / metrics.face_height(real_track.points[real_track.found])
    real_opening = mouth_opening(np.where(real_track.found[:, None, None], real_track.points, np.nan))
    opening = {"real footage": real_opening}
    by_model = {}
    for model in models:
        dubbed = dubbed_by[model][:n]
        dub_track = follow_face(dubbed)
        found = real_track.found & dub_track.found
        if found.sum() < 3:
            raise InputError(
                f"the face was lost in the held-out part of {ws.name}", "prepare a clip where it shows"
            )
        quality = []
        for a, b in zip(dubbed, real, strict=True):
            fa, fb = a.astype(np.float32) / 255, b.astype(np.float32) / 255
            ma, mb = metrics.crop(fa, box), metrics.crop(fb, box)
            quality.append(
                (image_quality.psnr(fa, fb), float(image_quality.ssim(fa, fb)),
                 image_quality.psnr(ma, mb), float(image_quality.ssim(ma, mb)))
            )  # fmt: skip
        psnr, ssim, psnr_mouth, ssim_mouth = np.mean(quality, 0)
        real_lm, dub_lm = real_track.points[found, :, :2], dub_track.points[found, :, :2]
        intended = results[model].intended_opening[:n]
        drawn = mouth_opening(np.where(found[:, None, None], dub_track.points, np.nan))
        opening[f"intended ({model} motion)"] = np.where(found, intended, np.nan)
        opening[f"dubbed ({model} motion)"] = drawn
        by_model[model] = {
            "psnr": float(psnr),
            "ssim": float(ssim),
            "psnr_mouth": float(psnr_mouth),
            "ssim_mouth": float(ssim_mouth),
            "lmd_mouth_px_at_512": metrics.mouth_landmark_distance(dub_lm * scale, real_lm * scale),
            "mouth_opening_correlation": metrics.pearson(drawn, real_opening),
            # the drawn mouth against the one dub meant to draw (the paste-back's fidelity), and what it
            # meant to draw against the real mouth (the motion stage's lip sync)
            "drawn_vs_intended_correlation": metrics.pearson(drawn, intended),
            "intended_vs_real_correlation": metrics.pearson(intended, real_opening),
            "faces_found": float(dub_track.found.mean()),
            "passed_through": results[model].passed_through,
        }
    report = {
        "identity": identity,
        "evaluated_on": ws.name,
        "renderer": results[first_model].renderer,
        "source": str(video),
        "frames": [first, first + n],
        "seconds": n / info.fps,
        "resolution": [size[1], size[0]],
        "mouth_box": list(box),
        "motion_model": first_model,
        **by_model[first_model],
        "by_motion_model": by_model,
    }

    picks = np.linspace(0, n - 1, min(6, n)).round().astype(int)
    whole = lambda images: [cv2.resize(images[k], (int(192 * size[1] / size[0]), 192)) for k in picks]
    wide = np.argsort(np.nan_to_num(real_opening, nan=-1.0))[::-1]
    picks_wide = sorted(wide[: min(6, n)])
    close = lambda images: [
        cv2.resize(metrics.crop(images[k], box), (160, 160), interpolation=cv2.INTER_CUBIC)
        for k in picks_wide
    ]
    rows = [("real", whole(real))] + [(f"dubbed, {m} motion", whole(dubbed_by[m])) for m in models]
    sheet(rows, report_dir / "frames.png")
    rows = [("real mouth, widest open", close(real))]
    rows += [(f"dubbed, {m} motion", close(dubbed_by[m])) for m in models]
    sheet(rows, report_dir / "mouths.png")
    plot_mouth(opening, info.fps, report_dir / "mouth.png", f"{ws.name}: dubbed with its own speech")
    write_side_by_side(report_dir / "side_by_side.mp4", info.fps, real, dubbed_by[first_model][:n], segment)
    write_json(report_dir / "report.json", report)
    save_config(configs[first_model], report_dir / "dub.config.yaml")
    report["report_dir"] = str(report_dir)
    return report


def format_dub_report(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal."""
    return "\n".join(
        [
            f"{report['evaluated_on']} dubbed with its own speech ({report['renderer']}, the mouth by "
            f"{report['identity']}'s motion), frames "
            f"{report['frames'][0]}-{report['frames'][1]} ({report['seconds']:.1f} s) at "
            f"{report['resolution'][0]}x{report['resolution'][1]}",
            f"  PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.3f}; mouth box PSNR "
            f"{report['psnr_mouth']:.2f} dB, SSIM {report['ssim_mouth']:.3f}",
            *(
                f"  {model} motion: mouth LMD {m['lmd_mouth_px_at_512']:.2f} px @512, mouth-opening "
                f"correlation {m['mouth_opening_correlation']:.2f} (faces found "
                f"{100 * m['faces_found']:.0f}%); the drawn mouth follows the intended one at r "
                f"{m['drawn_vs_intended_correlation']:.2f} (paste-back), the intended one the real at r "
                f"{m['intended_vs_real_correlation']:.2f} (motion stage)"
                for model, m in report["by_motion_model"].items()
            ),
            f"  report: {report['report_dir']}",
        ]
    )

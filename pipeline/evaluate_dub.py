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

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.config import save_config
from common.errors import InputError
from common.files import write_json
from motion import topology as tp
from motion.audio import Audio, load_audio
from motion.lip_measures import mouth_opening
from pipeline import metrics
from pipeline.dub import DubConfig, dub
from pipeline.evaluate import held_out_frames, plot_mouth, sheet, write_side_by_side
from pipeline.face_follow import follow_face
from pipeline.prepare import write_wav
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
) -> dict[str, Any]:
    """Dub ``identity``'s held-out footage with its own speech and measure it; returns the report."""
    ws = Workspace.open(identity_dir(identity, workspace))
    ws.require("report")
    ws.require_intact()
    video = Path(ws.info["source"]["path"])
    if not video.is_file():
        raise InputError(
            f"the video {identity} was prepared from is not at {video}",
            "put it back there, or prepare the identity again from where it is now",
        )
    if renderer != "warp":
        ws.trained_renderer_dir(renderer)  # evaluated as trained, never trained here
    frames = held_out_frames(ws, ws, max_frames)
    start, stop = float(frames[0] / ws.fps), float((frames[-1] + 1) / ws.fps)
    report_dir = Path(out) if out else ws.report_dir / f"eval_dub_{renderer}"
    report_dir.mkdir(parents=True, exist_ok=True)

    speech = load_audio(ws.file("audio.wav"))
    segment = Audio(speech.samples[round(start * speech.rate) : round(stop * speech.rate)], speech.rate)
    speech_path = report_dir / "speech.wav"
    write_wav(speech_path, segment)
    config = DubConfig(
        renderer=renderer,
        start=start,
        timeline="cut",
        identity=identity,
        mouth_texture="closed",
        resolution=resolution,
        train=False,  # the renderer as it was trained
    )
    result = dub(video, speech_path, report_dir / "dubbed.mp4", config=config, workspace=workspace)

    dubbed = list(read_video_frames(result.video))
    info = probe_video(video, decode=False)
    first = round(start * info.fps)
    real = list(read_span(video, info.fps, first, len(dubbed), first_frame_offset(video)))
    n = min(len(real), len(dubbed))
    real, dubbed = real[:n], dubbed[:n]
    real_track, dub_track = follow_face(real), follow_face(dubbed)
    found = real_track.found & dub_track.found
    if found.sum() < 3:
        raise InputError(
            f"the face was lost in the held-out part of {identity}", "prepare a clip where it shows"
        )
    size = real[0].shape[:2]
    box = metrics.mouth_box(real_track.points[found], (size[1], size[0]))
    quality = []
    for a, b in zip(dubbed, real, strict=True):
        fa, fb = a.astype(np.float32) / 255, b.astype(np.float32) / 255
        ma, mb = metrics.crop(fa, box), metrics.crop(fb, box)
        quality.append(
            (image_quality.psnr(fa, fb), float(image_quality.ssim(fa, fb)),
             image_quality.psnr(ma, mb), float(image_quality.ssim(ma, mb)))
        )  # fmt: skip
    psnr, ssim, psnr_mouth, ssim_mouth = np.mean(quality, 0)
    face_height = np.nanmedian(np.ptp(real_track.points[found][:, list(tp.FACE_OVAL), 1], axis=1))
    scale = METRIC_FACE / face_height
    real_lm, dub_lm = real_track.points[found, :, :2], dub_track.points[found, :, :2]
    opening = {
        "intended (motion stage)": np.where(found, result.intended_opening[:n], np.nan),
        "real footage": mouth_opening(np.where(found[:, None, None], real_track.points, np.nan)),
        "dubbed (speech -> motion -> paste-back)": mouth_opening(
            np.where(found[:, None, None], dub_track.points, np.nan)
        ),
    }
    report = {
        "identity": identity,
        "renderer": result.renderer,
        "source": str(video),
        "frames": [first, first + n],
        "seconds": n / info.fps,
        "resolution": [size[1], size[0]],
        "psnr": float(psnr),
        "ssim": float(ssim),
        "psnr_mouth": float(psnr_mouth),
        "ssim_mouth": float(ssim_mouth),
        "mouth_box": list(box),
        "lmd_mouth_px_at_512": metrics.mouth_landmark_distance(dub_lm * scale, real_lm * scale),
        "mouth_opening_correlation": metrics.pearson(
            opening["dubbed (speech -> motion -> paste-back)"], opening["real footage"]
        ),
        # the drawn mouth against the one dub meant to draw (the paste-back's fidelity), and what it meant to
        # draw against the real mouth (the motion stage's lip sync)
        "drawn_vs_intended_correlation": metrics.pearson(
            opening["dubbed (speech -> motion -> paste-back)"], result.intended_opening[:n]
        ),
        "intended_vs_real_correlation": metrics.pearson(result.intended_opening[:n], opening["real footage"]),
        "faces_found": float(dub_track.found.mean()),
        "passed_through": result.passed_through,
    }

    picks = np.linspace(0, n - 1, min(6, n)).round().astype(int)
    whole = lambda images: [cv2.resize(images[k], (int(192 * size[1] / size[0]), 192)) for k in picks]
    close = lambda images: [
        cv2.resize(metrics.crop(images[k], box), (160, 160), interpolation=cv2.INTER_CUBIC) for k in picks
    ]
    sheet([("real", whole(real)), ("dubbed", whole(dubbed))], report_dir / "frames.png")
    sheet([("real mouth", close(real)), ("dubbed mouth", close(dubbed))], report_dir / "mouths.png")
    plot_mouth(opening, info.fps, report_dir / "mouth.png", f"{identity}: dubbed with its own speech")
    write_side_by_side(report_dir / "side_by_side.mp4", info.fps, real, dubbed, segment)
    write_json(report_dir / "report.json", report)
    save_config(config, report_dir / "dub.config.yaml")
    report["report_dir"] = str(report_dir)
    return report


def format_dub_report(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal."""
    return "\n".join(
        [
            f"{report['identity']} dubbed with its own held-out speech ({report['renderer']}), frames "
            f"{report['frames'][0]}-{report['frames'][1]} ({report['seconds']:.1f} s) at "
            f"{report['resolution'][0]}x{report['resolution'][1]}",
            f"  PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.3f}; mouth box PSNR "
            f"{report['psnr_mouth']:.2f} dB, SSIM {report['ssim_mouth']:.3f}",
            f"  mouth LMD {report['lmd_mouth_px_at_512']:.2f} px @512, mouth-opening correlation "
            f"{report['mouth_opening_correlation']:.2f} (faces found {100 * report['faces_found']:.0f}%)",
            f"  the drawn mouth follows the intended one at r {report['drawn_vs_intended_correlation']:.2f} "
            f"(paste-back); the intended one follows the real at r "
            f"{report['intended_vs_real_correlation']:.2f} (motion stage)",
            f"  report: {report['report_dir']}",
        ]
    )

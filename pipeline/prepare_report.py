"""The report of a prepared identity: pictures and numbers to check the preparation by eye.

``report/contact_sheet.png``: frames spread over the clip with the masks tinted over them (head, neck,
torso) and the fitted face model's contours drawn on top; ``report/pose.png``: head rotation and
translation over time, frame-by-frame PnP in grey under the stabilised fit; ``report/expression.png``: key
expression coefficients and blinks over time; ``report/background.png``: the plate beside its coverage;
``report/summary.json``: the numbers :func:`format_summary` prints.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from common.files import atomic_path, write_json, write_png
from motion import topology as tp
from motion.clip_fit import ClipFit, per_frame_pnp
from pipeline.workspace import Damage, Workspace

REPORT_FILES = ("contact_sheet.png", "pose.png", "expression.png", "background.png", "summary.json")
"""What :func:`write_report` writes into ``report/``."""
LABEL_COLOURS = np.array(
    [[0, 0, 0], [60, 120, 255], [255, 200, 0], [255, 60, 90]], np.float32
)  # bg/torso/neck/head
CONTOURS = (
    (*tp.FACE_OVAL, tp.FACE_OVAL[0]),
    tp.LIPS_UPPER_OUTER,
    tp.LIPS_LOWER_OUTER,
    tp.LIPS_UPPER_INNER,
    tp.LIPS_LOWER_INNER,
    tp.LEFT_EYE_UPPER,
    tp.LEFT_EYE_LOWER,
    tp.RIGHT_EYE_UPPER,
    tp.RIGHT_EYE_LOWER,
    tp.LEFT_BROW[:5],
    tp.RIGHT_BROW[:5],
)


def contact_sheet(
    ws: Workspace, fit: ClipFit, landmarks: np.ndarray, count: int = 8, tile: int = 256
) -> np.ndarray:
    """Tiles of frames spread over the clip: masks tinted, fitted contours (green), tracked points (red)."""
    n = ws.num_frames
    picks = np.unique(np.linspace(0, n - 1, count).round().astype(int))
    projected = fit.project(picks)
    tiles = []
    for k, (i, rgb, masks) in enumerate(ws.iter_frames(picks.tolist())):
        colour = LABEL_COLOURS[masks.labels]
        alpha = 0.35 * (masks.labels > 0)[..., None]
        img = (rgb * (1 - alpha) + colour * alpha).astype(np.uint8)
        scale = tile / img.shape[0]
        img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        # the head matte's edge, to see hair and neck cut
        edge = cv2.resize(masks.head_alpha, (tile, tile)) > 127
        contour_mask = edge ^ cv2.erode(edge.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        img[contour_mask] = (255, 255, 255)
        if landmarks[i].any():
            for p in landmarks[i, :468:3, :2] * scale:
                cv2.circle(img, (int(p[0]), int(p[1])), 1, (255, 40, 40), -1, cv2.LINE_AA)
        for line in CONTOURS:
            pts = (projected[k, list(line)] * scale).round().astype(np.int32)
            cv2.polylines(img, [pts], False, (40, 255, 80), 1, cv2.LINE_AA)
        cv2.putText(img, f"{i}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r : r + 4], 1) for r in range(0, len(tiles), 4)]
    return np.concatenate(rows, 0)


def _plot_curves(
    path, series: list[tuple[str, list[tuple[str, np.ndarray, dict[str, Any]]]]], fps: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(11, 2.3 * len(series)), sharex=True)
    for ax, (title, lines) in zip(np.atleast_1d(axes), series, strict=True):
        for label, values, style in lines:
            ax.plot(np.arange(len(values)) / fps, values, label=label, **style)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def write_report(ws: Workspace) -> dict[str, Any]:
    """Write the report files of a prepared workspace and return the summary."""
    fit = ws.fit()
    landmarks = fit.landmarks
    valid = fit.valid
    ws.report_dir.mkdir(parents=True, exist_ok=True)
    write_png(ws.report_dir / "contact_sheet.png", contact_sheet(ws, fit, landmarks))

    rot_pnp, trans_pnp = per_frame_pnp(fit, landmarks, valid)
    grey = {"color": "0.6", "lw": 0.8}
    pose_series = []
    for k, axis in enumerate(("pitch (x)", "yaw (y)", "roll (z)")):
        pose_series.append(
            (
                f"{axis} deg",
                [
                    ("per-frame PnP", np.degrees(np.where(valid, rot_pnp[:, k], np.nan)), grey),
                    ("stabilised", np.degrees(np.where(valid, fit.rotation[:, k], np.nan)), {"lw": 1.2}),
                ],
            )
        )
    ok = valid & np.isfinite(fit.translation).all(1)
    rel = fit.translation - np.median(fit.translation[ok], 0)  # motion about the clip's median position
    rel_pnp = trans_pnp - np.median(fit.translation[ok], 0)
    pose_series.append(
        (
            "translation\n(units from median)",
            [(f"{a} PnP", np.where(valid, rel_pnp[:, k], np.nan), grey) for k, a in enumerate("xyz")]
            + [(a, np.where(valid, rel[:, k], np.nan), {"lw": 1.2}) for k, a in enumerate("xyz")],
        )
    )
    _plot_curves(ws.report_dir / "pose.png", pose_series, ws.fps)

    idx = {n: i for i, n in enumerate(fit.names)}
    groups = [
        ("mouth", ["jaw_open", "lips_together", "mouth_wide", "pucker", "funnel"]),
        ("lips", ["smile_left", "smile_right", "upper_lip_up", "lower_lip_down", "lower_lip_in"]),
        ("eyes, brows", ["blink_left", "blink_right", "brow_up", "brow_inner_up"]),
    ]
    _plot_curves(
        ws.report_dir / "expression.png",
        [
            (
                title,
                [
                    (n, np.where(valid, fit.expression[:, idx[n]], np.nan), {"lw": 1.0})
                    for n in names
                    if n in idx
                ],
            )
            for title, names in groups
        ],
        ws.fps,
    )

    plate = ws.background()
    coverage = cv2.imread(str(ws.file("background_coverage.png")), cv2.IMREAD_GRAYSCALE)
    write_png(ws.report_dir / "background.png", np.concatenate([plate, np.dstack([coverage] * 3)], 1))

    summary = {
        "identity": ws.info.get("identity"),
        "source": ws.info["source"]["path"],
        "source_size": [ws.info["source"]["video"]["width"], ws.info["source"]["video"]["height"]],
        "source_fps": ws.info["source"]["video"]["fps"],
        "crop": ws.info.get("crop"),
        "size": ws.size,
        "fps": ws.fps,
        "seconds": round(ws.num_frames / ws.fps, 2),
        "split": ws.info.get("split"),
        "audio": ws.info.get("audio"),
        **ws.info.get("summary", {}),
        "timings_s": ws.info.get("timings", {}),
    }
    write_json(ws.report_dir / "summary.json", summary)
    return summary


def format_files(ws: Workspace, damage: list[Damage] | None = None) -> list[str]:
    """Lines saying whether the workspace's files are as they were written (``damage``: what
    :meth:`Workspace.verify` found; checked here when None)."""
    damage = ws.verify() if damage is None else damage
    if not ws.checksums_recorded and not damage:
        return ["files        not recorded (prepared before checksums were kept; prepare --force adds them)"]
    if not damage:
        return [f"files        all {len(ws.recorded())} as written (sizes and SHA-256 checksums match)"]
    total = f" of {len(ws.recorded())}" if ws.checksums_recorded else ""
    lines = [f"files        {len(damage)}{total} DAMAGED:"]
    lines += [f"             {d.name}: {d.problem}" for d in damage]
    lines.append(f"repair       {ws.repair_command()}")
    return lines


def format_summary(ws: Workspace, damage: list[Damage] | None = None) -> str:
    """The workspace's summary as lines for a terminal, its files checked (``damage``: what
    :meth:`Workspace.verify` found, when it has run already)."""
    s = ws.summary()
    steps = ws.info.get("steps", {})
    lines = [f"identity     {ws.info.get('identity')}  ({ws.path})"]
    lines.append(f"schema       {ws.info.get('schema_version')}; steps done: {', '.join(steps) or 'none'}")
    lines += format_files(ws, damage)
    if "frames" not in s:
        return "\n".join([*lines, "(preparation has not finished; run prepare again to resume)"])
    src_w, src_h = s["source_size"]
    lines += [
        f"source       {s['source']} ({src_w}x{src_h}, {s['source_fps']:g} fps)",
        f"frames       {s['frames']} at {s['size']}x{s['size']}, {s['fps']:g} fps ({s['seconds']} s); "
        f"crop {s['crop']['side']} px at ({s['crop']['x']}, {s['crop']['y']})",
        f"split        train {s['split']['train'][0]}-{s['split']['train'][1]}, "
        f"held out {s['split']['holdout'][0]}-{s['split']['holdout'][1]}",
        f"face         lost on {s['faceless_frames']} frames ({s['interpolated_frames']} interpolated, "
        f"{s['invalid_frames']} left out); several faces on {s['frames_with_several_faces']}",
        f"fit          residual {s['residual_px']:.2f} px, focal {s['focal_px']:.0f} px",
        f"jitter       rotation {s['rotation_jitter_pnp_deg']:.3f} deg per-frame PnP -> "
        f"{s['rotation_jitter_deg']:.3f} deg stabilised (RMS second difference)",
        f"background   {s['background_coverage']:.0%} of the plate seen behind the person",
    ]
    audio = s.get("audio")
    lines.append(
        f"audio        {audio['seconds']} s at {audio['rate']} Hz, log-mel + phoneme posteriors"
        if audio
        else "audio        none (prepare again with --audio SPEECH for audio-driven training)"
    )
    total = sum(s.get("timings_s", {}).values())
    if total:
        lines.append(f"time         {total:.1f} s ({s['frames'] / total:.1f} frames/s)")
    lines.append(f"report       {ws.report_dir}")
    return "\n".join(lines)

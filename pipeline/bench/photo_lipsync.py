"""``talking-portrait bench photo-lipsync``: lip sync of single-photo ``generate`` against real speakers.

For each real clip, the first frame is the photo and the clip's own speech the audio: the generated video
should move its mouth as the real footage did. Both are tracked with the project's tracker and compared:
the correlation of the mouth opening (inner-lip gap over mouth width) at lag 0 and at the best lag within
±0.2 s (positive: the generated mouth is late), and the mouth landmark distance with each mouth centred and
each face scaled to the same height (pixels of a 512 px face crop).

Writes ``report.json``, ``openings.png`` (the curves) and ``mouths.png`` (real | generated at the real
clip's widest-open moments) under the output folder, and each clip's photo and video.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from common.files import write_json, write_png
from motion.lip_measures import mouth_opening
from motion.tracker import track_frames
from pipeline import metrics
from pipeline.bench.lipsync import clip_videos, lagged_r
from pipeline.evaluate import sheet
from pipeline.evaluate_dub import METRIC_FACE
from pipeline.oneshot import GenerateConfig, generate
from pipeline.video_io import probe_video, read_video_frames

DEFAULT_CLIPS = ("talk_andrew_b.mp4", "talk_may_5s.mp4")


def _scaled(points: np.ndarray) -> np.ndarray:
    """Landmarks scaled so the face (its oval's height, median over the clip) is the metric size."""
    return points[..., :2] * (METRIC_FACE / metrics.face_height(points))


def measure_clip(video: Path, out: Path, config: GenerateConfig, max_seconds: float) -> dict:
    """Generate from ``video``'s first frame and its own speech; the figures against the real footage."""
    info = probe_video(video)
    count = min(info.num_frames, round(max_seconds * info.fps))
    real_frames = [frame for _, frame in zip(range(count), read_video_frames(video), strict=False)]
    out.mkdir(parents=True, exist_ok=True)
    photo = out / "photo.png"
    write_png(photo, real_frames[0])
    config.fps = info.fps
    config.max_seconds = count / info.fps
    result = generate(photo, video, out / "generated.mp4", config=config)
    made_frames = list(read_video_frames(result.video))
    n = min(len(made_frames), len(real_frames))
    real, made = track_frames(real_frames[:n]), track_frames(made_frames[:n])
    found = np.isfinite(real[:, 0, 0]) & np.isfinite(made[:, 0, 0])
    real_open, made_open = mouth_opening(real), mouth_opening(made)
    r0, best, lag = lagged_r(made_open, real_open, found, round(0.2 * info.fps))
    lmd = metrics.mouth_landmark_distance(_scaled(made[found]), _scaled(real[found]))
    widest = np.argsort(np.where(found, real_open, -1.0))[::-1][:6]
    crops = []
    for frames, points in ((real_frames, real), (made_frames, made)):
        row = []
        for k in sorted(widest):
            box = metrics.mouth_box(points[k], frames[k].shape[1::-1])
            row.append(cv2.resize(metrics.crop(frames[k], box), (160, 160), interpolation=cv2.INTER_CUBIC))
        crops.append(row)
    sheet([("real, widest open", crops[0]), ("generated from the first frame", crops[1])], out / "mouths.png")
    return {
        "clip": video.name,
        "seconds": n / info.fps,
        "r_lag0": r0,
        "r_best": best,
        "lag_ms": 1000.0 * lag / info.fps,
        "lmd_mouth_px_at_512": lmd,
        "faces_found": float(found.mean()),
        "curves": {"real": real_open.tolist(), "generated": made_open.tolist(), "fps": info.fps},
    }


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.4 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        t = np.arange(len(row["curves"]["real"])) / row["curves"]["fps"]
        ax.plot(t, row["curves"]["real"], lw=1, label="real footage")
        ax.plot(t, row["curves"]["generated"], lw=1, label="generated from its first frame")
        ax.set_title(
            f"{row['clip']}: r {row['r_lag0']:.2f} (best {row['r_best']:.2f} at {row['lag_ms']:+.0f} ms)"
        )
        ax.set_ylabel("mouth opening")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.canvas.draw()
    write_png(path, np.asarray(fig.canvas.buffer_rgba())[..., :3])
    plt.close(fig)


def bench_photo_lipsync(
    clips: list[str] | None = None,
    out: str = "outputs/bench_photo_lipsync",
    config: GenerateConfig | None = None,
    max_seconds: float = 30.0,
) -> list[dict]:
    """Measure single-photo lip sync on ``clips`` (paths; default the two clips of ``../shared/data`` the
    project measures on, where present); prints a table and writes the report."""
    videos = clip_videos(clips) if clips else [v for v in clip_videos(None) if v.name in DEFAULT_CLIPS]
    folder = Path(out)
    rows = []
    for video in videos:
        row = measure_clip(video, folder / video.stem, config or GenerateConfig(), max_seconds)
        rows.append(row)
        print(
            f"{row['clip']:<32} {row['seconds']:5.1f} s  r {row['r_lag0']:5.2f} (best "
            f"{row['r_best']:5.2f} at {row['lag_ms']:+4.0f} ms)  LMD {row['lmd_mouth_px_at_512']:.2f} px"
        )
    if rows:
        _plot(rows, folder / "openings.png")
        summary = [{k: v for k, v in row.items() if k != "curves"} for row in rows]
        mean = float(np.mean([row["r_lag0"] for row in rows if math.isfinite(row["r_lag0"])]))
        write_json(folder / "report.json", {"clips": summary, "mean_r_lag0": mean})
        print(f"mean r at lag 0: {mean:.2f}; report {folder / 'report.json'}")
    return rows


__all__ = ["bench_photo_lipsync", "measure_clip"]

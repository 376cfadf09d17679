"""``bench dub``: the paste-back stage's frames/s, the whole ``dub`` against the speech's length and a bare
face-mesh pass over the same frames, and peak RAM for a short and a long source.

Every timing that is compared with another comes from the same run on the same machine: figures of one
machine do not carry to another of the same kind.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common.errors import InputError
from pipeline.bench.measure import machine
from pipeline.bench.prepare import bare_once, run_measured

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SOURCE_512 = DATA / "talk_may_5s.mp4"
"""A 512x512 source: ``../shared/data/talk_may_5s.mp4`` beside the repository."""
SOURCE_1080 = DATA / "talk_latentsync_demo2.mp4"
"""A 1080x1920 phone video with a small face."""
SPEECH = DATA / "speech_en_male_8s.wav"


def _repeated(media: Path, seconds: float, out: Path) -> Path:
    """``media`` (a video with its sound, or a speech file) repeated to ``seconds`` long, made once."""
    from motion.audio import ffmpeg_exe

    if not out.is_file():
        codecs = ["-c:v", "libx264", "-crf", "16", "-c:a", "aac"] if out.suffix == ".mp4" else []
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(media), "-t", f"{seconds}",
             *codecs, str(out)],
            check=True,
        )  # fmt: skip
    return out


def paste_back_rate(video: Path, frames: int = 60) -> tuple[float, tuple[int, int]]:
    """Frames/s of the warp and paste-back stage alone (the lower face moved and pasted into the full
    frame) on ``frames`` frames of ``video``, and the frame size."""
    from pipeline.dub import fit_source
    from pipeline.face_follow import follow_face
    from pipeline.video_io import read_video_frames
    from renderers.warp.lower_face import LowerFaceWarp, paste
    from renderers.warp.mouth import MouthPainter

    images = list(itertools.islice(read_video_frames(video), frames))
    source = fit_source(follow_face(images), 45.0)
    open_jaw = source.expression.copy()
    open_jaw[:, source.model.names.index("jaw_open")] += 0.3
    moved = source.points + source.displacement(np.arange(len(images)), open_jaw)
    warp = LowerFaceWarp(painter=MouthPainter(images[source.reference], source.points[source.reference]))
    use = np.flatnonzero(source.usable)
    start = time.perf_counter()
    for i in use:
        region = warp.warp(images[i], source.points[i], moved[i])
        if region is not None:
            paste(images[i], region)
    took = time.perf_counter() - start
    return len(use) / took, images[0].shape[:2]


def dub_once(video: Path, speech: Path, out: Path) -> dict[str, float]:
    """One ``talking-portrait dub --renderer warp`` process: wall seconds and peak RSS (MB)."""
    cmd = [sys.executable, "-m", "pipeline.cli", "dub", str(video), "--audio", str(speech), "--out", str(out),
           "--renderer", "warp", "-q"]  # fmt: skip
    wall, rss, code = run_measured(cmd)
    if code != 0:
        raise RuntimeError(f"dub failed on {video} (exit {code})")
    return {"seconds": wall, "peak_rss_mb": rss}


def bench_dub(out: str = "outputs/bench_dub", long_seconds: float = 60.0) -> dict[str, float]:
    """Run the dubbing benchmark; prints one line per figure and returns them."""
    from motion.audio import load_audio
    from pipeline.video_io import probe_video

    for path in (SOURCE_512, SOURCE_1080, SPEECH):
        if not path.is_file():
            raise InputError(f"{path} is not present", "the dubbing benchmark reads ../shared/data")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    figures: dict[str, float] = {}
    for name, video in (("512", SOURCE_512), ("1080x1920", SOURCE_1080)):
        rate, size = paste_back_rate(video)
        figures[f"paste_back_fps_{name}"] = rate
        where = f"{video.name}, {size[1]}x{size[0]}"
        print(f"paste-back stage ({where}): {rate:.1f} frames/s (warp + paste, one thread)")

    speech_seconds = load_audio(SPEECH).duration
    run = dub_once(SOURCE_512, SPEECH, root / "dub_512.mp4")
    mesh = bare_once(root / "dub_512.mp4", "")["seconds"]  # prepare's bare pass, no filters
    figures.update(dub_512_seconds=run["seconds"], speech_seconds=speech_seconds, mesh_pass_seconds=mesh)
    frames = round(speech_seconds * probe_video(SOURCE_512).fps)
    print(
        f"dub --renderer warp, {SOURCE_512.name} + {SPEECH.name} ({speech_seconds:.1f} s): "
        f"{run['seconds']:.1f} s = {run['seconds'] / speech_seconds:.2f}x the speech (process start "
        f"included); a bare face-mesh pass over the same {frames} frames: {mesh:.1f} s"
    )
    for seconds in (10.0, long_seconds):
        video = _repeated(SOURCE_512, seconds, root / f"source_{seconds:g}s.mp4")
        speech = _repeated(SPEECH, seconds, root / f"speech_{seconds:g}s.wav")
        run = dub_once(video, speech, root / f"dub_{seconds:g}s.mp4")
        figures[f"peak_rss_mb_{seconds:g}s"] = run["peak_rss_mb"]
        figures[f"seconds_{seconds:g}s"] = run["seconds"]
        print(
            f"{seconds:g} s source + {seconds:g} s speech (512x512): {run['seconds']:.1f} s, "
            f"peak RSS {run['peak_rss_mb']:.0f} MB"
        )
    return figures

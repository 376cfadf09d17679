"""``bench batch``: jobs per hour of ``talking-portrait batch`` over N short warp dubs, with 1 and 2 local
workers and (when ray is installed) on a local Ray runtime with 2 CPUs, each from a fresh output root.

Each figure is the whole batch's wall time, start of the workers (and of Ray) included: what a user of
the command sees for a batch this small. The per-job seconds are the mean of the jobs' own times.
"""

from __future__ import annotations

import importlib.util
import subprocess
import time
from pathlib import Path

from common.errors import InputError
from pipeline.bench.measure import machine

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SOURCE = DATA / "talk_may_5s.mp4"
"""A 512x512, 5 s source: ``../shared/data/talk_may_5s.mp4`` beside the repository."""
SPEECH = DATA / "speech_en_male_8s.wav"


def _cut(speech: Path, seconds: float, out: Path) -> Path:
    from motion.audio import ffmpeg_exe

    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(speech), "-t", f"{seconds}", "-ac", "1", str(out)],
        check=True,
    )
    return out


def bench_batch(
    out: str = "outputs/bench_batch",
    jobs: int = 6,
    seconds: float = 3.0,
    video: str | None = None,
    audio: str | None = None,
    ray: bool = True,
) -> dict[str, float]:
    """Run the batch benchmark; prints one line per figure and returns them."""
    import shutil

    from pipeline.batch.runner import run_batch

    source = Path(video) if video else SOURCE
    speech = Path(audio) if audio else SPEECH
    for path in (source, speech):
        if not path.is_file():
            raise InputError(f"{path} is not present", "give --video and --audio (or ../shared/data)")
    root = Path(out)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    clip = _cut(speech, seconds, root / "speech.wav")
    manifest = root / "jobs.csv"
    rows = [f"dub,{source.resolve()},{clip.resolve()},dub_{i:03d}.mp4,warp" for i in range(jobs)]
    manifest.write_text("\n".join(["kind,video,audio,out,renderer", *rows]) + "\n")
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print(f"{jobs} warp dubs of {source.name} with {seconds:g} s of {speech.name}")
    runs = [("local, 1 worker", 1, None), ("local, 2 workers", 2, None)]
    if ray and importlib.util.find_spec("ray") is not None:
        runs.append(("Ray (local runtime, 2 CPUs)", 2, "local"))
    elif ray:
        print("ray is not installed: the Ray path is not measured")
    figures: dict[str, float] = {}
    for name, workers, address in runs:
        start = time.perf_counter()
        result = run_batch(
            manifest, root / f"run_{workers}_{address or 'pool'}", workers=workers, ray=address,
            progress=False, echo=lambda s: None,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if result.exit_code != 0:
            raise RuntimeError(f"the {name} batch did not finish every job: {result.jobs}")
        per_job = sum(j["seconds"] for j in result.jobs) / len(result.jobs)
        key = name.split(",")[0].split(" ")[0].lower() + f"_{workers}"
        figures[f"{key}_jobs_per_hour"] = jobs / wall * 3600
        figures[f"{key}_wall_seconds"] = wall
        print(
            f"{name}: {wall:.1f} s for {jobs} jobs = {jobs / wall * 3600:.0f} jobs/hour "
            f"(a job's own time: {per_job:.1f} s on average)"
        )
    if "ray_2_wall_seconds" in figures:
        over = figures["ray_2_wall_seconds"] - figures["local_2_wall_seconds"]
        figures["ray_overhead_seconds"] = over
        print(f"Ray against the local pool, 2 workers: {over:+.1f} s over the batch")
    return figures

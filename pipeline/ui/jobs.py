"""What the web page's buttons run, without Gradio: each job writes under the page's results folder and
returns plain paths and text, so it is tested (and usable) without a browser.

Bad input raises :class:`common.errors.UserError` exactly as the CLI's commands do; the page shows its
``message`` (the line the CLI prints after ``error:``).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_TYPES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".webm", ".mp4")
VIDEO_TYPES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
MANIFEST_TYPES = (".csv", ".jsonl", ".ndjson")


@dataclass(frozen=True)
class Folders:
    """Where the page reads and writes: ``root/identities`` (the identities, as ``--workspace`` of the CLI)
    and ``root/results`` (every file the page makes; the only folder it serves files from)."""

    root: Path

    @property
    def identities(self) -> Path:
        return self.root / "identities"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def new_job(self, kind: str) -> Path:
        """A fresh folder for one job's outputs: ``results/<kind>-<time>-<id>``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.results / f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


def need(path: str | os.PathLike | None, what: str) -> str:
    """The uploaded file's path, or the clear message that it is missing."""
    if not path:
        raise InputError(f"no {what} was given", f"upload a {what} first")
    return str(path)


def looks_like_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` opens as a picture (for the upload's preview; the job itself checks it fully)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, ValueError):
        return False
    return True


def run_photo(
    folders: Folders,
    image: str | None,
    audio: str | None,
    transcript: str = "",
    size: int = 512,
    renderer: str = "warp",
    progress: bool = False,
) -> tuple[Path, str]:
    """Photo -> video: the mp4 and the resolved settings (its ``.config.yaml`` text)."""
    from pipeline.oneshot import GenerateConfig, generate

    image = need(image, "portrait photo")
    audio = need(audio, "speech recording")
    out = folders.new_job("photo") / "talking.mp4"
    config = GenerateConfig(size=int(size), renderer=renderer)
    text = transcript.strip() or None
    result = generate(image, audio, out, transcript=text, config=config, progress=progress)
    return result.video, result.config.read_text()


def first_frame(video: str) -> np.ndarray:
    """The first frame of ``video`` (uint8 RGB), to click the speaker on."""
    from pipeline.dub import check_source
    from pipeline.video_io import read_video_frames

    check_source(video)
    for frame in read_video_frames(video):
        return frame
    raise InputError(f"{video} has no frames", "give a video of the person speaking")


def run_dub(
    folders: Folders,
    video: str | None,
    audio: str | None,
    renderer: str = "warp",
    face: str = "",
    transcript: str = "",
    progress: bool = False,
) -> tuple[Path, str]:
    """Dub a video: the mp4 and a one-line summary (as the CLI prints it)."""
    from pipeline.dub import DubConfig, dub

    video = need(video, "video")
    audio = need(audio, "speech recording")
    out = folders.new_job("dub") / "dubbed.mp4"
    config = DubConfig(renderer=renderer, face=face)
    result = dub(
        video,
        audio,
        out,
        config=config,
        transcript=transcript.strip() or None,
        workspace=folders.identities,
        progress=progress,
    )
    through = f", {result.passed_through} passed through unchanged" if result.passed_through else ""
    summary = (
        f"{result.num_frames} frames from {result.source_frames} source frames{through}; "
        f"renderer {result.renderer}"
    )
    return result.video, summary


def list_identities(folders: Folders) -> list[list[str]]:
    """One row per identity folder: name, prepared frames, whether a motion model is trained, report."""
    from pipeline.workspace import IDENTITY_FILE, Workspace

    rows = []
    if not folders.identities.is_dir():
        return rows
    for path in sorted(folders.identities.iterdir()):
        if not (path / IDENTITY_FILE).is_file():
            continue
        try:
            ws = Workspace(path)
            motion = "yes" if ws.motion_model_dir.joinpath("model.safetensors").is_file() else "no"
            report = "yes" if (ws.report_dir / "contact_sheet.png").is_file() else "no"
        except Exception as err:  # a damaged folder is listed, not fatal to the page
            motion, report = "?", f"unreadable: {err}"
        rows.append([path.name, motion, report])
    return rows


def run_prepare(
    folders: Folders, video: str | None, identity: str, progress: bool = False
) -> tuple[Path | None, str]:
    """Prepare footage into an identity: its report contact sheet (when written) and a summary line."""
    from pipeline.prepare import prepare
    from pipeline.workspace import identity_dir

    video = need(video, "video")
    identity = identity.strip()
    identity_dir(identity, folders.identities)  # checks the name before any work
    ws = prepare(video, identity, folders.identities, progress=progress)
    sheet = ws.report_dir / "contact_sheet.png"
    # served from the results folder only: the report picture is copied there
    shown = None
    if sheet.is_file():
        shown = folders.new_job("prepare") / f"{identity}_contact_sheet.png"
        shown.write_bytes(sheet.read_bytes())
    return shown, f"prepared identity {identity} in {ws.path}"


def run_train_motion(folders: Folders, identity: str, progress: bool = False) -> str:
    """Train (or go on training) the identity's own motion model; its held-out figures as one line."""
    from pipeline.motion_training import train_motion_model
    from pipeline.workspace import Workspace, identity_dir

    if not identity:
        raise InputError("no identity was chosen", "prepare one, or pick one from the list")
    ws = Workspace.open(identity_dir(identity, folders.identities))
    figures = train_motion_model(ws, ws.motion_model_dir, progress=progress)
    return (
        f"trained the motion model of {identity} in {figures['seconds']:.1f} s; held-out mouth-opening "
        f"correlation {figures['heldout_opening_r']:.2f} (generic: {figures['generic_opening_r']:.2f})"
    )


def run_render(
    folders: Folders, identity: str, audio: str | None, renderer: str = "nerf", progress: bool = False
) -> Path:
    """A trained identity saying ``audio`` (``talking-portrait render``)."""
    from pipeline.identity_render import IdentityRenderConfig, render_identity

    if not identity:
        raise InputError("no identity was chosen", "prepare one, or pick one from the list")
    audio = need(audio, "speech recording")
    out = folders.new_job("render") / f"{identity}.mp4"
    config = IdentityRenderConfig(renderer=renderer)
    return render_identity(identity, audio, out, folders.identities, config, progress=progress)


def run_batch_job(
    folders: Folders, manifest: str | None
) -> tuple[list[list[str]], Path | None, list[Path], str]:
    """Run a batch manifest: the job table, the report.csv, the videos made and the summary lines."""
    from pipeline.batch.runner import run_batch

    manifest = need(manifest, "manifest")
    root = folders.new_job("batch")
    lines: list[str] = []
    result = run_batch(
        manifest, root, workers=1, workspace=folders.identities, progress=False, echo=lines.append
    )
    table = []
    for job in result.jobs:
        seconds = job.get("seconds")
        shown = {**job, "seconds": f"{seconds:.1f}" if isinstance(seconds, int | float) else ""}
        keys = ("line", "kind", "out", "state", "seconds", "error")
        table.append(["" if shown.get(k) is None else str(shown[k]) for k in keys])
    videos = [root / job["out"] for job in result.jobs if job.get("state") == "done" and job.get("out")]
    csv = next((p for p in result.report if p.suffix == ".csv"), None)
    # the first lines (invalid rows, the plan) and the closing count; the table is shown on its own
    summary = [line for line in lines if "\n" not in line]
    return table, csv, [v for v in videos if v.is_file()], "\n".join(f"- {line}" for line in summary)

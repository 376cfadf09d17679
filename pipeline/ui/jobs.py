"""What the web page's buttons run, without Gradio: each job writes into its own results folder (``job``) and
returns plain values (paths as strings, text), so it is tested (and usable) without a browser.

Bad input raises :class:`common.errors.UserError` exactly as the CLI's commands do; the page shows its
``message`` (the line the CLI prints after ``error:``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_TYPES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".webm", ".mp4")
VIDEO_TYPES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
MANIFEST_TYPES = (".csv", ".jsonl", ".ndjson")
TRAINABLE = ("motion", "nerf", "diffusion")
"""What the Identities tab trains: the identity's own motion model, or a renderer."""
PRESETS = ("tiny", "preview", "full")
HELD_OUT = {
    "motion": {"heldout_opening_r": "own model: mouth-opening r", "generic_opening_r": "generic model"},
    "nerf": {"psnr_holdout": "PSNR (dB)"},
    "diffusion": {"psnr_holdout": "PSNR (dB)"},
}
"""The held-out figures each training run logs, and their names on the live curve."""


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


def need_identity(identities: Path, name: str | None):
    """The prepared identity called ``name`` (its :class:`~pipeline.workspace.Workspace`)."""
    from pipeline.workspace import Workspace, identity_dir

    if not name:
        raise InputError("no identity was chosen", "prepare one, or pick one from the list")
    return Workspace.open(identity_dir(name, identities))


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
    job: Path,
    image: str | None,
    audio: str | None,
    transcript: str = "",
    size: int = 512,
    renderer: str = "warp",
) -> dict[str, Any]:
    """Photo -> video: ``video`` (the mp4) and ``settings`` (its ``.config.yaml`` text)."""
    from pipeline.oneshot import GenerateConfig, generate

    image = need(image, "portrait photo")
    audio = need(audio, "speech recording")
    config = GenerateConfig(size=int(size), renderer=renderer)
    text = transcript.strip() or None
    result = generate(image, audio, job / "talking.mp4", transcript=text, config=config)
    return {"video": str(result.video), "settings": result.config.read_text()}


def first_frame(video: str) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """The first frame of ``video`` (uint8 RGB), to click the speaker on, and the faces found in it."""
    from pipeline.dub import check_source
    from pipeline.face_follow import faces_in
    from pipeline.video_io import read_video_frames

    check_source(video)
    for frame in read_video_frames(video):
        return frame, faces_in(frame)
    raise InputError(f"{video} has no frames", "give a video of the person speaking")


def marked_faces(frame: np.ndarray, boxes: list, point: tuple[float, float] | None) -> np.ndarray:
    """``frame`` with its faces outlined: the one the dub will follow (the clicked one, else the largest)
    in green and named, the others in white; the clicked point as a dot."""
    import cv2

    from pipeline.face_follow import speaker_box

    shown = frame.copy()
    chosen = speaker_box(boxes, point)
    thick = max(2, round(max(frame.shape[:2]) / 300))
    for box in boxes:
        x0, y0, x1, y1 = (round(v) for v in box)
        colour = (40, 220, 80) if box == chosen else (255, 255, 255)
        cv2.rectangle(shown, (x0, y0), (x1, y1), colour, thick * (2 if box == chosen else 1))
        if box == chosen:
            label = "speaker (clicked)" if point is not None else "speaker (largest face)"
            scale = max(0.5, (x1 - x0) / 300)
            cv2.putText(shown, label, (x0, max(0, y0 - 8)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick)
    if point is not None:
        cv2.circle(shown, (round(point[0]), round(point[1])), thick * 3, (255, 64, 64), -1)
    return shown


def run_dub(
    job: Path,
    identities: Path,
    video: str | None,
    audio: str | None,
    renderer: str = "warp",
    face: str = "",
    transcript: str = "",
) -> dict[str, Any]:
    """Dub a video: ``video`` (the mp4) and ``summary`` (one line, as the CLI prints it)."""
    from pipeline.dub import DubConfig, dub

    video = need(video, "video")
    audio = need(audio, "speech recording")
    config = DubConfig(renderer=renderer, face=face)
    text = transcript.strip() or None
    result = dub(video, audio, job / "dubbed.mp4", config=config, transcript=text, workspace=identities)
    return {"video": str(result.video), "summary": result.summary}


IDENTITY_COLUMNS = ["identity", "frames", "motion model", "nerf", "diffusion"]


def list_identities(identities: Path) -> list[list[str]]:
    """One row per identity folder (:data:`IDENTITY_COLUMNS`): what is prepared and trained."""
    from pipeline.workspace import IDENTITY_FILE, Workspace

    rows = []
    if not identities.is_dir():
        return rows
    for path in sorted(identities.iterdir()):
        if not (path / IDENTITY_FILE).is_file():
            continue
        try:
            ws = Workspace.open(path)
            frames = str(ws.info.get("num_frames", "")) if ws.step_done("report") else "preparing"
            motion = "trained" if ws.has_motion_model() else "-"
            trained = ["trained" if ws.has_trained_renderer(r) else "-" for r in ("nerf", "diffusion")]
            rows.append([path.name, frames, motion, *trained])
        except Exception as err:
            rows.append([path.name, f"unreadable: {err}", "?", "?", "?"])
    return rows


def run_prepare(job: Path, identities: Path, video: str | None, identity: str) -> dict[str, Any]:
    """Prepare footage into an identity: ``identity``, ``summary`` and ``sheet`` (its report contact sheet,
    copied into ``job``: the page serves only the results folder)."""
    from pipeline.prepare import prepare
    from pipeline.workspace import identity_dir

    video = need(video, "video")
    identity = identity.strip()
    identity_dir(identity, identities)  # checks the name before any work
    ws = prepare(video, identity, identities)
    sheet = ws.report_dir / "contact_sheet.png"
    shown = job / f"{identity}_contact_sheet.png"
    if sheet.is_file():
        shutil.copyfile(sheet, shown)
    return {
        "identity": identity,
        "summary": f"prepared identity {identity}: {ws.info.get('num_frames', '?')} frames in {ws.path}",
        "sheet": str(shown) if shown.is_file() else None,
    }


def model_dir(identities: Path, identity: str, model: str) -> Path:
    """Where ``identity``'s ``model`` (:data:`TRAINABLE`) is trained."""
    ws = need_identity(identities, identity)
    return ws.motion_model_dir if model == "motion" else ws.renderer_dir(model)


def run_train(
    job: Path, identities: Path, identity: str, model: str, preset: str = "preview"
) -> dict[str, Any]:
    """Train (or go on training, from its last checkpoint) ``identity``'s ``model`` with ``preset``;
    ``summary`` is one line, the held-out figures as the CLI prints them."""
    from common.config import CONFIG_DIR, load_config

    if model not in TRAINABLE:
        raise InputError(f"unknown model to train {model!r}", f"choose one of: {', '.join(TRAINABLE)}")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}", f"choose one of: {', '.join(PRESETS)}")
    ws = need_identity(identities, identity)
    ws.require_intact()
    start = time.perf_counter()
    if model == "motion":
        from pipeline.motion_training import MotionTrainConfig, heldout_line, preset_file, train_motion_model

        config = load_config(MotionTrainConfig, preset_file(preset))
        figures = train_motion_model(ws, ws.motion_model_dir, config)
        summary = (
            f"trained the motion model of {identity} in {figures['seconds']:.1f} s; {heldout_line(figures)}"
        )
        return {"summary": summary, "model": str(ws.motion_model_dir)}
    from renderers import registry

    Config, train = registry.entry(model).trainer()
    config = load_config(Config, CONFIG_DIR / f"{model}_{preset}.yaml")
    out = ws.renderer_dir(model)
    train(ws, out, config)
    held = _last_held_out(out, model)
    summary = f"trained {model} for {identity} ({preset}) in {time.perf_counter() - start:.1f} s{held}"
    return {"summary": summary, "model": str(out)}


def _last_held_out(folder: Path, model: str) -> str:
    rows = training_curve(folder)
    figures = [row for row in rows if any(k in row for k in HELD_OUT[model])]
    if not figures:
        return ""
    last = figures[-1]
    return "; held-out " + ", ".join(f"{k} {last[k]:.3g}" for k in HELD_OUT[model] if k in last)


def training_curve(folder: Path) -> list[dict[str, float]]:
    """The rows of ``folder``'s ``train_log.csv`` (none when it has not logged yet)."""
    from renderers.training import read_log_rows

    path = folder / "train_log.csv"
    if not path.is_file():
        return []
    try:
        return read_log_rows(path)
    except (OSError, ValueError):
        return []  # being rewritten: the next look finds it whole


def run_render(
    job: Path, identities: Path, identity: str, audio: str | None, renderer: str = "nerf"
) -> dict[str, Any]:
    """A trained identity saying ``audio`` (``talking-portrait render``): ``video``."""
    from pipeline.identity_render import IdentityRenderConfig, render_identity

    need_identity(identities, identity)
    audio = need(audio, "speech recording")
    config = IdentityRenderConfig(renderer=renderer)
    video = render_identity(identity, audio, job / f"{identity}.mp4", identities, config)
    return {"video": str(video)}


EVAL_PICTURES = ("frames.png", "mouths.png", "mouth.png")


def run_eval(
    job: Path, identities: Path, identity: str, renderer: str = "warp", max_frames: int = 250
) -> dict[str, Any]:
    """Measure ``identity`` on its held-out footage (``talking-portrait eval``; the warp renderer through a
    dub, ``eval --dub``): ``summary`` (the report as the CLI prints it), ``pictures`` and ``video`` (real |
    made, side by side), all in ``job``."""
    from pipeline.checks import check_range
    from pipeline.evaluate import EvalConfig, evaluate_identity, format_report

    need_identity(identities, identity)
    check_range(max_frames, "frames to measure", 1, 1_000_000)
    out = job / "report"
    if renderer == "warp":
        from pipeline.evaluate_dub import evaluate_dub, format_dub_report

        summary = format_dub_report(evaluate_dub(identity, identities, "warp", int(max_frames), out))
    else:
        config = EvalConfig(renderer=renderer, max_frames=int(max_frames))
        summary = format_report(evaluate_identity(identity, identities, config=config, out=out))
    pictures = [str(out / name) for name in EVAL_PICTURES if (out / name).is_file()]
    video = out / "side_by_side.mp4"
    return {"summary": summary, "pictures": pictures, "video": str(video) if video.is_file() else None}


def identity_pictures(identities: Path, identity: str) -> list[tuple[np.ndarray, str]]:
    """``identity``'s prepare report pictures, as images (the page shows them without serving the
    workspace's files)."""
    from PIL import Image

    ws = need_identity(identities, identity)
    shown = []
    for path in sorted(ws.report_dir.glob("*.png")):
        try:
            with Image.open(path) as image:
                shown.append((np.asarray(image.convert("RGB")), path.stem.replace("_", " ")))
        except OSError:
            continue
    return shown


BATCH_COLUMNS = ["line", "kind", "out", "state", "attempts", "seconds", "error"]


def batch_table(root: Path) -> list[list[str]]:
    """The job table of the batch in ``root`` as it stands (read while the batch runs)."""
    from pipeline.batch.state import BatchState

    if not (root / "batch.sqlite").is_file():
        return []
    try:
        state = BatchState(root, create=False)
    except Exception:
        return []
    try:
        jobs = state.jobs()
    finally:
        state.close()
    rows = []
    for job in jobs:
        seconds = job.get("seconds")
        shown = {**job, "seconds": f"{seconds:.1f}" if isinstance(seconds, int | float) else ""}
        rows.append(["" if shown.get(k) is None else str(shown[k]) for k in BATCH_COLUMNS])
    return rows


def run_batch_job(
    job: Path, identities: Path, manifest: str | None, inputs: Sequence[str] = ()
) -> dict[str, Any]:
    """Run a batch manifest with ``job`` as its output root: ``summary`` (the lines the CLI prints, less the
    table), ``report`` (report.csv) and ``videos`` (the outputs made).

    ``inputs``: files uploaded with the manifest. They and the manifest are put side by side in
    ``job/inputs``, so the manifest names them by their file names (a relative path is read from beside the
    manifest, as the CLI reads it)."""
    from pipeline.batch.runner import run_batch

    manifest = need(manifest, "manifest")
    if inputs:
        manifest = str(_side_by_side(job / "inputs", [manifest, *inputs]))
    lines: list[str] = []
    result = run_batch(manifest, job, workspace=identities, progress=False, echo=lines.append)
    videos = [job / j["out"] for j in result.jobs if j.get("state") == "done" and j.get("out")]
    csv = next((p for p in result.report if p.suffix == ".csv"), None)
    summary = [line for line in lines if "\n" not in line]  # the table is shown on its own
    return {
        "summary": "\n".join(f"- {line}" for line in summary),
        "report": str(csv) if csv else None,
        "videos": [str(v) for v in videos if v.is_file()],
    }


def _side_by_side(folder: Path, files: Sequence[str]) -> Path:
    """``files`` in ``folder`` under their own names (linked where the file system allows, else copied); the
    first one's new path. Two files of one name are refused: the manifest could not say which it means."""
    folder.mkdir(parents=True, exist_ok=True)
    placed: list[Path] = []
    for file in files:
        source = Path(need(file, "input file"))
        target = folder / source.name
        if target.exists():
            raise InputError(
                f"two uploaded files are named {source.name}", "rename one, and name it so in the manifest"
            )
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        placed.append(target)
    return placed[0]

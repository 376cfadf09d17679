"""Identity preparation: minutes of footage of one person -> an identity workspace, on a CPU, offline.

Steps (each resumable; a finished step is skipped when prepare runs again, unless a file it wrote is
damaged: then that step is redone, a chunk alone for a damaged chunk, and the steps that read its output
are redone when the output came out different):

1. ``crop``: probe the video, find the main face on frames spread over the clip, fix one square crop
   around the head for the whole clip (room for its motion included).
2. ``frames``: decode at the target frame rate (variable frame rates resampled by ffmpeg), crop and scale,
   track 478 landmarks, segment the person, build masks; written in chunks of JPEG frames + masks +
   landmarks. The tracker and the mask smoothing restart at every chunk boundary, so a resumed run
   gives the same bytes as an uninterrupted one.
3. ``tracking``: short face losses interpolated, then the joint clip fit (:mod:`motion.clip_fit`):
   identity shape, focal length, stabilised poses, expression coefficients, blinks.
4. ``background``: a clean plate from frames spread over the clip.
5. ``audio``: the speech at 16 kHz and per-frame features (log-mel, phoneme posteriors).
6. ``split``: the last part of the clip held out for evaluation.
7. ``report``: contact sheet, curves, plate, numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.config import save_config, to_dict
from common.errors import InputError, NoFaceError
from common.files import atomic_path, write_png
from common.progress import Stages
from common.progress import bar as progress_bar
from motion.audio import SAMPLE_RATE, Audio, load_audio
from motion.clip_fit import ClipFitConfig, fit_clip
from motion.tracker import FaceLandmarks, MediapipeTracker
from pipeline.framing import square_around_face
from pipeline.video_io import VideoInfo, probe_video, read_ahead, read_video_frames
from pipeline.workspace import (
    CONFIG_FILE,
    IDENTITY_FILE,
    Workspace,
    encode_frame,
    identity_dir,
    read_chunk,
    write_chunk,
)

log = logging.getLogger(__name__)

MIN_SIDE = 64
MAX_SIDE = 8192
_FRAMES_IN_WORK = 8
"""How far the face mesh may run ahead of the masks, in frames (bounds the frames held in memory)."""


@dataclass
class PrepareConfig:
    """Settings of identity preparation."""

    size: int = 512
    """Side of the square frames stored in the workspace, in pixels."""
    fps: float = 25.0
    """Frame rate the footage is resampled to."""
    holdout: float = 0.1
    """Share of the clip, at its end, held out for evaluation (never trained on)."""
    zoom: float = 2.6
    """Crop side over the face's height (before adding room for head motion)."""
    chunk_size: int = 100
    """Frames per chunk file (the unit of resuming and of streaming)."""
    crop_samples: int = 40
    """Frames spread over the clip that decide the crop."""
    max_gap_seconds: float = 0.5
    """Face losses up to this long are interpolated; longer ones are marked invalid."""
    max_faceless: float = 0.5
    """A clip whose share of frames without a face exceeds this is refused."""
    min_seconds: float = 2.0
    """Shortest clip accepted."""
    max_seconds: float = 1800.0
    """Longest clip accepted."""
    jpeg_quality: int = 95
    """Quality of the stored frames."""
    background_samples: int = 48
    """Frames spread over the clip that build the background plate."""
    fit: ClipFitConfig = field(default_factory=ClipFitConfig)
    """Joint clip fit settings."""


STEPS = ("crop", "frames", "tracking", "background", "audio", "split", "report")
DEPENDENTS = {
    "frames": ("tracking", "background", "report"),
    "tracking": ("background", "report"),
    "background": ("report",),
    "audio": ("report",),
}
"""The steps that read what a step writes: redone when it is redone and its files come out different."""
_SETTINGS_THAT_MATTER = ("size", "fps", "zoom", "chunk_size", "jpeg_quality")


def fingerprint(path: Path) -> str:
    """Size + hash of the first and last MiB: identifies the source without reading all of it."""
    h = hashlib.sha1()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()


def _check_video(info: VideoInfo, path: Path, config: PrepareConfig) -> None:
    if info.num_frames <= 1:
        raise InputError(
            f"{path} holds a single image, not a video",
            "give footage of the person talking; for one photo use `talking-portrait generate --image PHOTO`",
        )
    if min(info.width, info.height) < MIN_SIDE or max(info.width, info.height) > MAX_SIDE:
        raise InputError(
            f"{path} is {info.width}x{info.height}; prepare takes frames between {MIN_SIDE} and {MAX_SIDE} "
            "pixels a side",
            "re-encode the video to a usual size (for example 1280x720) with ffmpeg -vf scale",
        )
    duration = info.num_frames / info.fps if info.fps > 0 else info.duration
    if duration < config.min_seconds:
        raise InputError(
            f"{path} is only {duration:.1f} s long; preparing an identity needs at least "
            f"{config.min_seconds:g} s of footage",
            "give a longer clip of the person talking (10 s to a few minutes works best)",
        )
    if duration > config.max_seconds:
        raise InputError(
            f"{path} is {duration / 60:.1f} minutes long; the limit is {config.max_seconds / 60:g} minutes",
            f"cut it (ffmpeg -t {int(config.max_seconds)}) or raise --set max_seconds=...",
        )


class Preparer:
    """Runs the preparation steps on one workspace. Use :func:`prepare`."""

    def __init__(
        self,
        video: Path,
        ws: Workspace,
        config: PrepareConfig,
        audio_path: Path | None,
        progress: bool,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        self.video = video
        self.ws = ws
        self.config = config
        self.audio_path = audio_path
        self.progress = progress
        self.on_chunk = on_chunk
        self.timings: dict[str, float] = dict(ws.info.get("timings", {}))
        self._audio_job = None
        self._plate: Future[tuple[np.ndarray, np.ndarray, float]] | None = None

    def _timed(self, step: str, fn: Callable[[], Any]) -> None:
        if self.ws.step_done(step):
            return
        before = {name: r["sha256"] for name, r in self.ws.recorded(step).items()}
        if step != "frames":  # chunks are kept and checked one by one; other steps rewrite all their files
            self.ws.forget(list(before))
        t0 = time.perf_counter()
        fn()
        after = {name: r["sha256"] for name, r in self.ws.recorded(step).items()}
        if after != before:  # what later steps read has changed (or is new): they are redone
            for later in DEPENDENTS.get(step, ()):
                self.ws.info.get("steps", {}).pop(later, None)
        self.timings[step] = round(time.perf_counter() - t0, 3)
        self.ws.info["timings"] = self.timings
        done = {**self.ws.info.get("steps", {}), step: {"done": True}}
        self.ws.info["steps"] = {s: done[s] for s in STEPS if s in done}  # in their order, a redone one too
        self.ws.save_info()

    def run(self) -> Workspace:
        self._audio_job = self._start_audio_job()
        preload: threading.Thread | None = None
        stages = Stages()
        try:
            for step in STEPS:
                stages.start(step)
                if step == "frames" and not all(self.ws.step_done(s) for s in ("tracking", "report")):
                    # the modules of the later steps load while the frames are tracked (an import holds
                    # the GIL; the face mesh, the segmenter and ffmpeg leave it free most of the time)
                    preload = threading.Thread(
                        target=_preload_later_steps, name="prepare-preload", daemon=True
                    )
                    preload.start()
                if step == "tracking" and preload is not None:
                    preload.join()
                self._timed(step, getattr(self, f"_step_{step}"))
        finally:
            stages.end()
            if self._audio_job is not None:
                self._audio_job.close()
        return self.ws

    def _audio_source(self) -> Path | None:
        """The speech the audio step analyses, or None when there is none."""
        if self.audio_path is not None:
            return self.audio_path
        return self.video if self.ws.info["source"]["video"]["has_audio"] else None

    def _start_audio_job(self):
        """The audio step's analysis, started now in another process when that step is to run
        (:mod:`pipeline.prepare_audio`), else None."""
        from pipeline.prepare_audio import AudioJob

        source = self._audio_source()
        if source is None or self.ws.step_done("audio"):
            return None
        try:
            return AudioJob(source, self.config.max_seconds + 60)
        except OSError as error:  # no Python to start (an embedded interpreter): the step does it in place
            log.debug("the speech analysis could not start beside preparation: %s", error)
            return None

    # ---- 1. crop -----------------------------------------------------------------------------------
    def _step_crop(self) -> None:
        info = VideoInfo(**self.ws.info["source"]["video"])
        step = max(1, info.num_frames // self.config.crop_samples)
        scale = min(1.0, 640.0 / max(info.width, info.height))
        sw, sh = max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2)
        # the samples decode while the face mesh loads
        frames = read_ahead(
            read_video_frames(self.video, (sw, sh), filters=f"select=not(mod(n\\,{step}))"),
            depth=self.config.crop_samples + 1,
        )
        samples: list[list[FaceLandmarks]] = []
        try:
            tracker = MediapipeTracker(video=False, max_faces=4)
            try:
                for frame in frames:
                    samples.append(tracker.detect(frame))
            finally:
                tracker.close()
        finally:
            frames.close()
        with_face = [faces for faces in samples if faces]
        if len(with_face) < (1 - self.config.max_faceless) * max(len(samples), 1):
            raise NoFaceError(
                f"a face was found on only {len(with_face)} of {len(samples)} frames sampled from "
                f"{self.video}",
                "give footage where one person's face is visible most of the time",
            )
        main = _main_faces(with_face, (sh, sw))
        crowded = sum(len(f) > 1 for f in with_face)
        if crowded > 0.25 * len(with_face):
            log.warning(
                "%s shows several faces on %d of %d sampled frames; preparing the largest, most central one",
                self.video,
                crowded,
                len(with_face),
            )
        boxes = np.array([f.box for f in main]) / scale  # [K, 4] in source pixels
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        median_box = np.median(boxes, 0)
        spread = np.abs(centres - np.median(centres, 0)).max(0)
        left, top, side = square_around_face(
            tuple(median_box), (info.height, info.width), self.config.zoom, margin=2 * float(spread.max())
        )
        side = int(round(side / 2) * 2)
        left = int(np.clip(round(left), 0, max(info.width - side, 0)))
        top = int(np.clip(round(top), 0, max(info.height - side, 0)))
        self.ws.info["crop"] = {"x": left, "y": top, "side": side}
        self.ws.info["summary"] = {
            **self.ws.info.get("summary", {}),
            "crop_samples": len(samples),
            "crop_samples_with_face": len(with_face),
            "crop_samples_with_several_faces": crowded,
        }

    def _filters(self, start: int) -> str:
        return frame_filters(self.ws.info, self.config.size, self.config.fps, start)

    # ---- 2. frames ---------------------------------------------------------------------------------
    def _chunk_name(self, index: int) -> str:
        return self.ws.chunk_path(index).relative_to(self.ws.path).as_posix()

    def _intact_chunk(self, index: int) -> int | None:
        """The number of frames of chunk ``index`` when its file is whole and in place, else None.

        A recorded chunk must match its size and checksum; one without a record (a run killed between
        writing it and recording it, or a workspace from before records) must read back in place, and is
        recorded then."""
        path = self.ws.chunk_path(index)
        if not path.is_file():
            return None
        name = self._chunk_name(index)
        want = self.ws.recorded("frames").get(name)
        if want is not None and (problem := self.ws.problem(name, want)) is not None:
            log.warning("%s is damaged (%s); it is rebuilt", path, problem)
            return None
        try:
            c = read_chunk(path)
        except InputError:
            log.warning("discarding unreadable %s; it is rebuilt", path)
            return None
        if c.start != index * self.config.chunk_size or len(c) == 0:
            log.warning("discarding %s: it holds other frames; it is rebuilt", path)
            return None
        if want is None:
            self.ws.record(name, "frames")
        return len(c)

    def _existing_chunks(self) -> tuple[int, bool]:
        """How many leading chunk files are intact (later or broken ones are removed), and whether the last
        of them is the clip's final, shorter chunk."""
        self.ws.chunk_dir.mkdir(parents=True, exist_ok=True)
        count = 0
        finished = False
        while (frames := self._intact_chunk(count)) is not None:
            count += 1
            if frames < self.config.chunk_size:  # the clip's last chunk
                finished = True
                break
        self._remove_chunks_from(count)
        return count, finished

    def _remove_chunks_from(self, first: int) -> None:
        """Remove chunk files ``first`` and later, and their records."""
        stale = [p for p in self.ws.chunk_dir.glob("*.npz") if p.stem.isdigit() and int(p.stem) >= first]
        self.ws.forget([n for n in self.ws.recorded("frames") if int(Path(n).stem) >= first])
        for path in stale:
            path.unlink()

    def _step_frames(self) -> None:
        cfg = self.config
        if "num_frames" in self.ws.info:  # written in full before: rebuild only the damaged chunks
            total = -(-self.ws.num_frames // cfg.chunk_size)
            self.ws.chunk_dir.mkdir(parents=True, exist_ok=True)
            self._remove_chunks_from(total)
            for index in range(total):
                if self._intact_chunk(index) is None:
                    self._write_chunks(index, only_one=True)
            self._finish_frames(total)
            return
        done, finished = self._existing_chunks()
        if not finished:
            self._write_chunks(done, only_one=False)
            done = len([p for p in self.ws.chunk_dir.glob("*.npz") if p.stem.isdigit()])
        self._finish_frames(done)

    def _write_chunks(self, first: int, only_one: bool) -> None:
        """Decode, track and segment from chunk ``first`` on, writing and recording each chunk: to the end
        of the clip, or ``only_one`` chunk. The same bytes as an uninterrupted run (see the module)."""
        from pipeline.masks import MaskBuilder, PersonSegmenter, encode_masks

        cfg = self.config
        start = first * cfg.chunk_size
        src = self.ws.info["source"]["video"]
        expected = round(src["num_frames"] / src["fps"] * cfg.fps) if src["fps"] else 0
        # decoding starts while the face mesh and the segmenter load, and runs a few frames ahead
        decoded = read_ahead(read_video_frames(self.video, filters=self._filters(start)), depth=4)
        try:
            tracker = MediapipeTracker(video=True, max_faces=2)
            segmenter = PersonSegmenter()
        except BaseException:
            decoded.close()
            raise
        builder = MaskBuilder(cfg.size)
        bar = progress_bar(
            total=expected or None, initial=start, desc="tracking frames", unit="frame", enabled=self.progress
        )
        chunk_index = first
        pending: deque[Future[tuple[bytes, bytes]]] = deque()  # frames whose JPEG and masks are being made
        jpegs: list[bytes] = []
        masks: list[bytes] = []
        marks: list[np.ndarray] = []
        found: list[bool] = []
        faces_seen: list[int] = []
        previous: np.ndarray | None = None
        empty = np.zeros((478, 3), np.float32)

        def collect(keep: int) -> None:
            """Wait for the oldest frames in work until at most ``keep`` remain."""
            while len(pending) > keep:
                jpeg, mask = pending.popleft().result()
                jpegs.append(jpeg)
                masks.append(mask)

        def flush() -> None:
            nonlocal chunk_index, previous
            collect(0)
            write_chunk(
                self.ws.chunk_path(chunk_index),
                chunk_index * cfg.chunk_size,
                jpegs,
                masks,
                np.stack(marks),
                np.array(found),
                np.array(faces_seen),
            )
            self.ws.record(self._chunk_name(chunk_index), "frames")
            self.ws.save_info()  # the chunk is trusted on resume only once its record is written
            for buf in (jpegs, masks, marks, found, faces_seen):
                buf.clear()
            chunk_index += 1
            tracker.reset()
            builder.reset()  # no frame is in work now: the mask thread is idle
            previous = None
            if self.on_chunk is not None:
                self.on_chunk(chunk_index)

        def segment_and_encode(rgb: np.ndarray) -> tuple[np.ndarray, bytes]:
            return segmenter.segment(rgb), encode_frame(rgb, cfg.jpeg_quality)

        def build_masks(
            rgb: np.ndarray, side_job: Future[tuple[np.ndarray, bytes]], points: np.ndarray | None
        ) -> tuple[bytes, bytes]:
            person, jpeg = side_job.result()
            return jpeg, encode_masks(builder.build(rgb, person, points))

        # The face mesh runs on this thread; segmentation and JPEG encoding on one beside it, the masks
        # (which need both, and the previous frame's: in order) on a third. All three release the GIL for
        # most of their work, so they overlap.
        side_pool = ThreadPoolExecutor(1)
        mask_pool = ThreadPoolExecutor(1)
        try:
            for rgb in decoded:
                side_job = side_pool.submit(segment_and_encode, rgb)
                faces = tracker.detect(rgb)
                face = _pick_face(faces, previous, cfg.size)
                previous = None if face is None else face.points[:, :2].mean(0)
                points = None if face is None else face.points[:, :2]
                pending.append(mask_pool.submit(build_masks, rgb, side_job, points))
                marks.append(empty if face is None else face.points.astype(np.float32))
                found.append(face is not None)
                faces_seen.append(len(faces))
                collect(_FRAMES_IN_WORK)
                bar.update(1)
                if len(marks) == cfg.chunk_size:
                    flush()
                    if only_one:
                        break
            if marks:
                flush()
        finally:
            decoded.close()  # stops ffmpeg when only one chunk was wanted
            for job in pending:
                job.cancel()
            mask_pool.shutdown()
            side_pool.shutdown()
            tracker.close()
            segmenter.close()
            bar.close()
        if chunk_index == first:
            raise InputError(f"no frames could be decoded from {self.video}", "check that the video plays")

    def _finish_frames(self, num_chunks: int) -> None:
        last = read_chunk(self.ws.chunk_path(num_chunks - 1))
        self.ws.info["num_frames"] = last.start + len(last)

    # ---- 3. tracking -------------------------------------------------------------------------------
    def _step_tracking(self) -> None:
        cfg = self.config
        n = self.ws.num_frames
        landmarks = np.zeros((n, 478, 3), np.float32)
        found = np.zeros(n, bool)
        faces = np.zeros(n, np.int16)
        for c in range((n + cfg.chunk_size - 1) // cfg.chunk_size):
            chunk = read_chunk(self.ws.chunk_path(c))
            sl = slice(chunk.start, chunk.start + len(chunk))
            landmarks[sl], found[sl], faces[sl] = chunk.landmarks, chunk.found, chunk.faces
        if found.mean() < 1 - cfg.max_faceless:
            raise NoFaceError(
                f"the face was tracked on only {found.mean():.0%} of the frames of {self.video}",
                "give footage where the person's face is visible most of the time",
            )
        valid, gaps = interpolate_gaps(landmarks, found, round(cfg.max_gap_seconds * cfg.fps))
        # The background plate needs only which frames show the face, known now: it is built beside the
        # fit (JPEG decoding and the plate's arithmetic release the GIL), which keeps to one torch thread.
        # The fit's tensors are small: a second thread saves little, and when the other core is busy the
        # two wait for each other (up to 10x slower seen).
        pool = ThreadPoolExecutor(1) if not self.ws.step_done("background") else None
        self._plate = pool.submit(self._build_plate, found.copy()) if pool is not None else None
        try:
            with _torch_threads(1):
                fit = fit_clip(landmarks, valid, (cfg.size, cfg.size), cfg.fit)
        finally:
            if pool is not None:
                pool.shutdown()
        fit.found = found
        fit.save(self.ws.file("tracking.npz"))
        self.ws.record("tracking.npz", "tracking")
        self.ws.info["summary"] = {
            **self.ws.info.get("summary", {}),
            "frames": n,
            "faceless_frames": int((~found).sum()),
            "interpolated_frames": int((valid & ~found).sum()),
            "invalid_frames": int((~valid).sum()),
            "face_gaps": gaps,
            "frames_with_several_faces": int((faces > 1).sum()),
            "focal_px": round(fit.focal, 2),
            **{k: round(v, 4) for k, v in fit.stats.items()},
        }

    # ---- 4. background -----------------------------------------------------------------------------
    def _step_background(self) -> None:
        if self._plate is not None:  # built beside the fit
            image, coverage, coverage_fraction = self._plate.result()
            self._plate = None
        else:
            image, coverage, coverage_fraction = self._build_plate(self.ws.fit().found)
        coverage8 = np.round(np.clip(coverage, 0, 1) * 255).astype(np.uint8)
        write_png(self.ws.file("background_coverage.png"), coverage8)
        write_png(self.ws.file("background.png"), image)
        for name in ("background_coverage.png", "background.png"):
            self.ws.record(name, "background")
        self.ws.info["summary"] = {
            **self.ws.info.get("summary", {}),
            "background_coverage": round(coverage_fraction, 4),
        }

    def _build_plate(self, found: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The background plate from frames where the face was ``found`` [T]: image, coverage, the share of
        the plate seen."""
        from pipeline.background import BackgroundPlate

        picks = self._plate_frames(found)
        plate = BackgroundPlate(self.config.size, max_samples=len(picks))
        for _, rgb, m in self.ws.iter_frames(picks.tolist()):
            plate.add(rgb, m.person_alpha)
        image, coverage = plate.result()
        return image, coverage, plate.coverage_fraction

    def _plate_frames(self, tracked: np.ndarray) -> np.ndarray:
        """Frames spread over the clip that feed the background plate: only those where the face was tracked.

        A black second, a fade or a cut hides the person from the segmenter, so every pixel of such a frame
        would count as clean background and the plate would keep a dark, head-shaped silhouette where the
        person stands. Frames much darker or brighter than the clip's usual (the middle of a fade, a flash)
        are left out too; the rest are spread evenly.
        """
        found = np.flatnonzero(tracked)
        if len(found) == 0:
            return found
        spread = np.linspace(0, len(found) - 1, min(4 * self.config.background_samples, len(found)))
        candidates = found[np.unique(spread.round().astype(int))]
        brightness = np.array([rgb.mean() for _, rgb, _ in self.ws.iter_frames(candidates.tolist())])
        usual = float(np.median(brightness))
        steady = candidates[np.abs(brightness - usual) <= 0.15 * max(usual, 1.0)]
        kept = steady if len(steady) else candidates
        count = min(self.config.background_samples, len(kept))
        return kept[np.unique(np.linspace(0, len(kept) - 1, count).round().astype(int))]

    # ---- 5. audio ----------------------------------------------------------------------------------
    def _step_audio(self) -> None:
        from motion.speech_features import analyse_speech

        source = self._audio_source()
        if source is None:
            log.warning(
                "%s has no audio track: the workspace has no speech features; audio-driven training "
                "needs them (prepare again with --audio SPEECH)",
                self.video,
            )
            self.ws.info["audio"] = None
            return
        done = self._audio_job.result() if self._audio_job is not None else None
        self._audio_job = None
        if done is None:  # not started, or failed: here, where a bad file raises its error
            audio = load_audio(source, max_seconds=self.config.max_seconds + 60)
            analysis = analyse_speech(audio)
        else:
            audio, analysis = done
        video_seconds = self.ws.num_frames / self.config.fps
        if abs(audio.duration - video_seconds) > 0.5:
            log.warning("audio lasts %.2f s but the video %.2f s", audio.duration, video_seconds)
        write_wav(self.ws.file("audio.wav"), audio)
        features = analysis.for_frames(self.config.fps, self.ws.num_frames)
        features.save(self.ws.file("audio_features.npz"))
        for name in ("audio.wav", "audio_features.npz"):
            self.ws.record(name, "audio")
        self.ws.info["audio"] = {
            "source": str(source),
            "seconds": round(audio.duration, 3),
            "rate": SAMPLE_RATE,
        }

    # ---- 6. split ----------------------------------------------------------------------------------
    def _step_split(self) -> None:
        n = self.ws.num_frames
        held = round(self.config.holdout * n)
        if self.config.holdout > 0:
            held = max(held, 1)
        self.ws.info["split"] = {"train": [0, n - held], "holdout": [n - held, n]}

    # ---- 7. report ---------------------------------------------------------------------------------
    def _step_report(self) -> None:
        from pipeline.prepare_report import REPORT_FILES, write_report

        write_report(self.ws)
        for name in REPORT_FILES:
            self.ws.record((self.ws.report_dir / name).relative_to(self.ws.path).as_posix(), "report")


def _preload_later_steps() -> None:
    """Import what the tracking and report steps use (torch, matplotlib's Agg): a second or two."""
    with contextlib.suppress(Exception):  # a real problem shows where the step imports them
        import matplotlib.backends.backend_agg  # noqa: F401
        import torch  # noqa: F401

        import motion.camera  # noqa: F401


@contextlib.contextmanager
def _torch_threads(count: int):
    """torch's intra-op threads set to ``count`` inside the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def frame_filters(info: dict[str, Any], size: int, fps: float, start: int = 0) -> str:
    """The ffmpeg filter chain that turns the source video into the workspace's frames, from frame
    ``start`` on: resample to ``fps``, crop the square of ``info["crop"]`` (``info`` is a workspace's
    record, with its source), scale to ``size``."""
    crop = info["crop"]
    side = crop["side"]
    flags = "area" if side >= size else "bicubic"
    parts = [f"fps={fps!r}"]
    if start:
        parts.append(f"select=gte(n\\,{start})")
    src = info["source"]["video"]
    if side > min(src["width"], src["height"]):  # smaller than the square: pad by edge replication
        parts.append(f"pad={side}:{side}:(ow-iw)/2:(oh-ih)/2")
    parts += [f"crop={side}:{side}:{crop['x']}:{crop['y']}", f"scale={size}:{size}:flags={flags}"]
    return ",".join(parts)


def _main_faces(samples: list[list[FaceLandmarks]], image_size: tuple[int, int]) -> list[FaceLandmarks]:
    """The same person on every sample: first the largest, most central face, then the nearest to it."""
    h, w = image_size
    sigma = 0.35 * np.hypot(h, w)

    def centre(f: FaceLandmarks) -> np.ndarray:
        x0, y0, x1, y1 = f.box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])

    def score(f: FaceLandmarks) -> float:
        d = np.linalg.norm(centre(f) - np.array([w / 2, h / 2]))
        return f.area * np.exp(-0.5 * (d / sigma) ** 2)

    first = [max(faces, key=score) for faces in samples]
    anchor = np.median([centre(f) for f in first], 0)
    return [min(faces, key=lambda f: np.linalg.norm(centre(f) - anchor)) for faces in samples]


def _pick_face(faces: list[FaceLandmarks], previous: np.ndarray | None, size: int) -> FaceLandmarks | None:
    """The tracked person's face among those found: nearest the last position, else the most central
    of the large ones (the crop centres the main person)."""
    if not faces:
        return None
    if previous is not None:
        return min(faces, key=lambda f: np.linalg.norm(f.points[:, :2].mean(0) - previous))
    mid = np.array([size / 2, size / 2])
    return max(
        faces, key=lambda f: f.area / (1.0 + (np.linalg.norm(f.points[:, :2].mean(0) - mid) / size) ** 2)
    )


def interpolate_gaps(
    landmarks: np.ndarray, found: np.ndarray, max_gap: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Fill runs of frames without a face, up to ``max_gap`` frames long, in place.

    Inner gaps are interpolated linearly between their neighbours; gaps at the clip's ends hold the
    nearest tracked frame. Returns (valid [T] bool, every gap as (first frame, length)).
    """
    valid = found.copy()
    gaps: list[tuple[int, int]] = []
    t = 0
    n = len(found)
    while t < n:
        if found[t]:
            t += 1
            continue
        end = t
        while end < n and not found[end]:
            end += 1
        gaps.append((t, end - t))
        if end - t <= max_gap:
            before, after = t - 1, end
            for k in range(t, end):
                if before >= 0 and after < n:
                    a = (k - before) / (after - before)
                    landmarks[k] = (1 - a) * landmarks[before] + a * landmarks[after]
                elif before >= 0:
                    landmarks[k] = landmarks[before]
                elif after < n:
                    landmarks[k] = landmarks[after]
            valid[t:end] = before >= 0 or after < n
        t = end
    return valid, gaps


def write_wav(path: Path, audio: Audio) -> None:
    """16-bit PCM mono WAV, atomically."""
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2")
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(audio.rate)
        f.writeframes(pcm.tobytes())


def prepare(
    video: str | os.PathLike,
    identity: str,
    workspace: str | os.PathLike | None = None,
    config: PrepareConfig | None = None,
    audio: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> Workspace:
    """Prepare (or resume preparing) the workspace of ``identity`` from ``video``.

    Args:
        video: footage of one person talking (any container/codec ffmpeg reads).
        identity: the workspace folder's name.
        workspace: root folder holding one folder per identity (default ``outputs/identities``).
        audio: speech to use instead of the video's own track (needed when the video has none).
        force: discard an existing workspace of this identity and start over.
        on_chunk: called with the number of chunks written after each one (progress, tests).
    Returns:
        The prepared :class:`Workspace`.
    """
    config = config or PrepareConfig()
    video = Path(video)
    if not 0 <= config.holdout <= 0.5:
        raise InputError(f"--holdout {config.holdout} is out of range", "use a share between 0 and 0.5")
    if config.size < 64 or config.size > 2048 or config.size % 2:
        raise InputError(f"--size {config.size} is not usable", "use an even size between 64 and 2048")
    if not 1 <= config.fps <= 120:
        raise InputError(f"--fps {config.fps} is out of range", "use a frame rate between 1 and 120")
    audio_path = Path(audio) if audio is not None else None
    if audio_path is not None:  # checked before any work: a bad file found at the audio step would cost it
        load_audio(audio_path, max_seconds=config.max_seconds + 60)
    folder = identity_dir(identity, workspace)
    info = probe_video(video, decode=False)  # the frames step decodes it anyway
    _check_video(info, video, config)
    source = {
        "path": str(video.resolve()),
        "fingerprint": fingerprint(video),
        "video": info.__dict__,
    }
    settings = {k: getattr(config, k) for k in _SETTINGS_THAT_MATTER}

    replaced = folder.with_name(f".{folder.name}.replaced")
    if replaced.exists():  # the old workspace of a --force run that was killed: it was to be discarded
        shutil.rmtree(replaced)
    if force and folder.exists():  # set aside, not deleted, until the new preparation succeeds
        folder.rename(replaced)
    root_existed = folder.parent.is_dir()
    folder_existed = folder.is_dir()
    existed = (folder / IDENTITY_FILE).is_file()
    kept = {
        name: (folder / name).read_bytes()
        for name in (IDENTITY_FILE, CONFIG_FILE)
        if existed and (folder / name).is_file()
    }
    try:
        ws = _open_or_create(folder, identity, source, settings, config, audio_path)
        if audio_path is None and ws.info.get("audio_override"):  # redoing the audio step uses it again
            audio_path = Path(ws.info["audio_override"])
        save_config(config, folder / CONFIG_FILE)
        for stale in folder.rglob(".*.tmp*"):  # leftovers of a killed run: never trusted
            stale.unlink()
        ws.save_info()
        Preparer(video, ws, config, audio_path, progress, on_chunk).run()
    except InputError:
        # Bad input fails the same way every time: leave no stub that asks for --force, and a workspace
        # that was there as it was (its record and config; the steps write nothing before they fail).
        if existed:
            for name, data in kept.items():
                with atomic_path(folder / name) as tmp:
                    tmp.write_bytes(data)
        elif folder_existed:  # a folder of the user's: only what this run wrote goes
            for name in (IDENTITY_FILE, CONFIG_FILE):
                (folder / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            if not root_existed:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
        if replaced.exists():
            shutil.rmtree(folder, ignore_errors=True)
            replaced.rename(folder)
        raise
    if replaced.exists():
        shutil.rmtree(replaced)
    return ws


def _open_or_create(
    folder: Path,
    identity: str,
    source: dict[str, Any],
    settings: dict[str, Any],
    config: PrepareConfig,
    audio_path: Path | None,
) -> Workspace:
    """The workspace to prepare: the existing one (same source and settings; damaged steps unmarked so
    that they are redone) or a new one."""
    if (folder / IDENTITY_FILE).is_file():
        ws = Workspace.open(folder)
        if ws.info.get("source", {}).get("fingerprint") != source["fingerprint"]:
            raise InputError(
                f"identity {identity!r} in {folder.parent} was prepared from another video "
                f"({ws.info.get('source', {}).get('path')})",
                "use another --identity, or --force to replace it",
            )
        old = {k: ws.info.get("settings", {}).get(k) for k in _SETTINGS_THAT_MATTER}
        if old != settings:
            changed = ", ".join(f"{k} {old[k]} -> {settings[k]}" for k in settings if old[k] != settings[k])
            raise InputError(
                f"identity {identity!r} was prepared with other settings ({changed})",
                "use --force to prepare it again with the new ones, or another --identity",
            )
        if ws.info.get("settings", {}).get("holdout") != config.holdout:
            ws.info.setdefault("steps", {}).pop("split", None)
            ws.info["steps"].pop("report", None)
        for damage in ws.verify():
            log.warning("%s is damaged (%s); prepare redoes it", damage.name, damage.problem)
            ws.info.setdefault("steps", {}).pop(damage.step, None)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        ws = Workspace(folder)
        ws.info = {
            "identity": identity,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": source,
            "files": {},
        }
    if audio_path is not None and ws.info.get("audio_override") != str(audio_path.resolve()):
        ws.info.setdefault("steps", {}).pop("audio", None)
        ws.info["audio_override"] = str(audio_path.resolve())
    ws.info["settings"] = {**settings, "holdout": config.holdout}
    ws.info["size"] = config.size
    ws.info["fps"] = config.fps
    ws.info["chunk_size"] = config.chunk_size
    ws.info["config"] = to_dict(config)
    return ws

"""Dubbing an existing video: the same footage, at its own resolution, with the lips following new speech.

1. The speaker's face is followed through the source video at full resolution (:mod:`pipeline.face_follow`).
2. The face model is fitted to each frame; frames where the face is lost or turned too far pass through.
3. The new speech becomes mouth motion (the motion stage), scaled to the range this person's mouth moves in,
   on the source frame each output frame shows (:mod:`pipeline.timeline`).
4. Each output frame's lower face is moved to that mouth (:mod:`renderers.warp.lower_face`, or a trained
   renderer's head, :mod:`pipeline.dub_trained`) and pasted back through a feathered mask that follows the
   jaw; outside the mask every pixel is the source frame's.
5. The frames stream into an H.264 + AAC mp4 at the source's size and frame rate, written atomically.

>>> from pipeline.dub import dub
>>> dub("interview.mp4", "speech_de.wav", "outputs/interview_de.mp4")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from common.config import save_config
from common.errors import InputError, NoFaceError
from common.progress import Stages
from common.progress import bar as progress_bar
from motion import topology as tp
from motion.audio import load_audio
from motion.audio2motion import Audio2MotionConfig, audio_to_motion, require_speech
from motion.blendshapes import MOUTH_NAMES
from motion.face_model import FaceModel
from motion.geometry import axis_angle_to_matrix
from motion.lip_measures import mouth_opening, resting_mouth
from motion.topology import NUM_POINTS
from motion.tracker import FaceLandmarks
from pipeline.checks import check_range
from pipeline.drive import adapt_to_identity
from pipeline.dub_trained import identity_name, prepared_identity, trained_frames, trained_renderer
from pipeline.face_follow import FaceTrack, FollowConfig, follow_face, parse_point
from pipeline.prepare import PrepareConfig, fingerprint
from pipeline.speech_motion import speech_motion
from pipeline.timeline import frames_in_order, read_span, timeline
from pipeline.video_io import (
    VideoInfo,
    VideoWriter,
    check_output_path,
    first_frame_offset,
    probe_video,
)
from pipeline.workspace import IDENTITY_FILE, Workspace, identity_dir
from renderers import registry
from renderers.warp.lower_face import ColourMatch, LowerFaceConfig, LowerFaceWarp, paste
from renderers.warp.mouth import MouthPainter, OwnMouth

log = logging.getLogger(__name__)


@dataclass
class DubConfig:
    """Settings of ``talking-portrait dub``."""

    renderer: str = "auto"
    """warp: the footage's own lower face moved frame by frame (no training); nerf or diffusion: the source
    prepared as an identity, a renderer trained on it, its mouth pasted into the footage; auto: nerf where
    a GPU is present, else warp."""
    identity: str = ""
    """The trained paths' identity workspace (default: named after the video file and its fingerprint)."""
    motion_identity: str = ""
    """The identity whose own motion model makes the mouth (default: ``identity``; see ``motion.model``)."""
    preset: str = "preview"
    """Training preset (``configs/<renderer>_<preset>.yaml``) when the identity has no trained renderer."""
    train_seconds: float = 0.0
    """When above 0, training inside dub stops after this long (the next dub goes on with it)."""
    train: bool = True
    """Train the identity's renderer when it has none or its run stopped early; false uses it as it is."""
    resolution: int = 0
    """Side the trained renderer renders the head at (0: its own setting; lower is faster)."""
    timeline: str = "pingpong"
    """When the speech is longer than the video: pingpong (forward then backward) or loop; a shorter
    speech cuts the video (``cut`` never repeats: it holds the last frame)."""
    start: float = 0.0
    """Seconds into the video where the dubbed footage starts (the part before it is not used)."""
    mouth_texture: str = "frame"
    """Where the warp takes the lower face's pixels from: frame (each frame's own, moved to the new mouth)
    or closed (the person's closed-mouth frame, moved into each frame: none of the old mouth shows; what
    evaluation uses)."""
    face: str = ""
    """X,Y: a point on the speaker's face in the first frame that shows one (default: the largest face)."""
    max_turn_degrees: float = 45.0
    """Frames where the head turns further than this from facing the camera pass through unchanged."""
    fade_frames: int = 4
    """The dubbed mouth fades in and out over this many frames next to frames that pass through."""
    match_identity_range: bool = True
    """Scale the mouth motion to the range the person's own mouth moves in the video."""
    crf: int = 18
    """H.264 quality (lower is better and larger)."""
    max_seconds: float = 600.0
    """Longest speech accepted, in seconds."""
    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """Audio-to-motion settings."""
    follow: FollowConfig = field(default_factory=FollowConfig)
    """Face following."""
    lower_face: LowerFaceConfig = field(default_factory=LowerFaceConfig)
    """The lower-face warp and its mask."""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """How the trained paths prepare the video as an identity."""


@dataclass
class SourceFit:
    """The face model fitted to each frame of the source where the face is usable.

    Attributes:
        points: float32 [N, 478, 2] tracked landmarks in frame pixels (nan where lost).
        expression: float32 [N, E] (rows of unusable frames are the reference frame's).
        rotation: float64 [N, 3, 3] head rotation (weak perspective).
        scale: float64 [N] pixels per model unit.
        usable: bool [N].
        reference: the frame with the calmest, most closed mouth facing the camera (its colours paint the
            mouth interior, its fit gives the person's neutral shape).
        model: the face model with the person's neutral shape.
    """

    points: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    usable: np.ndarray
    reference: int
    model: FaceModel
    offset: float = 0.0
    """How long after the file's start its first frame comes (for seeking; see :mod:`pipeline.timeline`)."""
    first: int = 0
    """The video frame that frame 0 here is (``DubConfig.start``)."""

    def read(self, video: str | os.PathLike, fps: float, i: int) -> np.ndarray:
        """Frame ``i`` (counted from :attr:`first`) of ``video``."""
        return next(read_span(video, fps, self.first + i, 1, self.offset))

    def widest_mouth(self, min_opening: float = 0.15) -> int | None:
        """Among the usable frames where the lips part widest (the top 5%), the one facing the camera most
        squarely: its inside fills the dubbed mouths. None when the lips never part ``min_opening`` of the
        mouth's width."""
        gap = np.linalg.norm(
            self.points[:, tp.LOWER_LIP_CENTER_INNER] - self.points[:, tp.UPPER_LIP_CENTER_INNER], axis=1
        )
        width = np.linalg.norm(
            self.points[:, tp.INNER_MOUTH_CORNERS[1]] - self.points[:, tp.INNER_MOUTH_CORNERS[0]], axis=1
        )
        opening = np.where(self.usable, np.nan_to_num(gap / np.maximum(width, 1e-6)), 0.0)
        if opening.max() < min_opening:
            return None
        wide = np.flatnonzero(opening >= max(min_opening, np.percentile(opening[self.usable], 95)))
        return int(wide[np.argmin(_turn_degrees(self.rotation[wide]))])

    def opening(self, frames: np.ndarray, expression: np.ndarray, chunk: int = 256) -> np.ndarray:
        """The mouth opening [T] of frames ``frames`` moved to ``expression`` [T, E] (a chunk at a time)."""
        return (
            np.concatenate(
                [
                    mouth_opening(
                        self.points[frames[k : k + chunk]]
                        + self.displacement(frames[k : k + chunk], expression[k : k + chunk])
                    )
                    for k in range(0, len(frames), chunk)
                ]
            )
            if len(frames)
            else np.zeros(0)
        )

    def displacement(self, frames: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Pixel displacements [T, 478, 2] that take frames ``frames`` [T] from their own expression to
        ``expression`` [T, E]."""
        delta = self.model.vertices(expression) - self.model.vertices(self.expression[frames])  # [T, 478, 3]
        moved = np.einsum("tij,tnj->tni", self.rotation[frames], delta.astype(np.float64))
        return moved[..., :2] * self.scale[frames, None, None] * np.array([1.0, -1.0])


def _turn_degrees(rotation: np.ndarray) -> np.ndarray:
    """How far each head [N, 3, 3] turns from facing the camera (the angle of its forward axis), degrees."""
    forward = rotation[:, :, 2]  # the model's +z (out of the face) in camera axes
    return np.degrees(np.arccos(np.clip(forward[:, 2], -1, 1)))


def fit_source(track: FaceTrack, max_turn_degrees: float) -> SourceFit:
    """Fit the face model to every frame of ``track`` where the face was found."""
    # one small solve a frame: numpy's BLAS spreading each over every core of a busy machine made them
    # 10-20x slower (160 ms a frame instead of 7 on two cores beside mediapipe and ffmpeg)
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_frames(track, max_turn_degrees)


def _fit_frames(track: FaceTrack, max_turn_degrees: float) -> SourceFit:
    found = np.flatnonzero(track.found)
    if len(found) == 0:
        raise NoFaceError(
            "no face was found in any frame of the video", "give footage where the speaker's face is visible"
        )
    indices = np.arange(NUM_POINTS)
    base = FaceModel()

    def landmarks(i: int) -> FaceLandmarks:
        return FaceLandmarks(track.points[i], indices, track.size)

    # The reference: among the frames facing the camera, the one with the most closed mouth.
    probe = found[:: max(1, len(found) // 60)]
    quick = [base.fit(landmarks(i)) for i in probe]
    turns = _turn_degrees(np.stack([axis_angle_to_matrix(f.rotation) for f in quick]))
    jaw = np.array([f.expression[base.names.index("jaw_open")] for f in quick])
    ref_k = int(np.argmin(jaw + (turns > np.percentile(turns, 50)) * 10.0))
    reference = int(probe[ref_k])
    shape = quick[ref_k].shape
    model = base.for_identity(shape)

    n = len(track)
    expression = np.zeros((n, len(model.names)), np.float32)
    rotation = np.tile(np.eye(3), (n, 1, 1))
    scale = np.ones(n)
    for i in found:
        fit = model.fit(landmarks(int(i)), shape=shape)
        expression[i] = fit.expression
        rotation[i] = axis_angle_to_matrix(fit.rotation)
        scale[i] = fit.scale
    usable = track.found.copy()
    usable[found] = _turn_degrees(rotation[found]) <= max_turn_degrees
    if not usable.any():
        raise NoFaceError(
            f"the speaker's face turns more than {max_turn_degrees:g} degrees from the camera in every frame",
            "give footage where the speaker faces the camera, or raise --set max_turn_degrees",
        )
    expression[~usable] = expression[reference]
    return SourceFit(track.points[..., :2], expression, rotation, scale, usable, reference, model)


def dub_strength(usable: np.ndarray, fade: int) -> np.ndarray:
    """float [N] in [0, 1]: 1 on usable frames at least ``fade`` frames from an unusable one, ramping to 0."""
    if fade <= 0 or usable.all():
        return usable.astype(np.float32)
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(usable)  # frames to the nearest unusable frame
    return np.clip(distance / (fade + 1), 0, 1).astype(np.float32)


def mouth_expression(
    speech: np.ndarray, names: tuple[str, ...], source: SourceFit, frames: np.ndarray, match_range: bool
) -> np.ndarray:
    """[T, E]: each shown frame's own expression with the mouth from speech, added to the person's resting
    mouth (lips closed, :func:`motion.lip_measures.resting_mouth`) and scaled to the range the person's mouth
    moves in the video."""
    own = source.expression[source.usable]
    if match_range:
        speech = adapt_to_identity(speech, names, own)
    rest = resting_mouth(own, mouth_opening(source.points[source.usable]))
    out = source.expression[frames].copy()
    for name in MOUTH_NAMES:
        if name in names:
            k = names.index(name)
            out[:, k] = rest[k] + speech[:, k]
    return out


@dataclass
class DubResult:
    """What :func:`dub` made: the video, its config, counts and the time each stage took (seconds)."""

    video: Path
    config: Path
    renderer: str
    num_frames: int
    source_frames: int
    passed_through: int
    timings: dict[str, float]
    intended_opening: np.ndarray
    """float [T]: the mouth opening (inner-lip gap over mouth width) each output frame was drawn to have,
    nan where the frame passed through: what evaluation compares the drawn mouth with."""
    mouth_by: str = "the generic model"
    """Whose motion model made the mouth: "the generic model" or "NAME's own model"."""

    @property
    def summary(self) -> str:
        """Frames made, from how many source frames (and how many passed through), the renderer, and whose
        model made the mouth: the line the CLI and the web page show."""
        through = f", {self.passed_through} passed through unchanged" if self.passed_through else ""
        return (
            f"{self.num_frames} frames from {self.source_frames} source frames{through}; {self.renderer}; "
            f"mouth by {self.mouth_by}"
        )


def resolve_renderer(name: str) -> str:
    """``auto`` as the renderer it stands for on this machine; other names checked against the registry."""
    if name == "auto":
        import torch

        return "nerf" if torch.cuda.is_available() else "warp"
    if name != "warp" and name not in registry.trainable_names():
        raise InputError(
            f"dub cannot use the {name!r} renderer",
            f"use warp, auto or {', '.join(registry.trainable_names())}",
        )
    return name


def check_source(video: str | os.PathLike) -> VideoInfo:
    """The source must be a video (not an image, not audio alone)."""
    info = probe_video(video, decode=False)
    if info.num_frames <= 1:
        raise InputError(
            f"{video} is a single image, not a video",
            "give a video of the person speaking; for one photo use `talking-portrait generate`",
        )
    if info.fps <= 0:
        raise InputError(f"{video} has no frame rate", "re-encode it with ffmpeg -r 25")
    if info.width % 2 or info.height % 2:
        raise InputError(
            f"{video} is {info.width}x{info.height}; the dubbed video keeps its size, and H.264 needs "
            "an even width and height",
            "crop it by one pixel first: ffmpeg -i IN -vf crop=trunc(iw/2)*2:trunc(ih/2)*2 OUT",
        )
    return info


def dub(
    video: str | os.PathLike,
    audio: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: DubConfig | None = None,
    transcript: str | None = None,
    workspace: str | os.PathLike | None = None,
    progress: bool = False,
) -> DubResult:
    """Write ``out``: ``video`` with its lower face following ``audio``, as long as ``audio``, at the
    video's size and frame rate, with ``audio`` as its sound. See the module's notes."""
    config = config or DubConfig()
    renderer = resolve_renderer(config.renderer)
    check_range(config.max_turn_degrees, "--set max_turn_degrees", 0, 90)
    check_range(config.crf, "--set crf", 0, 51)
    stages = Stages()
    stages.start("load")

    out = check_output_path(out, ".mp4")
    info = check_source(video)
    timeline(1, 1, config.timeline)  # an unknown mode fails before any work
    point = parse_point(config.face)
    speech = load_audio(audio, max_seconds=config.max_seconds)
    require_speech(speech, str(audio), config.motion)
    stages.start("track")

    fps = info.fps
    length = max(1, round(speech.duration * fps))
    first = round(config.start * fps)
    if first >= info.num_frames - 1:
        raise InputError(
            f"--set start={config.start:g} is past the end of {video} ({info.num_frames / fps:.1f} s)",
            "give a start within the video",
        )
    # only the frames the output shows are tracked (a short speech over a long video uses its start)
    shown = int(timeline(info.num_frames - first, length, config.timeline).max()) + 1
    offset = first_frame_offset(video)
    with ThreadPoolExecutor(1) as pool:  # the speech is analysed while the face is followed
        generic_motion = pool.submit(
            audio_to_motion, speech, fps, num_frames=length, transcript=transcript, config=config.motion
        )
        track = follow_face(read_span(video, fps, first, shown, offset), point, config.follow)
        source = fit_source(track, config.max_turn_degrees)
        source.offset, source.first = offset, first
        stages.start("motion")
        motion = generic_motion.result()

    frames = timeline(len(track), length, config.timeline)
    names = source.model.names
    strength = dub_strength(source.usable, config.fade_frames)[frames]
    name = config.identity or identity_name(video)
    if renderer == "warp":
        ws = _existing_identity(name, workspace)
        if ws is None and not config.identity:
            ws = _identity_prepared_from(video, workspace)
    else:
        ws = prepared_identity(video, name, workspace, config.prepare, progress)
    speaker = ws
    if config.motion_identity:
        speaker = _existing_identity(config.motion_identity, workspace)
        if speaker is None:
            raise InputError(
                f"--set motion_identity={config.motion_identity}: no prepared identity of that name",
                "give a prepared identity (talking-portrait prepare VIDEO --identity NAME)",
            )
    spoken = speech_motion(speech, fps, length, speaker, config.motion, transcript, generic=motion)
    scale = config.match_identity_range and not spoken.in_person_scale
    target = mouth_expression(spoken.motion.with_names(names).expression, names, source, frames, scale)

    if renderer == "warp":
        stages.start("render")
        writer_frames = _warped_frames(video, fps, frames, source, target, strength, config)
    else:
        stages.start("prepare and train")
        model_dir = (
            trained_renderer(ws, renderer, config.preset, config.train_seconds, progress)
            if config.train
            else ws.trained_renderer_dir(renderer)
        )
        stages.start("render")
        writer_frames = trained_frames(
            video, fps, frames, source, target, strength, ws=ws, model_dir=model_dir, speech=spoken.motion,
            lower_face=config.lower_face, match_identity_range=scale, resolution=config.resolution,
        )  # fmt: skip
    height, width = track.size
    with VideoWriter(
        out, fps, (width, height), audio=speech, crf=config.crf, color_range=info.color_range
    ) as writer:
        for frame in progress_bar(writer_frames, total=length, desc="dub", unit="frame", enabled=progress):
            writer.write(frame)
    timings = {name: round(seconds, 3) for name, seconds in stages.end().items()}

    config_path = out.with_name(out.stem + ".config.yaml")
    save_config(config, config_path)
    passed = int((strength == 0).sum())
    if passed:
        log.warning("%d of %d frames passed through unchanged (face lost or turned away)", passed, length)
    intended = source.opening(frames, target)
    intended[strength == 0] = np.nan
    mouth_by = f"{speaker.name}'s own model" if spoken.model == "identity" else "the generic model"
    return DubResult(out, config_path, renderer, length, len(track), passed, timings, intended, mouth_by)


def _existing_identity(name: str, workspace: str | os.PathLike | None) -> Workspace | None:
    """The prepared identity ``name`` when there is one (its own motion model may drive the warp dub)."""
    folder = identity_dir(name, workspace)
    if not (folder / IDENTITY_FILE).is_file():
        return None
    ws = Workspace.open(folder)
    return ws if ws.step_done("tracking") else None


def _identity_prepared_from(
    video: str | os.PathLike, workspace: str | os.PathLike | None
) -> Workspace | None:
    """An identity prepared from this very file under any name (found by the file's fingerprint), one with
    its own motion model first; None when there is none."""
    root = identity_dir("any", workspace).parent
    if not root.is_dir():
        return None
    mark = fingerprint(Path(video))
    found = []
    for info_file in sorted(root.glob(f"*/{IDENTITY_FILE}")):
        try:
            ws = Workspace.open(info_file.parent)
        except InputError:
            continue
        if ws.info.get("source", {}).get("fingerprint") == mark and ws.step_done("tracking"):
            found.append(ws)
    found.sort(key=lambda ws: not ws.has_motion_model())
    return found[0] if found else None


def _warped_frames(
    video: str | os.PathLike,
    fps: float,
    frames: np.ndarray,
    source: SourceFit,
    target: np.ndarray,
    strength: np.ndarray,
    config: DubConfig,
) -> Iterator[np.ndarray]:
    """The output frames of the warp path: each source frame's lower face moved to the target mouth."""
    if config.mouth_texture not in ("frame", "closed"):
        raise InputError(f"unknown mouth_texture {config.mouth_texture!r}", "use frame or closed")
    reference = source.reference
    reference_frame = source.read(video, fps, reference)
    painter = MouthPainter(reference_frame, source.points[reference])
    widest = source.widest_mouth()
    if widest is not None:  # the person's own teeth, tongue and cavity
        painter = OwnMouth(source.read(video, fps, widest), source.points[widest])
    warp = LowerFaceWarp(config.lower_face, painter)
    closed = config.mouth_texture == "closed"
    colour = ColourMatch() if closed else None
    for t, frame in enumerate(frames_in_order(video, frames + source.first, fps, source.offset)):
        i = int(frames[t])
        if strength[t] <= 0:
            yield frame
            continue
        moved = source.points[i] + source.displacement(frames[t : t + 1], target[t : t + 1])[0]
        if closed:
            region = warp.warp(frame, source.points[i], moved, reference_frame, source.points[reference])
        else:
            region = warp.warp(frame, source.points[i], moved)
        if region is None:
            yield frame
            continue
        if colour is not None:  # another frame's pixels: brought to this frame's light
            x0, y0, x1, y1 = region.box
            region.patch[:] = colour(region.patch, frame[y0:y1, x0:x1], region.mask)
        yield paste(frame, region, strength[t])

"""Face landmark tracking: image -> 478 landmarks in pixels, behind one interface for every backend.

Backends:
- ``mediapipe`` (default): mediapipe's face mesh with attention (478 points incl. irises); its weights ship
  inside the mediapipe wheel, so it works offline.
- ``face-alignment``: the FAN 68-point model; used when the package and its weights are present. Its points
  map onto the 478-point topology through :data:`motion.topology.IBUG68_TO_MESH`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import InputError, MissingWeightsError, NoFaceError
from motion.topology import IBUG68_TO_MESH, NUM_POINTS

log = logging.getLogger(__name__)


@dataclass
class FaceLandmarks:
    """Landmarks of one face in one image.

    Attributes:
        points: float32 [N, 3], x and y in pixels (origin top-left, y down), z in pixels toward the
            viewer negative (mediapipe's convention: smaller is closer), or 0 where the backend has no depth.
        indices: int [N], the topology vertex each point corresponds to (``arange(478)`` for mediapipe).
        image_size: (height, width) of the image the points refer to.
        score: detection confidence in [0, 1].
    """

    points: np.ndarray
    indices: np.ndarray
    image_size: tuple[int, int]
    score: float = 1.0

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) bounding box of the 2D points in pixels."""
        xy = self.points[:, :2]
        return (*xy.min(0), *xy.max(0))  # type: ignore[return-value]

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float((x1 - x0) * (y1 - y0))

    @property
    def has_depth(self) -> bool:
        return bool(np.any(self.points[:, 2] != 0))


class Tracker(Protocol):
    """Finds the faces in an RGB image."""

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        """All faces in ``image`` (uint8 [H, W, 3] RGB), largest first."""
        ...


def quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", module="google.protobuf")


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what native code writes to file descriptor 2 (TFLite and absl start-up notices)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class MediapipeTracker:
    """mediapipe face mesh with refined (attention) landmarks: 478 points, bundled weights.

    Args:
        video: True to track a video (temporal smoothing between frames, detection only when lost);
            False to treat every image independently.
        max_faces: how many faces to look for.
    """

    def __init__(self, video: bool = False, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        quiet_mediapipe()
        from mediapipe.python.solutions import face_mesh

        with native_stderr_silenced():
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
        self._warm = False

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        h, w = image.shape[:2]
        if self._warm:
            result = self._mesh.process(np.ascontiguousarray(image))
        else:  # the first call prints the interpreter's start-up notices
            with native_stderr_silenced():
                result = self._mesh.process(np.ascontiguousarray(image))
            self._warm = True
        faces = []
        for lm in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm.landmark], np.float32)
            faces.append(FaceLandmarks(pts, np.arange(NUM_POINTS), (h, w)))
        return sorted(faces, key=lambda f: -f.area)

    def reset(self) -> None:
        """Forget the previous frames (video mode): the next frame is detected afresh."""
        self._mesh.reset()

    def close(self) -> None:
        self._mesh.close()


FAN_FILES = ("2DFAN4-cd938726ad.zip", "s3fd-619a316812.pth")


def torch_hub_checkpoints() -> Path:
    """The folder torch hub loads cached checkpoints from (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


class FaceAlignmentTracker:
    """face-alignment's FAN (68 points) with its S3FD detector, from weights already in the torch hub cache.

    Nothing is downloaded: when the package or a weight file is missing, a clear error says what to
    install or which file to place where, and that ``--tracker mediapipe`` works offline.
    """

    def __init__(self, device: str = "cpu") -> None:
        folder = torch_hub_checkpoints()
        missing = [name for name in FAN_FILES if not (folder / name).is_file()]
        if missing:
            raise MissingWeightsError(
                f"face-alignment weights missing: {', '.join(missing)} not in {folder}",
                f"place those files in {folder} (set TORCH_HOME to move it), "
                "or use the offline default --tracker mediapipe",
            )
        try:
            import face_alignment
        except ImportError as exc:
            raise MissingWeightsError(
                f"the face-alignment package is not installed ({exc})",
                "pip install --no-deps face-alignment scikit-image numba, or use --tracker mediapipe",
            ) from exc
        landmarks_type = (
            getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        )
        self._fa = face_alignment.FaceAlignment(landmarks_type, device=device, face_detector="sfd")

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        h, w = image.shape[:2]
        preds = self._fa.get_landmarks_from_image(image) or []
        faces = []
        for pts in preds:
            pts3 = np.zeros((68, 3), np.float32)
            pts3[:, :2] = np.asarray(pts)[:, :2]
            faces.append(FaceLandmarks(pts3, np.asarray(IBUG68_TO_MESH), (h, w)))
        return sorted(faces, key=lambda f: -f.area)


def make_tracker(backend: str = "mediapipe", video: bool = False) -> Tracker:
    """Build a tracker by name: ``mediapipe`` or ``face-alignment``."""
    if backend == "mediapipe":
        return MediapipeTracker(video=video)
    if backend in ("face-alignment", "face_alignment", "fan"):
        return FaceAlignmentTracker()
    raise InputError(f"unknown tracker {backend!r}", "use --tracker mediapipe or --tracker face-alignment")


def track_portrait(image: np.ndarray, tracker: Tracker | None = None, source: str = "image") -> FaceLandmarks:
    """The main face of a portrait: the largest one, with a warning when there are several.

    Raises :class:`NoFaceError` when no face is found.
    """
    tracker = tracker or MediapipeTracker()
    faces = tracker.detect(image)
    if not faces:
        raise NoFaceError(
            f"no face found in {source}",
            "give a photo with one clearly visible, roughly frontal face (at least ~100 px across)",
        )
    if len(faces) > 1:
        log.warning("%s holds %d faces; animating the largest", source, len(faces))
    return faces[0]


def track_frames(images: Iterable[np.ndarray]) -> np.ndarray:
    """Landmarks [T, 478, 3] of the largest face in each frame of a video (uint8 [H, W, 3] RGB each),
    tracked as a video; nan rows where no face was found."""
    tracker = MediapipeTracker(video=True, max_faces=1)
    try:
        out = []
        for image in images:
            faces = tracker.detect(image)
            out.append(faces[0].points if faces else np.full((NUM_POINTS, 3), np.nan, np.float32))
        return np.stack(out) if out else np.zeros((0, NUM_POINTS, 3), np.float32)
    finally:
        tracker.close()

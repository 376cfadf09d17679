"""Following one person's face through a video at the video's own resolution.

Faces in phone footage are often small (150-250 px in a 1080x1920 frame), too small for the face mesh's
detector on the whole frame. So the face is found once on the whole frame with mediapipe's full-range
face detector, then followed on a square crop around where it was last seen, scaled so the face is about
the same size in the crop whatever the video's resolution; the face mesh runs on that crop in video mode
(it tracks from the previous landmarks). When the face is lost, the whole frame is searched again, and
only a face near where the person was last seen is taken back, so the mesh never jumps to someone else.

Which face: the largest in the first frame that shows one, or the one at a point the user gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from common.errors import InputError
from motion.topology import NUM_POINTS
from motion.tracker import MediapipeTracker, native_stderr_silenced, quiet_mediapipe


@dataclass
class FollowConfig:
    """Settings of face following."""

    crop_scale: float = 2.2
    """Side of the square crop the mesh runs on, over the face's size."""
    crop_pixels: int = 320
    """The crop is scaled to this many pixels a side before the mesh sees it."""
    search_every: int = 12
    """While the face is lost, search the whole frame once every this many frames."""
    rejoin_distance: float = 1.5
    """A face found again is taken only within this many face sizes of where it was last seen."""
    smooth_frames: float = 0.8
    """Landmarks are smoothed over time with a Gaussian of this many frames (0: none)."""


@dataclass
class FaceTrack:
    """The followed face's landmarks in every frame of a video.

    Attributes:
        points: float32 [N, 478, 3] in frame pixels (x, y, mediapipe depth); nan where the face was lost.
        found: bool [N].
        size: (height, width) of the frames.
    """

    points: np.ndarray
    found: np.ndarray
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.found)


def parse_point(value: str | None) -> tuple[float, float] | None:
    """``--face X,Y`` as a pixel point, or None."""
    if value is None or not str(value).strip():
        return None
    parts = str(value).split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--face {value!r} is not a point", "give the speaker's face as X,Y pixels in the first frame"
        ) from None
    return x, y


class _Detector:
    """mediapipe's full-range face detector (faces up to about 5 m from the camera)."""

    def __init__(self) -> None:
        quiet_mediapipe()
        from mediapipe.python.solutions import face_detection

        with native_stderr_silenced():
            self._det = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def boxes(self, frame: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Face boxes (x0, y0, x1, y1) in pixels, largest first."""
        h, w = frame.shape[:2]
        scale = min(1.0, 1280.0 / max(h, w))
        small = (
            frame
            if scale == 1.0
            else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        with native_stderr_silenced():
            result = self._det.process(np.ascontiguousarray(small))
        out = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        return sorted(out, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def close(self) -> None:
        self._det.close()


def _centre_size(box) -> tuple[np.ndarray, float]:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), float(max(x1 - x0, y1 - y0))


def _pick(boxes, point: tuple[float, float] | None):
    """The box holding ``point`` (else the nearest to it), or the largest."""
    if not boxes:
        return None
    if point is None:
        return boxes[0]
    p = np.asarray(point)
    inside = [b for b in boxes if b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]]
    if inside:
        return inside[0]
    return min(boxes, key=lambda b: float(np.linalg.norm(_centre_size(b)[0] - p)))


def faces_in(frame: np.ndarray) -> list[tuple[float, float, float, float]]:
    """The face boxes (x0, y0, x1, y1) in one frame, largest first: those ``--face`` picks among."""
    detector = _Detector()
    try:
        return detector.boxes(frame)
    finally:
        detector.close()


def speaker_box(boxes: list, point: tuple[float, float] | None):
    """The box ``--face point`` picks: the one holding the point (else the nearest), or the largest."""
    return _pick(boxes, point)


class FaceFollower:
    """Follows one face frame by frame (:func:`follow_face` runs it over a whole video)."""

    def __init__(self, point: tuple[float, float] | None = None, config: FollowConfig | None = None) -> None:
        self.config = config or FollowConfig()
        self.point = point
        self._mesh = MediapipeTracker(video=True, max_faces=2)
        self._detector = _Detector()
        self._centre: np.ndarray | None = None
        self._size = 0.0
        self._lost_for = 0
        self._chosen = False

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()

    def _crop(self, frame: np.ndarray, centre: np.ndarray, size: float):
        """The square crop around ``centre`` scaled to ``crop_pixels``: (image, origin, scale)."""
        side = max(size * self.config.crop_scale, 32.0)
        scale = self.config.crop_pixels / side
        origin = centre - side / 2
        m = np.array([[scale, 0, -origin[0] * scale], [0, scale, -origin[1] * scale]], np.float32)
        n = self.config.crop_pixels
        crop = cv2.warpAffine(frame, m, (n, n), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return crop, origin, scale

    def _search(self, frame: np.ndarray) -> bool:
        """Find the person on the whole frame; True when a face to follow was found."""
        boxes = self._detector.boxes(frame)
        if not self._chosen:
            box = _pick(boxes, self.point)
        elif boxes:  # lost: only a face near where the person was
            box = _pick(boxes, tuple(self._centre))
            centre, _ = _centre_size(box)
            if np.linalg.norm(centre - self._centre) > self.config.rejoin_distance * self._size:
                box = None
        else:
            box = None
        if box is None:
            return False
        self._centre, self._size = _centre_size(box)
        self._size *= 1.15  # the detector's box is tighter than the landmarks' extent
        self._chosen = True
        self._mesh.reset()
        return True

    def step(self, frame: np.ndarray) -> np.ndarray | None:
        """Landmarks [478, 3] of the followed face in ``frame``, or None where it is not found."""
        if self._centre is None or self._lost_for > 0:
            if self._lost_for % self.config.search_every == 0 and not self._search(frame):
                self._lost_for += 1
                return None
            if self._centre is None:
                self._lost_for += 1
                return None
        crop, origin, scale = self._crop(frame, self._centre, self._size)
        faces = self._mesh.detect(crop)
        if not faces:
            self._lost_for += 1
            self._mesh.reset()
            return None
        face = min(
            faces, key=lambda f: float(np.linalg.norm(f.points[:, :2].mean(0) - self.config.crop_pixels / 2))
        )
        points = face.points.copy()
        points[:, :2] = points[:, :2] / scale + origin
        points[:, 2] /= scale
        x0, y0 = points[:, :2].min(0)
        x1, y1 = points[:, :2].max(0)
        self._centre, self._size = _centre_size((x0, y0, x1, y1))
        self._lost_for = 0
        return points


def smooth_track(points: np.ndarray, found: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time of each run of consecutive found frames (never across a gap)."""
    if sigma <= 0:
        return points
    from scipy.ndimage import gaussian_filter1d

    out = points.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], found.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start > 2:
            out[start:stop] = gaussian_filter1d(points[start:stop], sigma, axis=0, mode="nearest")
    return out


def follow_face(
    frames: Iterable[np.ndarray],
    point: tuple[float, float] | None = None,
    config: FollowConfig | None = None,
) -> FaceTrack:
    """Landmarks of one face over ``frames`` (uint8 RGB): the largest face, or the one at ``point``
    (pixels of the first frame that shows a face), followed through the video and smoothed over time."""
    config = config or FollowConfig()
    follower = FaceFollower(point, config)
    rows: list[np.ndarray] = []
    size = (0, 0)
    lost = np.full((NUM_POINTS, 3), np.nan, np.float32)
    try:
        for frame in frames:
            size = frame.shape[:2]
            found = follower.step(frame)
            rows.append(lost if found is None else found.astype(np.float32))
    finally:
        follower.close()
    points = np.stack(rows) if rows else np.zeros((0, NUM_POINTS, 3), np.float32)
    found = ~np.isnan(points[:, 0, 0])
    return FaceTrack(smooth_track(points, found, config.smooth_frames), found, size)

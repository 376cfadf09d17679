"""MotionSequence: the contract between the motion stage and every renderer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError
from common.files import save_npz
from motion import topology as tp
from motion.blendshapes import EXPRESSION_NAMES
from motion.geometry import axis_angle_to_matrix, matrix_to_axis_angle

SCHEMA_VERSION = 2
"""Version 2 added ``pose_kind``; version 1 files carry relative head motion."""

POSE_RELATIVE = "relative"
"""``pose`` is head motion about the subject's rest pose: a rotation about the neck pivot and a shift, in the
head's own frame (what the motion stage predicts; the warp renderer applies it to a photo's fitted pose)."""
POSE_CAMERA = "camera"
"""``pose`` is the head's absolute pose in the camera: ``Xc = R @ X + t`` (what tracking measures on
footage; the trained renderers draw it)."""
POSE_KINDS = (POSE_RELATIVE, POSE_CAMERA)


@dataclass
class MotionSequence:
    """Per-frame face motion at a fixed frame rate.

    Attributes:
        fps: frames per second.
        expression: float32 [T, E], weights of the named coefficients in ``names``.
        pose: float32 [T, 6], head rotation as an axis-angle vector in radians (first 3) and translation
            in face-model units (last 3); what it is relative to is ``pose_kind``.
        names: the E coefficient names, in column order.
        pose_kind: :data:`POSE_RELATIVE` (motion about the rest pose) or :data:`POSE_CAMERA` (absolute pose
            in the camera). :func:`to_camera` turns the first into the second.
    """

    fps: float
    expression: np.ndarray
    pose: np.ndarray
    names: tuple[str, ...] = field(default=EXPRESSION_NAMES)
    pose_kind: str = POSE_RELATIVE

    def __post_init__(self) -> None:
        self.expression = np.asarray(self.expression, dtype=np.float32)
        self.pose = np.asarray(self.pose, dtype=np.float32)
        self.names = tuple(self.names)
        if self.expression.ndim != 2 or self.expression.shape[1] != len(self.names):
            raise ValueError(f"expression must be [T, {len(self.names)}], got {self.expression.shape}")
        if self.pose.shape != (self.expression.shape[0], 6):
            raise ValueError(f"pose must be [T, 6] with T={self.expression.shape[0]}, got {self.pose.shape}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.pose_kind not in POSE_KINDS:
            raise ValueError(f"pose_kind must be one of {POSE_KINDS}, got {self.pose_kind!r}")

    @classmethod
    def rest(cls, num_frames: int, fps: float) -> MotionSequence:
        """A still, neutral sequence of ``num_frames`` frames."""
        return cls(
            fps=fps,
            expression=np.zeros((num_frames, len(EXPRESSION_NAMES)), np.float32),
            pose=np.zeros((num_frames, 6), np.float32),
        )

    def __len__(self) -> int:
        return int(self.expression.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self) / self.fps

    def coefficient(self, name: str) -> np.ndarray:
        """The [T] curve of one named coefficient."""
        return self.expression[:, self.names.index(name)]

    def with_names(self, names: tuple[str, ...]) -> MotionSequence:
        """Reorder to ``names``; coefficients this sequence lacks are zero, extra ones are dropped."""
        out = np.zeros((len(self), len(names)), np.float32)
        for j, name in enumerate(names):
            if name in self.names:
                out[:, j] = self.expression[:, self.names.index(name)]
        return MotionSequence(self.fps, out, self.pose.copy(), names, self.pose_kind)

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``.npz`` atomically."""
        save_npz(
            path,
            schema_version=np.int32(SCHEMA_VERSION),
            fps=np.float64(self.fps),
            expression=self.expression,
            pose=self.pose,
            names=np.array(self.names),
            pose_kind=np.array(self.pose_kind),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> MotionSequence:
        """Read a sequence written by :meth:`save`; anything else raises :class:`InputError`."""
        fix = "give a motion file written by --save-motion (a .npz MotionSequence)"
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["schema_version"])
                if version not in (1, SCHEMA_VERSION):
                    raise InputError(
                        f"{path} has motion schema version {version}; this version reads 1 to "
                        f"{SCHEMA_VERSION}",
                        "write it again with this version (--save-motion)",
                    )
                return cls(
                    fps=float(data["fps"]),
                    expression=data["expression"],
                    pose=data["pose"],
                    names=tuple(str(n) for n in data["names"]),
                    pose_kind=str(data["pose_kind"]) if version >= 2 else POSE_RELATIVE,
                )
        except FileNotFoundError:
            raise InputError(f"motion file not found: {path}", fix) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path} is not a motion file ({err})", fix) from None


def neck_pivot(
    shape: np.ndarray, below_eyes: float | None = None, behind_face: float | None = None
) -> np.ndarray:
    """The head-frame point [3] that relative head motion turns about (the top of the neck) for an identity
    shape [478, 3]: ``below_eyes`` model units under the eye line and ``behind_face`` units behind the face;
    by default 0.9 and 0.4 face heights (chin to forehead), so any head scale turns alike."""
    eye_y = shape[[tp.LEFT_EYE_CORNERS[0], tp.RIGHT_EYE_CORNERS[0]], 1].mean()
    height = float(np.ptp(shape[list(tp.FACE_OVAL), 1]))
    below = 0.9 * height if below_eyes is None else below_eyes
    behind = 0.4 * height if behind_face is None else behind_face
    return np.array([0.0, eye_y - below, shape[:, 2].min() - behind])


def to_camera(
    motion: MotionSequence, rest_rotation: np.ndarray, rest_translation: np.ndarray, pivot: np.ndarray
) -> MotionSequence:
    """Relative head motion -> absolute camera poses, the one conversion between the two pose kinds.

    Each frame's relative pose (rotation ``D`` about ``pivot``, then shift ``d``, in the head frame) moves a
    model point to ``D @ (X - pivot) + pivot + d``; the rest pose (``R0``, ``t0``: axis-angle [3] and [3])
    then takes it to the camera, so the frame's camera pose is ``R = R0 @ D``,
    ``t = R0 @ (pivot - D @ pivot + d) + t0``. A sequence already in camera poses is returned as it is.
    """
    if motion.pose_kind == POSE_CAMERA:
        return motion
    base = axis_angle_to_matrix(np.asarray(rest_rotation, np.float64))
    rest_translation = np.asarray(rest_translation, np.float64)
    pose = np.zeros((len(motion), 6), np.float32)
    for t, (r, d) in enumerate(zip(motion.pose[:, :3], motion.pose[:, 3:], strict=True)):
        delta = axis_angle_to_matrix(r.astype(np.float64))
        pose[t, :3] = matrix_to_axis_angle(base @ delta)
        pose[t, 3:] = base @ (pivot - delta @ pivot + d) + rest_translation
    return MotionSequence(motion.fps, motion.expression, pose, motion.names, POSE_CAMERA)

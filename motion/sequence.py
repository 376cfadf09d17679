"""MotionSequence: the contract between the motion stage and every renderer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from common.files import save_npz
from motion.blendshapes import EXPRESSION_NAMES

SCHEMA_VERSION = 1


@dataclass
class MotionSequence:
    """Per-frame face motion at a fixed frame rate.

    Attributes:
        fps: frames per second.
        expression: float32 [T, E], weights of the named coefficients in ``names``.
        pose: float32 [T, 6], head rotation as an axis-angle vector in radians (first 3) and translation
            in face-model units (last 3), relative to the subject's rest pose.
        names: the E coefficient names, in column order.
    """

    fps: float
    expression: np.ndarray
    pose: np.ndarray
    names: tuple[str, ...] = field(default=EXPRESSION_NAMES)

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
        return MotionSequence(self.fps, out, self.pose.copy(), names)

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``.npz`` atomically."""
        save_npz(
            path,
            schema_version=np.int32(SCHEMA_VERSION),
            fps=np.float64(self.fps),
            expression=self.expression,
            pose=self.pose,
            names=np.array(self.names),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> MotionSequence:
        """Read a sequence written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["schema_version"])
            if version != SCHEMA_VERSION:
                raise ValueError(
                    f"{path}: motion schema version {version}, this version reads {SCHEMA_VERSION}"
                )
            return cls(
                fps=float(data["fps"]),
                expression=data["expression"],
                pose=data["pose"],
                names=tuple(str(n) for n in data["names"]),
            )

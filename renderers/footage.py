"""What a trained renderer learns from: one identity's prepared footage, read by streaming.

The renderers see footage only through :class:`Footage`, so they need not know where it lives on disk or
how it was prepared; :class:`pipeline.workspace.Workspace` is the implementation the commands use, and a
test can hand in any other object of the same shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from motion.clip_fit import ClipFit


class FrameMatte(Protocol):
    """The part of a frame's masks a renderer trains on."""

    head_alpha: np.ndarray
    """uint8 [S, S] soft matte (0..255) of the head (face + hair), fading out under the jaw line."""


class Footage(Protocol):
    """One identity's prepared frames and their clip fit."""

    @property
    def name(self) -> str:
        """The identity's name (for messages and checkpoints)."""
        ...

    @property
    def size(self) -> int:
        """Frame side in pixels (frames are square)."""
        ...

    @property
    def num_frames(self) -> int: ...

    @property
    def fps(self) -> float: ...

    def fit(self) -> ClipFit:
        """The face model fitted to the whole clip (poses, expressions, which frames are usable)."""
        ...

    def split(self, name: str) -> range:
        """Frame indices of the ``train`` or ``holdout`` part."""
        ...

    def tracked_frames(self, split: str | None = None, fit: ClipFit | None = None) -> np.ndarray:
        """int64 indices of the frames of ``split`` (None: all) whose fit is usable (``fit``: the clip fit
        when the caller has read it already)."""
        ...

    def by_chunk(self, indices: Sequence[int]) -> dict[int, list[int]]:
        """``indices`` grouped by the storage chunk that holds them (read one chunk at a time)."""
        ...

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index``: uint8 [S, S, 3] RGB."""
        ...

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, FrameMatte]]:
        """``(index, rgb uint8 [S, S, 3], masks)`` for ``indices``, in the order given."""
        ...

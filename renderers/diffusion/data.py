"""Training samples of the diffusion renderer: head crops of a workspace's frames with their conditioning.

One fixed square window per identity holds the head in every frame (the union of the head box's projections
over the clip), so the network works at one scale and the head moves inside the window as it did in the
footage. A sample is the window's RGBA (colour and head matte, in [-1, 1]), the face model rasterised in the
same window at the frame's tracked motion, a per-pixel loss weight (heavier on the lips and mouth) and the
previous frame's RGBA (for temporal stability). Frames stream from the workspace one chunk at a time.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from motion.clip_fit import ClipFit
from renderers.diffusion.conditioning import CHANNEL_INDEX, ConditioningConfig, FaceConditioner
from renderers.footage import Footage
from renderers.head_box import HeadBox


def head_window(
    shape: np.ndarray,
    focal: float,
    rotations: np.ndarray,
    translations: np.ndarray,
    image_size: int,
    margin: float = 0.06,
) -> tuple[int, int, int]:
    """(x0, y0, side) of the square that holds the projection of the head box of ``shape`` at every pose
    (rotations, translations [T, 3]), grown by ``margin`` of its side on each side and kept in the frame."""
    box = HeadBox.from_shape(shape)
    bounds = np.array(
        [box.pixel_bounds(r, t, focal, image_size) for r, t in zip(rotations, translations, strict=True)]
    )
    x0, y0 = bounds[:, :2].min(0)
    x1, y1 = bounds[:, 2:].max(0)
    side = int(min(image_size, np.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * margin))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(np.clip(round(cx - side / 2), 0, image_size - side))
    top = int(np.clip(round(cy - side / 2), 0, image_size - side))
    return left, top, side


def reference_index(fit: ClipFit, frames: np.ndarray) -> int:
    """The training frame whose expression is nearest the clip's median: the identity's reference look."""
    expression = fit.expression[frames]
    return int(frames[np.argmin(np.linalg.norm(expression - np.median(expression, 0), axis=1))])


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [C, H, W] in [-1, 1]."""
    return image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0


def premultiplied(rgba: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGBA [N, 4, H, W] in [-1, 1] -> float32 CPU tensor [N, 4, H, W] in [0, 1]: colour times matte, and the
    matte (what held-out figures compare: the colour outside the head does not count)."""
    x = (torch.as_tensor(rgba).detach().float().cpu() + 1.0) / 2.0
    return torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)


class HeadCrops:
    """The training samples of one identity (see the module docstring).

    Args:
        footage: the identity's workspace. frames: the frame indices trained on. size: side of the samples.
        conditioning: rasteriser settings. mouth_weight: loss weight of lip and mouth pixels.
    """

    def __init__(
        self,
        footage: Footage,
        frames: np.ndarray,
        size: int,
        conditioning: ConditioningConfig,
        mouth_weight: float,
    ) -> None:
        self.footage = footage
        self.size = size
        self.mouth_weight = mouth_weight
        self.fit = footage.fit()
        fit, valid = self.fit, self.fit.valid
        self.window = head_window(
            fit.shape, fit.focal, fit.rotation[valid], fit.translation[valid], footage.size
        )
        self.conditioner = FaceConditioner.from_fit(self.fit, conditioning).cropped(self.window)
        self.frames = np.asarray(frames)
        self.by_chunk = footage.by_chunk(self.frames)
        self.chunks = sorted(self.by_chunk)
        self.reference_index = reference_index(self.fit, self.frames)
        self.reference = to_unit(self.crop(footage.frame(self.reference_index)))
        self._loaded: tuple[int, dict[str, np.ndarray]] | None = None

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The head window of a frame (uint8 [H, W] or [H, W, C]) at ``size``."""
        x0, y0, side = self.window
        return cv2.resize(
            image[y0 : y0 + side, x0 : x0 + side], (self.size, self.size), interpolation=cv2.INTER_AREA
        )

    def conditioning(self, frames: np.ndarray) -> np.ndarray:
        """float32 [T, C, size, size] for frame indices (the tracked motion)."""
        fit = self.fit
        return self.conditioner.render_batch(
            fit.expression[frames], fit.rotation[frames], fit.translation[frames], self.size
        )

    def weight(self, conditioning: np.ndarray) -> np.ndarray:
        """Loss weight [T, 1, size, size]: ``mouth_weight`` on the lips and mouth (grown a little), else 1."""
        mouth = (conditioning[:, CHANNEL_INDEX["lips"]] + conditioning[:, CHANNEL_INDEX["mouth"]]) > 0
        grow = np.ones((3, 3), np.uint8)
        mouth = np.stack([cv2.dilate(m.astype(np.uint8), grow) for m in mouth]).astype(np.float32)
        return (1.0 + (self.mouth_weight - 1.0) * mouth)[:, None]

    def chunk(self, chunk: int) -> dict[str, np.ndarray]:
        """``ids`` [n], ``rgba`` [n, 4, S, S], ``conditioning`` [n, C, S, S], ``weight`` [n, 1, S, S] of one
        chunk's training frames (the last chunk asked for is kept)."""
        if self._loaded is not None and self._loaded[0] == chunk:
            return self._loaded[1]
        ids, rgba = [], []
        for i, rgb, masks in self.footage.iter_frames(self.by_chunk[chunk]):
            ids.append(i)
            rgba.append(to_unit(np.dstack([self.crop(rgb), self.crop(masks.head_alpha)])))
        ids_arr = np.array(ids)
        cond = self.conditioning(ids_arr)
        data = {"ids": ids_arr, "rgba": np.stack(rgba), "conditioning": cond, "weight": self.weight(cond)}
        self._loaded = (chunk, data)
        return data

    def target(self, frames: list[int]) -> np.ndarray:
        """RGBA [T, 4, S, S] in [-1, 1] of any frames (held-out ones too)."""
        return np.stack(
            [
                to_unit(np.dstack([self.crop(rgb), self.crop(m.head_alpha)]))
                for _, rgb, m in self.footage.iter_frames(frames)
            ]
        )

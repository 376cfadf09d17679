"""Background plate: the scene behind the person, recovered from frames of a clip where the person moves.

Each pixel's colour is the median of the samples in which it was clean background (outside the person matte
grown by a margin, which keeps out halos and motion blur). Pixels the person covered in every sample are
filled from the seen ones by push-pull interpolation, which spreads nearby colours smoothly inward and leaves
seen pixels untouched, so there is no seam where the two meet.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=8)
def _sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` items: (low, high) index pairs such that putting each pair's
    minimum at ``low`` and maximum at ``high``, in order, sorts any sequence of ``n``. Built for the next
    power of two; pairs reaching past ``n`` are dropped (as if padded with +inf, which they never move)."""
    size = 1 << max(n - 1, 0).bit_length()
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


def _sort_columns(stack: np.ndarray) -> None:
    """Sort a uint8 [n, P] array along its first axis, in place.

    A sorting network of whole-row min/max operations: a few hundred vectorised passes over rows, several
    times faster than numpy's sort along an axis of many short columns."""
    scratch = np.empty_like(stack[0])
    for a, b in _sorting_network(stack.shape[0]):
        np.minimum(stack[a], stack[b], out=scratch)
        np.maximum(stack[a], stack[b], out=stack[b])
        stack[a] = scratch


def _push_pull(colour: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Fill the unseen pixels of an image from the seen ones (Gortler et al.'s push-pull).

    Push: halve the image level by level down to one pixel; a coarse pixel's colour is the weighted mean of
    the finer pixels under it and its weight their summed weight, capped at 1, so one seen pixel among four
    makes a fully trusted coarse pixel and colours travel from the nearest seen pixels rather than fading
    toward the mean of the whole image. Pull: from the coarsest level up, each pixel keeps its own colour in
    proportion to its weight and takes the upsampled coarser result for the rest. Seen pixels (weight 1)
    come back unchanged.

    Args:
        colour: float32 [H, W, 3].
        seen: float32 [H, W], 1 where ``colour`` is known, 0 where not.
    Returns:
        float32 [H, W, 3].
    """
    levels = [(colour, seen)]
    while max(levels[-1][1].shape) > 1:
        colour, weight = levels[-1]
        h, w = weight.shape
        half = ((w + 1) // 2, (h + 1) // 2)
        mean_weight = cv2.resize(weight, half, interpolation=cv2.INTER_AREA)
        premultiplied = cv2.resize(colour * weight[..., None], half, interpolation=cv2.INTER_AREA)
        premultiplied = premultiplied.reshape(half[1], half[0], 3)
        coarse = premultiplied / np.maximum(mean_weight, 1e-12)[..., None]
        levels.append((coarse, np.minimum(4.0 * mean_weight, 1.0)))
    filled = levels[-1][0]
    for colour, weight in reversed(levels[:-1]):
        h, w = weight.shape
        up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, 3)
        filled = weight[..., None] * colour + (1.0 - weight)[..., None] * up
    return filled


class BackgroundPlate:
    """Collect frames with their person mattes, then recover the background behind the person.

    Memory is bounded by ``max_samples`` frames. The caller is expected to add frames spread evenly over the
    clip; if it adds more than ``max_samples``, every other kept frame is dropped and from then on only every
    other new one is kept (repeatedly), so what is kept stays evenly spread over what was added.

    Args:
        size: frame side in pixels, or (height, width).
        max_samples: how many frames to keep at most.
        margin: pixels by which the person matte is grown before a pixel counts as clean background
            (halos, motion blur, matte error); default 2% of the frame's larger side, at least 2.
        threshold: person_alpha above which (as a fraction of full) a pixel is person.
        min_count: clean samples a pixel needs before its own median is trusted; pixels seen fewer times
            are usually segmentation misses (a hat or hair strand the matte left out) and are filled from
            their surroundings instead. Default: 3, or fewer when fewer than 30 frames are kept.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        max_samples: int = 48,
        margin: int | None = None,
        threshold: float = 0.1,
        min_count: int | None = None,
    ) -> None:
        self.shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.max_samples = max_samples
        self.margin = max(2, round(0.02 * max(self.shape))) if margin is None else int(margin)
        self.threshold = threshold
        self.min_count = min_count
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.margin + 1,) * 2)
        # uint8 [max_samples, H, W, 3], allocated on the first add: the frames with 255 wherever they are
        # not clean background, the largest value, which sorts after every clean sample
        self._frames: np.ndarray | None = None
        self._clean: np.ndarray | None = None  # bool [max_samples, H, W]
        self._count = 0  # frames kept
        self._offered = 0  # frames added
        self._stride = 1  # keep added frames whose index is a multiple of this

    @property
    def num_samples(self) -> int:
        """How many frames are kept."""
        return self._count

    def add(self, rgb: np.ndarray, person_alpha: np.ndarray) -> None:
        """Offer one frame.

        Args:
            rgb: uint8 [H, W, 3] RGB frame.
            person_alpha: [H, W] person matte: float in [0, 1], or uint8 in [0, 255].
        """
        if rgb.shape != (*self.shape, 3) or person_alpha.shape != self.shape:
            raise ValueError(f"frame {rgb.shape} / matte {person_alpha.shape} do not match {self.shape}")
        index = self._offered
        self._offered += 1
        if index % self._stride:
            return
        if self._count == self.max_samples:
            kept = self._count // 2 + self._count % 2  # indices 0, 2, 4, ... of what is kept
            self._frames[:kept] = self._frames[: self._count : 2]
            self._clean[:kept] = self._clean[: self._count : 2]
            self._count = kept
            self._stride *= 2
            if index % self._stride or self._count == self.max_samples:  # (the latter: max_samples 1)
                return
        if self._frames is None:
            self._frames = np.empty((self.max_samples, *self.shape, 3), np.uint8)
            self._clean = np.empty((self.max_samples, *self.shape), bool)
        full = 255.0 if person_alpha.dtype == np.uint8 else 1.0
        person = (np.asarray(person_alpha) > self.threshold * full).astype(np.uint8)
        clean = cv2.dilate(person, self._kernel) == 0
        self._frames[self._count] = 255
        np.copyto(self._frames[self._count], rgb, where=clean[..., None])
        self._clean[self._count] = clean
        self._count += 1

    @property
    def trusted_count(self) -> int:
        """Clean samples a pixel needs for its own colour to be used."""
        if self.min_count is not None:
            return max(1, self.min_count)
        return int(np.clip(self._count // 10, 1, 3))

    @property
    def coverage_fraction(self) -> float:
        """Share of the pixels seen as clean background often enough to be trusted."""
        if self._count == 0:
            return 0.0
        counts = self._clean[: self._count].sum(axis=0, dtype=np.int32)
        return float(np.mean(counts >= self.trusted_count))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The plate and its coverage.

        Returns:
            plate: uint8 [H, W, 3] RGB, the median of each pixel's clean samples (the mean of the two middle
                ones for an even count) where it has at least :attr:`trusted_count` of them; the other
                pixels filled from those (mid-grey if there are none).
            coverage: float32 [H, W] in [0, 1], the fraction of the kept frames in which the pixel was clean.
        Raises ValueError when no frame was added.
        """
        n = self._count
        if n == 0:
            raise ValueError("no frames added to the background plate")
        counts = self._clean[:n].sum(axis=0, dtype=np.int32)  # [H, W]
        # masked samples hold 255, so a pixel's c clean samples are the first c of its sorted column
        ranked = self._frames[:n].reshape(n, -1).copy()  # [n, H * W * 3]
        _sort_columns(ranked)
        c = np.repeat(counts.reshape(-1), 3)
        low = np.take_along_axis(ranked, (np.maximum(c - 1, 0) // 2)[None], axis=0)[0]
        high = np.take_along_axis(ranked, np.minimum(c // 2, n - 1)[None], axis=0)[0]
        median = ((low.astype(np.uint16) + high + 1) // 2).astype(np.uint8).reshape(*self.shape, 3)

        seen = counts >= self.trusted_count
        if seen.all():
            plate = median
        elif not seen.any():
            plate = np.full((*self.shape, 3), 128, np.uint8)
        else:
            filled = _push_pull(median.astype(np.float32), seen.astype(np.float32))
            plate = np.clip(np.round(filled), 0, 255).astype(np.uint8)
            plate[seen] = median[seen]
        return plate, (counts / np.float32(n)).astype(np.float32)

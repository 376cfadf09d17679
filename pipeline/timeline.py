"""Which source frame each output frame shows, and reading them in that order without holding the video.

A dubbed video is as long as the new speech. When the speech is longer than the footage, the footage plays
forward then backward (``pingpong``: no jump at the turns) or starts again (``loop``); when shorter, it is
cut. The frames are then read run by run: a forward run streams from the decoder, a backward run is read in
short windows from its end (a seek and a short decode each), so memory stays a window's worth of frames
whatever the video's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from common.errors import InputError

TIMELINES = ("pingpong", "loop", "cut")


def timeline(num_source: int, length: int, mode: str = "pingpong") -> np.ndarray:
    """int [length]: the source frame shown at each output frame."""
    if mode not in TIMELINES:
        raise InputError(f"unknown timeline {mode!r}", f"use --timeline {', '.join(TIMELINES)}")
    if num_source < 1:
        raise ValueError("the source has no frames")
    t = np.arange(length)
    if mode == "pingpong" and num_source > 1:
        period = 2 * num_source - 2
        phase = t % period
        return np.where(phase < num_source, phase, period - phase)
    if mode == "cut":
        return np.minimum(t, num_source - 1)  # a shorter speech cuts; a longer one holds the last frame
    return t % num_source


def runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """``indices`` split into runs of consecutive frames stepping by +1 or -1 (a repeat counts as a run of
    its own): (first, last, step) each."""
    out: list[tuple[int, int, int]] = []
    k = 0
    n = len(indices)
    while k < n:
        first = int(indices[k])
        step = int(indices[k + 1] - indices[k]) if k + 1 < n else 1
        if step not in (1, -1):
            step = 1
            out.append((first, first, 1))
            k += 1
            continue
        j = k + 1
        while j < n and indices[j] - indices[j - 1] == step:
            j += 1
        out.append((first, int(indices[j - 1]), step))
        k = j
    return out


def read_span(
    path: str | os.PathLike, fps: float, start: int, count: int, offset: float = 0.0
) -> Iterator[np.ndarray]:
    """Frames ``start .. start + count - 1`` of a constant-rate video (uint8 RGB), by seeking.

    ``offset``: how long after the file's start its first frame comes (``VideoInfo.video_start -
    VideoInfo.start``; ffmpeg seeks on the file's clock)."""
    from pipeline.video_io import read_video_frames

    # half a frame early: frame ``start`` is the first at or after the seek
    seek = offset + (start - 0.5) / fps if start > 0 else None
    for k, frame in enumerate(read_video_frames(path, seek=seek), 1):
        yield frame
        if k == count:
            return


def frames_in_order(
    path: str | os.PathLike, indices: np.ndarray, fps: float, offset: float = 0.0, window: int = 32
) -> Iterator[np.ndarray]:
    """The frames of ``path`` at ``indices``, in that order; forward runs are streamed, backward runs read
    ``window`` frames at a time from their end (``offset``: see :func:`read_span`)."""
    for first, last, step in runs(indices):
        if step == 1:
            count = last - first + 1
            if first == last:
                frame = next(read_span(path, fps, first, 1, offset), None)
                if frame is None:
                    raise InputError(f"{path} ended before frame {first}", "check that the video is whole")
                yield frame
                continue
            got = 0
            for frame in read_span(path, fps, first, count, offset):
                yield frame
                got += 1
            if got < count:
                raise InputError(f"{path} ended before frame {last}", "check that the video is whole")
            continue
        top = first
        while top >= last:
            low = max(last, top - window + 1)
            block = list(read_span(path, fps, low, top - low + 1, offset))
            if len(block) < top - low + 1:
                raise InputError(f"{path} ended before frame {top}", "check that the video is whole")
            yield from reversed(block)
            top = low - 1

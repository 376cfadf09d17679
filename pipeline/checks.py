"""Checks every command makes before any work starts: what it writes against what it reads, its numeric
settings against their documented ranges, its input files against what they must be.

Each check raises :class:`common.errors.InputError` (or :class:`OutputError`) with a fix, so that a bad
command line costs the user no time and touches no file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from common.errors import InputError, OutputError

# the ranges README states for --size and --fps (prepare and generate alike)
MIN_SIZE, MAX_SIZE = 64, 2048
MIN_FPS, MAX_FPS = 1.0, 120.0


def check_size(size: int, flag: str = "--size") -> None:
    """An output side in pixels: even, from 64 to 2048 (H.264 yuv420p needs even sides)."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE or size % 2:
        raise InputError(
            f"{flag} {size} is not usable", f"use an even size between {MIN_SIZE} and {MAX_SIZE}, e.g. 512"
        )


def check_fps(fps: float, flag: str = "--fps") -> None:
    """A frame rate: a finite number from 1 to 120 frames per second (NaN and infinity refused)."""
    if not (isinstance(fps, int | float) and math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise InputError(
            f"{flag} {fps} is out of range", f"use a frame rate between {MIN_FPS:g} and {MAX_FPS:g}, e.g. 25"
        )


def check_range(value: float, name: str, low: float, high: float) -> None:
    """A finite ``value`` within [``low``, ``high``]; ``name`` is how the user sets it."""
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise InputError(f"{name} {value} is out of range", f"use a value between {low:g} and {high:g}")


def check_input_file(path: str | os.PathLike, flag: str) -> Path:
    """``path`` names a readable, non-empty regular file (symlinks followed). Returns it resolved."""
    raw = Path(path).expanduser()
    if not raw.exists():
        raise InputError(f"{flag} file not found: {raw}", f"check the path given to {flag}")
    if not raw.is_file():
        raise InputError(f"{flag} {raw} is not a file", f"give the path of a file to {flag}")
    if not os.access(raw, os.R_OK):
        raise InputError(f"{flag} {raw} is not readable", "check the file's permissions")
    if raw.stat().st_size == 0:
        raise InputError(f"{flag} {raw} is empty", f"give a file with data in it to {flag}")
    return raw.resolve()


def check_motion_file(path: str | os.PathLike, flag: str = "--poses") -> None:
    """``path`` is a MotionSequence ``.npz`` that loads (read fully: it is small)."""
    from motion.sequence import MotionSequence

    check_input_file(path, flag)
    MotionSequence.load(path)


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_writes_spare_reads(
    reads: Iterable[str | os.PathLike | None],
    writes: Iterable[str | os.PathLike | None],
    folders: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Refuse a command whose outputs would replace or delete one of its inputs.

    Args:
        reads: the files the command reads (None entries are skipped).
        writes: the files it writes (replaced if they exist).
        folders: the folders it writes into and may empty (``prepare --force``): no input may lie inside.
    All paths are compared resolved, symlinks followed, so a link to the source counts as the source.
    """
    read = {_resolved(p): str(p) for p in reads if p}
    for out in (p for p in writes if p):
        target = _resolved(out)
        if target in read:
            raise OutputError(
                f"the output {out} is the input {read[target]}: writing it would destroy the input",
                "choose another output path",
            )
    for folder in (p for p in folders if p):
        root = _resolved(folder)
        for path, given in read.items():
            if _inside(path, root):
                raise OutputError(
                    f"the input {given} lies inside {folder}, which this command replaces",
                    "move the input out of that folder first, or choose another output",
                )


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> None:
    """``path`` is a folder to write into, or does not exist yet (then it is created later)."""
    raw = Path(path).expanduser()
    if raw.exists() and not raw.is_dir():
        raise OutputError(f"{flag} {raw} is a file, not a folder", f"give {flag} a folder path")
    parent = next((p for p in (raw.resolve(), *raw.resolve().parents) if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise OutputError(f"{flag} {raw} cannot be written (in {parent})", "choose a folder you can write to")

"""Atomic file writes: a file either appears whole under its name or not at all.

Everything the project writes that a later step trusts (workspace files, checkpoints, configs, motion)
goes through :func:`atomic_path`: the data is written to a hidden temporary file in the same folder and
renamed over the target only once complete, so a killed run never leaves a half-written file behind.

Temporary names carry the writing process's id (``.NAME.PID.tmp...`` next to the target, ``tp-KIND-PID-...``
in the temp directory). A run killed outright (SIGKILL, power loss) cannot remove its own; the next run that
writes there removes those whose process is gone (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np

# a hidden temporary file next to its target: ".NAME.PID.tmp" then anything (the target's suffix, a part)
_SIBLING_TEMP = re.compile(r"^\..+\.(\d+)\.tmp(\..*)?$")
# a temporary folder in the system's temp directory: "tp-KIND-PID-RANDOM"
_TEMP_DIR = re.compile(r"^tp-[a-z]+-(\d+)-")


def temp_name(path: str | os.PathLike, part: str = "") -> Path:
    """The hidden temporary name of ``path`` for this process: ``.NAME.PID.tmp[.PART]SUFFIX``, same folder."""
    path = Path(path)
    tag = f".{part}" if part else ""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{tag}{path.suffix}")


def make_temp_dir(kind: str) -> Path:
    """A new folder in the temp directory named after ``kind`` (lowercase letters) and this process."""
    return Path(tempfile.mkdtemp(prefix=f"tp-{kind}-{os.getpid()}-"))


def process_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs on this machine (one of another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(
    folder: str | os.PathLike, suffix: str = "", temp_dirs: bool = False
) -> list[Path]:
    """Remove the temporaries left in ``folder`` by killed runs (those ending in ``suffix``; and, with
    ``temp_dirs``, their folders in the temp directory): those named as :func:`temp_name` and
    :func:`make_temp_dir` name them whose process is no longer alive. A live process's files are never
    touched. Returns what was removed."""
    removed: list[Path] = []
    places = [(Path(folder), _SIBLING_TEMP)]
    if temp_dirs:
        places.append((Path(tempfile.gettempdir()), _TEMP_DIR))
    for place, pattern in places:
        try:
            entries = list(place.iterdir())
        except OSError:
            continue
        for entry in entries:
            if not _left_by_dead_process(entry.name, pattern):
                continue
            if place == Path(folder) and not entry.name.endswith(suffix):
                continue
            if place != Path(folder) and (entry.is_symlink() or not entry.is_dir()):
                continue  # in the shared temp directory only this program's folders are taken
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:  # another run removed it first, or it is not ours to remove
                continue
            removed.append(entry)
    return removed


def _left_by_dead_process(name: str, pattern: re.Pattern[str]) -> bool:
    """Whether ``name`` is a temporary of ``pattern``'s kind whose writing process is gone."""
    match = pattern.match(name)
    if match is None:
        return False
    pid = int(match.group(1))
    return pid != os.getpid() and not process_alive(pid)


def _remove_dead_siblings(path: Path) -> None:
    """Remove the temporaries of ``path`` itself that runs killed outright left (their process is gone)."""
    for entry in path.parent.glob(f".{glob_escape(path.stem)}.*.tmp*{glob_escape(path.suffix)}"):
        if _left_by_dead_process(entry.name, _SIBLING_TEMP):
            with contextlib.suppress(OSError):
                entry.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed.

    The temporary name keeps the target's suffix, so writers that pick a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    _remove_dead_siblings(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``np.savez`` (uncompressed, so members can be read without inflating the whole file), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB (or single-channel) uint8 image as PNG, atomically."""
    import cv2

    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write {path}")
    return Path(path)

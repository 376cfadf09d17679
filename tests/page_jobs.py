"""Jobs for the tests of the page's queue: module-level functions, as a worker process runs them
(``fn(folder, **kwargs)``). They meet the test through files: a job writes ``folder/<name>`` when it gets
somewhere, and waits for a file the test writes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from common.errors import InputError
from common.progress import Stages, bar, figures


def mark(folder: Path, name: str, text: str = "") -> None:
    (folder / name).write_text(text)


def wait_for(path: Path, seconds: float = 60.0) -> bool:
    """Whether ``path`` appeared within ``seconds``."""
    end = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def made(folder: Path, name: str = "v.mp4") -> dict:
    return {"video": str(folder / name)}


def bad_input(folder: Path, upload: str) -> dict:
    raise InputError(f"{upload} is not an image", "give a photo")


def broken(folder: Path) -> dict:
    raise RuntimeError("boom")


def crashes(folder: Path) -> dict:
    os._exit(3)


def sees(folder: Path) -> dict:
    return {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


def halfway(folder: Path, release: str) -> dict:
    """A stage, a bar at 4 of 10 and a training row; ``halfway`` written; on when ``release`` exists."""
    stages = Stages()
    stages.start("render")
    frames = bar(total=10, desc="frames", unit="frame", enabled=False)
    frames.update(4)
    figures("motion model", {"step": 100, "loss": 0.3, "heldout_opening_r": 0.5})
    mark(folder, "halfway")
    wait_for(Path(release))
    frames.close()
    stages.end()
    return {}


def blocked(folder: Path, helper: bool = False) -> dict:
    """Blocked without a word of progress (a sleep, or waiting on a helper process); ``started`` written with
    the helper's pid; ``unwound`` written as it unwinds."""
    try:
        if helper:
            child = subprocess.Popen(["sleep", "600"])
            mark(folder, "started", str(child.pid))
            child.wait()
        else:
            mark(folder, "started")
            time.sleep(600)
    finally:
        mark(folder, "unwound")
    return {"video": "never"}

"""Shared fixtures: small real inputs that ship with the project or its dependencies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_TRANSCRIPT = (
    "Hello, and welcome. This portrait speaks from a single photo. "
    "Every word moves the lips, and the mouth rests when the voice stops."
)


def shared_file(name: str) -> Path:
    """A file of the shared real-media folder; skips the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def demo_speech() -> Path:
    return REPO / "assets" / "demo_speech.flac"


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    """A real portrait photo that ships with matplotlib (Grace Hopper)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="session")
def portrait(portrait_path) -> np.ndarray:
    """The portrait framed to 256 x 256, uint8 RGB."""
    from motion.tracker import track_portrait
    from pipeline.framing import frame_square
    from pipeline.media import load_image

    photo = load_image(portrait_path)
    return frame_square(photo, track_portrait(photo), 256)


@pytest.fixture(scope="session")
def portrait_fit(portrait):
    from motion.face_model import FaceModel
    from motion.tracker import track_portrait

    return FaceModel().fit(track_portrait(portrait))

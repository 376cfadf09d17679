"""Shared fixtures: small real inputs that ship with the project or its dependencies."""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One thread for numpy's OpenBLAS and torch's OpenMP, set before either loads. The tests' arrays are tiny,
# and the threads then mostly wait for each other at barriers: on a machine whose other core was busy,
# building one warp renderer (scipy's Delaunay transforms) took 2-19 s instead of 0.2 s, and the SSIM
# gradient check 15 s instead of 0.5 s. Tests check results, not speed (tests that compare thread counts set
# their own); set these variables to run the suite with more threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest

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


def evaluate_in_copy(ws, renderer, root: Path, **settings) -> dict:
    """``talking-portrait eval`` of ``renderer`` on the held-out frames of a copy of workspace ``ws`` made
    under ``root``, so that the renderers trained in ``ws`` itself stay as they are (no video written)."""
    import shutil

    from pipeline.evaluate import EvalConfig, evaluate_identity

    copy = root / ws.path.name
    shutil.copytree(ws.path, copy, ignore=shutil.ignore_patterns("renderers"))
    renderer.save(copy / "renderers" / renderer.name)
    config = EvalConfig(renderer=renderer.name, video=False, **settings)
    return evaluate_identity(ws.path.name, root, config=config, out=root / "eval")


@pytest.fixture(scope="session")
def demo_speech() -> Path:
    return REPO / "assets" / "demo_speech.flac"


def first_seconds(speech: Path, seconds: float, path: Path) -> Path:
    """The first ``seconds`` of ``speech``, written to ``path`` (a wav)."""
    from motion.audio import Audio, load_audio
    from pipeline.prepare import write_wav

    audio = load_audio(speech)
    write_wav(path, Audio(audio.samples[: int(seconds * audio.rate)], audio.rate))
    return path


@pytest.fixture(scope="session")
def speech_2s(tmp_path_factory, demo_speech) -> Path:
    """The first 2 s of the demo speech: for runs whose time goes with the speech's length."""
    return first_seconds(demo_speech, 2.0, tmp_path_factory.mktemp("speech_2s") / "speech.wav")


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
    from pipeline.image_io import load_image

    photo = load_image(portrait_path)
    return frame_square(photo, track_portrait(photo), 256)


@pytest.fixture(scope="session")
def portrait_fit(portrait):
    from motion.face_model import FaceModel
    from motion.tracker import track_portrait

    return FaceModel().fit(track_portrait(portrait))


def _prepare_config():
    from pipeline.prepare import PrepareConfig

    return PrepareConfig(size=256, chunk_size=32)


PREPARE_CONFIG = _prepare_config()


@pytest.fixture(scope="session")
def footage(tmp_path_factory, portrait, portrait_fit, demo_speech):
    """4 s of synthetic talking-head footage with known motion and background (:mod:`tests.footage`)."""
    from motion.audio import Audio, load_audio
    from tests.footage import make_footage

    speech = load_audio(demo_speech)
    audio = Audio(speech.samples[: 4 * speech.rate], speech.rate)
    return make_footage(portrait, portrait_fit, tmp_path_factory.mktemp("footage") / "clip.mp4", audio)


@pytest.fixture(scope="session")
def prepared(footage, tmp_path_factory):
    """The synthetic footage prepared into an identity workspace (256 px, chunks of 32 frames)."""
    from pipeline.prepare import prepare

    return prepare(footage.path, "synthetic", tmp_path_factory.mktemp("ws"), PREPARE_CONFIG)

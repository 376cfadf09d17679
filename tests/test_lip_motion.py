"""The identity's own audio-to-mouth model: inputs, learning, save/load, resume, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from motion.blendshapes import EXPRESSION_NAMES, MOUTH_NAMES
from motion.face_model import FaceModel
from motion.lip_measures import model_mouth_opening
from motion.lip_motion import MOUTH_COLUMNS, LipMotionConfig, LipMotionModel, speech_inputs
from motion.sequence import MotionSequence
from motion.speech_features import SpeechFeatures
from pipeline.motion_training import MotionData, MotionTrainConfig, fit_motion_model

FPS = 25.0


def _features(num_frames: int, mel: np.ndarray) -> SpeechFeatures:
    phones = np.full((num_frames, 40), 1 / 40, np.float32)
    return SpeechFeatures(fps=FPS, num_frames=num_frames, mel=mel, phones=phones)


def _synthetic(seconds: float = 24.0, seed: int = 0) -> tuple[MotionData, np.ndarray]:
    """Speech-like features whose loudness, 80 ms later, is how far the jaw opens: a model that learns the
    timing and the gain follows the jaw; the generic prior given is flat, so it cannot lean on it."""
    rng = np.random.default_rng(seed)
    steps = int(seconds * 100)
    syllables = np.convolve(rng.random(steps) < 0.04, np.hanning(21), mode="same")
    loud = np.clip(syllables, 0, 1) * (rng.random(steps) < 0.9)
    mel = (np.log(1e-4 + loud)[:, None] + 0.05 * rng.normal(size=(steps, 80))).astype(np.float32)
    num_frames = int(seconds * FPS)
    centre = ((np.arange(num_frames) + 0.5) / FPS * 100).astype(int)
    jaw = 0.6 * loud[np.clip(centre + 8, 0, steps - 1)]  # the mouth opens 80 ms before the sound
    targets = np.zeros((num_frames, len(MOUTH_NAMES)), np.float32)
    targets[:, 0] = jaw
    expression = np.zeros((num_frames, len(EXPRESSION_NAMES)), np.float32)
    expression[:, MOUTH_COLUMNS] = targets
    face = FaceModel()
    split = np.arange(num_frames) < 0.8 * num_frames
    generic = np.zeros((num_frames, len(MOUTH_NAMES)), np.float32)
    data = MotionData(
        inputs=speech_inputs(_features(num_frames, mel), generic),
        targets=targets,
        expression=expression,
        train=split,
        heldout=~split,
        real_opening=model_mouth_opening(face, expression),
        generic_mouth=generic,
        fps=FPS,
        face=face,
    )
    return data, mel


def _quick(**settings) -> MotionTrainConfig:
    config = MotionTrainConfig(iterations=40, batch=4, eval_every=20, checkpoint_every=20, threads=1)
    for key, value in settings.items():
        setattr(config, key, value)
    return config


def test_speech_inputs_lay_features_on_the_100_hz_grid():
    mel = np.zeros((120, 80), np.float32)
    mel[50:] = 1.0
    generic = np.zeros((30, len(MOUTH_NAMES)), np.float32)
    generic[10, 0] = 0.5  # frame 10 covers 0.40-0.44 s: grid steps 40-43
    x = speech_inputs(_features(30, mel), generic)
    assert x.shape == (80 + 40 + len(MOUTH_NAMES), 121)  # 30 frames at 25 fps = 1.2 s: 121 steps
    assert np.allclose(x[-len(MOUTH_NAMES), 40:44], 0.5) and x[-len(MOUTH_NAMES), [39, 44]].max() == 0
    assert x[0, 60] > x[0, 20]  # loud after 0.5 s, normalised per band
    with pytest.raises(ValueError, match="generic mouth"):
        speech_inputs(_features(30, mel), generic[:10])


def test_the_model_learns_timing_and_gain_that_the_generic_prior_lacks(tmp_path):
    data, _ = _synthetic()
    figures = fit_motion_model(data, tmp_path / "m", _quick(iterations=300, eval_every=100), "synthetic")
    assert figures["heldout_opening_r"] > 0.8, figures
    log = (tmp_path / "m" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,points,gap,velocity,heldout_opening_r")
    assert len(log) == 301


def test_save_load_predict_and_resume(tmp_path):
    data, mel = _synthetic(seconds=8.0)
    out = tmp_path / "m"
    fit_motion_model(data, out, _quick(iterations=20), "synthetic")
    assert json.loads((out / "training_state.json").read_text())["step"] == 20
    model = LipMotionModel.load(out)
    features = _features(len(data.targets), mel)
    first = model.mouth(features, data.generic_mouth)
    assert first.shape == (len(data.targets), len(MOUTH_NAMES)) and np.isfinite(first).all()
    # the saved extent takes the mouth that much further from rest than the network predicts
    assert model.extent.shape == (len(MOUTH_NAMES),) and np.all((model.extent >= 1) & (model.extent <= 2))
    plain = LipMotionModel(model.config, model.rest, model.scale)
    plain.net.load_state_dict(model.net.state_dict())
    raw = plain.mouth(features, data.generic_mouth)
    np.testing.assert_allclose(first - model.rest, model.extent * (raw - model.rest), atol=1e-5)

    # resuming goes on from step 20 and keeps the log's first rows
    fit_motion_model(data, out, _quick(iterations=40), "synthetic")
    assert json.loads((out / "training_state.json").read_text())["step"] == 40
    rows = (out / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 41))
    assert not np.allclose(LipMotionModel.load(out).mouth(features, data.generic_mouth), first)

    # another shape of network in the same folder is refused, naming what differs
    from common.errors import InputError

    with pytest.raises(InputError, match="model"):
        fit_motion_model(data, out, _quick(iterations=60, model=LipMotionConfig(channels=8)), "synthetic")


def test_predict_keeps_the_generic_silence_and_the_rest_of_the_face(tmp_path):
    data, mel = _synthetic(seconds=8.0)
    fit_motion_model(data, tmp_path / "m", _quick(iterations=10), "synthetic")
    model = LipMotionModel.load(tmp_path / "m")
    frames = len(data.targets)
    expression = np.zeros((frames, len(EXPRESSION_NAMES)), np.float32)
    expression[50:150, 0] = 0.4  # the generic stage hears speech in frames 50-149 only
    expression[:, EXPRESSION_NAMES.index("blink_left")] = 0.3
    generic = MotionSequence(FPS, expression, np.zeros((frames, 6), np.float32))
    driven = model.predict(_features(frames, mel), generic)
    mouth = driven.expression[:, MOUTH_COLUMNS]
    assert np.all(mouth[:50] == 0) and np.all(mouth[150:] == 0)  # silence: exactly at rest
    assert np.abs(mouth[60:140]).max() > 0
    assert np.all(driven.expression[:, EXPRESSION_NAMES.index("blink_left")] == 0.3)


def test_loading_a_damaged_or_foreign_folder_says_how_to_fix_it(tmp_path):
    from common.errors import InputError

    with pytest.raises(InputError, match="train it again"):
        LipMotionModel.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"class": "Other", "schema_version": 1, "model": {}}))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=r"unreadable|not a LipMotionModel"):
        LipMotionModel.load(tmp_path)


def test_the_network_is_small_and_fast():
    net = LipMotionModel(LipMotionConfig(), np.zeros(8), np.ones(8)).net
    assert sum(p.numel() for p in net.parameters()) < 200_000
    with torch.no_grad():
        assert net(torch.zeros(1, 128, 3000)).shape == (1, len(MOUTH_NAMES), 3000)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )


@pytest.mark.slow
def test_train_motion_cli_then_render_motion_and_generate_use_it(
    prepared, tmp_path, portrait_path, speech_2s
):
    """``train --motion`` on a prepared identity; ``motion`` writes motion by its model (and by the generic
    one on request); ``generate --motion`` drives a photo with it."""
    import shutil

    from pipeline.workspace import Workspace

    # a copy: the session's prepared identity stays without a motion model for the other tests
    shutil.copytree(
        prepared.path, tmp_path / "ws" / prepared.path.name, ignore=shutil.ignore_patterns("renderers")
    )
    prepared = Workspace.open(tmp_path / "ws" / prepared.path.name)
    root = str(prepared.path.parent)
    name = prepared.path.name
    speech = str(speech_2s)
    done = _cli("train", "--identity", name, "--workspace", root, "--motion", "--preset", "tiny", "-q")
    assert done.returncode == 0, done.stderr
    assert "held-out mouth-opening correlation" in done.stdout
    assert (prepared.motion_model_dir / "model.safetensors").is_file()

    state = json.loads((prepared.motion_model_dir / "training_state.json").read_text())
    assert state["step"] == 20  # configs/motion_tiny.yaml

    # eval --dub measures both models side by side
    done = _cli("eval", "--identity", name, "--workspace", root, "--dub", "--out", str(tmp_path / "eval"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["motion_model"] == "identity" and set(report["by_motion_model"]) == {"identity", "generic"}
    assert "identity motion:" in done.stdout and "generic motion:" in done.stdout

    # a dub of the video the identity was prepared from finds it by the file's fingerprint and its model
    source = prepared.info["source"]["path"]
    done = _cli("dub", source, "--audio", speech, "--out", str(tmp_path / "dub.mp4"), "--renderer", "warp",
                "--workspace", root, "-q")  # fmt: skip
    assert done.returncode == 0 and f"mouth by {name}'s own model" in done.stdout, done.stderr

    own, generic = tmp_path / "own.npz", tmp_path / "generic.npz"
    done = _cli(
        "motion", "--audio", str(speech_2s), "--out", str(own), "--identity", name, "--workspace", root
    )
    assert done.returncode == 0 and "own model" in done.stdout, done.stderr
    done = _cli("motion", "--audio", str(speech_2s), "--out", str(generic), "--identity", name,
                "--workspace", root, "--set", "motion.model=generic")  # fmt: skip
    assert done.returncode == 0 and "generic model" in done.stdout, done.stderr
    a, b = MotionSequence.load(own), MotionSequence.load(generic)
    assert a.fps == prepared.fps and len(a) == len(b)
    assert not np.allclose(a.expression[:, MOUTH_COLUMNS], b.expression[:, MOUTH_COLUMNS])

    video = tmp_path / "photo.mp4"
    done = _cli("generate", "--image", str(portrait_path), "--audio", str(speech_2s), "--motion", str(own),
                "--out", str(video), "-q", "--set", "size=256")  # fmt: skip
    assert done.returncode == 0, done.stderr
    from pipeline.video_io import probe_video

    info = probe_video(video)
    assert info.fps == pytest.approx(prepared.fps) and info.num_frames == len(a)

    # bad inputs: a motion file of other speech, an identity without a model asked for its model
    short = tmp_path / "short.npz"
    MotionSequence(a.fps, a.expression[:10], a.pose[:10]).save(short)
    done = _cli("generate", "--image", str(portrait_path), "--audio", speech, "--motion", str(short),
                "--out", str(tmp_path / "x.mp4"), "-q")  # fmt: skip
    assert done.returncode == 2 and "--motion lasts" in done.stderr and not (tmp_path / "x.mp4").exists()
    done = _cli("motion", "--audio", str(speech_2s), "--out", str(tmp_path / "y.npz"), "--set",
                "motion.model=identity")  # fmt: skip
    assert done.returncode == 2 and "needs an identity" in done.stderr

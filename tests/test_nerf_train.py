"""NeRF training on the synthetic workspace with the tiny preset: the loss falls, checkpoints round-trip to
identical pixels, and a killed run resumes where it stopped."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from renderers.base import load_renderer
from renderers.nerf.train import NerfTrainConfig, train
from renderers.training import read_log


@pytest.fixture(scope="module")
def tiny() -> NerfTrainConfig:
    return load_config(NerfTrainConfig, "nerf_tiny.yaml")


@pytest.fixture(scope="module")
def trained(prepared, tiny, tmp_path_factory):
    out = prepared.path / "renderers" / "nerf"
    return train(prepared, out, tiny), out


def test_tiny_preset_trains_and_its_loss_falls(trained, tiny):
    _, out = trained
    curve = read_log(out / "train_log.csv")
    assert len(curve["loss"]) == tiny.iterations
    assert curve["loss"][-10:].mean() < 0.7 * curve["loss"][:5].mean()
    assert np.isfinite(curve["psnr_holdout"][-1])
    for name in ("config.json", "model.safetensors", "optimizer.safetensors", "training_state.json"):
        assert (out / name).is_file(), name
    assert (out / "training_curves.png").is_file()


def test_checkpoint_reloads_to_identical_pixels(trained, prepared):
    renderer, out = trained
    loaded = load_renderer(out)
    t = prepared.tracking()
    args = (t["rotation"][95], t["translation"][95], t["expression"][95], 32)
    a, alpha_a, box_a = renderer.render_image(*args)
    b, alpha_b, box_b = loaded.render_image(*args)
    assert box_a == box_b and a.size > 0
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(alpha_a, alpha_b)


def test_killed_run_resumes_from_its_last_checkpoint(trained, prepared, tiny, tmp_path):
    _, full = trained
    out = tmp_path / "run"

    def kill_at_25(step: int) -> None:
        if step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepared, out, tiny, on_step=kill_at_25)
    import json

    assert json.loads((out / "training_state.json").read_text())["step"] == 20  # the last checkpoint
    steps = []
    train(prepared, out, tiny, on_step=steps.append)
    assert steps[0] == 21 and steps[-1] == tiny.iterations
    resumed, uninterrupted = read_log(out / "train_log.csv"), read_log(full / "train_log.csv")
    np.testing.assert_array_equal(resumed["step"], uninterrupted["step"])
    np.testing.assert_allclose(resumed["loss"], uninterrupted["loss"], rtol=1e-4)
    with pytest.raises(Exception, match="other settings"):
        train(prepared, out, load_config(NerfTrainConfig, "nerf_tiny.yaml", ["size=48"]))


def test_render_compose_write_gives_a_playable_video(trained, prepared, demo_speech, tmp_path, capsys):
    from pipeline.audio import Audio, load_audio
    from pipeline.cli import main
    from pipeline.media import probe_video
    from pipeline.prepare import write_wav

    speech = load_audio(demo_speech)
    clip = tmp_path / "speech.wav"
    write_wav(clip, Audio(speech.samples[: 2 * speech.rate], speech.rate))
    out = tmp_path / "said.mp4"
    root = str(prepared.path.parent)
    code = main(["render", "--identity", "synthetic", "--workspace", root, "--audio", str(clip),
                 "--out", str(out), "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    info = probe_video(out)
    assert info.has_audio and info.video_codec == "h264" and (info.width, info.height) == (256, 256)
    assert info.num_frames == 50
    assert (tmp_path / "said.config.yaml").is_file()
    missing = main(["render", "--identity", "nobody", "--workspace", root, "--audio", str(demo_speech),
                    "--out", str(tmp_path / "x.mp4"), "-q"])  # fmt: skip
    assert missing == 2 and not (tmp_path / "x.mp4").exists()

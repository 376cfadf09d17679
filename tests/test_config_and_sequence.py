import numpy as np
import pytest
import yaml

from common.config import load_config, save_config
from common.errors import InputError
from motion.blendshapes import EXPRESSION_NAMES
from motion.sequence import MotionSequence
from pipeline.oneshot import GenerateConfig


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("size: 256\nmotion:\n  jaw_gain: 1.1\nwarp:\n  threads: 1\n")
    cfg = load_config(GenerateConfig, path, ["fps=30", "motion.seed=7", "warp.mouth_interior=false"])
    assert (cfg.size, cfg.fps, cfg.motion.jaw_gain, cfg.motion.seed) == (256, 30.0, 1.1, 7)
    assert cfg.warp.threads == 1 and cfg.warp.mouth_interior is False
    saved = yaml.safe_load(save_config(cfg, tmp_path / "out.yaml").read_text())
    assert saved["motion"]["seed"] == 7 and saved["size"] == 256
    assert load_config(GenerateConfig, tmp_path / "out.yaml") == cfg


def test_shipped_configs_load():
    from common.config import CONFIG_DIR
    from pipeline.prepare import PrepareConfig

    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files
    from renderers.diffusion.train import DiffusionTrainConfig
    from renderers.nerf.train import NerfTrainConfig

    kinds = {"prepare": PrepareConfig, "nerf": NerfTrainConfig, "diffusion": DiffusionTrainConfig}
    for f in files:  # presets are named after their command (prepare*, nerf_*, ...); the rest: `generate`
        load_config(next((c for k, c in kinds.items() if f.name.startswith(k)), GenerateConfig), f)


@pytest.mark.parametrize(
    "overrides, match",
    [(["nope=1"], "unknown config key 'nope'"), (["motion.jaw_gainx=1"], "motion.jaw_gainx"),
     (["size=abc"], "size must be int"), (["size"], "not key=value")],
)  # fmt: skip
def test_bad_config_values(overrides, match):
    with pytest.raises(InputError, match=match):
        load_config(GenerateConfig, None, overrides)


def test_motion_sequence_round_trip(tmp_path):
    seq = MotionSequence.rest(10, 25)
    seq.expression[:, 0] = np.linspace(0, 1, 10)
    seq.pose[:, 1] = 0.05
    seq.save(tmp_path / "m.npz")
    back = MotionSequence.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.expression, seq.expression)
    np.testing.assert_array_equal(back.pose, seq.pose)
    assert back.names == EXPRESSION_NAMES and back.fps == 25 and back.duration == pytest.approx(0.4)
    sub = back.with_names(("jaw_open", "unknown"))
    assert sub.expression.shape == (10, 2) and (sub.expression[:, 1] == 0).all()
    with pytest.raises(ValueError):
        MotionSequence(25, np.zeros((3, 2)), np.zeros((3, 6)))

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
    from pipeline.motion_training import MotionTrainConfig
    from renderers.diffusion.train import DiffusionTrainConfig
    from renderers.nerf.train import NerfTrainConfig

    kinds = {
        "prepare": PrepareConfig,
        "nerf": NerfTrainConfig,
        "diffusion": DiffusionTrainConfig,
        "motion": MotionTrainConfig,
    }
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


def test_pose_kind_round_trips_and_old_files_read_as_relative(tmp_path):
    from common.files import save_npz
    from motion.sequence import POSE_CAMERA, POSE_RELATIVE

    seq = MotionSequence(
        25.0, np.zeros((4, 14), np.float32), np.ones((4, 6), np.float32), pose_kind=POSE_CAMERA
    )
    seq.save(tmp_path / "camera.npz")
    assert MotionSequence.load(tmp_path / "camera.npz").pose_kind == POSE_CAMERA
    save_npz(  # the layout before pose_kind existed: what the motion stage wrote, relative motion
        tmp_path / "v1.npz",
        schema_version=np.int32(1),
        fps=np.float64(25.0),
        expression=seq.expression,
        pose=seq.pose,
        names=np.array(seq.names),
    )
    assert MotionSequence.load(tmp_path / "v1.npz").pose_kind == POSE_RELATIVE
    with pytest.raises(ValueError, match="pose_kind"):
        MotionSequence(25.0, seq.expression, seq.pose, pose_kind="absolute")


def test_bad_motion_files_are_clear_errors(tmp_path):
    from common.errors import InputError

    with pytest.raises(InputError, match="not found"):
        MotionSequence.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a motion file"):
        MotionSequence.load(tmp_path / "junk.npz")


def test_to_camera_turns_about_the_neck_pivot_and_keeps_camera_poses():
    from motion.face_model import FaceModel
    from motion.geometry import axis_angle_to_matrix
    from motion.sequence import POSE_CAMERA, neck_pivot, to_camera

    shape = FaceModel().mean
    pivot = neck_pivot(shape)
    rest_rot, rest_trans = np.array([0.0, 0.2, 0.0]), np.array([1.0, -2.0, -60.0])
    pose = np.zeros((3, 6), np.float32)
    pose[1, :3] = [0.3, 0.0, 0.0]  # a nod about the neck
    pose[2, 3:] = [0.0, 1.0, 0.0]  # a shift up
    camera = to_camera(MotionSequence(25.0, np.zeros((3, 14)), pose), rest_rot, rest_trans, pivot)
    assert camera.pose_kind == POSE_CAMERA
    np.testing.assert_allclose(camera.pose[0], np.r_[rest_rot, rest_trans], atol=1e-5)  # no motion: rest

    def to_cam(p, point):
        return axis_angle_to_matrix(p[:3].astype(np.float64)) @ point + p[3:]

    base = camera.pose[0]
    # the pivot stays where it was while the head nods about it, and everything else moves
    np.testing.assert_allclose(to_cam(camera.pose[1], pivot), to_cam(base, pivot), atol=1e-4)
    chin = shape[152]
    assert np.linalg.norm(to_cam(camera.pose[1], chin) - to_cam(base, chin)) > 1.0
    # a shift moves every point by the rest rotation of the shift
    moved = to_cam(camera.pose[2], chin) - to_cam(base, chin)
    np.testing.assert_allclose(moved, axis_angle_to_matrix(rest_rot) @ np.array([0.0, 1.0, 0.0]), atol=1e-4)
    assert to_camera(camera, rest_rot, rest_trans, pivot) is camera  # already camera poses

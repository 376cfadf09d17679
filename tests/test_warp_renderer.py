import numpy as np
import pytest

from motion import topology as tp
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.sequence import MotionSequence
from pipeline.compositor import Compositor
from renderers import WarpRenderer, load_renderer
from renderers.base import HeadFrame


@pytest.fixture(scope="module")
def renderer(portrait, portrait_fit):
    return WarpRenderer(portrait, portrait_fit)


def coeffs(**values):
    e = np.zeros(len(EXPRESSION_NAMES), np.float32)
    for k, v in values.items():
        e[EXPRESSION_INDEX[k]] = v
    return e


def composite(renderer, frame):
    return Compositor(renderer.image).compose(frame)


def test_rest_pose_reproduces_the_photo(renderer, portrait_fit):
    frame = renderer.render_frame(portrait_fit.expression, np.zeros(6, np.float32))
    out = composite(renderer, frame)
    assert np.abs(out.astype(int) - renderer.image.astype(int)).mean() < 1.0


def test_jaw_open_opens_the_mouth_and_leaves_the_rest(renderer):
    from motion.lip_measures import mouth_opening
    from motion.tracker import track_frames

    closed = composite(renderer, renderer.render_frame(coeffs(), np.zeros(6, np.float32)))
    opened = composite(renderer, renderer.render_frame(coeffs(jaw_open=0.8), np.zeros(6, np.float32)))
    gaps = mouth_opening(track_frames([closed, opened]))
    assert gaps[0] < 0.08 and gaps[1] > gaps[0] + 0.15
    # Pixels well away from the face do not change.
    pts = renderer.rest_points
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    far = np.ones(closed.shape[:2], bool)
    m = 0.25 * (x1 - x0)
    far[int(y0 - m) : int(y1 + 2 * m), int(x0 - m) : int(x1 + m)] = False
    diff = np.abs(opened.astype(int) - closed.astype(int)).max(-1)
    assert diff[far].mean() < 0.5
    # The mouth interior is painted: dark cavity and bright teeth inside the parted lips.
    upper = renderer.vertex_pixels(coeffs(jaw_open=0.8), np.zeros(6))[tp.UPPER_LIP_CENTER_INNER]
    lower = renderer.vertex_pixels(coeffs(jaw_open=0.8), np.zeros(6))[tp.LOWER_LIP_CENTER_INNER]
    column = opened[int(upper[1]) + 1 : int(lower[1]) - 1, int(upper[0])].mean(-1)
    assert column.max() - column.min() > 40


def test_blink_and_head_motion_move_pixels(renderer):
    rest = composite(renderer, renderer.render_frame(coeffs(), np.zeros(6, np.float32)))
    blink = composite(
        renderer, renderer.render_frame(coeffs(blink_left=1, blink_right=1), np.zeros(6, np.float32))
    )
    eye = renderer.rest_points[list(tp.LEFT_EYE_UPPER)].mean(0).astype(int)
    assert (
        np.abs(blink.astype(int) - rest.astype(int))[eye[1] - 3 : eye[1] + 3, eye[0] - 3 : eye[0] + 3].mean()
        > 5
    )
    turned = renderer.vertex_pixels(coeffs(), np.array([0, 0.1, 0, 0, 0, 0]))
    assert np.abs(turned[tp.NOSE_TIP] - renderer.rest_points[tp.NOSE_TIP]).max() > 2


def test_save_load_renders_the_same_pixels(renderer, tmp_path):
    motion = MotionSequence.rest(3, 25)
    motion.expression[:, EXPRESSION_INDEX["jaw_open"]] = [0.1, 0.5, 0.9]
    motion.pose[:, 1] = [0.0, 0.05, -0.05]
    before = [f.rgb for f in renderer.render(motion)]
    renderer.save(tmp_path / "r")
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"config.json", "model.safetensors"}
    again = load_renderer(tmp_path / "r")
    after = [f.rgb for f in again.render(motion)]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_renderer_errors(tmp_path):
    from common.errors import InputError

    with pytest.raises(InputError, match="not a saved renderer"):
        load_renderer(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(InputError, match="corrupt"):
        load_renderer(tmp_path)


def test_compositor_feathers_a_patch_into_the_background():
    bg = np.zeros((64, 64, 3), np.uint8)
    head = HeadFrame(np.full((32, 32, 3), 200, np.uint8), np.ones((32, 32), np.float32), (16, 16, 48, 48))
    out = Compositor(bg, feather=6).compose(head)
    assert out[32, 32, 0] == 200 and out[16, 32, 0] < 20 and 0 < out[19, 32, 0] < 200
    assert out[:16].max() == 0


def _dips(values: np.ndarray, depth: float) -> int:
    """Local minima at least ``depth`` below the highest value within three samples either side."""
    count = 0
    for i in range(1, len(values) - 1):
        near = values[max(i - 3, 0) : i + 4]
        if values[i] < values[i - 1] and values[i] <= values[i + 1] and values[i] < near.max() - depth:
            count += 1
    return count


@pytest.mark.parametrize("zoom", [1, 2])
def test_painted_mouth_shows_separate_teeth_and_nothing_when_closed(renderer, zoom):
    """With the jaw open, a row just under the upper lip crosses bright teeth with darker gaps between
    them (as many at twice the size: the teeth scale with the face), below them the mouth is dark, and a
    closed mouth gets no paint at all."""
    import cv2

    from renderers.warp.mouth import MouthPainter

    image = cv2.resize(renderer.image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    painter = MouthPainter(image, renderer.rest_points * zoom)
    moved = renderer.vertex_pixels(coeffs(jaw_open=0.8), np.zeros(6)) * zoom
    upper, lower = moved[list(tp.LIPS_UPPER_INNER)], moved[list(tp.LIPS_LOWER_INNER)]
    frame = np.zeros_like(image)
    painter.paint(frame, upper, lower)
    luma = frame.astype(np.float32).mean(-1)
    width = painter.rest_width
    cx, top, bottom = upper[5, 0], upper[5, 1], lower[5, 1]
    row = luma[round(top + 0.05 * width), round(cx - 0.3 * width) : round(cx + 0.3 * width)]
    assert row.max() > 150, "no bright upper teeth under the upper lip"
    assert _dips(row, 25) >= 3, "the upper teeth are one bar, no gaps between them"
    column = luma[round(top + 0.2 * width) : round(bottom - 0.1 * width), round(cx + 0.05 * width)]
    assert column.min() < 0.4 * row.max(), "no dark mouth below the upper teeth"
    # Brighter in the middle of the row than towards the corners.
    assert row[len(row) // 2 - 3 : len(row) // 2 + 3].mean() > row[:6].mean() + 20
    for shut in (upper, upper + np.array([0.0, 0.3])):
        closed = np.zeros_like(image)
        painter.paint(closed, upper, shut)
        assert not closed.any()

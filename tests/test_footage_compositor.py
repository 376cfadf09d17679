"""FootageCompositor on synthetic footage: chin-gap fill, neck seam colour, background swap."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.compositor import Compositor, FootageCompositor, fit_to_box
from pipeline.masks import LABEL_BACKGROUND, LABEL_HEAD, LABEL_NECK, LABEL_TORSO, FrameMasks
from renderers.base import HeadFrame

SIZE = 160
PLATE = (40, 150, 60)  # the room: green
SKIN = (200, 150, 120)
NECK = (185, 135, 105)
SHIRT = (50, 60, 170)
CX = 80  # the face's centre column
NECK_X = (66, 95)  # the neck's columns
OLD_CHIN, SHOULDERS = 112, 132  # footage: an open mouth, chin low; the torso starts at the shoulders


def _ellipse(centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, 255, -1)
    return canvas > 0


def _footage() -> tuple[np.ndarray, FrameMasks, np.ndarray]:
    """A footage frame (head, neck below it, torso, room), its masks and the room's plate."""
    head = _ellipse((CX, 72), (30, 40))  # chin at row OLD_CHIN
    labels = np.full((SIZE, SIZE), LABEL_BACKGROUND, np.uint8)
    labels[60:, NECK_X[0] : NECK_X[1]] = LABEL_NECK
    labels[SHOULDERS:] = LABEL_TORSO
    labels[head] = LABEL_HEAD
    frame = np.empty((SIZE, SIZE, 3), np.uint8)
    for label, colour in (
        (LABEL_BACKGROUND, PLATE),
        (LABEL_HEAD, SKIN),
        (LABEL_NECK, NECK),
        (LABEL_TORSO, SHIRT),
    ):
        frame[labels == label] = colour
    rng = np.random.default_rng(0)
    frame = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)  # a little texture
    head_alpha = cv2.GaussianBlur(head.astype(np.float32), (0, 0), 1.0)
    masks = FrameMasks(
        labels=labels,
        head_alpha=np.round(head_alpha * 255).astype(np.uint8),
        person_alpha=np.where(labels > 0, 255, 0).astype(np.uint8),
    )
    plate = np.empty_like(frame)
    plate[:] = PLATE
    return frame, masks, plate


def _head(chin: int, half_width: int, colour: tuple[int, int, int], fade: int = 0) -> HeadFrame:
    """A rendered head: an ellipse with its chin at row ``chin``, plus, with ``fade`` > 0, the top of a neck
    below it whose alpha fades out over ``fade`` rows; rendered at half resolution over a box."""
    top = 32
    alpha = _ellipse((CX, (top + chin) // 2), (half_width, (chin - top) // 2)).astype(np.float32)
    if fade:
        rows = np.arange(SIZE, dtype=np.float32)[:, None]
        neck = np.clip((chin + 6 + fade - rows) / fade, 0, 1) * (rows >= chin - 4)
        alpha[:, NECK_X[0] : NECK_X[1]] = np.maximum(alpha[:, NECK_X[0] : NECK_X[1]], neck)
    rgb = np.empty((SIZE, SIZE, 3), np.uint8)
    rgb[:] = colour
    box = (8, 16, 152, 156)
    x0, y0, x1, y1 = box
    small = ((x1 - x0) // 2, (y1 - y0) // 2)
    return HeadFrame(
        cv2.resize(rgb[y0:y1, x0:x1], small, interpolation=cv2.INTER_AREA),
        cv2.resize(alpha[y0:y1, x0:x1], small, interpolation=cv2.INTER_AREA),
        box,
    )


def _naive(head: HeadFrame, frame: np.ndarray, masks: FrameMasks, plate: np.ndarray) -> np.ndarray:
    """Today's composition: the footage head replaced by the plate, the head painted over."""
    old = cv2.dilate(masks.head_alpha, np.ones((5, 5), np.uint8)).astype(np.float32)[..., None] / 255
    base = frame.astype(np.float32) * (1 - old) + plate.astype(np.float32) * old
    return Compositor(plate, feather=0).compose(head, background=np.clip(base + 0.5, 0, 255).astype(np.uint8))


def _distance(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.linalg.norm(pixels.astype(np.float32) - np.array(colour, np.float32), axis=-1)


def test_output_is_a_new_uint8_frame_and_the_footage_is_untouched() -> None:
    frame, masks, plate = _footage()
    before = frame.copy()
    out = FootageCompositor(plate).compose(_head(100, 24, SKIN), frame, masks)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.array_equal(frame, before)
    assert not np.shares_memory(out, frame)


def test_chin_gap_is_filled_from_the_neck_beside_the_neck_and_from_the_plate_beside_the_room() -> None:
    frame, masks, plate = _footage()
    head = _head(100, 24, SKIN)  # chin 12 rows higher and the face narrower than the footage's
    out = FootageCompositor(plate).compose(head, frame, masks)
    # the gap over the neck: under the new chin, above the old one, in the neck's middle columns
    over_neck = (slice(104, 110), slice(74, 87))
    assert np.median(_distance(out[over_neck], NECK)) < 20
    assert np.median(_distance(out[over_neck], PLATE)) > 100
    # the gap beside the room: where the old face was wider than the new one, at cheek height
    beside_room = (slice(62, 80), slice(51, 53))
    assert np.median(_distance(out[beside_room], PLATE)) < 15
    # today's composition shows the plate over the neck: a hole under the chin
    naive = _naive(head, frame, masks, plate)
    assert np.median(_distance(naive[over_neck], PLATE)) < 15


def test_chin_gap_fill_scales_with_the_head() -> None:
    """The same scene at twice the size fills the same (scaled) region with neck."""
    frame, masks, plate = _footage()
    head = _head(100, 24, SKIN)
    big = 2 * SIZE

    def up(a: np.ndarray, nearest: bool = False) -> np.ndarray:
        return cv2.resize(a, (big, big), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)

    masks2 = FrameMasks(up(masks.labels, True), up(masks.head_alpha), up(masks.person_alpha))
    head2 = HeadFrame(head.rgb, head.alpha, tuple(2 * v for v in head.box))
    out = FootageCompositor(up(plate)).compose(head2, up(frame), masks2)
    small = cv2.resize(out, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    assert np.median(_distance(small[104:110, 74:87], NECK)) < 20


def test_neck_seam_colour_step_is_reduced() -> None:
    frame, masks, plate = _footage()
    drifted = tuple(round(c * g) for c, g in zip(NECK, (1.12, 1.0, 0.88), strict=True))
    head = _head(OLD_CHIN, 30, drifted, fade=6)  # same chin, a rendered neck top fading out over the neck

    def step(out: np.ndarray) -> float:
        above = out[OLD_CHIN + 1 : OLD_CHIN + 5, 72:90].reshape(-1, 3).astype(np.float32).mean(0)
        below = out[OLD_CHIN + 14 : OLD_CHIN + 18, 72:90].reshape(-1, 3).astype(np.float32).mean(0)
        return float(np.abs(above - below).max())

    plain = FootageCompositor(plate, seam=False).compose(head, frame, masks)
    matched = FootageCompositor(plate).compose(head, frame, masks)
    assert step(plain) > 15  # the drift shows as a colour step across the seam
    assert step(matched) < step(plain) / 3
    # far up the face the correction has faded out
    assert np.abs(matched[40:44, 76:84].astype(int) - plain[40:44, 76:84]).max() <= 2


def test_seam_gain_is_smoothed_over_time() -> None:
    frame, masks, plate = _footage()
    compositor = FootageCompositor(plate)
    gains = []
    for k in range(12):
        drift = (1.12, 1.0, 0.88) if k % 2 == 0 else (0.95, 1.0, 1.05)  # a render whose colour flickers
        colour = tuple(round(c * g) for c, g in zip(NECK, drift, strict=True))
        compositor.compose(_head(OLD_CHIN, 30, colour, fade=6), frame, masks)
        gains.append(compositor._gains._gain.copy())
    assert np.abs(np.diff(gains[1:], axis=0)).max() < 0.03  # raw gains jump by ~0.18 from frame to frame


@pytest.mark.parametrize("background", [(255, 0, 255), "image"])
def test_background_swap_replaces_the_room_and_keeps_the_person(background) -> None:
    frame, masks, plate = _footage()
    if background == "image":
        image = np.zeros((40, 60, 3), np.uint8)
        image[..., 0] = np.linspace(0, 255, 60, dtype=np.uint8)[None, :]
        image[..., 2] = 200
        expected = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    else:
        image = background
        expected = np.empty_like(frame)
        expected[:] = background
    head = _head(100, 24, SKIN)
    out = FootageCompositor(plate, background=image).compose(head, frame, masks)
    room = masks.labels == LABEL_BACKGROUND
    room[:, 40:120] = False  # away from the head
    assert np.abs(out[room].astype(int) - expected[room]).max() <= 1
    torso = masks.labels == LABEL_TORSO
    assert np.abs(out[torso].astype(int) - frame[torso]).max() <= 1
    assert np.median(_distance(out[50:60, 70:90], SKIN)) < 5  # the new head
    # the removed face beside the new one shows the new background, not the old plate
    gap = (slice(62, 80), slice(51, 53))
    assert np.abs(out[gap].astype(int) - expected[gap]).max() <= 12


def test_background_must_be_a_colour_or_an_image() -> None:
    plate = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError):
        FootageCompositor(plate, background=(1, 2))
    with pytest.raises(TypeError):
        FootageCompositor(plate, background="blue")  # type: ignore[arg-type]


def test_head_without_footage_head_or_with_empty_alpha() -> None:
    frame, masks, plate = _footage()
    faceless = FrameMasks(
        np.where(masks.labels == LABEL_HEAD, LABEL_TORSO, masks.labels).astype(np.uint8),
        np.zeros_like(masks.head_alpha),
        masks.person_alpha,
    )
    head = _head(100, 24, SKIN)
    out = FootageCompositor(plate).compose(head, frame, faceless)
    # no footage head to take out: the frame stays as it was wherever the new head is not, and the new head
    # is painted where it is
    _, alpha, (x0, y0, x1, y1) = fit_to_box(head)
    covered = np.zeros(frame.shape[:2], bool)
    covered[y0:y1, x0:x1] = alpha > 0
    assert out.shape == frame.shape and covered.any() and not covered.all()
    assert np.abs(out.astype(int) - frame)[~covered].max() <= 1
    assert np.median(_distance(out[50:60, 70:90], SKIN)) < 5
    empty = HeadFrame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), (10, 10, 30, 30))
    out = FootageCompositor(plate).compose(empty, frame, masks)
    # the footage's head comes out and nothing goes in: the room shows where the face was, and nothing
    # changes outside the footage's head matte
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.median(_distance(out[50:60, 70:90], PLATE)) < 5
    assert np.abs(out.astype(int) - frame)[masks.head_alpha == 0].max() <= 1


def test_tight_fit_matches_the_full_fit() -> None:
    rng = np.random.default_rng(1)
    alpha = np.zeros((50, 70), np.float32)
    alpha[12:30, 20:41] = rng.random((18, 21))
    head = HeadFrame(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), alpha, (13, 7, 188, 132))
    rgb, a, box = fit_to_box(head)
    rgb_t, a_t, (x0, y0, x1, y1) = fit_to_box(head, tight=True)
    assert box == head.box and (x1 - x0, y1 - y0) == a_t.shape[::-1]
    cut = (slice(y0 - box[1], y1 - box[1]), slice(x0 - box[0], x1 - box[0]))
    assert np.abs(a[cut] - a_t).max() < 1e-4
    assert np.abs(rgb[cut].astype(int) - rgb_t).max() <= 1
    rest = a.copy()
    rest[cut] = 0
    assert rest.max() == 0  # nothing of the head lies outside the tight box

"""pipeline.masks (person segmentation, head/neck/torso labels, mask encoding) and pipeline.background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from motion.topology import CHIN, FACE_OVAL, FOREHEAD
from pipeline.background import BackgroundPlate, _sort_columns
from pipeline.masks import (
    LABEL_BACKGROUND,
    LABEL_HEAD,
    LABEL_NECK,
    LABEL_TORSO,
    FrameMasks,
    MaskBuilder,
    PersonSegmenter,
    decode_masks,
    encode_masks,
)

# ------------------------------------------------------------------------------------------------------------
# masks on a real portrait
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait_landmarks(portrait) -> np.ndarray:
    from motion.tracker import MediapipeTracker

    tracker = MediapipeTracker()
    try:
        return tracker.detect(portrait)[0].points[:, :2]
    finally:
        tracker.close()


@pytest.fixture(scope="module")
def portrait_prob(portrait) -> np.ndarray:
    segmenter = PersonSegmenter()
    try:
        return segmenter.segment(portrait)
    finally:
        segmenter.close()


@pytest.fixture(scope="module")
def portrait_masks(portrait, portrait_prob, portrait_landmarks) -> FrameMasks:
    return MaskBuilder(portrait.shape[0]).build(portrait, portrait_prob, portrait_landmarks)


def test_segmenter_finds_the_person(portrait, portrait_prob):
    assert portrait_prob.shape == portrait.shape[:2] and portrait_prob.dtype == np.float32
    assert portrait_prob.min() >= 0.0 and portrait_prob.max() <= 1.0
    h, w = portrait_prob.shape
    assert portrait_prob[h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8].mean() > 0.9
    assert portrait_prob[:8, :8].mean() < 0.1 and portrait_prob[:8, -8:].mean() < 0.1


def test_portrait_labels(portrait_masks, portrait_landmarks):
    labels = portrait_masks.labels
    assert labels.dtype == np.uint8 and labels.shape == (256, 256)
    oval = np.zeros_like(labels)
    cv2.fillPoly(oval, [np.round(portrait_landmarks[list(FACE_OVAL)]).astype(np.int32)], 1)
    assert np.mean(labels[oval > 0] == LABEL_HEAD) >= 0.95
    # the image's top corners are background
    assert np.all(labels[:8, :8] == LABEL_BACKGROUND) and np.all(labels[:8, -8:] == LABEL_BACKGROUND)
    # under the chin on the face's midline: neck, then neck or torso further down, never head
    chin, forehead = portrait_landmarks[CHIN], portrait_landmarks[FOREHEAD]
    down = (chin - forehead) / np.linalg.norm(chin - forehead)
    length = float(np.linalg.norm(chin - forehead))
    x, y = np.round(chin + 0.1 * length * down).astype(int)
    assert labels[y, x] == LABEL_NECK
    x, y = np.round(chin + 0.3 * length * down).astype(int)
    assert labels[y, x] in (LABEL_NECK, LABEL_TORSO)
    # the person is labelled exactly where its matte is at least half
    assert np.array_equal(labels > 0, portrait_masks.person_alpha >= 128)
    # the bottom corners hold shoulders: torso, not head
    assert not np.any(labels[-16:, :16] == LABEL_HEAD) and not np.any(labels[-16:, -16:] == LABEL_HEAD)


def test_portrait_head_alpha(portrait_masks, portrait_landmarks):
    head_alpha = portrait_masks.head_alpha
    oval = np.zeros_like(head_alpha)
    cv2.fillPoly(oval, [np.round(portrait_landmarks[list(FACE_OVAL)]).astype(np.int32)], 1)
    assert head_alpha[oval > 0].min() == 255
    # the fade under the jaw is gradual along the midline: several steps between opaque and clear
    chin = np.round(portrait_landmarks[CHIN]).astype(int)
    column = head_alpha[chin[1] : chin[1] + 40, chin[0]].astype(int)
    assert column[0] == 255 and column[-1] == 0
    assert np.all(np.diff(column) <= 0)
    assert np.count_nonzero((column > 10) & (column < 245)) >= 4
    # the head matte is inside the person matte, apart from the face itself
    assert np.all(head_alpha <= portrait_masks.person_alpha)


def test_masks_without_landmarks_are_person_only(portrait, portrait_prob):
    masks = MaskBuilder(256).build(portrait, portrait_prob, None)
    assert set(np.unique(masks.labels)) <= {LABEL_BACKGROUND, LABEL_TORSO}
    assert not masks.head_alpha.any()
    assert np.array_equal(masks.labels > 0, masks.person_alpha >= 128)


def test_builder_rejects_other_sizes(portrait, portrait_prob):
    with pytest.raises(ValueError):
        MaskBuilder(128).build(portrait, portrait_prob, None)


# ------------------------------------------------------------------------------------------------------------
# temporal smoothing
# ------------------------------------------------------------------------------------------------------------


def _texture(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def _disc(size: int, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.clip(radius - np.hypot(xx - cx, yy - size / 2) + 0.5, 0, 1).astype(np.float32)


def test_smoothing_settles_on_a_static_input():
    rgb = _texture()
    first, later = _disc(64, 28, 14), _disc(64, 34, 14)
    fresh = MaskBuilder(64, temporal=0.0).build(rgb, later, None).person_alpha
    builder = MaskBuilder(64, temporal=0.7)
    builder.build(rgb, first, None)
    after_one = builder.build(rgb, later, None).person_alpha
    assert np.abs(after_one.astype(int) - fresh).max() > 50  # the static frame is smoothed
    for _ in range(30):
        settled = builder.build(rgb, later, None).person_alpha
    assert np.abs(settled.astype(int) - fresh).max() <= 1


def test_smoothing_does_not_lag_where_the_picture_moves():
    first, later = _disc(64, 28, 14), _disc(64, 34, 14)
    fresh = MaskBuilder(64, temporal=0.0).build(_texture(seed=2), later, None).person_alpha
    builder = MaskBuilder(64, temporal=0.7)
    builder.build(_texture(seed=1), first, None)
    moved = builder.build(_texture(seed=2), later, None).person_alpha  # every pixel changed
    assert np.array_equal(moved, fresh)


def test_reset_forgets_the_past(portrait, portrait_prob, portrait_landmarks):
    fresh = MaskBuilder(256).build(portrait, portrait_prob, portrait_landmarks)
    builder = MaskBuilder(256)
    builder.build(portrait, np.roll(portrait_prob, 20, axis=1), portrait_landmarks)
    smoothed = builder.build(portrait, portrait_prob, portrait_landmarks)
    assert not np.array_equal(smoothed.person_alpha, fresh.person_alpha)
    builder.reset()
    again = builder.build(portrait, portrait_prob, portrait_landmarks)
    for name in ("labels", "head_alpha", "person_alpha"):
        assert np.array_equal(getattr(again, name), getattr(fresh, name)), name


# ------------------------------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------------------------------


def _assert_same(a: FrameMasks, b: FrameMasks) -> None:
    for name in ("labels", "head_alpha", "person_alpha"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.uint8 and np.array_equal(x, y), name


def test_encoding_round_trip_is_exact(portrait_masks):
    data = encode_masks(portrait_masks)
    assert len(data) < 16_000  # 256 x 256: a few KB
    _assert_same(decode_masks(data), portrait_masks)


def test_encoding_round_trip_of_arbitrary_masks():
    rng = np.random.default_rng(3)
    shape = (40, 56)
    masks = FrameMasks(
        labels=rng.integers(0, 4, shape, dtype=np.uint8),
        head_alpha=rng.integers(0, 256, shape, dtype=np.uint8),
        person_alpha=rng.integers(0, 256, shape, dtype=np.uint8),
    )
    masks.head_alpha[:10] = 0
    masks.head_alpha[10:20] = masks.person_alpha[10:20]
    _assert_same(decode_masks(encode_masks(masks)), masks)
    blank = FrameMasks(*(np.zeros(shape, np.uint8) for _ in range(3)))
    _assert_same(decode_masks(encode_masks(blank)), blank)


def test_decoding_rejects_other_bytes(portrait_masks):
    data = encode_masks(portrait_masks)
    for bad in (b"", b"not masks at all", data[:-10], data[:30] + bytes(len(data) - 30)):
        with pytest.raises(ValueError):
            decode_masks(bad)
    with pytest.raises(ValueError):
        encode_masks(
            FrameMasks(np.full((4, 4), 7, np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
        )


# ------------------------------------------------------------------------------------------------------------
# background plate
# ------------------------------------------------------------------------------------------------------------

SIZE, RADIUS, MARGIN, FRAMES = 96, 12, 3, 24
CENTRE_Y = 36
RECT = (slice(72, SIZE), slice(28, 68))  # always covered: a torso that never moves


def _scene():
    """A textured background, a disc moving across it left to right, and a block that never moves.

    The foreground is drawn one pixel wider than its matte (a halo the margin must keep out), and each frame
    carries a little noise (the median must see through it)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    background = np.stack(
        [120 + 60 * np.sin(xx / 5), 100 + 50 * np.cos(yy / 7), 90 + 40 * np.sin((xx + yy) / 9)], axis=-1
    )
    background = np.round(background).astype(np.uint8)
    rng = np.random.default_rng(0)
    centres = np.linspace(16, SIZE - 16, FRAMES)
    frames, mattes = [], []
    for cx in centres:
        distance = np.hypot(xx - cx, yy - CENTRE_Y)
        frame = np.clip(background + rng.normal(0, 1.5, background.shape), 0, 255).astype(np.uint8)
        frame[distance <= RADIUS + 1] = (220, 40, 40)
        frame[RECT] = (30, 30, 200)
        matte = np.zeros((SIZE, SIZE), np.uint8)
        matte[distance <= RADIUS] = 255
        matte[RECT] = 255
        frames.append(frame)
        mattes.append(matte)
    return background, frames, mattes, centres


def test_plate_recovers_the_background():
    background, frames, mattes, centres = _scene()
    plate = BackgroundPlate(SIZE, margin=MARGIN)
    for frame, matte in zip(frames, mattes, strict=True):
        plate.add(frame, matte)
    image, coverage = plate.result()
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    assert coverage.dtype == np.float32 and coverage.shape == (SIZE, SIZE)

    seen = coverage > 0
    error = np.abs(image.astype(int) - background)[seen]
    assert error.mean() < 3.0
    assert plate.coverage_fraction == pytest.approx(seen.mean())

    # coverage: the share of frames in which a pixel was farther than radius + margin from the disc
    # (checked where that is clear-cut, away from the block)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    distance = np.hypot(xx[None] - centres[:, None, None], yy[None] - CENTRE_Y)  # [F, H, W]
    reach = RADIUS + MARGIN
    clear = np.all(np.abs(distance - reach) > 1.0, axis=0)
    clear[RECT[0].start - MARGIN - 2 :] = False
    expected = np.mean(distance > reach, axis=0)
    assert clear.sum() > 2000
    np.testing.assert_allclose(coverage[clear], expected[clear])
    assert coverage[0, 0] == 1.0 and coverage[CENTRE_Y, SIZE // 2] < 1.0

    # the block was never uncovered: filled, with colours from around it
    hidden = coverage == 0
    inner = np.zeros_like(hidden)
    inner[RECT[0].start + MARGIN + 1 :, RECT[1].start + MARGIN + 1 : RECT[1].stop - MARGIN - 1] = True
    assert hidden[inner].all()
    band = cv2.dilate(hidden.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~hidden
    lo, hi = image[band].min(axis=0).astype(int), image[band].max(axis=0).astype(int)
    filled = image[hidden].astype(int)
    assert np.all(filled >= lo) and np.all(filled <= hi)
    # and it blends in: no value jumps between neighbours at the seam that the background itself lacks
    step = np.abs(np.diff(image.astype(int), axis=1))[RECT[0], RECT[1].start - 4 : RECT[1].start + 4]
    assert step.max() <= np.abs(np.diff(background.astype(int), axis=1)).max() + 4


def test_plate_memory_is_bounded_and_spread():
    plate = BackgroundPlate((16, 24), max_samples=10)
    clear = np.zeros((16, 24), np.float32)
    for i in range(100):  # frame i is a flat grey of value i
        plate.add(np.full((16, 24, 3), i, np.uint8), clear)
    assert 5 <= plate.num_samples <= 10
    image, coverage = plate.result()
    assert abs(float(image.mean()) - 49.5) < 8  # the kept frames span the clip, not its start
    assert np.all(coverage == 1.0)


def test_plate_edge_cases():
    plate = BackgroundPlate(8)
    with pytest.raises(ValueError):
        plate.result()
    with pytest.raises(ValueError):
        plate.add(np.zeros((8, 9, 3), np.uint8), np.zeros((8, 9), np.float32))
    plate.add(np.full((8, 8, 3), 50, np.uint8), np.ones((8, 8), np.float32))  # all person
    image, coverage = plate.result()
    assert plate.coverage_fraction == 0.0 and not coverage.any()
    assert image.shape == (8, 8, 3)

    one = BackgroundPlate(8, max_samples=1)
    for i in range(5):
        one.add(np.full((8, 8, 3), 10 * i, np.uint8), np.zeros((8, 8), np.uint8))
    assert one.num_samples == 1

    # an odd shape whose left part is never seen: filled from the right part's colours
    odd = BackgroundPlate((37, 23), margin=1)
    matte = np.zeros((37, 23), np.float32)
    matte[:, :9] = 1.0
    frame = np.zeros((37, 23, 3), np.uint8)
    frame[:, :, 0] = np.linspace(0, 200, 37, dtype=np.uint8)[:, None]  # a vertical ramp
    odd.add(frame, matte)
    image, coverage = odd.result()
    assert not coverage[:, :10].any() and coverage[:, 11:].all()
    np.testing.assert_array_equal(image[:, 11:], frame[:, 11:])
    filled = image[:, :10, 0].astype(int)
    assert np.all(np.diff(filled, axis=0) >= 0)  # the ramp carries on into the unseen part
    assert np.all(np.abs(filled[:, -1] - frame[:, 9, 0]) <= 12)  # and meets the seen part without a step
    assert filled.min() >= 0 and filled.max() <= 200


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 33, 48])
def test_sorting_network_sorts(n):
    values = np.random.default_rng(n).integers(0, 256, (n, 300), dtype=np.uint8)
    ranked = values.copy()
    _sort_columns(ranked)
    assert np.array_equal(ranked, np.sort(values, axis=0))

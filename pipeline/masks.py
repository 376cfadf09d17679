"""Per-frame masks for identity preparation: background / torso / neck / head labels and soft mattes.

The person matte comes from mediapipe's bundled selfie segmentation, smoothed over time where the picture is
still; the split of the person into head, neck and torso comes from the face landmarks. The head is the face
(the landmark face oval, its forehead raised toward the hairline) plus every person pixel above the neck line
near the face: hair, including hair hanging beside the face down to between the jaw angle and the chin
(longer hair, lying on the shoulders, is torso). The neck is the person under the jaw between the neck
sides, down to a depth proportional to the face's length, where it has the face's skin colour (so a collar
or scarf is torso) or lies just under the jaw (the chin's shadow); the torso is the rest of the person.

Frames without landmarks get labels from the person matte alone: every person pixel is torso and the head
matte is empty, since nothing says where the head is. Callers that need heads skip such frames.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from motion.topology import CHIN, FACE_OVAL, FOREHEAD, NUM_POINTS
from motion.tracker import native_stderr_silenced, quiet_mediapipe

LABEL_BACKGROUND, LABEL_TORSO, LABEL_NECK, LABEL_HEAD = 0, 1, 2, 3

# Face oval landmarks used as geometry anchors (see motion/topology.py for the ring's order).
_CHEEK_RIGHT, _CHEEK_LEFT = 234, 454  # widest points of the oval, at eye level
_JAW_ANGLE_RIGHT, _JAW_ANGLE_LEFT = 172, 397  # where the jaw turns down toward the chin
_EYE_LINE = (33, 133, 362, 263)  # eye corners: the forehead is what lies above them
_JAW = FACE_OVAL[FACE_OVAL.index(_JAW_ANGLE_LEFT) : FACE_OVAL.index(_JAW_ANGLE_RIGHT) + 1]  # left -> right
_SKIN_SAMPLES = (50, 280, 101, 330, 205, 425, 199, 175)  # cheeks, upper cheeks, chin: skin on most faces
_PATCH = np.stack(np.mgrid[-1:2, -1:2], axis=-1).reshape(1, 9, 2)  # 3 x 3 pixels around each sample


# person_alpha within 3 levels of 0 or 255 is snapped there: the segmenter's near-certain values, which
# would only put faint noise into the background and interior of a matte
_SNAP = np.arange(256, dtype=np.uint8)
_SNAP[:3], _SNAP[253:] = 0, 255


def _fill(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: 255 inside ``polygon`` (int32 [N, 2] pixels), 0 outside."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [polygon], 255)
    return canvas


class PersonSegmenter:
    """mediapipe's bundled selfie segmentation: RGB frame -> person probability.

    Args:
        model_selection: 1 (default) is the "landscape" model (144 x 256 input): on the project's real
            head-and-shoulders clips its mattes follow hair edges as closely as the "general" model 0's
            (256 x 256) in 60-70% of the time (2.5-3 ms against 4.4 ms per 512 x 512 frame, 2 cores).
            Both models are stateless: a frame's result does not depend on the frames before it.
    """

    def __init__(self, model_selection: int = 1) -> None:
        quiet_mediapipe()
        from mediapipe.python.solutions import selfie_segmentation

        with native_stderr_silenced():
            self._model = selfie_segmentation.SelfieSegmentation(model_selection=model_selection)
            # The graph opens its interpreter on a worker thread, which prints its notices whenever it gets
            # there; one frame processed here makes sure that happens while stderr is silenced. The graph
            # keeps no state between frames, so this changes no later result.
            self._model.process(np.zeros((64, 64, 3), np.uint8))

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability of every pixel.

        Args:
            rgb: uint8 [H, W, 3] RGB frame.
        Returns:
            float32 [H, W] in [0, 1].
        """
        mask = self._model.process(np.ascontiguousarray(rgb)).segmentation_mask
        return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        self._model.close()


@dataclass
class FrameMasks:
    """The masks of one frame.

    Attributes:
        labels: uint8 [H, W], one of LABEL_BACKGROUND / LABEL_TORSO / LABEL_NECK / LABEL_HEAD per pixel.
        head_alpha: uint8 [H, W], soft matte (0..255) of the head (face + hair), fading out just under the
            jaw line: the alpha target for a head renderer.
        person_alpha: uint8 [H, W], soft matte (0..255) of the whole person; ``labels > 0`` exactly where it
            is >= 128.
    """

    labels: np.ndarray
    head_alpha: np.ndarray
    person_alpha: np.ndarray


@dataclass
class _HeadGeometry:
    """Where the head and neck of one frame lie, as polygons (int32 [N, 2] pixels) for cv2.fillPoly."""

    face: np.ndarray  # the face oval, forehead raised toward the hairline
    zone: np.ndarray  # where person pixels are head
    soft_zone: np.ndarray  # the zone lowered by half the head matte's fade
    neck: np.ndarray  # where person pixels may be neck
    under_jaw: np.ndarray  # the top of the neck: neck whatever its colour (the shadow under the chin)
    length: float  # face length (forehead landmark to chin), pixels


class MaskBuilder:
    """Labels and soft mattes for the frames of one clip, temporally smoothed.

    Args:
        size: frame side in pixels (frames are square).
        temporal: weight of the running person matte where the picture did not change since the previous
            frame (0 = no smoothing).
        forehead: how far the face oval's top is raised toward the hairline, in face lengths.
        neck_depth: how far under the chin the neck may reach, in face lengths.
        neck_width: neck half-width as a fraction of the distance between the jaw angles.
        hair_reach: how far beside the face centre person pixels may count as hair, in face widths.
        cut_softness: width of the head matte's fade under the jaw line, in face lengths.
        skin_tolerance: how far (YCrCb chroma units) a neck pixel's colour may be from the face's skin colour.
    """

    def __init__(
        self,
        size: int,
        temporal: float = 0.7,
        forehead: float = 0.12,
        neck_depth: float = 0.4,
        neck_width: float = 0.45,
        hair_reach: float = 1.25,
        cut_softness: float = 0.08,
        skin_tolerance: float = 14.0,
    ) -> None:
        self.size = size
        self.temporal = float(np.clip(temporal, 0.0, 0.95))
        self.forehead = forehead
        self.neck_depth = neck_depth
        self.neck_width = neck_width
        self.hair_reach = hair_reach
        self.cut_softness = cut_softness
        self.skin_tolerance = skin_tolerance
        self._small = max(size // 4, 8)  # side of the motion map and of the head matte's weight
        self._close = np.ones((max(3, size // 128 | 1),) * 2, np.uint8)  # fills specks in the neck's skin
        self._matte: np.ndarray | None = None  # float32 [size, size] running person probability
        self._grey: np.ndarray | None = None  # float32 [small, small] previous frame, downscaled

    def reset(self) -> None:
        """Forget the temporal state (the next frame is treated as the first of a clip)."""
        self._matte = None
        self._grey = None

    def build(self, rgb: np.ndarray, person_prob: np.ndarray, landmarks: np.ndarray | None) -> FrameMasks:
        """Masks of one frame.

        Args:
            rgb: uint8 [size, size, 3] RGB frame.
            person_prob: float32 [size, size] person probability in [0, 1] (:meth:`PersonSegmenter.segment`).
            landmarks: float [478, 2] face landmarks in pixels, or None (or any NaN) where the tracker found
                no face: then every person pixel is torso and head_alpha is empty.
        Returns:
            the frame's :class:`FrameMasks`.
        """
        shape = (self.size, self.size)
        if rgb.shape[:2] != shape or person_prob.shape != shape:
            raise ValueError(f"frame {rgb.shape[:2]} / matte {person_prob.shape} is not {shape}")
        matte = self._smooth(rgb, np.asarray(person_prob, np.float32))
        person_alpha = cv2.LUT(cv2.convertScaleAbs(matte, alpha=255.0), _SNAP)
        if landmarks is None or not np.all(np.isfinite(landmarks)):
            labels = cv2.compare(person_alpha, 128, cv2.CMP_GE) & np.uint8(LABEL_TORSO)
            return FrameMasks(labels, np.zeros_like(person_alpha), person_alpha)
        points = np.asarray(landmarks, np.float64)[:NUM_POINTS, :2]
        geometry = self._geometry(points)

        face = _fill(shape, geometry.face)  # 0/255
        person_alpha = cv2.max(person_alpha, face)
        person = cv2.compare(person_alpha, 128, cv2.CMP_GE)  # 0/255
        head = cv2.max(face, cv2.bitwise_and(person, _fill(shape, geometry.zone)))
        neck = self._neck(rgb, points, person, geometry)
        # the label values are their precedence: head over neck over torso over background
        labels = cv2.max(person & np.uint8(LABEL_TORSO), neck & np.uint8(LABEL_NECK))
        labels = cv2.max(labels, head & np.uint8(LABEL_HEAD))

        # The head matte: the person matte under a weight that is 1 down to the jaw line and falls to 0 over
        # ``cut_softness`` face lengths below it (a box blur of the head zone lowered by half that), so a
        # renderer trained on it fades the neck out instead of cutting it off. The weight is smooth, so it
        # is drawn and blurred at a quarter of the size and scaled up.
        small = np.zeros((self._small, self._small), np.uint8)
        quarter = np.round(geometry.soft_zone * (4 * self._small / self.size)).astype(np.int32)
        cv2.fillPoly(small, [quarter], 255, cv2.LINE_AA, shift=2)  # coordinates with 2 fraction bits
        ramp = max(3, round(self.cut_softness * geometry.length * self._small / self.size) | 1)
        weight = cv2.resize(cv2.blur(small, (ramp, ramp)), shape[::-1], interpolation=cv2.INTER_LINEAR)
        head_alpha = cv2.max(cv2.multiply(person_alpha, weight, scale=1.0 / 255), face)
        return FrameMasks(labels, head_alpha, person_alpha)

    def _smooth(self, rgb: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """Running person matte, float32 [H, W].

        An exponential moving average removes the segmenter's frame-to-frame edge flicker but lags wherever
        the person moves. So the average is taken only where the picture itself barely changed since the
        previous frame (a matte edge cannot have moved where the pixels under it did not change): the
        previous matte's weight is ``temporal`` on static pixels and falls to 0 where the frame difference
        (on a 4x downscaled grey frame, dilated by one cell so edges of moving regions count as moving)
        exceeds a few grey levels. Moving regions therefore follow the current frame with no lag.
        """
        grey = cv2.resize(
            cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (self._small, self._small), interpolation=cv2.INTER_AREA
        ).astype(np.float32)
        prev_grey, prev_matte = self._grey, self._matte
        self._grey = grey
        if self.temporal <= 0 or prev_grey is None or prev_matte is None:
            self._matte = prob.copy()
            return self._matte
        change = cv2.dilate(cv2.absdiff(grey, prev_grey), np.ones((3, 3), np.uint8))
        # the previous matte's weight: all of ``temporal`` below 2 grey levels of change (compression
        # noise), none above 10
        keep = np.clip((10.0 - change) * (self.temporal / 8.0), 0.0, self.temporal)
        keep = cv2.resize(keep, prob.shape[::-1], interpolation=cv2.INTER_LINEAR)
        matte = prev_matte - prob
        matte *= keep
        matte += prob
        self._matte = matte
        return matte

    def _geometry(self, points: np.ndarray) -> _HeadGeometry:
        """Head and neck polygons from landmarks [478, 2] (pixels), in a face-aligned frame: origin at the
        chin, ``right`` across the face, ``down`` from the forehead landmark to the chin."""
        chin = points[CHIN]
        up = points[FOREHEAD] - chin
        length = max(float(np.hypot(*up)), 1.0)
        down = -up / length
        right = np.array([-down[1], down[0]])
        width = max(float(np.hypot(*(points[_CHEEK_LEFT] - points[_CHEEK_RIGHT]))), 1.0)
        to_face = lambda xy: np.stack([(xy - chin) @ right, (xy - chin) @ down], axis=-1)
        to_pixels = lambda uv: chin + uv[..., :1] * right + uv[..., 1:] * down

        # face oval, its points above the eye line raised, the most at the top
        oval = to_face(points[list(FACE_OVAL)])
        eye_y = float(to_face(points[list(_EYE_LINE)])[:, 1].mean())
        lift = np.clip((eye_y - oval[:, 1]) / max(eye_y - float(oval[:, 1].min()), 1e-6), 0.0, 1.0)
        oval[:, 1] -= lift * self.forehead * length

        # the jaw contour across the neck: centred between the jaw angles, neck_width x their distance
        # on each side
        angles = to_face(points[[_JAW_ANGLE_RIGHT, _JAW_ANGLE_LEFT]])
        centre = float(angles[:, 0].mean())
        half = self.neck_width * float(abs(angles[1, 0] - angles[0, 0]))
        jaw = to_face(points[list(_JAW)])
        jaw = jaw[np.argsort(jaw[:, 0])]
        xs = np.linspace(centre - half, centre + half, 9)
        jaw_neck = to_pixels(np.stack([xs, np.interp(xs, jaw[:, 0], jaw[:, 1])], axis=-1))  # [9, 2]

        # Head zone. Over the neck its bottom edge is the jaw contour. Beside the neck it is an
        # image-horizontal line halfway between that side's jaw angle and the chin: hair hangs and shoulders
        # lie along the image's axes whatever the head's roll, and a lower line catches raised shoulders and
        # collars. Sideways it reaches hair_reach face widths from the face centre; upward, far above.
        side_y = [0.5 * (points[a, 1] + chin[1]) for a in (_JAW_ANGLE_RIGHT, _JAW_ANGLE_LEFT)]
        if jaw_neck[0, 0] > jaw_neck[-1, 0]:  # an upside-down face: keep the polygon simple
            side_y = side_y[::-1]
        centre_x = 0.5 * (points[_CHEEK_RIGHT, 0] + points[_CHEEK_LEFT, 0])
        reach = self.hair_reach * width
        top = float(points[:, 1].min()) - 1.5 * length

        def zone(drop: float) -> np.ndarray:
            contour = jaw_neck + drop * down
            y0, y1 = max(side_y[0] + drop, contour[0, 1]), max(side_y[1] + drop, contour[-1, 1])
            x0, x1 = min(centre_x - reach, contour[0, 0]), max(centre_x + reach, contour[-1, 0])
            outline = [
                (x0, top),
                (x0, y0),
                (contour[0, 0], y0),
                *contour,
                (contour[-1, 0], y1),
                (x1, y1),
                (x1, top),
            ]
            return np.round(np.array(outline)).astype(np.int32)

        # neck: from a little above the jaw contour (the head overrides it there) down to neck_depth face
        # lengths under the chin, widening a little toward the shoulders
        neck_top = jaw_neck - 0.1 * length * down
        bottom = chin[1] + self.neck_depth * length
        flare = 0.1 * (neck_top[-1, 0] - neck_top[0, 0])
        neck = [*neck_top, (neck_top[-1, 0] + flare, bottom), (neck_top[0, 0] - flare, bottom)]

        under_jaw = [*neck_top, *(jaw_neck + 0.12 * length * down)[::-1]]
        return _HeadGeometry(
            face=np.round(to_pixels(oval)).astype(np.int32),
            zone=zone(0.0),
            soft_zone=zone(0.5 * self.cut_softness * length),
            neck=np.round(np.array(neck)).astype(np.int32),
            under_jaw=np.round(np.array(under_jaw)).astype(np.int32),
            length=length,
        )

    def _neck(
        self, rgb: np.ndarray, points: np.ndarray, person: np.ndarray, geometry: _HeadGeometry
    ) -> np.ndarray:
        """uint8 [H, W] 0/255: the person pixels inside the neck polygon that are either just under the jaw
        or of the face's skin colour (YCrCb chroma within ``skin_tolerance`` of the median over cheek and chin
        samples), so that a collar or scarf under the chin stays torso. Only the polygon's bounding box is
        examined."""
        h, w = person.shape
        x0, y0 = np.maximum(geometry.neck.min(0), 0)
        x1, y1 = np.minimum(geometry.neck.max(0) + 1, (w, h))
        neck = np.zeros((h, w), np.uint8)
        if x1 <= x0 or y1 <= y0:
            return neck
        ys, xs = (np.round(points[list(_SKIN_SAMPLES)]).astype(int)[:, None, ::-1] + _PATCH).transpose(
            2, 0, 1
        )
        patches = rgb[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)].reshape(-1, 1, 3)  # [N, 1, 3]
        skin = np.median(cv2.cvtColor(patches, cv2.COLOR_RGB2YCrCb).reshape(-1, 3), axis=0)
        lo = (0, skin[1] - self.skin_tolerance, skin[2] - self.skin_tolerance)
        hi = (255, skin[1] + self.skin_tolerance, skin[2] + self.skin_tolerance)
        allowed = cv2.inRange(cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2YCrCb), lo, hi)
        allowed = cv2.morphologyEx(allowed, cv2.MORPH_CLOSE, self._close)
        offset = np.array([x0, y0], np.int32)
        cv2.fillPoly(allowed, [geometry.under_jaw - offset], 255)
        crop = neck[y0:y1, x0:x1]
        cv2.fillPoly(crop, [geometry.neck - offset], 255)
        crop &= allowed & person[y0:y1, x0:x1]
        return neck


# Encoding. A frame's masks are mostly flat: labels in large regions, mattes at 0 or 255 except in a band
# along the edges. So a "code" plane holds, per pixel, the label (bits 0-1) and three flags: bit 2
# "person_alpha is not what the label implies" (255 on the person, 0 off it), bit 3 "head_alpha is 0",
# bit 4 "head_alpha is neither 0 nor person_alpha" (else head_alpha equals person_alpha). The code plane is
# stored as runs in scan order (a few thousand at 512 x 512); the matte values of the flagged pixels follow,
# delta-coded since neighbouring edge pixels have close values, and zlib's fastest level packs the lot.
# Measured at 512 x 512 on real footage (2 cores): ~27 KB, ~0.8 ms to encode and ~0.6 ms to decode, where a
# 3-channel PNG of the planes takes ~6 + 2 ms for ~46 KB, and plain zlib over the planes ~2 + 0.7 ms, 65 KB.
_MAGIC = b"TPMK"
# magic, version, height, width, runs, person values, head values, bytes of the deflated runs
_HEADER = struct.Struct("<4sBHHIIII")
_VERSION = 1


def _huffman(data: bytes) -> bytes:
    """Deflate with entropy coding alone: the value deltas have few repeats for LZ matching to find, and
    skipping the search saves a third of the time for the same size."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return packer.compress(data) + packer.flush()


def encode_masks(masks: FrameMasks) -> bytes:
    """A frame's masks as compact bytes; :func:`decode_masks` returns them exactly."""
    labels, head_alpha, person_alpha = (
        np.ascontiguousarray(a, np.uint8) for a in (masks.labels, masks.head_alpha, masks.person_alpha)
    )
    h, w = labels.shape
    if head_alpha.shape != (h, w) or person_alpha.shape != (h, w):
        raise ValueError("masks of different shapes")
    if int(labels.max(initial=0)) > LABEL_HEAD:
        raise ValueError(f"labels above {LABEL_HEAD}")
    implied = cv2.compare(labels, LABEL_BACKGROUND, cv2.CMP_GT)  # 255 on the person
    person_odd = cv2.compare(person_alpha, implied, cv2.CMP_NE)
    head_zero = cv2.compare(head_alpha, 0, cv2.CMP_EQ)
    head_odd = cv2.bitwise_not(cv2.bitwise_or(cv2.compare(head_alpha, person_alpha, cv2.CMP_EQ), head_zero))
    code = (labels | (person_odd & 4) | (head_zero & 8) | (head_odd & 16)).ravel()
    starts = np.flatnonzero(code[1:] != code[:-1]) + 1
    run_lengths = np.diff(starts, prepend=0, append=code.size).astype("<i4")
    run_codes = code[np.concatenate([[0], starts])]
    person_values, head_values = person_alpha[person_odd > 0], head_alpha[head_odd > 0]
    values = np.concatenate([person_values, head_values])
    runs = zlib.compress(run_lengths.tobytes() + run_codes.tobytes(), 1)
    deltas = _huffman(np.diff(values, prepend=np.uint8(0)).tobytes())
    header = _HEADER.pack(
        _MAGIC, _VERSION, h, w, run_codes.size, person_values.size, head_values.size, len(runs)
    )
    return header + runs + deltas


def decode_masks(data: bytes) -> FrameMasks:
    """The :class:`FrameMasks` that :func:`encode_masks` turned into ``data``.

    Raises ValueError when ``data`` is not such an encoding.
    """
    if len(data) < _HEADER.size:
        raise ValueError("not encoded masks (too short)")
    magic, version, h, w, num_runs, num_person, num_head, runs_size = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION or _HEADER.size + runs_size > len(data):
        raise ValueError("not encoded masks (bad header)")
    try:
        runs = zlib.decompress(data[_HEADER.size : _HEADER.size + runs_size])
        deltas = zlib.decompress(data[_HEADER.size + runs_size :])
    except zlib.error as err:
        raise ValueError(f"not encoded masks ({err})") from err
    if len(runs) != 5 * num_runs or len(deltas) != num_person + num_head:
        raise ValueError("not encoded masks (wrong length)")
    run_lengths = np.frombuffer(runs, "<i4", num_runs)
    run_codes = np.frombuffer(runs, np.uint8, num_runs, 4 * num_runs)
    values = np.cumsum(np.frombuffer(deltas, np.uint8), dtype=np.uint8)
    if np.any(run_lengths <= 0) or int(run_lengths.sum()) != h * w:
        raise ValueError("not encoded masks (runs do not fill the frame)")
    code = np.repeat(run_codes, run_lengths).reshape(h, w)
    labels = code & 3
    person_odd, head_odd = (code & 4) > 0, (code & 16) > 0
    if np.count_nonzero(person_odd) != num_person or np.count_nonzero(head_odd) != num_head:
        raise ValueError("not encoded masks (value counts)")
    person_alpha = cv2.compare(labels, LABEL_BACKGROUND, cv2.CMP_GT)
    person_alpha[person_odd] = values[:num_person]
    head_alpha = person_alpha.copy()
    head_alpha[(code & 8) > 0] = 0
    head_alpha[head_odd] = values[num_person:]
    return FrameMasks(labels, head_alpha, person_alpha)

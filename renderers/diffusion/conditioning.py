"""Conditioning images for the diffusion renderer: the identity's face model rasterised at a frame's motion.

A frame's expression and head pose place the identity's face model (:mod:`motion.face_model`, the tracker's
478-point topology) in front of the clip's pinhole camera (:mod:`motion.clip_fit`: ``Xc = R @ X + t``, the
camera looking down -z, principal point at the image centre, focal in pixels at the reference image size,
pixel ``i`` spanning ``[i, i + 1)``). Rendering at another size scales the focal with it.

Rasterisation is exact and CPU-only: back-facing triangles are culled, the rest are painted far to near
with ``cv2.fillConvexPoly`` (index + 1 in an int32 image, the painter's algorithm). OpenCV also paints the
pixels an edge merely touches, so each pixel whose centre lies outside its painted triangle walks across
the mesh to the triangle that holds it (:func:`_settle_edges`). Attributes are then interpolated for all
covered pixels at once with numpy, perspective-correct (1/z and attribute/z are planes on the screen).
Pixels are sampled at their centres; there is no anti-aliasing.

The tracker's mesh has holes at the eye openings and between the inner lips. They are closed here by fans
from each contour's centroid ("caps"), painted before the face: the face in front of an opening (lips,
nose) still covers it, a shut lid or pressed lips leave the cap degenerate or back-facing, and what shows is
the visible opening. The mesh's two spurious triangles (edge-list 3-cycles across the nostrils) are
dropped and every triangle is wound the same way (counter-clockwise seen from +z).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from motion import topology as tp
from motion.clip_fit import ClipFit
from motion.face_model import FaceModel
from motion.geometry import axis_angle_to_matrix

CHANNELS: tuple[str, ...] = (
    "canon_x", "canon_y", "canon_z", "depth", "skin", "lips", "mouth", "eyes", "irises", "brows", "coverage",
)  # fmt: skip
"""Layout of a conditioning image float32 [C, S, S]; every channel is 0 on the background.

- ``canon_x``, ``canon_y``, ``canon_z`` in [-1, 1]: the surface point's position on the model's neutral mean
  face (:attr:`motion.face_model.FaceModel.mean`, the same for every identity; x toward the subject's left,
  y up, z toward the viewer), each axis scaled over the mean face's bounding box. Openings take the values
  of their caps (interpolated across the hole).
- ``depth`` in [0, 1]: camera depth over the visible face, normalised per frame: 1 at the nearest face pixel,
  0 at the farthest (``coverage`` tells the farthest from the background).
- region masks in {0, 1} (with ``supersample`` > 1, in [0, 1]: the share of the pixel covered): ``skin``
  (face surface that is none of the following), ``lips`` (between the outer and inner lip contours),
  ``mouth`` (the mouth interior: the opening inside the inner lip contour), ``eyes`` (the openings between
  the lids, irises included), ``irises`` (iris discs where they show through the eye openings), ``brows``.
- ``coverage`` in {0, 1} (or a share, as the masks): every pixel the face (surface or opening) is drawn on.
"""
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

# Triangle labels (regions painted per triangle) and the channels they light up.
_LABELS = ("skin", "lips", "mouth", "eyes", "brows")
_EYE_LOOPS = (
    tp.RIGHT_EYE_UPPER + tp.RIGHT_EYE_LOWER[-2:0:-1],
    tp.LEFT_EYE_UPPER + tp.LEFT_EYE_LOWER[-2:0:-1],
)
_MOUTH_LOOP = tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER[-2:0:-1]
_CAP_LOOPS = (*_EYE_LOOPS, _MOUTH_LOOP)  # cap centres are vertices 478, 479, 480
_IRISES = (tp.RIGHT_IRIS, tp.LEFT_IRIS)
_IRIS_SEGMENTS = 16
_LIP_POINTS = np.array(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER + tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER)
_SUBPIXEL = 4  # fractional bits of the vertex positions handed to OpenCV
_MIN_AREA = 1e-3  # twice the screen area (px^2) below which a triangle counts as degenerate
_EDGE_TOLERANCE = 1e-4  # barycentric slack of "inside a triangle"
_WALK_STEPS = 4


@dataclass
class ConditioningConfig:
    """Settings of the conditioning images."""

    size: int = 256
    """Side of the square conditioning image in pixels (when a call gives no size)."""
    mouth_margin: float = 0.3
    """Padding of :meth:`FaceConditioner.mouth_box` on each side of the lips, in mouth widths."""
    supersample: int = 1
    """Rasterise at this many times the side and average down: region masks and edges become the share of
    each pixel they cover, so a thin mouth opening shows as a faint line that grows with the opening instead
    of whole pixels that come and go with where it falls on the pixel grid (1: hard, one sample a pixel)."""

    def __post_init__(self) -> None:
        if self.supersample < 1:
            raise ValueError(f"supersample must be at least 1, not {self.supersample}")


@dataclass(frozen=True)
class _Mesh:
    """The face mesh with its openings capped.

    Attributes:
        triangles: int32 [F, 3] over the 478 model vertices plus the cap centres (wound counter-clockwise
            seen from +z). label: int64 [F] index into ``_LABELS``. cap: bool [F] cap triangles.
        neighbours: int64 [F, 3] the triangle across the edge opposite each corner (-1 on the border).
        canonical: float32 [481, 3] normalised mean-face position of every vertex.
    """

    triangles: np.ndarray
    label: np.ndarray
    cap: np.ndarray
    neighbours: np.ndarray
    canonical: np.ndarray


def _with_caps(vertices: np.ndarray) -> np.ndarray:
    """Vertices [..., 478, 3] -> [..., 481, 3] with the centroids of the eye and inner-lip contours."""
    centres = [vertices[..., list(loop), :].mean(-2) for loop in _CAP_LOOPS]
    return np.concatenate([vertices, np.stack(centres, -2)], -2)


def _orient(triangles: np.ndarray) -> np.ndarray:
    """Wind every triangle of a connected manifold mesh like its neighbours (flood fill over edges)."""
    tris = triangles.copy()
    owners: dict[tuple[int, int], list[int]] = {}
    for f, t in enumerate(tris.tolist()):
        for i in range(3):
            owners.setdefault(tuple(sorted((t[i], t[(i + 1) % 3]))), []).append(f)
    done = np.zeros(len(tris), bool)
    done[0] = True
    queue = [0]
    while queue:
        t = tris[queue.pop()].tolist()
        for i in range(3):
            a, b = t[i], t[(i + 1) % 3]
            for g in owners[tuple(sorted((a, b)))]:
                if done[g]:
                    continue
                u = tris[g].tolist()
                if any(u[j] == a and u[(j + 1) % 3] == b for j in range(3)):  # same direction: flip
                    tris[g] = tris[g, ::-1]
                done[g] = True
                queue.append(g)
    if not done.all():
        raise ValueError("face mesh is not connected")
    return tris


def _inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether 2D ``points`` [N, 2] lie strictly inside ``polygon`` [M, 2]."""
    contour = polygon.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) > 0 for x, y in points])


@lru_cache(maxsize=1)
def _mesh() -> _Mesh:
    """The model's triangles without the spurious ones, capped, consistently wound and labelled."""
    model = FaceModel()
    tris = np.asarray(model.triangles, np.int64)
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), 1)
    _, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    per_tri = counts[inverse.reshape(3, -1)].T  # [F, 3] how many triangles share each edge
    tris = tris[~(per_tri > 2).all(1)]  # 3-cycles of the edge list that are not faces
    caps = [
        (tp.NUM_POINTS + k, loop[i], loop[(i + 1) % len(loop)])
        for k, loop in enumerate(_CAP_LOOPS)
        for i in range(len(loop))
    ]
    tris = _orient(np.concatenate([tris, np.array(caps, np.int64)]))
    mean = _with_caps(model.mean.astype(np.float64))
    a, b, c = (mean[tris[:, i]] for i in range(3))
    if (np.cross(b - a, c - a)[:, 2] < 0).sum() > len(tris) / 2:
        tris = tris[:, ::-1]
    cap = np.zeros(len(tris), bool)
    cap[-len(caps) :] = True
    centroid = mean[tris].mean(1)[:, :2]
    label = np.zeros(len(tris), np.int64)
    lips = np.array(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER[-2:0:-1])
    label[~cap & _inside(mean[lips, :2], centroid)] = _LABELS.index("lips")
    for brow in (tp.RIGHT_BROW, tp.LEFT_BROW):
        outline = np.array(brow[:5] + brow[5:][::-1])  # upper edge outer->inner, lower edge inner->outer
        label[~cap & _inside(mean[outline, :2], centroid)] = _LABELS.index("brows")
    label[cap] = _LABELS.index("eyes")
    label[-len(_MOUTH_LOOP) :] = _LABELS.index("mouth")
    lo, hi = mean[: tp.NUM_POINTS - 10].min(0), mean[: tp.NUM_POINTS - 10].max(0)
    canonical = (2 * (mean - lo) / (hi - lo) - 1).astype(np.float32)
    return _Mesh(np.ascontiguousarray(tris, dtype=np.int32), label, cap, _neighbours(tris), canonical)


def _neighbours(triangles: np.ndarray) -> np.ndarray:
    """int64 [F, 3]: the triangle across the edge opposite each corner, -1 where the edge is a border."""
    owners: dict[tuple[int, int], list[int]] = {}
    for f, t in enumerate(triangles.tolist()):
        for i in range(3):
            owners.setdefault(tuple(sorted((t[(i + 1) % 3], t[(i + 2) % 3]))), []).append(f)
    out = np.full(triangles.shape, -1, np.int64)
    for f, t in enumerate(triangles.tolist()):
        for i in range(3):
            other = [g for g in owners[tuple(sorted((t[(i + 1) % 3], t[(i + 2) % 3])))] if g != f]
            out[f, i] = other[0] if other else -1
    return out


def canonical_coordinates() -> np.ndarray:
    """float32 [481, 3]: the ``canon_*`` values of the model vertices (then the cap centres)."""
    return _mesh().canonical.copy()


class FaceConditioner:
    """Renders an identity's face model as conditioning images (layout: :data:`CHANNELS`).

    Args:
        shape: float32 [478, 3] the identity's neutral shape in model units (fit ``shape``).
        focal: focal length in pixels at the reference image size.
        image_size: side of the (square) reference image the focal belongs to, or its (height, width).
        config: settings.
    """

    def __init__(
        self,
        shape: np.ndarray,
        focal: float,
        image_size: int | tuple[int, int],
        config: ConditioningConfig | None = None,
    ) -> None:
        if not isinstance(image_size, int | np.integer):
            height, width = (int(v) for v in image_size)
            if height != width:
                raise ValueError(f"reference images must be square, got {height}x{width}")
            image_size = width
        self.model = FaceModel(np.asarray(shape, np.float32))
        self.focal = float(focal)
        self.image_size = int(image_size)
        self.config = config or ConditioningConfig()
        self._mesh = _mesh()
        self._label_lut = np.concatenate([[-1], self._mesh.label]).astype(np.int8)
        self.window: tuple[float, float, float] | None = None

    @classmethod
    def from_fit(cls, fit: ClipFit, config: ConditioningConfig | None = None) -> FaceConditioner:
        """A conditioner for an identity's clip fit (its shape, focal length and image size)."""
        return cls(fit.shape, float(fit.focal), tuple(fit.image_size), config)

    def camera_vertices(self, expressions: np.ndarray, rotations: np.ndarray, translations: np.ndarray):
        """Camera-space vertices [..., 481, 3] (model points, then cap centres) of [..., E], [..., 3] x 2."""
        verts = _with_caps(self.model.vertices(expressions).astype(np.float64))
        rot = axis_angle_to_matrix(np.asarray(rotations, np.float64))
        trans = np.asarray(translations, np.float64)
        return np.einsum("...ij,...nj->...ni", rot, verts) + trans[..., None, :]

    def project(self, camera_points: np.ndarray, size: int) -> np.ndarray:
        """Camera-space points [..., 3] -> pixels [..., 2] in a ``size`` image of the reference frame (as
        ``project_points``), or of its :attr:`window` when one is set."""
        depth = np.maximum(-camera_points[..., 2], 1e-3)
        x0, y0, side = self.window or (0.0, 0.0, float(self.image_size))
        scale = size / side
        u = (self.image_size / 2 + self.focal * camera_points[..., 0] / depth - x0) * scale
        v = (self.image_size / 2 - self.focal * camera_points[..., 1] / depth - y0) * scale
        return np.stack([u, v], -1)

    def cropped(self, window: tuple[float, float, float] | None) -> FaceConditioner:
        """A conditioner that renders the square ``window`` (x0, y0, side in reference-image pixels) of the
        reference frame instead of all of it (None: all of it)."""
        out = copy.copy(self)
        out.window = None if window is None else tuple(float(v) for v in window)
        return out

    def render(
        self, expression: np.ndarray, rotation: np.ndarray, translation: np.ndarray, size: int | None = None
    ) -> np.ndarray:
        """Conditioning image float32 [C, size, size] of one frame: expression [E], rotation [3] (axis-angle),
        translation [3] (the tracking's convention)."""
        cam = self.camera_vertices(expression, rotation, translation)
        size = size or self.config.size
        out = np.zeros((len(CHANNELS), size, size), np.float32)
        self._render_camera(cam, out)
        return out

    def render_batch(
        self,
        expressions: np.ndarray,
        rotations: np.ndarray,
        translations: np.ndarray,
        size: int | None = None,
    ) -> np.ndarray:
        """Conditioning images float32 [T, C, size, size] of T frames ([T, E], [T, 3], [T, 3])."""
        cams = self.camera_vertices(expressions, rotations, translations)
        size = size or self.config.size
        out = np.zeros((len(cams), len(CHANNELS), size, size), np.float32)
        for i, cam in enumerate(cams):
            self._render_camera(cam, out[i])
        return out

    def _render_camera(self, cam: np.ndarray, out: np.ndarray) -> None:
        """Rasterise camera-space vertices [481, 3] into ``out``, a zeroed conditioning image [C, S, S],
        ``config.supersample`` samples a side per pixel."""
        k = self.config.supersample
        if k == 1:
            self._rasterise(cam, out)
            return
        channels, size = out.shape[0], out.shape[-1]
        fine = np.zeros((channels, size * k, size * k), np.float32)
        self._rasterise(cam, fine)
        out[:] = fine.reshape(channels, size, k, size, k).mean((2, 4))

    def mouth_box(
        self,
        expression: np.ndarray,
        rotation: np.ndarray,
        translation: np.ndarray,
        size: int | None = None,
        margin: float | None = None,
    ) -> np.ndarray:
        """Pixel box int64 [4] (x0, y0, x1, y1; x1, y1 exclusive) around the mouth, or [T, 4] for T frames.

        The box is square around the projected lip contours, ``margin`` mouth widths (default
        ``config.mouth_margin``) wider on each side, and clipped to the image.
        """
        size = size or self.config.size
        margin = self.config.mouth_margin if margin is None else margin
        px = self.project(self.camera_vertices(expression, rotation, translation)[..., _LIP_POINTS, :], size)
        lo, hi = px.min(-2), px.max(-2)
        centre = (lo + hi) / 2
        side = np.ceil((hi - lo).max(-1, keepdims=True) * (1 + 2 * margin))
        start = np.floor(centre - side / 2)
        return np.clip(np.concatenate([start, start + side], -1), 0, size).astype(np.int64)

    def _rasterise(self, cam: np.ndarray, out: np.ndarray) -> None:
        """Rasterise camera-space vertices [481, 3] into ``out`` (a zeroed [C, S, S]), one sample a pixel."""
        mesh = self._mesh
        size = out.shape[-1]
        depth = np.maximum(-cam[:, 2], 1e-3)
        uv = self.project(cam, size)
        tri_uv = uv[mesh.triangles]  # [F, 3, 2]
        a, ba, ca = tri_uv[:, 0], tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]
        area = ba[:, 0] * ca[:, 1] - ba[:, 1] * ca[:, 0]  # < 0: counter-clockwise on screen (y up)
        front = area < 0
        tri_depth = depth[mesh.triangles].mean(1)
        order = []
        for group in (front & mesh.cap, front & ~mesh.cap):  # openings first, then the face far to near
            ids = np.flatnonzero(group)
            order.append(ids[np.argsort(-tri_depth[ids], kind="stable")])
        # OpenCV puts pixel centres at integers, here they are at +0.5.
        pts = np.round((tri_uv - 0.5) * (1 << _SUBPIXEL)).astype(np.int32)
        index = np.zeros((size, size), np.int32)
        for k in np.concatenate(order).tolist():
            cv2.fillConvexPoly(index, pts[k], k + 1, cv2.LINE_8, _SUBPIXEL)

        # Barycentric planes of each triangle: l1 and l2 = (x, y, 1) . (A, B, C), rows A1 B1 C1 A2 B2 C2
        # (1/3 each where the triangle is degenerate).
        usable = area < -_MIN_AREA
        inv = np.where(usable, 1.0 / np.where(usable, area, 1.0), 0.0)
        c1 = np.where(usable, (a[:, 1] * ca[:, 0] - a[:, 0] * ca[:, 1]) * inv, 1 / 3)
        c2 = np.where(usable, (a[:, 0] * ba[:, 1] - a[:, 1] * ba[:, 0]) * inv, 1 / 3)
        planes = np.stack([ca[:, 1] * inv, -ca[:, 0] * inv, c1, -ba[:, 1] * inv, ba[:, 0] * inv, c2])
        flat = np.flatnonzero(index)
        x = (flat % size).astype(np.float32) + 0.5
        y = (flat // size).astype(np.float32) + 0.5
        painted = index.ravel()[flat] - 1
        tri, kept, clamp = _settle_edges(planes.astype(np.float32), mesh.neighbours, usable, painted, x, y)
        if not kept.all():
            flat, x, y, tri, clamp = flat[kept], x[kept], y[kept], tri[kept], clamp[kept]

        label = np.full(size * size, -1, np.int8)
        label[flat] = mesh.label[tri]
        label = label.reshape(size, size)
        for i, name in enumerate(_LABELS):
            out[CHANNEL_INDEX[name]] = label == i
        eyes = out[CHANNEL_INDEX["eyes"]]
        if eyes.any():
            out[CHANNEL_INDEX["irises"]] = self._iris_mask(cam, size) * eyes
        out[CHANNEL_INDEX["coverage"]] = label >= 0
        if not len(flat):
            return

        # Perspective-correct interpolation: 1/z and canonical/z are affine on the screen, one plane per
        # triangle each: q0 + (q1 - q0) l1 + (q2 - q0) l2.
        corner_inv = 1.0 / depth[mesh.triangles]  # [F, 3]
        q = np.concatenate([corner_inv[None], mesh.canonical[mesh.triangles].transpose(2, 0, 1) * corner_inv])
        d1, d2 = q[..., 1] - q[..., 0], q[..., 2] - q[..., 0]  # [4, F]
        interp = np.stack(
            [
                d1 * planes[0] + d2 * planes[3],
                d1 * planes[1] + d2 * planes[4],
                q[..., 0] + d1 * planes[2] + d2 * planes[5],
            ],
            1,
        ).astype(np.float32)  # [4, 3, F]
        values = np.empty((4, len(flat)), np.float32)
        for k in range(4):
            values[k] = interp[k, 0].take(tri) * x + interp[k, 1].take(tri) * y + interp[k, 2].take(tri)
        if len(clamp := np.flatnonzero(clamp)):  # centres kept past an edge: clamp them onto it
            bary = np.clip(_barycentric(planes[:, tri[clamp]], x[clamp], y[clamp]), 0.0, 1.0)
            bary /= bary.sum(0)
            values[:, clamp] = np.einsum("cn,kcn->kn", bary, q[:, tri[clamp]].transpose(0, 2, 1))
        flat_out = out.reshape(len(CHANNELS), -1)
        for axis in range(3):
            flat_out[axis, flat] = values[1 + axis] / values[0]
        pixel_depth = 1.0 / values[0]
        near, far = pixel_depth.min(), pixel_depth.max()
        flat_out[CHANNEL_INDEX["depth"], flat] = (far - pixel_depth) / max(far - near, 1e-6)

    def _iris_mask(self, cam: np.ndarray, size: int) -> np.ndarray:
        """uint8 [size, size] with both iris discs (circles through the tracker's four iris rim points)."""
        mask = np.zeros((size, size), np.uint8)
        theta = np.linspace(0, 2 * np.pi, _IRIS_SEGMENTS, endpoint=False)
        for centre, right, top, left, bottom in _IRISES:
            c = cam[centre]
            u = (cam[right] - cam[left]) / 2
            v = (cam[top] - cam[bottom]) / 2
            rim = c + np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v
            pts = np.round((self.project(rim, size) - 0.5) * (1 << _SUBPIXEL)).astype(np.int32)
            cv2.fillConvexPoly(mask, pts, 1, cv2.LINE_8, _SUBPIXEL)
        return mask


def _barycentric(planes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [3, N] of pixel centres from their triangles' planes [>= 6, N]."""
    bary = np.empty((3, len(x)), np.float32)
    bary[1] = planes[0] * x + planes[1] * y + planes[2]
    bary[2] = planes[3] * x + planes[4] * y + planes[5]
    bary[0] = 1 - bary[1] - bary[2]
    return bary


def _settle_edges(
    planes: np.ndarray,
    neighbours: np.ndarray,
    usable: np.ndarray,
    tri: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give each painted pixel the triangle that really holds its centre.

    OpenCV paints every pixel an edge touches, so a triangle painted later claims its neighbours' edge pixels.
    From the painted triangle, a pixel centre outside it walks across the edge it lies beyond to the
    neighbouring front-facing triangle until one holds it (a point-location walk): then that is its
    triangle; past the mesh border it is background; into a back-facing fold (a silhouette over other
    surface) it keeps the painted triangle, to be clamped onto its edge.

    Args:
        planes: float32 [6, F] barycentric planes. neighbours: [F, 3]. usable: bool [F] front-facing and
            not degenerate. tri: [N] painted triangle of each pixel. x, y: [N] pixel centres.
    Returns:
        (triangle [N], kept [N]: False for pixels outside the mesh, clamp [N]: centres outside their
        triangle).
    """
    tri = tri.copy()
    kept = np.ones(len(tri), bool)
    bary = np.empty((3, len(tri)), np.float32)
    bary[1] = planes[0].take(tri) * x + planes[1].take(tri) * y + planes[2].take(tri)
    bary[2] = planes[3].take(tri) * x + planes[4].take(tri) * y + planes[5].take(tri)
    bary[0] = 1 - bary[1] - bary[2]
    clamp = bary.min(0) < -_EDGE_TOLERANCE
    idx = np.flatnonzero(clamp)
    cur, bary = tri[idx], bary[:, idx]
    for _ in range(_WALK_STEPS):
        nxt = neighbours[cur, bary.argmin(0)]
        kept[idx[nxt < 0]] = False
        step = (nxt >= 0) & usable[nxt]
        idx, cur = idx[step], nxt[step]
        if not len(idx):
            break
        bary = _barycentric(planes[:, cur], x[idx], y[idx])
        inside = bary.min(0) >= -_EDGE_TOLERANCE
        tri[idx[inside]] = cur[inside]
        clamp[idx[inside]] = False
        idx, cur, bary = idx[~inside], cur[~inside], bary[:, ~inside]
    return tri, kept, clamp

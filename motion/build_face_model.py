"""Build the face model's mean shape from real faces: ``python -m motion.build_face_model FILES...``.

Tracks every image (and every few frames of every video) with the default tracker, turns the 3D landmarks
into the model frame (x to the image's right, y up, z toward the viewer), aligns them all by generalised
Procrustes, averages, and makes the result left-right symmetric. The triangles come from the tracker's
own tessellation. The result is the small file ``motion/data/face_model.npz`` that ships with the package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from motion.geometry import similarity_align
from motion.topology import LEFT_EYE_CORNERS, NUM_POINTS, RIGHT_EYE_CORNERS

EYE_CORNER_DISTANCE = 9.0  # model units between the outer eye corners: about centimetres


def to_model_frame(points: np.ndarray) -> np.ndarray:
    """Tracker pixels (x right, y down, z away from viewer negative-closer) -> model frame [N, 3]."""
    return points * np.array([1.0, -1.0, -1.0])


def _samples(paths: list[Path], every: int) -> list[np.ndarray]:
    import cv2

    from motion.tracker import MediapipeTracker

    tracker = MediapipeTracker()
    out = []
    for path in paths:
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            frames = [cv2.imread(str(path))]
        else:
            cap = cv2.VideoCapture(str(path))
            frames, i = [], 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if i % every == 0:
                    frames.append(frame)
                i += 1
        for frame in frames:
            faces = tracker.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            if faces:
                out.append(to_model_frame(faces[0].points.astype(np.float64)))
    return out


def tessellation_triangles() -> np.ndarray:
    """Triangles [F, 3] of the tracker's tessellation, recovered from its edge list, wound toward +z."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    nbrs: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        nbrs.setdefault(a, set()).add(b)
        nbrs.setdefault(b, set()).add(a)
    tris = set()
    for a, b in FACEMESH_TESSELATION:
        for c in nbrs[a] & nbrs[b]:
            tris.add(tuple(sorted((a, b, c))))
    return np.array(sorted(tris), np.int32)


def mirror_indices(mean: np.ndarray) -> np.ndarray:
    """For each vertex, the vertex at its mirror position across the x = 0 plane (a permutation)."""
    from scipy.optimize import linear_sum_assignment

    mirrored = mean * np.array([-1.0, 1.0, 1.0])
    d = ((mean[:, None, :] - mirrored[None, :, :]) ** 2).sum(-1)
    _, cols = linear_sum_assignment(d)
    return cols.astype(np.int32)


def symmetrise(shape: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Move ``shape`` into the frame where it best matches its own mirror image, then average the two."""
    flip = np.array([-1.0, 1.0, 1.0])
    for _ in range(iterations):
        mirror = mirror_indices(shape)
        _, r, _ = similarity_align(shape, (shape * flip)[mirror])
        # Half of the shape->mirror rotation puts the symmetry plane at x = 0.
        w, v = np.linalg.eig(r)
        half = np.real(v @ np.diag(np.sqrt(w.astype(complex))) @ np.linalg.inv(v))
        centre = shape.mean(0)
        shape = (shape - centre) @ half.T
        shape[:, 0] -= shape[:, 0].mean()
    mirror = mirror_indices(shape)
    return (shape + (shape * flip)[mirror]) / 2, mirror


def build(samples: list[np.ndarray], iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes mean of [N, 478, 3] samples, normalised and symmetrised."""
    # A neutral mean: keep the faces whose lips are (nearly) closed.
    gaps = np.array([np.linalg.norm(p[13] - p[14]) / np.linalg.norm(p[61] - p[291]) for p in samples])
    samples = [p for p, g in zip(samples, gaps, strict=True) if g <= max(0.04, np.quantile(gaps, 0.25))]
    ref = samples[0]
    for _ in range(iterations):
        aligned = []
        for pts in samples:
            s, r, t = similarity_align(pts, ref)
            aligned.append(s * pts @ r.T + t)
        ref = np.mean(aligned, 0)
    # Canonical orientation: eye line along +x, face up along +y, looking along +z.
    right_eye, left_eye = ref[RIGHT_EYE_CORNERS[0]], ref[LEFT_EYE_CORNERS[0]]
    x_axis = left_eye - right_eye
    x_axis /= np.linalg.norm(x_axis)
    up = ref[10] - ref[152]
    z_axis = np.cross(x_axis, up)
    z_axis /= np.linalg.norm(z_axis)
    y_axis = np.cross(z_axis, x_axis)
    rot = np.stack([x_axis, y_axis, z_axis])
    centre = (right_eye + left_eye) / 2
    ref = (ref - centre) @ rot.T
    ref *= EYE_CORNER_DISTANCE / np.linalg.norm(ref[LEFT_EYE_CORNERS[0]] - ref[RIGHT_EYE_CORNERS[0]])
    return symmetrise(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="portraits and talking-head videos")
    parser.add_argument("--every", type=int, default=10, help="take every N-th video frame")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "face_model.npz")
    args = parser.parse_args()
    samples = _samples(args.files, args.every)
    if len(samples) < 2:
        raise SystemExit("need faces in at least two images or frames")
    mean, mirror = build(samples)
    assert mean.shape == (NUM_POINTS, 3)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        mean=mean.astype(np.float32),
        triangles=tessellation_triangles(),
        mirror=mirror,
        num_samples=np.int32(len(samples)),
    )
    tmp.replace(args.out)
    print(f"wrote {args.out} from {len(samples)} faces")


if __name__ == "__main__":
    main()

"""Identity workspaces: everything prepared from one person's footage, in one folder, read by streaming.

Layout of ``<root>/<identity>/``::

    identity.json          schema version, source, settings, crop, frame count, split, finished steps
    chunks/00000.npz ...   frames (JPEG) + masks + raw landmarks, ``chunk_size`` frames each
    tracking.npz           the clip fit: identity shape, focal, per-frame pose, expression, blinks
    background.png         the clean background plate (+ background_coverage.png)
    audio.wav              the speech track, 16 kHz mono PCM
    audio_features.npz     per-frame log-mel windows and phoneme posteriors
    report/                contact sheet, pose and expression plots, summary.json
    renderers/NAME/        trained renderers (``train --renderer NAME``)
    motion_model/          the identity's own audio-to-mouth model (``train --motion``)

Every file is written atomically; ``identity.json`` records a step as finished only after its files are
in place, so a run killed at any moment resumes from the last finished chunk or step. It also records each
file's size and SHA-256 checksum once the file is in place (``files``: name -> size, checksum, the step that
wrote it), so damage done later (a truncated copy, a flipped bit, a deleted file) is found by
:meth:`Workspace.verify` before anything trusts the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.errors import InputError
from common.files import save_npz, write_json
from motion.clip_fit import ClipFit
from motion.sequence import MotionSequence

SCHEMA_VERSION = 1
IDENTITY_FILE = "identity.json"
CONFIG_FILE = "prepare.config.yaml"
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "outputs" / "identities"


def identity_dir(identity: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of ``identity`` under the workspace root (default ``outputs/identities``)."""
    if not identity or any(c in identity for c in '/\\:*?"<>|') or identity.startswith("."):
        raise InputError(
            f"identity name {identity!r} is not usable as a folder name",
            "use letters, digits, '-' and '_' (for example --identity andrew)",
        )
    return Path(root if root is not None else DEFAULT_ROOT) / identity


def checksum(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks. SHA-256 rather than BLAKE2b: CPUs with SHA
    instructions hash it about twice as fast (1.5 against 0.7 GB/s measured on one core here)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Damage:
    """A workspace file that is not what ``identity.json`` recorded when it was written.

    Attributes:
        name: the file's path inside the workspace (e.g. ``chunks/00003.npz``).
        step: the preparation step that writes it (``frames`` for a chunk).
        problem: what is wrong: missing, its size against the recorded one, or its checksum.
    """

    name: str
    step: str
    problem: str


@dataclass
class Chunk:
    """One chunk of a workspace's frames, decoded on demand.

    Attributes:
        start: index of the chunk's first frame.
        landmarks: float32 [n, 478, 3] raw tracked landmarks (pixels; rows of frames without a face are 0).
        found: bool [n] whether the tracker found the face.
        faces: int [n] how many faces the tracker saw.
    """

    start: int
    landmarks: np.ndarray
    found: np.ndarray
    faces: np.ndarray
    _jpeg: np.ndarray
    _jpeg_offsets: np.ndarray
    _masks: np.ndarray
    _mask_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.found)

    def frame(self, k: int) -> np.ndarray:
        """The chunk's ``k``-th frame: uint8 [S, S, 3] RGB."""
        data = self._jpeg[self._jpeg_offsets[k] : self._jpeg_offsets[k + 1]]
        return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def masks(self, k: int):
        """The chunk's ``k``-th frame's :class:`pipeline.masks.FrameMasks`."""
        from pipeline.masks import decode_masks

        return decode_masks(self._masks[self._mask_offsets[k] : self._mask_offsets[k + 1]].tobytes())


def encode_frame(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of an RGB frame (about 50 KB at 512 x 512: a five-minute clip stays a few hundred MB)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def write_chunk(
    path: Path,
    start: int,
    jpegs: Sequence[bytes],
    masks: Sequence[bytes],
    landmarks: np.ndarray,
    found: np.ndarray,
    faces: np.ndarray,
) -> None:
    """Write one chunk file atomically."""

    def pack(items: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.zeros(len(items) + 1, np.int64)
        offsets[1:] = np.cumsum([len(b) for b in items])
        return np.frombuffer(b"".join(items), np.uint8), offsets

    jpeg, jpeg_offsets = pack(jpegs)
    mask, mask_offsets = pack(masks)
    save_npz(
        path,
        schema_version=np.int32(SCHEMA_VERSION),
        start=np.int64(start),
        jpeg=jpeg,
        jpeg_offsets=jpeg_offsets,
        masks=mask,
        mask_offsets=mask_offsets,
        landmarks=np.asarray(landmarks, np.float32),
        found=np.asarray(found, bool),
        faces=np.asarray(faces, np.int16),
    )


def read_chunk(path: Path) -> Chunk:
    """Load a chunk file; raises :class:`InputError` when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as d:
            return Chunk(
                start=int(d["start"]),
                landmarks=d["landmarks"],
                found=d["found"],
                faces=d["faces"],
                _jpeg=d["jpeg"],
                _jpeg_offsets=d["jpeg_offsets"],
                _masks=d["masks"],
                _mask_offsets=d["mask_offsets"],
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(
            f"workspace chunk {path} is unreadable ({err})",
            "run prepare again on this identity: it rebuilds what is missing",
        ) from err


class Workspace:
    """An identity's prepared data. Open an existing one with :meth:`open`.

    It is the :class:`renderers.footage.Footage` the trained renderers learn from.

    Frames and masks are read chunk by chunk (one decoded chunk cached), so training can stream a
    ten-minute clip without holding it in memory.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.info: dict[str, Any] = {}
        self._chunk_cache: Chunk | None = None

    # ---- files -------------------------------------------------------------------------------------
    @property
    def chunk_dir(self) -> Path:
        return self.path / "chunks"

    def chunk_path(self, index: int) -> Path:
        return self.chunk_dir / f"{index:05d}.npz"

    def renderer_dir(self, renderer: str) -> Path:
        """Where the identity's trained ``renderer`` (its registry name) is saved."""
        return self.path / "renderers" / renderer

    @property
    def motion_model_dir(self) -> Path:
        """Where the identity's own audio-to-mouth model is saved (``train --motion``)."""
        return self.path / "motion_model"

    def has_motion_model(self) -> bool:
        return (self.motion_model_dir / "model.safetensors").is_file()

    def has_trained_renderer(self, renderer: str) -> bool:
        return (self.renderer_dir(renderer) / "model.safetensors").is_file()

    def trained_renderer_dir(self, renderer: str) -> Path:
        """:meth:`renderer_dir` when a trained renderer is there, else an error saying how to train it."""
        directory = self.renderer_dir(renderer)
        if not self.has_trained_renderer(renderer):
            raise InputError(
                f"identity {self.name!r} has no trained {renderer} renderer ({directory} is empty)",
                f"train it first: talking-portrait train --identity {self.name} --renderer {renderer}",
            )
        return directory

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- identity.json -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> Workspace:
        """Open a prepared (or partly prepared) workspace, checking its schema version."""
        ws = cls(path)
        info_path = ws.path / IDENTITY_FILE
        if not info_path.is_file():
            raise InputError(
                f"{ws.path} is not an identity workspace (no {IDENTITY_FILE})",
                "run `talking-portrait prepare VIDEO --identity NAME` first, or check the path",
            )
        try:
            ws.info = json.loads(info_path.read_text())
        except (OSError, ValueError) as err:
            raise InputError(
                f"{info_path} is unreadable ({err})", "prepare the identity again with --force"
            ) from err
        version = ws.info.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(
                f"workspace {ws.path} has schema version {version}; this version of talking-portrait reads "
                f"version {SCHEMA_VERSION}",
                "prepare the identity again with --force (or use the talking-portrait version that made it)",
            )
        files = ws.info.get("files", {})
        if not isinstance(files, dict) or not all(
            isinstance(r, dict) and isinstance(r.get("size"), int) and {"sha256", "step"} <= r.keys()
            for r in files.values()
        ):
            raise InputError(
                f"{info_path} has an unreadable list of files", "prepare the identity again with --force"
            )
        return ws

    def save_info(self) -> None:
        """Write ``identity.json`` atomically."""
        self.info["schema_version"] = SCHEMA_VERSION
        write_json(self.path / IDENTITY_FILE, self.info)

    def step_done(self, step: str) -> bool:
        return bool(self.info.get("steps", {}).get(step))

    # ---- integrity ---------------------------------------------------------------------------------
    @property
    def checksums_recorded(self) -> bool:
        """Whether the workspace records its files' checksums (those prepared before it did do not)."""
        return "files" in self.info

    def record(self, name: str, step: str) -> None:
        """Record the size and checksum of the workspace file ``name`` (relative path), written by ``step``,
        as it is now; :meth:`save_info` writes the record."""
        path = self.path / name
        self.info.setdefault("files", {})[name] = {
            "size": path.stat().st_size,
            "sha256": checksum(path),
            "step": step,
        }

    def recorded(self, step: str | None = None) -> dict[str, dict[str, Any]]:
        """The file records (name -> size, checksum, step) of ``step``, or of every step."""
        files = self.info.get("files", {})
        return {name: r for name, r in files.items() if step is None or r["step"] == step}

    def forget(self, names: Sequence[str]) -> None:
        """Drop the records of ``names`` (files about to be rewritten)."""
        files = self.info.get("files", {})
        for name in names:
            files.pop(name, None)

    def verify(self) -> list[Damage]:
        """The recorded files that are missing or whose size or checksum differs from the record, in name
        order. A workspace without records (:attr:`checksums_recorded` False) has its chunks and ``.npz``
        files checked against the CRCs inside them instead (a truncated or bit-flipped one fails)."""
        if not self.checksums_recorded:
            return self._unrecorded_damage()
        damage = []
        for name, want in sorted(self.recorded().items()):
            problem = self.problem(name, want)
            if problem is not None:
                damage.append(Damage(name, want["step"], problem))
        return damage

    def problem(self, name: str, want: dict[str, Any]) -> str | None:
        """What is wrong with the file ``name`` against its record ``want`` (missing, its size, its
        checksum), or None when it is as it was written."""
        path = self.path / name
        if not path.is_file():
            return "missing"
        if (size := path.stat().st_size) != want["size"]:
            return f"{size} bytes where {want['size']} were written"
        if checksum(path) != want["sha256"]:
            return "its checksum differs from the one recorded when it was written"
        return None

    def _unrecorded_damage(self) -> list[Damage]:
        expected: dict[str, str] = {}
        if self.step_done("frames"):
            count = -(-self.num_frames // self.chunk_size)
            expected |= {self.chunk_path(c).relative_to(self.path).as_posix(): "frames" for c in range(count)}
        for name, step in (("tracking.npz", "tracking"), ("audio_features.npz", "audio")):
            if self.step_done(step) and (step != "audio" or self.info.get("audio")):
                expected[name] = step
        damage = []
        for name, step in sorted(expected.items()):
            path = self.path / name
            if not path.is_file():
                damage.append(Damage(name, step, "missing"))
                continue
            try:
                with zipfile.ZipFile(path) as z:
                    bad = z.testzip()  # reads every member against its CRC
                problem = None if bad is None else f"{bad} inside it fails its CRC"
            except (OSError, EOFError, zipfile.BadZipFile) as err:
                problem = f"not a whole .npz file ({err})"
            if problem is not None:
                damage.append(Damage(name, step, problem))
        return damage

    def repair_command(self) -> str:
        """The command that repairs (and otherwise resumes) this workspace's preparation: prepare again
        from the same source with the settings the workspace was prepared with (its own config file)."""
        words = ["talking-portrait", "prepare", self.info.get("source", {}).get("path", "VIDEO")]
        words += ["--identity", self.name, "--workspace", str(self.path.parent)]
        if (self.path / CONFIG_FILE).is_file():
            words += ["--config", str(self.path / CONFIG_FILE)]
        if self.info.get("audio_override"):
            words += ["--audio", self.info["audio_override"]]
        return shlex.join(words)

    def require_intact(self, damage: list[Damage] | None = None) -> None:
        """Raise :class:`InputError` naming the damaged files and the command that repairs them, when
        :meth:`verify` finds damage (before training or anything else reads the workspace); ``damage``:
        what :meth:`verify` found, when it has run already."""
        damage = self.verify() if damage is None else damage
        if damage:
            first = damage[0]
            more = f" and {len(damage) - 1} more" if len(damage) > 1 else ""
            raise InputError(
                f"identity workspace {self.path} is damaged: {first.name} ({first.problem}){more}",
                f"repair it (prepare redoes only what is damaged): {self.repair_command()}",
            )

    def require(self, step: str) -> None:
        """Raise a clear error when ``step`` of preparation has not finished."""
        if not self.step_done(step):
            raise InputError(
                f"identity workspace {self.path} is not fully prepared (step {step!r} has not run)",
                "run `talking-portrait prepare` on it again: it resumes where it stopped",
            )

    # ---- frames ------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.info["num_frames"])

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def size(self) -> int:
        return int(self.info["size"])

    @property
    def chunk_size(self) -> int:
        return int(self.info["chunk_size"])

    def split(self, name: str) -> range:
        """Frame indices of the ``train`` or ``holdout`` part."""
        lo, hi = self.info["split"][name]
        return range(int(lo), int(hi))

    def chunk(self, index: int) -> Chunk:
        if self._chunk_cache is None or self._chunk_cache.start != index * self.chunk_size:
            self._chunk_cache = read_chunk(self.chunk_path(index))
        return self._chunk_cache

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i``: uint8 [S, S, 3] RGB."""
        return self.chunk(i // self.chunk_size).frame(i % self.chunk_size)

    def masks(self, i: int):
        """Masks of frame ``i`` (:class:`pipeline.masks.FrameMasks`)."""
        return self.chunk(i // self.chunk_size).masks(i % self.chunk_size)

    def iter_frames(self, indices: Sequence[int] | None = None) -> Iterator[tuple[int, np.ndarray, Any]]:
        """Yield ``(index, rgb, masks)`` for ``indices`` (default all), one chunk in memory at a time.

        Indices are visited in the given order; sort them (or shuffle within chunks) for best speed.
        """
        for i in range(self.num_frames) if indices is None else indices:
            c = self.chunk(i // self.chunk_size)
            yield i, c.frame(i % self.chunk_size), c.masks(i % self.chunk_size)

    def by_chunk(self, indices: Sequence[int]) -> dict[int, list[int]]:
        """``indices`` grouped by the chunk that holds them (chunk number -> frame indices, in order)."""
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(int(i) // self.chunk_size, []).append(int(i))
        return groups

    def iter_shuffled(self, indices: Sequence[int], seed: int = 0) -> Iterator[tuple[int, np.ndarray, Any]]:
        """Yield ``(index, rgb, masks)`` for ``indices`` in a random order that still reads each chunk once:
        chunks in random order, frames shuffled within each (a training epoch that streams)."""
        rng = np.random.default_rng(seed)
        by_chunk = self.by_chunk(indices)
        for c in rng.permutation(sorted(by_chunk)):
            frames = by_chunk[int(c)]
            yield from self.iter_frames([frames[k] for k in rng.permutation(len(frames))])

    # ---- derived data ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The identity's name: its folder's name."""
        return self.path.name

    def fit(self) -> ClipFit:
        """The clip fit of ``tracking.npz``."""
        self.require("tracking")
        return ClipFit.load(self.file("tracking.npz"))

    def tracked_frames(self, split: str | None = None, fit: ClipFit | None = None) -> np.ndarray:
        """int64 indices of the frames of ``split`` (None: all) whose tracking is valid (``fit``: the
        workspace's clip fit when already read)."""
        valid = (fit or self.fit()).valid
        span = range(self.num_frames) if split is None else self.split(split)
        return np.array([i for i in span if valid[i]], dtype=np.int64)

    def background(self) -> np.ndarray:
        """The background plate, uint8 [S, S, 3] RGB."""
        self.require("background")
        return cv2.cvtColor(cv2.imread(str(self.file("background.png"))), cv2.COLOR_BGR2RGB)

    def motion(self, frames: np.ndarray | None = None) -> MotionSequence:
        """The tracked motion of ``frames`` (default the whole clip), with camera poses."""
        return self.fit().motion(self.fps, frames)

    def summary(self) -> dict[str, Any]:
        """The numbers of ``report/summary.json`` (or what is known so far)."""
        path = self.report_dir / "summary.json"
        if path.is_file():
            return json.loads(path.read_text())
        return {"identity": self.info.get("identity"), "steps": sorted(self.info.get("steps", {}))}

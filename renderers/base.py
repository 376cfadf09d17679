"""The renderer contract: MotionSequence in, head RGBA frames out, saved as config + safetensors."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.errors import InputError
from common.files import atomic_path, write_json
from motion.sequence import MotionSequence

RENDERER_SCHEMA_VERSION = 1


@dataclass
class HeadFrame:
    """One rendered head, to be composited into the output frame.

    Attributes:
        rgb: uint8 [h, w, 3] RGB pixels of the head region.
        alpha: float32 [h, w] coverage in [0, 1]; 0 keeps the compositor's background there.
        box: (x0, y0, x1, y1) where the region sits in the output frame, in pixels (x1 - x0 == w).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    box: tuple[int, int, int, int]


class Renderer(ABC):
    """Turns motion into head frames. Subclasses register themselves by ``name``."""

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Renderer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            Renderer.registry[cls.name] = cls

    @abstractmethod
    def render(self, motion: MotionSequence, progress: bool = False) -> Iterator[HeadFrame]:
        """Yield one :class:`HeadFrame` per motion frame, in order."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Every setting needed to rebuild this renderer (JSON-serialisable)."""

    @abstractmethod
    def state_tensors(self) -> dict[str, np.ndarray]:
        """Arrays saved to ``model.safetensors``."""

    @classmethod
    @abstractmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> Renderer:
        """Rebuild from what :meth:`save` wrote."""

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory`` (each file atomically)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"class": self.name, "schema_version": RENDERER_SCHEMA_VERSION, **self.config_dict()}
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.state_tensors().items()}, str(tmp))
        write_json(directory / "config.json", config)
        return directory


def load_renderer(directory: str | os.PathLike) -> Renderer:
    """Load any registered renderer from a folder written by :meth:`Renderer.save` (no pickle involved)."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(
            f"{directory} is not a saved renderer (config.json or model.safetensors missing)",
            "point to a folder written by a renderer's save()",
        )
    try:
        config = json.loads(config_path.read_text())
        tensors = load_file(str(weights_path))
    except (ValueError, OSError) as exc:
        raise InputError(
            f"renderer files in {directory} are corrupt ({exc})", "save the renderer again"
        ) from exc
    if config.get("schema_version") != RENDERER_SCHEMA_VERSION:
        raise InputError(
            f"{directory} was saved with renderer schema {config.get('schema_version')}, "
            f"this version reads {RENDERER_SCHEMA_VERSION}",
            "save it again with this version",
        )
    name = str(config.get("class", ""))
    if name not in Renderer.registry and name.isidentifier():  # registered on import; heavy ones load late
        import contextlib
        import importlib

        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"renderers.{name}.renderer")
    cls = Renderer.registry.get(name)
    if cls is None:
        raise InputError(f"unknown renderer class {config.get('class')!r} in {directory}", "check the folder")
    return cls.from_saved(config, tensors)

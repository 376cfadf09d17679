"""The renderer contract: MotionSequence in, head RGBA frames out, saved as config + safetensors."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.config import from_dict, to_dict
from common.errors import InputError
from common.files import atomic_path, write_json
from motion.sequence import POSE_CAMERA, MotionSequence
from renderers.registry import RENDERERS

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
    """Turns motion into head frames. The renderers there are are listed in :mod:`renderers.registry`.

    A subclass names itself (``name``, its registry name), the dataclass of its saved settings
    (``config_type``, with a ``render`` section of render-time settings) and the kind of head pose it draws
    (``pose_kind``: relative head motion, or absolute camera poses).
    """

    name: ClassVar[str]
    config_type: ClassVar[type]
    pose_kind: ClassVar[str] = POSE_CAMERA
    config: Any

    @abstractmethod
    def render(self, motion: MotionSequence, progress: bool = False) -> Iterator[HeadFrame]:
        """Yield one :class:`HeadFrame` per motion frame, in order."""

    @abstractmethod
    def state_tensors(self) -> dict[str, np.ndarray]:
        """Arrays saved to ``model.safetensors``."""

    @classmethod
    @abstractmethod
    def from_saved(cls, config: Any, tensors: dict[str, np.ndarray]) -> Renderer:
        """Rebuild from its saved settings (a ``config_type``) and the arrays of ``model.safetensors``."""

    def model_config(self) -> Any:
        """The saved settings, a ``config_type`` (``config.json``'s ``model``)."""
        return self.config

    def check_motion(self, motion: MotionSequence) -> None:
        """Raise a clear error when ``motion`` carries another kind of pose than this renderer draws."""
        if motion.pose_kind != self.pose_kind:
            raise InputError(
                f"the {self.name} renderer draws {self.pose_kind} head poses, the motion carries "
                f"{motion.pose_kind} ones",
                "convert them first (motion.sequence.to_camera turns relative motion into camera poses)",
            )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory`` (each file atomically)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "class": self.name,
            "schema_version": RENDERER_SCHEMA_VERSION,
            "model": to_dict(self.model_config()),
        }
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.state_tensors().items()}, str(tmp))
        write_json(directory / "config.json", config)
        return directory


def load_renderer(
    directory: str | os.PathLike, render: dict[str, Any] | None = None, focal: float | None = None
) -> Renderer:
    """Load any registered renderer from a folder written by :meth:`Renderer.save` (no pickle involved).

    Args:
        render: render-time settings that replace the saved ones (e.g. ``{"steps": 2}``); a setting the
            renderer does not have is a clear error naming it.
        focal: the camera to draw with (pixels at the saved image size), for renderers that have one: a
            trained identity evaluated on another clip of the person takes that clip's camera.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(
            f"{directory} is not a saved renderer (config.json or model.safetensors missing)",
            "point to a folder written by a renderer's save()",
        )
    try:
        saved = json.loads(config_path.read_text())
        tensors = load_file(str(weights_path))
    except (ValueError, OSError, SafetensorError) as exc:  # SafetensorError is neither of the others
        raise InputError(
            f"renderer files in {directory} are corrupt ({exc})",
            "train or save the renderer again (a killed training run resumes with the same command)",
        ) from exc
    if not isinstance(saved, dict) or saved.get("schema_version") != RENDERER_SCHEMA_VERSION:
        version = saved.get("schema_version") if isinstance(saved, dict) else None
        raise InputError(
            f"{directory} was saved with renderer schema {version}, "
            f"this version reads {RENDERER_SCHEMA_VERSION}",
            "save it again with this version",
        )
    name = str(saved.get("class", ""))
    if name not in RENDERERS:
        raise InputError(
            f"unknown renderer class {saved.get('class')!r} in {directory}",
            f"check the folder: it should hold one of {', '.join(RENDERERS)}",
        )
    cls = RENDERERS[name].renderer_class()
    model = saved.get("model")
    if not isinstance(model, dict):
        raise InputError(f"{config_path} has no model settings", "save the renderer again")
    model = _with_overrides(cls, model, render or {}, focal)
    config = from_dict(cls.config_type, model, "model")
    try:
        return cls.from_saved(config, tensors)
    except (KeyError, ValueError, RuntimeError) as exc:  # a tensor missing or of the wrong shape
        raise InputError(
            f"the weights in {weights_path} do not fit its {name} config ({str(exc).splitlines()[0][:200]})",
            "train or save the renderer again",
        ) from exc


def _with_overrides(
    cls: type[Renderer], model: dict[str, Any], render: dict[str, Any], focal: float | None
) -> dict[str, Any]:
    """The saved ``model`` settings with render-time ones replaced, each checked against what ``cls`` has."""
    fields = {f.name: f for f in dataclasses.fields(cls.config_type)}
    render_fields = {f.name for f in dataclasses.fields(typing.get_type_hints(cls.config_type)["render"])}
    for key in render:
        if key not in render_fields:
            raise InputError(
                f"the {cls.name} renderer has no {key} setting",
                f"leave {key} out for this renderer (its settings: {', '.join(sorted(render_fields))})",
            )
    out = {**model, "render": {**model.get("render", {}), **render}}
    if focal is not None and "focal" in fields:
        out["focal"] = float(focal)
    return out

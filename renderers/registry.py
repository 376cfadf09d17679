"""The renderers there are, by name: where each one's class, trainer and portrait builder live.

Every place that offers a choice of renderer (the CLI's ``--renderer`` flags, ``generate``, ``train``,
``render``, ``eval``, :func:`renderers.base.load_renderer`) reads it from :data:`RENDERERS`, so adding a
renderer is one entry here. Modules are named, not imported: choosing the warp renderer never loads a NeRF
or a diffusion network.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.errors import InputError

PRESETS = ("tiny", "preview", "full")
"""Sizes of every trained renderer's settings: ``configs/<renderer>_<preset>.yaml`` (tiny: seconds on a CPU,
for tests; preview: a CPU; full: a GPU)."""


@dataclass(frozen=True)
class RendererEntry:
    """One renderer.

    Attributes:
        name: what ``--renderer`` and ``config.json``'s ``class`` call it.
        summary: one line for help texts.
        renderer: ``module:Class`` of the :class:`renderers.base.Renderer` subclass.
        train_config: ``module:Class`` of its training settings (None: it needs no training).
        train: ``module:function`` that trains it: ``train(footage, out_dir, config, progress, on_step)``.
        portrait: ``module:function`` that builds it for one photo (None: it cannot paint a new person):
            ``portrait(photo, fit, settings, checkpoint) -> Renderer``.
        several_identities: whether one training run may learn several people.
    """

    name: str
    summary: str
    renderer: str
    train_config: str | None = None
    train: str | None = None
    portrait: str | None = None
    several_identities: bool = False

    @property
    def trainable(self) -> bool:
        return self.train is not None

    def renderer_class(self) -> type:
        """The :class:`renderers.base.Renderer` subclass."""
        return _resolve(self.renderer)

    def trainer(self) -> tuple[type, Callable[..., Any]]:
        """(training settings class, train function)."""
        if self.train is None or self.train_config is None:
            raise InputError(f"the {self.name} renderer needs no training", "use it directly with generate")
        return _resolve(self.train_config), _resolve(self.train)

    def portrait_builder(self) -> Callable[..., Any]:
        if self.portrait is None:
            choices = ", ".join(portrait_names())
            raise InputError(f"the {self.name} renderer cannot paint a portrait", f"use one of: {choices}")
        return _resolve(self.portrait)


RENDERERS: dict[str, RendererEntry] = {
    entry.name: entry
    for entry in (
        RendererEntry(
            "warp",
            "deforms one photo along the face model; no training",
            "renderers.warp.renderer:WarpRenderer",
            portrait="renderers.warp.renderer:portrait_renderer",
        ),
        RendererEntry(
            "nerf",
            "a radiance field trained on one identity's footage",
            "renderers.nerf.renderer:NerfRenderer",
            "renderers.nerf.train:NerfTrainConfig",
            "renderers.nerf.train:train",
        ),
        RendererEntry(
            "diffusion",
            "a diffusion network trained on one or several identities' footage",
            "renderers.diffusion.renderer:DiffusionRenderer",
            "renderers.diffusion.train:DiffusionTrainConfig",
            "renderers.diffusion.train:train",
            portrait="renderers.diffusion.renderer:portrait_renderer",
            several_identities=True,
        ),
    )
}


def entry(name: str) -> RendererEntry:
    """The registry entry called ``name``; an unknown name is a clear error listing the known ones."""
    if name not in RENDERERS:
        raise InputError(f"unknown renderer {name!r}", f"use one of: {', '.join(RENDERERS)}")
    return RENDERERS[name]


def trainable_names() -> tuple[str, ...]:
    """The renderers that are trained on footage (``train``, ``render``, ``eval``)."""
    return tuple(name for name, e in RENDERERS.items() if e.trainable)


def portrait_names() -> tuple[str, ...]:
    """The renderers that can paint a person from one photo (``generate``)."""
    return tuple(name for name, e in RENDERERS.items() if e.portrait is not None)


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)

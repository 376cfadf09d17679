"""Renderers: motion -> head RGBA frames, behind one contract (:class:`renderers.base.Renderer`).

The renderers themselves load on first use, so that importing the contract does not load a NeRF or a
diffusion network.
"""

from __future__ import annotations

from typing import Any

from renderers.base import HeadFrame, Renderer, load_renderer

_LAZY = {
    "NerfRenderer": "renderers.nerf.renderer",
    "WarpConfig": "renderers.warp.renderer",
    "WarpRenderer": "renderers.warp.renderer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'renderers' has no attribute {name!r}")


__all__ = ["HeadFrame", "NerfRenderer", "Renderer", "WarpConfig", "WarpRenderer", "load_renderer"]

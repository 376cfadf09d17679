"""Renderers: motion -> head RGBA frames, behind one contract (:class:`renderers.base.Renderer`)."""

from renderers.base import HeadFrame, Renderer, load_renderer
from renderers.nerf.renderer import NerfRenderer
from renderers.warp.renderer import WarpConfig, WarpRenderer

__all__ = ["HeadFrame", "NerfRenderer", "Renderer", "WarpConfig", "WarpRenderer", "load_renderer"]

"""The ``nerf`` renderer: a trained identity's radiance field rendered at a frame's pose and expression."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from common.progress import bar as progress_bar
from motion.blendshapes import EXPRESSION_NAMES
from motion.sequence import MotionSequence
from renderers.base import HeadFrame, Renderer
from renderers.device import pick_device
from renderers.head_box import HeadBox
from renderers.nerf.field import FieldConfig, TriPlaneField
from renderers.nerf.occupancy import Occupancy
from renderers.nerf.rays import camera_rays, volume_render


@dataclass
class NerfRenderConfig:
    """How a trained field is rendered."""

    samples: int = 64
    """Samples per ray."""
    ray_chunk: int = 16384
    """Rays evaluated at once (memory)."""
    device: str = "auto"
    """cuda, cpu or auto."""
    resolution: int = 0
    """Side the field is rendered at (0: the workspace frame size); the head is scaled up to the frame."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid that lets rays skip empty space (0: no grid)."""
    occupancy_threshold: float = 0.01
    """Opacity per marching step under which a cell counts as empty."""


@dataclass
class NerfModelConfig:
    """Everything that defines a trained identity's field (saved in ``config.json``)."""

    network: FieldConfig = field(default_factory=FieldConfig)
    """The field's sizes."""
    render: NerfRenderConfig = field(default_factory=NerfRenderConfig)
    """Rendering settings."""
    image_size: int = 512
    """Side of the workspace frames the camera refers to."""
    focal: float = 1100.0
    """Focal length in pixels at ``image_size``."""
    box_lo: tuple[float, float, float] = (0.0, 0.0, 0.0)
    box_hi: tuple[float, float, float] = (1.0, 1.0, 1.0)
    num_frames: int = 1
    """Training frames (appearance codes)."""


class NerfRenderer(Renderer):
    """Render a trained field. Build it with :func:`renderers.nerf.train.train` or :func:`load_renderer`."""

    name = "nerf"
    config_type = NerfModelConfig

    def __init__(self, config: NerfModelConfig, field_module: TriPlaneField | None = None) -> None:
        self.config = config
        self.box = HeadBox(np.array(config.box_lo, np.float32), np.array(config.box_hi, np.float32))
        self.field = field_module or TriPlaneField(config.network, config.num_frames)
        self.device = pick_device(config.render.device)
        render = config.render
        self.occupancy = (
            Occupancy(self.box, render.occupancy_resolution, render.samples, render.occupancy_threshold)
            if render.occupancy_resolution
            else None
        )

    def skip_grid(self) -> Occupancy | None:
        """The occupancy grid when it has been filled, else None (dense sampling)."""
        return self.occupancy if self.occupancy is not None and self.occupancy.ready else None

    # ---- rendering -----------------------------------------------------------------------------------
    def projected_box(
        self, rotation: np.ndarray, translation: np.ndarray, size: int
    ) -> tuple[int, int, int, int]:
        """Pixel bounds (x0, y0, x1, y1) at ``size`` of the head box seen from a pose."""
        return self.box.pixel_bounds(
            rotation, translation, self.config.focal * size / self.config.image_size, size
        )

    @torch.no_grad()
    def render_image(
        self,
        rotation: np.ndarray,
        translation: np.ndarray,
        expression: np.ndarray,
        size: int,
        appearance: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """One frame at ``size`` x ``size``: premultiplied rgb float [h, w, 3], opacity [h, w] over the
        projected head box, and that box."""
        field_module = self.field.to(self.device).eval()
        grid = self.skip_grid()
        if grid is not None:
            grid.to(self.device)
        x0, y0, x1, y1 = self.projected_box(rotation, translation, size)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((0, 0, 3), np.float32), np.zeros((0, 0), np.float32), (0, 0, 0, 0)
        gy, gx = torch.meshgrid(
            torch.arange(y0, y1, dtype=torch.float32),
            torch.arange(x0, x1, dtype=torch.float32),
            indexing="ij",
        )
        scale = size / self.config.image_size
        pixels = (torch.stack([gx.reshape(-1), gy.reshape(-1)], 1) + 0.5).to(self.device)
        origins, dirs = camera_rays(
            torch.as_tensor(rotation, dtype=torch.float32, device=self.device),
            torch.as_tensor(translation, dtype=torch.float32, device=self.device),
            self.config.focal * scale,
            (size, size),
            pixels,
        )
        code = field_module.mean_appearance() if appearance is None else appearance
        expr = torch.as_tensor(expression, dtype=torch.float32, device=self.device)
        rgb, alpha = [], []
        for start in range(0, len(pixels), self.config.render.ray_chunk):
            sl = slice(start, start + self.config.render.ray_chunk)
            n = len(origins[sl])
            out = volume_render(
                field_module,
                self.box,
                origins[sl],
                dirs[sl],
                expr.expand(n, -1),
                code.expand(n, -1),
                self.config.render.samples,
                occupancy=grid,
            )
            rgb.append(out["rgb"])
            alpha.append(out["opacity"])
        h, w = y1 - y0, x1 - x0
        rgb_img = torch.cat(rgb).view(h, w, 3).float().cpu().numpy()
        alpha_img = torch.cat(alpha).view(h, w).float().cpu().numpy()
        return rgb_img, alpha_img, (x0, y0, x1, y1)

    def render(self, motion: MotionSequence, progress: bool = False) -> Iterator[HeadFrame]:
        self.check_motion(motion)
        motion = motion.with_names(EXPRESSION_NAMES) if motion.names != EXPRESSION_NAMES else motion
        frames = progress_bar(range(len(motion)), desc="render", unit="frame", enabled=progress)
        full = self.config.image_size
        size = self.config.render.resolution or full
        for t in frames:
            pose = motion.pose[t]
            rgb, alpha, box = self.render_image(pose[:3], pose[3:], motion.expression[t], size)
            colour = rgb / np.maximum(alpha, 1e-4)[..., None]  # un-premultiply for the compositor
            if size != full:  # the compositor scales the head region up to this box
                box = tuple(round(v * full / size) for v in box)
            rgb8 = (np.clip(colour, 0, 1) * 255).round().astype(np.uint8)
            yield HeadFrame(rgb8, alpha.astype(np.float32), box)

    # ---- saving --------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, np.ndarray]:
        state = dict(self.field.state_dict())
        if self.occupancy is not None:
            state.update({f"occupancy.{k}": v for k, v in self.occupancy.state_dict().items()})
        return {k: v.detach().cpu().numpy() for k, v in state.items()}

    @classmethod
    def from_saved(cls, config: NerfModelConfig, tensors: dict[str, np.ndarray]) -> NerfRenderer:
        renderer = cls(config)
        state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
        grid = {k.removeprefix("occupancy."): v for k, v in state.items() if k.startswith("occupancy.")}
        renderer.field.load_state_dict({k: v for k, v in state.items() if not k.startswith("occupancy.")})
        if renderer.occupancy is not None and grid:
            renderer.occupancy.load_state_dict(grid)
        return renderer

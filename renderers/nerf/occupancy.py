"""Occupancy grid of a head field: which cells of the head box hold anything, under any trained expression.

Rays skip the empty cells. The grid is nerfacc's ``OccGridEstimator`` on every device. On CUDA its ray
marcher (nerfacc's own kernels) places samples only in occupied cells and stops a ray once it is opaque; on
a CPU the dense samples between the box's entry and exit are kept and those that fall in empty cells are not
evaluated (their density is zero). The grid is updated during training the way instant-NGP does it (every
few steps, an exponential moving maximum of each cell's opacity), probing the field with the expressions of
random training frames so cells that fill only when the mouth opens stay occupied. A last full pass at the
end of training takes the maximum over many expressions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from renderers.head_box import HeadBox

log = logging.getLogger(__name__)

_MARCHER: dict[str, bool] = {}


def marcher_available() -> bool:
    """Whether nerfacc's CUDA ray marcher loads (it builds itself on first use); warns once if not."""
    if "ok" not in _MARCHER:
        try:
            from nerfacc.cuda._backend import _C

            _MARCHER["ok"] = _C is not None
        except Exception as err:  # a failed build raises anything from OSError to RuntimeError
            log.warning("nerfacc's CUDA ray marcher is unavailable (%s); using dense sampling", err)
            _MARCHER["ok"] = False
    return _MARCHER["ok"]


class Occupancy(nn.Module):
    """The occupancy grid over a head box.

    Args:
        box: the head box (the grid spans it). resolution: cells per side.
        samples: dense samples per ray of the renderer; the marching step is the box's mean side over it.
        threshold: opacity per step under which a cell counts as empty.
    """

    def __init__(self, box: HeadBox, resolution: int, samples: int, threshold: float = 0.01) -> None:
        super().__init__()
        from nerfacc import OccGridEstimator

        self.box = box
        self.threshold = threshold
        self.step_size = float((box.hi - box.lo).mean()) / samples
        aabb = torch.tensor([*box.lo.tolist(), *box.hi.tolist()], dtype=torch.float32)
        self.estimator = OccGridEstimator(roi_aabb=aabb, resolution=resolution, levels=1)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @property
    def ready(self) -> bool:
        """True once the grid has been filled from the field at least once."""
        return bool(self.updates > 0)

    def _probe(self, field, expressions: torch.Tensor, chunk: int = 1 << 18) -> Callable:
        """Opacity of one step at world points, under the expression of a random training frame each."""

        def occupancy(points: torch.Tensor) -> torch.Tensor:
            out = []
            for start in range(0, len(points), chunk):
                p = points[start : start + chunk]
                pick = torch.randint(len(expressions), (len(p),), device=p.device)
                density = field.density(self.box.normalise(p), expressions[pick]).float()
                out.append(density * self.step_size)
            return torch.cat(out)[:, None]

        return occupancy

    @torch.no_grad()
    def update(self, step: int, field, expressions: torch.Tensor, every: int = 16, warmup: int = 256) -> None:
        """Training-time update at ``step`` (every ``every`` steps; all cells during ``warmup``)."""
        if step % every:
            return
        self.estimator.train()
        self.estimator._update(
            step=step,
            occ_eval_fn=self._probe(field, expressions),
            occ_thre=self.threshold,
            ema_decay=0.95,
            warmup_steps=warmup,
        )
        self.updates += 1

    @torch.no_grad()
    def refresh(self, field, expressions: torch.Tensor, rounds: int = 8) -> None:
        """Rebuild the grid from the field: every cell, the maximum over ``rounds`` random expressions."""
        self.estimator.occs.zero_()
        for _ in range(rounds):
            self.estimator._update(
                step=0,
                occ_eval_fn=self._probe(field, expressions),
                occ_thre=self.threshold,
                ema_decay=1.0,
                warmup_steps=1,
            )
        self.updates += 1

    def occupied(self, points: torch.Tensor) -> torch.Tensor:
        """bool [N]: whether head-frame points [N, 3] lie in occupied cells (False outside the box)."""
        res = self.estimator.resolution.to(points.device)
        lo = torch.as_tensor(self.box.lo, dtype=points.dtype, device=points.device)
        hi = torch.as_tensor(self.box.hi, dtype=points.dtype, device=points.device)
        cell = torch.floor((points - lo) / (hi - lo) * res).long()
        inside = ((cell >= 0) & (cell < res)).all(-1)
        cell = torch.minimum(cell.clamp_min(0), res - 1)
        return self.estimator.binaries[0, cell[:, 0], cell[:, 1], cell[:, 2]] & inside

    def occupied_fraction(self) -> float:
        """Share of the box's cells that are occupied."""
        return float(self.estimator.binaries.float().mean())

    def march(
        self,
        field,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        near: torch.Tensor,
        far: torch.Tensor,
        expression: torch.Tensor,
        appearance: torch.Tensor,
        stratified: bool,
    ) -> dict[str, torch.Tensor]:
        """Render rays with nerfacc's marcher (CUDA): samples only in occupied cells, early termination.

        Returns ``rgb`` [M, 3] premultiplied, ``opacity`` [M], ``depth`` [M] as the dense renderer does.
        """
        from nerfacc import rendering

        def position(t_starts, t_ends, rays):
            mid = (t_starts + t_ends)[:, None] / 2
            return self.box.normalise(origins[rays] + dirs[rays] * mid)

        def sigma_fn(t_starts, t_ends, rays):
            return field.density(position(t_starts, t_ends, rays), expression[rays]).float()

        def rgb_sigma_fn(t_starts, t_ends, rays):
            density, rgb, _ = field(position(t_starts, t_ends, rays), expression[rays], appearance[rays])
            return rgb.float(), density.float()

        rays, t_starts, t_ends = self.estimator.sampling(
            origins,
            dirs,
            sigma_fn=sigma_fn,
            t_min=near,
            t_max=far,
            render_step_size=self.step_size,
            stratified=stratified,
            early_stop_eps=1e-4,
            alpha_thre=self.threshold * 0.1,
        )
        rgb, opacity, depth, _ = rendering(
            t_starts, t_ends, rays, n_rays=len(origins), rgb_sigma_fn=rgb_sigma_fn
        )
        return {"rgb": rgb, "opacity": opacity[:, 0], "depth": depth[:, 0]}

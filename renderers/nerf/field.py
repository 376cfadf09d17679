"""The radiance field of one identity's head: tri-plane hash grid + small MLPs, driven by expression.

Conditioning is region-aware: at every position a small network reads the position's features and
produces an attention weight per expression coefficient, so the jaw coefficient moves the chin and lips but
not the hair, and blinks move only the lids. The attended coefficients enter both the density and the
colour networks. A per-frame appearance code absorbs lighting and exposure drift of the training footage:
it is a colour gain and offset per channel applied to the whole frame, so it cannot learn anything spatial
(a per-frame latent fed to the colour network would learn the mouth of each frame and leave the expression
coefficients with nothing to explain). New motion is rendered with the mean code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from motion.blendshapes import EXPRESSION_NAMES
from renderers.nerf.ops.hashgrid import TriPlaneEncoding


@dataclass
class FieldConfig:
    """Size of the field."""

    levels: int = 12
    """Hash-grid levels per plane."""
    features: int = 2
    """Features per level."""
    log2_table_size: int = 16
    """Rows per level's hash table (log2)."""
    base_resolution: int = 16
    """Cells per side of the coarsest level."""
    finest_resolution: int = 1024
    """Cells per side of the finest level."""
    hidden: int = 64
    """Width of the density and colour networks."""
    geometry_features: int = 15
    """Features the density network hands to the colour network."""
    attention_hidden: int = 32
    """Width of the per-position attention over expression coefficients."""
    appearance_dim: int = 6
    """Size of the per-frame appearance code: a gain and an offset per colour channel."""
    implementation: str = "auto"
    """Hash-grid backend: auto, cuda, torch or tcnn."""


def _mlp(inputs: int, hidden: int, outputs: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    mods.append(nn.Linear(width, outputs))
    return nn.Sequential(*mods)


class TriPlaneField(nn.Module):
    """Density and colour of head-frame points under an expression.

    Args:
        config: sizes. num_frames: training frames (one appearance code each).
        num_expressions: coefficients per frame (:data:`EXPRESSION_NAMES`).
    """

    def __init__(
        self, config: FieldConfig, num_frames: int, num_expressions: int = len(EXPRESSION_NAMES)
    ) -> None:
        super().__init__()
        self.config = config
        self.num_expressions = num_expressions
        self.encoding = TriPlaneEncoding(
            levels=config.levels,
            features=config.features,
            log2_table_size=config.log2_table_size,
            base_resolution=config.base_resolution,
            finest_resolution=config.finest_resolution,
            implementation=config.implementation,
        )
        enc = self.encoding.output_dim
        self.attention = _mlp(enc, config.attention_hidden, num_expressions, layers=1)
        self.density_net = _mlp(enc + num_expressions, config.hidden, 1 + config.geometry_features)
        self.colour_net = _mlp(config.geometry_features + num_expressions, config.hidden, 3)
        if config.appearance_dim != 6:
            raise ValueError("appearance_dim must be 6 (a gain and an offset per colour channel)")
        self.appearance = nn.Embedding(max(num_frames, 1), config.appearance_dim)
        nn.init.zeros_(self.appearance.weight)

    def forward(
        self, points: torch.Tensor, expression: torch.Tensor, appearance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Field values at points.

        Args:
            points: [N, 3] in the head box, normalised to [-1, 1].
            expression: [N, E] coefficients of each point's frame.
            appearance: [N, 6] appearance codes of each point's frame (colour gain - 1, colour offset).
        Returns:
            density [N] (>= 0), rgb [N, 3] (about [0, 1]), attention [N, E] in [0, 1].
        """
        raw, attention, attended = self._geometry(points, expression)
        density = torch.exp(raw[:, 0].clamp(max=15.0) - 1.0)  # truncated exp: steep but finite
        rgb = torch.sigmoid(self.colour_net(torch.cat([raw[:, 1:], attended], 1)))
        rgb = rgb * (1.0 + appearance[:, :3]) + appearance[:, 3:]
        return density, rgb, attention

    def density(self, points: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """Density [N] alone, for the occupancy grid: ``points`` [N, 3] normalised, ``expression`` [N, E]."""
        raw, _, _ = self._geometry(points, expression)
        return torch.exp(raw[:, 0].clamp(max=15.0) - 1.0)

    def _geometry(
        self, points: torch.Tensor, expression: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.encoding(points)
        attention = torch.sigmoid(self.attention(feats))
        attended = attention * expression
        return self.density_net(torch.cat([feats, attended], 1)), attention, attended

    def mean_appearance(self) -> torch.Tensor:
        """[A] the average training appearance code (used for new motion)."""
        return self.appearance.weight.mean(0)

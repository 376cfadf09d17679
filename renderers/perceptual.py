"""LPIPS perceptual distance (Zhang et al. 2018, "alex" network, version 0.1) in plain torch.

The ``lpips`` package imports torchvision, which must never be imported here (on CPU machines the index's
torchvision is a CUDA build that does not import next to the CPU torch), so this module rebuilds the same
network: torchvision's AlexNet convolutional trunk (same layer layout and state-dict keys), tapped after its
five ReLUs, with lpips's per-layer 1x1 linear heads on top. Its output matches ``lpips.LPIPS(net="alex")``
called with ``normalize=True``.

Nothing is downloaded: LPIPS is optional and used only when its two weight files are on disk.

- backbone: torchvision's ImageNet AlexNet checkpoint ``alexnet-owt-7be5be79.pth`` (only ``features.*`` is
  used), found in ``$TALKING_PORTRAIT_LPIPS_DIR`` or in the torch hub cache where torchvision keeps it
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``);
- heads: lpips's ``alex.pth`` (v0.1), found in ``$TALKING_PORTRAIT_LPIPS_DIR`` or inside an installed lpips
  package (``lpips/weights/v0.1/alex.pth``, located without importing lpips).

Either file may also be a ``.safetensors`` file with the same keys. ``.pth`` files are read with
``weights_only=True``: nothing in them is executed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from common.errors import InputError, MissingWeightsError

ENV_DIR = "TALKING_PORTRAIT_LPIPS_DIR"
BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
HEADS_FILE = "alex.pth"
# Channels of the five tapped ReLU outputs (relu1..relu5).
CHANNELS = (64, 192, 384, 256, 256)
# Indices of the ReLUs in torchvision's ``alexnet().features``; LPIPS taps their outputs, before the pools.
RELU_TAPS = (1, 4, 7, 9, 11)
# Smallest image side the trunk accepts: the second max-pool needs a 3x3 input.
MIN_SIDE = 31


class LPIPSWeightsMissing(MissingWeightsError, InputError):
    """An LPIPS weight file is not on this machine (both a missing-weights and an input error)."""


class AlexFeatures(nn.Sequential):
    """AlexNet's convolutional trunk, laid out exactly as torchvision's ``alexnet().features``.

    Layers (state-dict keys ``N.weight``/``N.bias`` for the convolutions N = 0, 3, 6, 8, 10): conv 3->64 k11
    s4 p2, ReLU, max-pool 3/2, conv 64->192 k5 p2, ReLU, max-pool, conv 192->384 k3 p1, ReLU, conv 384->256
    k3 p1, ReLU, conv 256->256 k3 p1, ReLU, max-pool. Calling it runs the whole trunk like torchvision's.
    """

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )

    def relu_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of relu1..relu5 for ``x`` [N, 3, H, W] (already scaled), each [N, C_k, H_k, W_k].

        The final max-pool is not run: nothing taps it.
        """
        taps = []
        for index, layer in enumerate(self):
            x = layer(x)
            if index in RELU_TAPS:
                taps.append(x)
                if index == RELU_TAPS[-1]:
                    break
        return taps


class NetLinLayer(nn.Module):
    """lpips's per-layer head: dropout, then a 1x1 convolution C -> 1, no bias (key ``model.1.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, 1, H, W]."""
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance (alex, v0.1) between two image batches; frozen, but differentiable w.r.t. its inputs.

    The state dict is the backbone's ``features.*`` keys plus lpips's ``lin0.model.1.weight`` ..
    ``lin4.model.1.weight``. A fresh instance has random weights; :meth:`load` reads the real ones. The module
    always stays in eval mode (its dropout is lpips's, which is off at evaluation), even under a parent's
    ``.train()``, so that it can sit inside a model as a training loss.
    """

    def __init__(self) -> None:
        super().__init__()
        # lpips's ScalingLayer: maps [-1, 1] inputs to the backbone's ImageNet normalisation.
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.features = AlexFeatures()
        self.lin0 = NetLinLayer(CHANNELS[0])
        self.lin1 = NetLinLayer(CHANNELS[1])
        self.lin2 = NetLinLayer(CHANNELS[2])
        self.lin3 = NetLinLayer(CHANNELS[3])
        self.lin4 = NetLinLayer(CHANNELS[4])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode whatever ``mode`` is: LPIPS is a fixed metric, never trained here."""
        return super().train(False)

    @property
    def heads(self) -> list[NetLinLayer]:
        """The five linear heads, lin0..lin4."""
        return [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS distance between ``a`` and ``b``: [N, 3, H, W] RGB in [0, 1] each (H, W >= 31) -> [N].

        0 for identical images; larger is more different. Gradients flow to both inputs.
        """
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS needs two [N, 3, H, W] batches of one shape, got {a.shape}, {b.shape}")
        if min(a.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"LPIPS needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {a.shape}")
        dtype = self.shift.dtype
        n = a.shape[0]
        # One pass through the trunk for both batches.
        x = torch.cat([a.to(dtype), b.to(dtype)]) * 2 - 1  # [2N, 3, H, W] in [-1, 1]
        x = (x - self.shift) / self.scale
        total = x.new_zeros(n)
        for feats, head in zip(self.features.relu_outputs(x), self.heads, strict=True):
            feats = _unit_normalize(feats)
            diff = (feats[:n] - feats[n:]) ** 2  # [N, C_k, H_k, W_k]
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total

    @classmethod
    def load(
        cls,
        backbone: str | os.PathLike | None = None,
        heads: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
    ) -> LPIPS:
        """LPIPS with real weights, frozen, in eval mode, on ``device``.

        ``backbone`` is torchvision's ``alexnet-owt-7be5be79.pth`` and ``heads`` lpips's ``alex.pth`` (either
        may be ``.safetensors``); a path left out is searched for as the module docstring says. Raises
        :class:`LPIPSWeightsMissing` (an :class:`InputError`) naming the file to place where when one is
        missing, and :class:`InputError` for a file that is unreadable or not the expected weights.
        """
        backbone_path = Path(backbone) if backbone is not None else _find_backbone()
        heads_path = Path(heads) if heads is not None else _find_heads()
        if backbone_path is None or not backbone_path.is_file():
            raise _missing(BACKBONE_FILE, backbone_path)
        if heads_path is None or not heads_path.is_file():
            raise _missing(HEADS_FILE, heads_path)

        model = cls()
        state = {}
        backbone_tensors = _read_tensors(backbone_path)
        state.update(
            _checked(
                backbone_path,
                {k: v for k, v in backbone_tensors.items() if k.startswith("features.")},
                {k: v.shape for k, v in model.state_dict().items() if k.startswith("features.")},
                f"torchvision's AlexNet checkpoint {BACKBONE_FILE}",
            )
        )
        heads_expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith("lin")}
        heads_tensors = _read_tensors(heads_path)
        state.update(
            _checked(
                heads_path,
                {k: v for k, v in heads_tensors.items() if k in heads_expected},
                heads_expected,
                f"lpips's v0.1 {HEADS_FILE} for the alex network",
            )
        )
        model.load_state_dict(state, strict=True)
        return model.to(device)


def find_weights() -> tuple[Path, Path] | None:
    """The (backbone, heads) weight files LPIPS would load, or None when either is not on this machine."""
    backbone, heads = _find_backbone(), _find_heads()
    return (backbone, heads) if backbone is not None and heads is not None else None


def available() -> bool:
    """Whether both LPIPS weight files are on this machine (so :meth:`LPIPS.load` needs no paths)."""
    return find_weights() is not None


def _unit_normalize(feats: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each feature vector divided by its length over channels: [N, C, H, W] -> [N, C, H, W].

    ``vector_norm`` rather than ``sqrt(sum(x**2))``: same value, but its gradient is 0 (not NaN) where a
    ReLU output is all zero over channels.
    """
    return feats / (torch.linalg.vector_norm(feats, dim=1, keepdim=True) + eps)


def _hub_checkpoints() -> Path:
    """torch hub's checkpoint cache, where torchvision keeps downloaded weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _lpips_package_dir() -> Path | None:
    """The installed lpips package's folder, found without importing lpips (it imports torchvision)."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def _first_file(candidates: list[Path]) -> Path | None:
    """The first candidate that is a file (a ``.safetensors`` twin counts too), or None."""
    for path in candidates:
        for option in (path, path.with_suffix(".safetensors")):
            if option.is_file():
                return option
    return None


def _env_dir() -> Path | None:
    folder = os.environ.get(ENV_DIR)
    return Path(folder).expanduser() if folder else None


def _find_backbone() -> Path | None:
    folder = _env_dir()
    candidates = [folder / BACKBONE_FILE] if folder else []
    return _first_file([*candidates, _hub_checkpoints() / BACKBONE_FILE])


def _find_heads() -> Path | None:
    folder = _env_dir()
    candidates = [folder / HEADS_FILE] if folder else []
    package = _lpips_package_dir()
    if package is not None:
        candidates.append(package / "weights" / "v0.1" / HEADS_FILE)
    return _first_file(candidates)


def _missing(name: str, given: Path | None) -> LPIPSWeightsMissing:
    """The error for a weight file that is not there, saying which file to place where."""
    optional = "LPIPS is optional: everything else works without it"
    if given is not None:
        return LPIPSWeightsMissing(
            f"LPIPS weight file {given} not found", f"pass the path of {name} there; {optional}"
        )
    folder = _env_dir()
    place = f"{folder} (${ENV_DIR})" if folder else f"a folder named by ${ENV_DIR}"
    if name == BACKBONE_FILE:
        problem = f"LPIPS backbone {name} (torchvision's ImageNet AlexNet) not found"
        place = f"{place} or in {_hub_checkpoints()}"
    else:
        problem = f"LPIPS heads {name} (lpips v0.1, alex) not found"
        place = f"{place}, or install lpips with `pip install --no-deps lpips` (never with its dependencies)"
    return LPIPSWeightsMissing(problem, f"place {name} in {place}; {optional}")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping in a ``.pth`` (read with ``weights_only``) or a ``.safetensors`` file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn, foreign or hostile file: pickle, zip and format errors all land here
        raise InputError(
            f"LPIPS weight file {path} is unreadable ({type(err).__name__}: {err})",
            "replace it with an intact copy",
        ) from err
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise InputError(
            f"LPIPS weight file {path} is not a state dict of tensors", "replace it with an intact copy"
        )
    return dict(data)


def _checked(
    path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str
) -> dict[str, torch.Tensor]:
    """``tensors`` as float32 after checking they are exactly ``expected``'s keys and shapes, all finite."""
    fix = f"place {what} there"
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise InputError(f"{path} is not {what}: it has no {', '.join(missing)}", fix)
    out = {}
    for key, shape in expected.items():
        value = tensors[key]
        if value.shape != shape:
            raise InputError(
                f"{path} is not {what}: {key} has shape {list(value.shape)}, expected {list(shape)}", fix
            )
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise InputError(f"{path} is corrupt: {key} is not finite floating-point", fix)
        out[key] = value.float()
    return out

"""The diffusion network of one identity: a small pixel-space UNet that paints the head (RGB + alpha).

The network is a :class:`diffusers.UNet2DModel` trained from scratch on one person's footage. Its input is
the noisy head image (RGBA) stacked with the frame's conditioning image (the face model rasterised at the
frame's motion, :mod:`renderers.diffusion.conditioning`), a reference frame of the identity (RGB) and, when
enabled, the previous output frame (RGBA; zeros for the first frame). Every image is [N, C, H, W] in [-1, 1]
(the conditioning keeps its own ranges). The network predicts v (Salimans & Ho 2022) for the RGBA image.

Noise schedule: ``squaredcos_cap_v2`` (the cosine schedule of Nichol & Dhariwal 2021) rather than
``scaled_linear``. ``scaled_linear`` was tuned for Stable Diffusion's latents and does not reach pure noise:
with its betas (0.00085-0.012) it ends at ``alpha_bar_T = 0.0047`` (7 % of the image still shows through),
with the betas used here (diffusers' DDPM defaults, 0.0001-0.02) at ``alpha_bar_T = 0.0007`` (2.6 %). Training
then never sees pure noise while sampling starts from it, so one- or two-step sampling from the last timestep
(trailing spacing) is off (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").
The cosine schedule ends at ``alpha_bar_T ~ 2e-9``, zero terminal SNR for all purposes, which with
v-prediction makes the step from t = T well defined (v = -x0 there), and it is the usual schedule for
pixel-space images. At 256 px and more the same noise level destroys relatively less of an image (nearby
pixels are redundant), so a schedule shifted toward more noise (Hoogeboom et al. 2023) might train better
there; that is left as a refinement.

Loss: the v-MSE weighted by min-SNR-gamma (Hang et al. 2023). The x0 error is ``||x0 - x0'||^2 =
||v - v'||^2 / (snr + 1)`` with ``snr = alpha_bar / (1 - alpha_bar)``, and min-SNR weights the x0 error by
``min(snr, gamma)``, so the v error is weighted by ``min(snr, gamma) / (snr + 1)`` (gamma 5). The weight is
``snr / (snr + 1)`` below gamma (it vanishes toward t = T, where the input holds almost no signal) and
``gamma / (snr + 1)`` above it (the nearly noiseless steps, which matter little for a few-step sampler, count
less). The one-step sampler, however, uses only the prediction at t = T, where that weight is ~0;
``min_snr_floor`` 1 keeps the x0-term weight at least 1 there (the plain v-MSE weight) and paints far better
in one step (in a small overfitting experiment the one-step error fell from 0.18 to 0.05 and the 2-8 step
errors did not change).

Sampling takes 1-8 steps with DDIM or DPM-Solver++ (2nd order) on trailing timesteps, so one step goes from
t = T straight to the predicted x0. The initial noise is shared by all frames of a batch by default: a frame's
result then depends only on its own inputs and the seed (not on its position in the batch or on the batch
size), and neighbouring frames start from the same noise, which reduces flicker.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from torch import nn

from common.errors import InputError

OUT_CHANNELS = 4
"""The network predicts v for RGBA."""
REFERENCE_CHANNELS = 3
"""The reference frame is RGB."""
PREVIOUS_CHANNELS = 4
"""The previous output frame is RGBA."""
SAMPLERS: tuple[str, ...] = ("ddim", "dpm++")
"""Names accepted by :meth:`HeadDiffusion.sample`."""
PRETRAINED_CONFIG = "config.json"
PRETRAINED_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass
class DiffusionNetConfig:
    """Size and noise schedule of the network. The defaults are the preview size (128 px, 26.6 M weights)."""

    sample_size: int = 128
    """Side of the square head image in pixels (64 tiny, 128 preview, 256 or 512 full)."""
    conditioning_channels: int = 11
    """Channels of the conditioning image (``len(renderers.diffusion.conditioning.CHANNELS)``)."""
    block_out_channels: tuple[int, ...] = (64, 128, 256, 256)
    """Channels of each UNet level, finest first; each level after the first halves the resolution."""
    layers_per_block: int = 2
    """Residual blocks per level on the way down (the way up has one more)."""
    attention: tuple[bool, ...] = (False, False, True, True)
    """Self-attention at each level (AttnDownBlock2D/AttnUpBlock2D), one flag per level, finest first."""
    mid_attention: bool = True
    """Self-attention in the middle block (at the coarsest resolution)."""
    attention_head_dim: int = 32
    """Channels per attention head."""
    norm_num_groups: int = 32
    """GroupNorm groups; every entry of ``block_out_channels`` must be a multiple."""
    dropout: float = 0.0
    """Dropout in the residual blocks (against overfitting a short clip)."""
    use_previous: bool = True
    """Feed the previous output frame (RGBA) to the network, for temporal stability."""
    prediction_type: str = "v_prediction"
    """What the network predicts; only v_prediction is supported."""
    num_train_timesteps: int = 1000
    """Timesteps of the training noise schedule."""
    beta_schedule: str = "squaredcos_cap_v2"
    """Noise schedule: squaredcos_cap_v2 (cosine, zero terminal SNR; the module docstring says why) or
    scaled_linear."""
    min_snr_gamma: float | None = 5.0
    """Gamma of the min-SNR loss weighting; None trains with the plain v-MSE."""
    min_snr_floor: float = 1.0
    """Lower bound of the min-SNR weight in x0 terms: ``clamp(snr, floor, gamma) / (snr + 1)`` on the v error.
    0 is plain min-SNR (the weight vanishes toward t = T); 1 keeps the plain v-MSE weight (~1) at the
    high-noise end, which the one-step sampler relies on."""

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.attention = tuple(bool(a) for a in self.attention)
        if len(self.attention) != len(self.block_out_channels):
            raise ValueError(
                f"attention has {len(self.attention)} flags for {len(self.block_out_channels)} levels"
            )
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"block_out_channels {self.block_out_channels} must be multiples of norm_num_groups "
                f"{self.norm_num_groups}"
            )
        if self.prediction_type != "v_prediction":
            raise ValueError(f"prediction_type must be v_prediction, not {self.prediction_type}")
        if self.min_snr_gamma is not None and not 0 <= self.min_snr_floor <= self.min_snr_gamma:
            raise ValueError(f"min_snr_floor must be in [0, min_snr_gamma], not {self.min_snr_floor}")
        if self.beta_schedule not in ("squaredcos_cap_v2", "scaled_linear"):
            raise ValueError(
                f"beta_schedule must be squaredcos_cap_v2 or scaled_linear, not {self.beta_schedule}"
            )
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.sample_size % factor:
            raise ValueError(f"sample_size {self.sample_size} must be a multiple of {factor}")

    @property
    def in_channels(self) -> int:
        """Input channels of the UNet: noisy RGBA + conditioning + reference RGB (+ previous RGBA)."""
        previous = PREVIOUS_CHANNELS if self.use_previous else 0
        return OUT_CHANNELS + self.conditioning_channels + REFERENCE_CHANNELS + previous


def min_snr_weights(snr: torch.Tensor, gamma: float, floor: float = 0.0) -> torch.Tensor:
    """Min-SNR-gamma weights of the v-prediction MSE: ``min(snr, gamma) / (snr + 1)``.

    ``floor`` > 0 raises the x0-term weight ``min(snr, gamma)`` to at least ``floor`` (see
    :attr:`DiffusionNetConfig.min_snr_floor`).
    """
    return snr.clamp(min=floor, max=gamma) / (snr + 1.0)


class HeadDiffusion(nn.Module):
    """The UNet that paints the head, its training loss and its few-step sampler.

    Args:
        config: sizes and noise schedule.
    """

    def __init__(self, config: DiffusionNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiffusionNetConfig()
        self.unet = UNet2DModel(
            sample_size=config.sample_size,
            in_channels=config.in_channels,
            out_channels=OUT_CHANNELS,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention)),
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            add_attention=config.mid_attention,
            attention_head_dim=config.attention_head_dim,
            norm_num_groups=config.norm_num_groups,
            dropout=config.dropout,
        )
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type="v_prediction",
            clip_sample=True,
            clip_sample_range=1.0,
            timestep_spacing="trailing",
        )
        """The training noise schedule (its config configures the samplers)."""
        self._samplers: dict[str, DDIMScheduler | DPMSolverMultistepScheduler] = {}

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor | int,
        conditioning: torch.Tensor,
        reference: torch.Tensor,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted v [N, 4, H, W].

        Args:
            noisy: [N, 4, H, W] the noisy RGBA image x_t.
            timesteps: [N] or a scalar, in [0, num_train_timesteps).
            conditioning: [N, C, H, W] the conditioning image.
            reference: [N, 3, H, W] a reference frame of the identity in [-1, 1].
            previous: [N, 4, H, W] the previous output frame in [-1, 1], or None (zeros: no previous frame).
                Must be None when the network does not use it.
        """
        n, _, h, w = noisy.shape
        parts = [noisy, conditioning, reference]
        if self.config.use_previous:
            parts.append(previous if previous is not None else noisy.new_zeros(n, PREVIOUS_CHANNELS, h, w))
        elif previous is not None:
            raise ValueError("this network was built without the previous frame (use_previous false)")
        x = torch.cat([p.to(noisy.dtype) for p in parts], 1)
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"inputs have {x.shape[1]} channels, the network takes {self.config.in_channels} "
                f"(conditioning_channels {self.config.conditioning_channels})"
            )
        t = torch.as_tensor(timesteps, device=noisy.device)
        if t.ndim == 0:
            t = t.expand(n)
        return self.unet(x, t).sample

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` [N] of the training schedule at timesteps."""
        alpha_bar = self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        return alpha_bar / (1.0 - alpha_bar)

    def loss(
        self,
        x0: torch.Tensor,
        conditioning: torch.Tensor,
        reference: torch.Tensor,
        previous: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch: random timesteps and noise, v-MSE with min-SNR weights.

        Args:
            x0: [N, 4, H, W] the true RGBA head in [-1, 1].
            conditioning, reference, previous: as in :meth:`forward`.
            weight: [N, 1, H, W] per-pixel weights (e.g. more on the mouth); 1 everywhere is the plain mean.
            generator: draws the timesteps and the noise (on its own device), for reproducible losses.
        Returns:
            the loss (a scalar with gradient) and its parts for the log, detached 0-d tensors: ``v_mse``
            (plain mean v error) and ``x0_mse`` (the implied x0 error, comparable across timesteps).
        """
        n = x0.shape[0]
        draw_on = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.config.num_train_timesteps, (n,), generator=generator, device=draw_on)
        noise = torch.randn(x0.shape, generator=generator, device=draw_on, dtype=torch.float32)
        t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
        noisy = self.scheduler.add_noise(x0, noise, t)
        target = self.scheduler.get_velocity(x0, noise, t)
        pred = self(noisy, t, conditioning, reference, previous)
        err = (pred.float() - target.float()) ** 2
        if weight is not None:
            err = err * weight.to(err.dtype)
        per_sample = err.mean((1, 2, 3))
        snr = self.snr(t)
        gamma = self.config.min_snr_gamma
        weights = (
            min_snr_weights(snr, gamma, self.config.min_snr_floor)
            if gamma is not None
            else torch.ones_like(snr)
        )
        loss = (per_sample * weights).mean()
        parts = {
            "v_mse": per_sample.mean().detach(),
            "x0_mse": (per_sample / (snr + 1.0)).mean().detach(),
        }
        return loss, parts

    def sampler(self, name: str) -> DDIMScheduler | DPMSolverMultistepScheduler:
        """The few-step sampler ``ddim`` or ``dpm++``, configured from the training schedule."""
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
        if name not in self._samplers:
            config = dict(self.scheduler.config)
            common = {"prediction_type": "v_prediction", "timestep_spacing": "trailing"}
            previous_level = logging.getLogger("diffusers").level
            logging.getLogger("diffusers").setLevel(logging.ERROR)  # unused DDPM keys are noted and ignored
            try:
                if name == "ddim":
                    # set_alpha_to_one: the last step lands on alpha_bar = 1, i.e. returns the predicted x0
                    self._samplers[name] = DDIMScheduler.from_config(
                        config, **common, set_alpha_to_one=True, clip_sample=True, clip_sample_range=1.0
                    )
                else:
                    # final_sigmas_type zero: the last step also returns the predicted x0 (no leftover noise);
                    # thresholding with sample_max_value 1 clips the predicted x0 to [-1, 1] at every step
                    self._samplers[name] = DPMSolverMultistepScheduler.from_config(
                        config,
                        **common,
                        algorithm_type="dpmsolver++",
                        solver_order=2,
                        lower_order_final=True,
                        final_sigmas_type="zero",
                        thresholding=True,
                        sample_max_value=1.0,
                        variance_type=None,
                    )
            finally:
                logging.getLogger("diffusers").setLevel(previous_level)
        return self._samplers[name]

    @torch.no_grad()
    def sample(
        self,
        conditioning: torch.Tensor,
        reference: torch.Tensor,
        previous: torch.Tensor | None = None,
        steps: int = 4,
        scheduler: str = "ddim",
        seed: int = 0,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        shared_noise: bool = True,
        autocast: bool = True,
    ) -> torch.Tensor:
        """Paint a batch of frames: x0 [N, 4, H, W] (RGBA in [-1, 1]).

        Args:
            conditioning, reference, previous: as in :meth:`forward` (any H, W the UNet's levels divide).
            steps: denoising steps (1-8 is the intended range; 1 returns the prediction from pure noise).
            scheduler: ``ddim`` or ``dpm++`` (DPM-Solver++, 2nd order).
            seed: seeds a generator on the conditioning's device, unless ``generator`` is given.
            eta: DDIM's stochasticity (0: deterministic given the initial noise); dpm++ ignores it.
            shared_noise: one initial noise image for the whole batch (see the module docstring).
            autocast: run the network in bfloat16 autocast on CUDA (ignored on other devices).
        """
        if steps < 1:
            raise ValueError(f"steps must be at least 1, not {steps}")
        sched = self.sampler(scheduler)
        device = conditioning.device
        n, _, h, w = conditioning.shape
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(seed)
        sched.set_timesteps(steps, device=device)
        shape = (1 if shared_noise else n, OUT_CHANNELS, h, w)
        x = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
        x = x.to(device).expand(n, -1, -1, -1).contiguous() * sched.init_noise_sigma
        use_autocast = autocast and device.type == "cuda"
        was_training = self.training
        self.eval()
        try:
            for t in sched.timesteps:
                inp = sched.scale_model_input(x, t)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                    v = self(inp, t.to(device).expand(n), conditioning, reference, previous)
                extra = {"eta": eta, "generator": generator} if scheduler == "ddim" else {}
                x = sched.step(v.float(), t, x, **extra).prev_sample
        finally:
            self.train(was_training)
        return x.clamp(-1.0, 1.0)


class EMA:
    """Exponential moving average of a network's parameters (float32 copies on the parameters' devices).

    The decay at step ``s`` is ``min(decay, (1 + s) / (10 + s))``: early averages follow the fast-moving
    weights closely and the full decay applies from a few thousand steps on.

    Args:
        model: the network whose parameters are averaged (the average starts as a copy of them).
        decay: the full decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in model.named_parameters()
        }

    def decay_at(self, step: int) -> float:
        """The decay used at ``step``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average toward the model's current parameters (call after each optimizer step)."""
        weight = 1.0 - self.decay_at(step)
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), weight)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged parameters into ``model``."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Swap the averaged parameters into ``model`` for the block, then restore its own exactly."""
        backup = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(backup[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged parameters by name, plain contiguous tensors (safetensors can save them)."""
        return {name: t.detach().contiguous() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load averaged parameters saved by :meth:`state_dict` (same names and shapes)."""
        missing = self.shadow.keys() - state.keys()
        unexpected = state.keys() - self.shadow.keys()
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not fit the network: {len(missing)} missing, {len(unexpected)} unexpected "
                f"(e.g. {sorted(missing or unexpected)[0]})"
            )
        for name, t in self.shadow.items():
            if state[name].shape != t.shape:
                raise ValueError(
                    f"EMA state {name} has shape {tuple(state[name].shape)}, not {tuple(t.shape)}"
                )
            t.copy_(state[name])


@dataclass
class PretrainedInit:
    """What :func:`init_from_pretrained` did with each of the network's tensors."""

    copied: int = 0
    """Tensors copied whole (same name and shape)."""
    adapted: list[str] = field(default_factory=list)
    """Tensors copied in part (conv_in's input channels, conv_out's output channels)."""
    skipped: list[str] = field(default_factory=list)
    """Tensors left as initialised (absent from the pretrained UNet, or of another shape)."""
    unused: int = 0
    """Pretrained tensors the network has no place for."""


def _pretrained_folder(folder: Path) -> Path:
    """The folder holding the UNet's files: ``folder`` itself or its ``unet`` subfolder (a pipeline)."""
    expected = f"{PRETRAINED_CONFIG} and {PRETRAINED_WEIGHTS}"
    fix = (
        f"point it at a folder holding {expected}, as UNet2DModel.save_pretrained(folder, "
        "safe_serialization=True) writes them"
    )
    if not folder.is_dir():
        raise InputError(f"pretrained UNet folder {folder} does not exist", fix)
    if not (folder / PRETRAINED_CONFIG).is_file() and (folder / "unet" / PRETRAINED_CONFIG).is_file():
        folder = folder / "unet"
    missing = [name for name in (PRETRAINED_CONFIG, PRETRAINED_WEIGHTS) if not (folder / name).is_file()]
    if missing:
        raise InputError(f"pretrained UNet folder {folder} has no {' and no '.join(missing)}", fix)
    return folder


def init_from_pretrained(model: HeadDiffusion, folder: str | Path) -> PretrainedInit:
    """Initialise the network from a local pretrained diffusers UNet2DModel where the two agree.

    Every tensor whose name and shape match is copied. ``conv_in.weight`` with other input channels takes
    the pretrained input channels it has room for (the pretrained UNet's first channels are its noisy image,
    which are the first here too: the noisy RGB(A)) and zeros for the rest, so the network starts out as the
    pretrained one, blind to the conditioning until training opens it up. ``conv_out`` with other output
    channels takes the ones that fit and keeps its own initialisation for the rest. Nothing is downloaded: the
    folder is read with ``local_files_only`` and only safetensors weights are accepted (no pickle).

    Args:
        model: the network to initialise (in place).
        folder: a folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``, or a pipeline
            folder with them in ``unet/``.
    Returns:
        what happened to each tensor.
    """
    folder = _pretrained_folder(Path(folder))
    try:
        config = json.loads((folder / PRETRAINED_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{folder / PRETRAINED_CONFIG} is unreadable ({err})", "use an intact copy") from err
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind != "UNet2DModel":
        raise InputError(
            f"{folder / PRETRAINED_CONFIG} describes a {kind or 'model of unknown class'}, not a UNet2DModel",
            "use a pixel-space diffusers UNet2DModel (latent or text-conditioned UNet2DConditionModel "
            "weights do not fit this renderer)",
        )
    try:
        pretrained = UNet2DModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False
        )
    except Exception as err:  # diffusers raises OSError, ValueError, RuntimeError or its own errors
        raise InputError(
            f"the pretrained UNet in {folder} cannot be loaded ({type(err).__name__}: {err})",
            "check that config.json and diffusion_pytorch_model.safetensors come from the same model",
        ) from err
    source = pretrained.state_dict()
    summary = PretrainedInit(unused=len(source.keys() - model.unet.state_dict().keys()))
    with torch.no_grad():
        for name, target in model.unet.state_dict().items():
            src = source.get(name)
            if src is None:
                summary.skipped.append(name)
            elif src.shape == target.shape:
                target.copy_(src)
                summary.copied += 1
            elif _adapt(name, src, target):
                summary.adapted.append(name)
            else:
                summary.skipped.append(name)
    return summary


def _adapt(name: str, src: torch.Tensor, target: torch.Tensor) -> bool:
    """Copy the part of ``src`` that fits into ``target`` along its channel axis; False when it cannot."""
    axis = {"conv_in.weight": 1, "conv_out.weight": 0, "conv_out.bias": 0}.get(name)
    if axis is None or src.ndim != target.ndim:
        return False
    if any(a != b for i, (a, b) in enumerate(zip(src.shape, target.shape, strict=True)) if i != axis):
        return False
    k = min(src.shape[axis], target.shape[axis])
    if name == "conv_in.weight":
        target.zero_()
    target.narrow(axis, 0, k).copy_(src.narrow(axis, 0, k))
    return True

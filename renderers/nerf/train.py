"""Training a NeRF renderer on an identity workspace, streamed chunk by chunk, resumable at any moment.

Each step draws rays from a few frames of the chunk in hand: most inside the head matte (face and hair),
the rest over the rest of the head box's projection (so empty space learns to be empty). The loss is the
photometric error of the premultiplied colour against the frame times its head matte, the opacity against
the matte, and extra weight on the mouth, where detail matters most. All randomness of a step derives from
(seed, step), so a run resumed from a checkpoint draws exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from common.config import to_dict
from common.errors import InputError
from motion import topology as tp
from motion.clip_fit import ClipFit
from renderers.device import pick_device
from renderers.footage import Footage
from renderers.head_box import HeadBox
from renderers.nerf.field import FieldConfig
from renderers.nerf.rays import camera_rays, volume_render
from renderers.nerf.renderer import NerfModelConfig, NerfRenderConfig, NerfRenderer
from renderers.training import TrainConfig, TrainingRun, resume, run_training, scheduled, spread

log = logging.getLogger(__name__)


@dataclass
class NerfTrainConfig(TrainConfig):
    """Settings of a NeRF training run (presets: configs/nerf_tiny.yaml, nerf_preview, nerf_full)."""

    size: int = 128
    """Side of the frames trained on (the workspace frames are resized)."""
    rays_per_batch: int = 4096
    """Rays per step."""
    frames_per_batch: int = 8
    """Frames the rays of one step come from."""
    grid_lr: float = 1e-2
    """Learning rate of the hash tables."""
    mlp_lr: float = 2e-3
    """Learning rate of the networks and appearance codes."""
    head_fraction: float = 0.8
    """Share of rays drawn inside the head matte."""
    mouth_weight: float = 3.0
    """Loss weight of mouth pixels relative to the rest."""
    opacity_weight: float = 0.2
    """Weight of the opacity-vs-matte loss."""
    appearance_weight: float = 0.01
    """L2 pull of the per-frame colour gain and offset toward none."""
    patches_per_batch: int = 2
    """Square patches around the mouth rendered each step for the structural loss (0: none)."""
    patch_size: int = 16
    """Side of a mouth patch in pixels at ``size``."""
    patch_weight: float = 0.05
    """Weight of the mouth patches' structural loss (1 - SSIM)."""
    lpips_weight: float = 0.05
    """Weight of the LPIPS loss on the mouth patches, used when LPIPS's weights are on this machine."""
    occupancy_every: int = 16
    """Steps between occupancy-grid updates."""
    occupancy_warmup: int = 256
    """Steps before rays skip empty cells (the grid probes every cell until then)."""
    network: FieldConfig = field(default_factory=FieldConfig)
    """Field sizes."""
    render: NerfRenderConfig = field(default_factory=NerfRenderConfig)
    """Samples per ray and rendering settings."""


class RayBatcher:
    """Rays and targets for each step, from one chunk of training frames at a time (streaming)."""

    def __init__(self, footage: Footage, frames: np.ndarray, config: NerfTrainConfig, renderer: NerfRenderer):
        self.footage = footage
        self.config = config
        self.scale = config.size / footage.size
        self.focal = renderer.config.focal * self.scale
        self.renderer = renderer
        self.fit = footage.fit()
        self.by_chunk = footage.by_chunk(frames)
        self.chunks = sorted(self.by_chunk)
        self._loaded: tuple[int, dict] | None = None

    def _load(self, chunk: int) -> dict:
        if self._loaded is not None and self._loaded[0] == chunk:
            return self._loaded[1]
        size = self.config.size
        frames, alphas, mouths = [], [], []
        ids = self.by_chunk[chunk]
        for i, rgb, masks in self.footage.iter_frames(ids):
            frames.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
            alphas.append(cv2.resize(masks.head_alpha, (size, size), interpolation=cv2.INTER_AREA))
            mouth = np.zeros((size, size), np.uint8)
            lips = self.fit.landmarks[i, list(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER[::-1]), :2]
            cv2.fillPoly(mouth, [np.round(lips * self.scale).astype(np.int32)], 1)
            mouths.append(cv2.dilate(mouth, np.ones((3, 3), np.uint8)))
        data = {
            "ids": np.array(ids),
            "rgb": np.stack(frames).astype(np.float32) / 255.0,
            "alpha": np.stack(alphas).astype(np.float32) / 255.0,
            "mouth": np.stack(mouths).astype(bool),
        }
        self._loaded = (chunk, data)
        return data

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """Pixels, frame indices and targets of step ``step``: ``rays`` random rays (``rgb``, ``alpha``,
        ``weight`` targets), then the mouth patches' rays (``patch_rgb``, ``patch_alpha``)."""
        cfg = self.config
        data = self._load(scheduled(self.chunks, step, cfg.steps_per_chunk, cfg.seed))
        rng = np.random.default_rng([cfg.seed, step, 1])
        count = min(cfg.frames_per_batch, len(data["ids"]))
        picks = rng.choice(len(data["ids"]), count, replace=False)
        per_frame = math.ceil(cfg.rays_per_batch / count)
        size = cfg.size
        out: dict[str, list] = {k: [] for k in ("pixels", "frame", "rgb", "alpha", "weight")}
        patches = self._mouth_patches(data, picks, rng)
        for k in picks:
            i = int(data["ids"][k])
            alpha = data["alpha"][k]
            head = np.flatnonzero(alpha.reshape(-1) > 0.5)
            inside = round(per_frame * cfg.head_fraction) if len(head) else 0
            x0, y0, x1, y1 = self.renderer.projected_box(self.fit.rotation[i], self.fit.translation[i], size)
            x0, y0 = min(x0, size - 1), min(y0, size - 1)  # never an empty range to draw from
            x1, y1 = max(x1, 1), max(y1, 1)
            flat = np.concatenate(
                [
                    rng.choice(head, inside) if inside else np.zeros(0, np.int64),
                    rng.integers(y0, y1, per_frame - inside) * size
                    + rng.integers(x0, x1, per_frame - inside),
                ]
            )
            ys, xs = np.divmod(flat, size)
            out["pixels"].append(np.stack([xs, ys], 1) + rng.random((len(flat), 2)))
            out["frame"].append(np.full(len(flat), i))
            out["rgb"].append(data["rgb"][k].reshape(-1, 3)[flat])
            out["alpha"].append(alpha.reshape(-1)[flat])
            out["weight"].append(np.where(data["mouth"][k].reshape(-1)[flat], cfg.mouth_weight, 1.0))
        batch = {k: np.concatenate(v)[: cfg.rays_per_batch] for k, v in out.items()}
        batch["rays"] = len(batch["frame"])
        if patches:  # the patches' rays follow the random rays
            batch["pixels"] = np.concatenate([batch["pixels"], patches.pop("patch_pixels")])
            batch["frame"] = np.concatenate([batch["frame"], patches.pop("patch_frame")])
        return batch | patches

    def _mouth_patches(
        self, data: dict, picks: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """``patch_*`` arrays: a ``patch_size`` square of pixel centres around the mouth of the first
        ``patches_per_batch`` picked frames (shifted at random by up to a quarter of its side)."""
        cfg = self.config
        p, size = cfg.patch_size, cfg.size
        if not cfg.patches_per_batch or p > size:
            return {}
        lips = list(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER)
        out: dict[str, list] = {k: [] for k in ("patch_pixels", "patch_frame", "patch_rgb", "patch_alpha")}
        gy, gx = np.mgrid[0:p, 0:p]
        for k in picks[np.arange(cfg.patches_per_batch) % len(picks)]:
            i = int(data["ids"][k])
            centre = self.fit.landmarks[i, lips, :2].mean(0) * self.scale
            x0, y0 = np.round(centre - p / 2 + rng.uniform(-p / 4, p / 4, 2)).astype(int)
            x0, y0 = int(np.clip(x0, 0, size - p)), int(np.clip(y0, 0, size - p))
            ys, xs = (gy + y0).reshape(-1), (gx + x0).reshape(-1)
            out["patch_pixels"].append(np.stack([xs, ys], 1) + 0.5)
            out["patch_frame"].append(np.full(p * p, i))
            out["patch_rgb"].append(data["rgb"][k][ys, xs])
            out["patch_alpha"].append(data["alpha"][k][ys, xs])
        return {k: np.concatenate(v) for k, v in out.items()}


def _train_frames(footage: Footage, fit: ClipFit) -> np.ndarray:
    frames = footage.tracked_frames("train", fit)
    if len(frames) == 0:
        raise InputError(f"identity {footage.name} has no usable training frames", "prepare a longer clip")
    return frames


def model_config_for(footage: Footage, config: NerfTrainConfig) -> NerfModelConfig:
    """The renderer's saved description for a workspace and training settings."""
    fit = footage.fit()
    box = HeadBox.from_shape(fit.shape)
    return NerfModelConfig(
        network=config.network,
        render=config.render,
        image_size=footage.size,
        focal=float(fit.focal),
        box_lo=tuple(float(v) for v in box.lo),
        box_hi=tuple(float(v) for v in box.hi),
        num_frames=footage.num_frames,
    )


def evaluate(renderer: NerfRenderer, footage: Footage, frames: list[int], size: int) -> float:
    """PSNR (dB) of the rendered head against the footage times its head matte, over the head box."""
    fit = footage.fit()
    errors = []
    for i, rgb, masks in footage.iter_frames(frames):
        pred, _, (x0, y0, x1, y1) = renderer.render_image(
            fit.rotation[i], fit.translation[i], fit.expression[i], size
        )
        if x1 <= x0:
            continue
        gt = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        matte = (
            cv2.resize(masks.head_alpha, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        )
        target = (gt * matte[..., None])[y0:y1, x0:x1]
        errors.append(float(((pred - target) ** 2).mean()))
    return float(10 * np.log10(1.0 / max(np.mean(errors), 1e-10))) if errors else float("nan")


def _lpips(config: NerfTrainConfig, device: torch.device):
    """The LPIPS network for the mouth-patch loss, or None (weight 0, or its weights are not here)."""
    if config.lpips_weight <= 0 or not config.patches_per_batch:
        return None
    from renderers import perceptual

    if not perceptual.available():
        log.info(
            "no LPIPS loss: its weights are not here (put %s and %s in a folder named by %s)",
            perceptual.BACKBONE_FILE,
            perceptual.HEADS_FILE,
            perceptual.ENV_DIR,
        )
        return None
    return perceptual.LPIPS.load(device=device)


def _patch_losses(
    pred: torch.Tensor, target: torch.Tensor, size: int, lpips
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Structural loss (1 - SSIM) and LPIPS of mouth patches, [K * size * size, 3] premultiplied each.

    SSIM (Wang et al. 2004) by kornia: a Gaussian window of std 1.5 and up to 7 taps, valid positions only,
    no epsilon in the ratio; the evaluation's SSIM with that window gives the same value."""
    from kornia.metrics import ssim

    pred = pred.view(-1, size, size, 3).permute(0, 3, 1, 2)
    target = target.view(-1, size, size, 3).permute(0, 3, 1, 2)
    window = min(7, size - (size + 1) % 2)  # the largest odd window up to 7 that fits the patch
    structural = 1.0 - ssim(pred, target, window, eps=0.0, padding="valid").mean()
    if lpips is None:
        return structural, None
    side = max(64, size)  # AlexNet's strides need room
    up = lambda x: torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return structural, lpips(up(pred), up(target)).mean()


def _losses(
    out: dict[str, torch.Tensor],
    codes: torch.Tensor,
    batch: dict[str, np.ndarray],
    config: NerfTrainConfig,
    lpips,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss and its parts for the log."""
    device = codes.device
    n = int(batch["rays"])
    rgb_t = torch.as_tensor(batch["rgb"], device=device)
    alpha_t = torch.as_tensor(batch["alpha"], device=device)
    weight = torch.as_tensor(batch["weight"], dtype=torch.float32, device=device)
    colour = out["rgb"].float()
    colour_err = ((colour[:n] - rgb_t * alpha_t[:, None]) ** 2).mean(1)
    photometric = (colour_err * weight).sum() / weight.sum()
    opacity = ((out["opacity"][:n].float() - alpha_t) ** 2).mean()
    loss = photometric + config.opacity_weight * opacity + config.appearance_weight * (codes[:n] ** 2).mean()
    row = {"photometric_loss": float(photometric.detach())}
    if "patch_rgb" in batch:
        target = torch.as_tensor(batch["patch_rgb"] * batch["patch_alpha"][:, None], device=device)
        structural, perceptual = _patch_losses(colour[n:], target, config.patch_size, lpips)
        loss = loss + config.patch_weight * structural
        row["mouth_ssim_loss"] = float(structural.detach())
        if perceptual is not None:
            loss = loss + config.lpips_weight * perceptual
            row["mouth_lpips"] = float(perceptual.detach())
    return loss, row


def train(
    footage: Footage,
    out_dir: str | Path,
    config: NerfTrainConfig | None = None,
    progress: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> NerfRenderer:
    """Train (or resume training) the NeRF renderer of workspace ``footage`` into ``out_dir``.

    Returns the trained renderer; ``out_dir`` then holds its checkpoint, ``train_log.csv``, TensorBoard
    events in ``tensorboard/`` and ``training_curves.png``.
    """
    config = config or NerfTrainConfig()
    out_dir = Path(out_dir)
    fit = footage.fit()
    frames = _train_frames(footage, fit)
    model_config = model_config_for(footage, config)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)  # the initial weights belong to the run's seed
    renderer = NerfRenderer(model_config)
    field_module = renderer.field.to(device)
    grid = renderer.occupancy.to(device) if renderer.occupancy is not None else None
    grids = [p for n, p in field_module.named_parameters() if n.startswith("encoding.")]
    others = [p for n, p in field_module.named_parameters() if not n.startswith("encoding.")]
    optimizer = torch.optim.Adam(
        [{"params": grids, "lr": config.grid_lr, "eps": 1e-15}, {"params": others, "lr": config.mlp_lr}],
        betas=(0.9, 0.99),
    )
    settings = {"model": asdict(model_config), "train": to_dict(config)}

    def load_weights(saved: NerfRenderer) -> None:
        field_module.load_state_dict(saved.field.state_dict())
        if grid is not None:
            grid.load_state_dict(saved.occupancy.state_dict())

    state = resume(out_dir, settings, optimizer, load_weights)

    batcher = RayBatcher(footage, frames, config, renderer)
    holdout = list(footage.split("holdout")) or list(frames[-config.eval_frames :])
    eval_ids = spread(holdout, config.eval_frames)
    expression = torch.as_tensor(fit.expression, dtype=torch.float32, device=device)
    rotation = torch.as_tensor(fit.rotation, dtype=torch.float32, device=device)
    translation = torch.as_tensor(fit.translation, dtype=torch.float32, device=device)
    train_expression = expression[torch.as_tensor(frames, device=device)]
    autocast = config.mixed_precision and device.type == "cuda"
    lpips = _lpips(config, device)

    def step(k: int) -> dict[str, float]:
        torch.manual_seed(config.seed * 1_000_003 + k)
        batch = batcher.batch(k)
        if grid is not None:
            grid.update(k, field_module, train_expression, config.occupancy_every, config.occupancy_warmup)
        skip = grid if grid is not None and k >= config.occupancy_warmup else None
        frame = torch.as_tensor(batch["frame"], device=device)
        pixels = torch.as_tensor(batch["pixels"], dtype=torch.float32, device=device)
        origins, dirs = camera_rays(
            rotation[frame], translation[frame], batcher.focal, (config.size,) * 2, pixels
        )
        codes = field_module.appearance(frame)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = volume_render(
                field_module,
                renderer.box,
                origins,
                dirs,
                expression[frame],
                codes,
                config.render.samples,
                stratified=True,
                occupancy=skip,
            )
        loss, row = _losses(out, codes, batch, config, lpips)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **row}

    def held_out() -> dict[str, float]:
        psnr = evaluate(renderer, footage, eval_ids, config.size)
        field_module.train()
        return {"psnr_holdout": psnr}

    def final_grid() -> None:
        if grid is not None:
            grid.refresh(field_module, train_expression)
            log.info("occupancy grid: %.1f%% of the head box", 100 * grid.occupied_fraction())

    memory = (
        f"{config.rays_per_batch} rays per step at {config.size} px",
        f"fewer rays (--set rays_per_batch={config.rays_per_batch // 2})",
    )
    run = TrainingRun(
        directory=out_dir,
        renderer=renderer,
        optimizer=optimizer,
        settings=settings,
        config=config,
        step=step,
        evaluate=held_out,
        title=f"nerf on {footage.name}",
        memory=memory,
        resumed=state,
        before_final_checkpoint=final_grid,
    )
    run_training(run, progress, on_step)
    return renderer

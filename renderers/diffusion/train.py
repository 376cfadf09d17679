"""Training the diffusion renderer on one identity's workspace, or on several people at once.

Each step draws a batch of head crops from one chunk of one identity's frames (streaming, as the NeRF
trainer does), with their conditioning images, the identity's reference frame and each frame's previous
frame (teacher forcing, lightly noised, dropped to "none" now and then so a video's first frame works too),
and takes one v-prediction step with min-SNR weighting and heavier weight on the mouth. The EMA of the
weights is what renders. Trained on several identities, the network must read appearance from the
reference frame, so it can paint a person it never trained on from one reference image. The loop, the
checkpoints, the resume and the log are the NeRF trainer's (:func:`renderers.training.run_training`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import to_dict
from common.errors import InputError
from renderers import image_quality
from renderers.device import pick_device
from renderers.diffusion.conditioning import ConditioningConfig
from renderers.diffusion.data import HeadCrops, premultiplied
from renderers.diffusion.model import EMA, DiffusionNetConfig, HeadDiffusion, init_from_pretrained
from renderers.diffusion.renderer import DiffusionModelConfig, DiffusionRenderConfig, DiffusionRenderer
from renderers.footage import Footage
from renderers.training import TrainConfig, TrainingRun, resume, run_training, scheduled, spread

log = logging.getLogger(__name__)


@dataclass
class DiffusionTrainConfig(TrainConfig):
    """Settings of a diffusion training run (presets: configs/diffusion_tiny.yaml, _preview, _full)."""

    iterations: int = 6000
    """Optimisation steps."""
    batch_size: int = 8
    """Frames per step."""
    steps_per_chunk: int = 25
    """Steps spent on one chunk of frames before the next is streamed in."""
    lr: float = 2e-4
    """AdamW learning rate (after a linear warm-up over ``warmup`` steps)."""
    warmup: int = 200
    """Steps of learning-rate warm-up."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    ema_decay: float = 0.999
    """Decay of the weights' moving average (what renders)."""
    mouth_weight: float = 4.0
    """Loss weight of lip and mouth pixels."""
    previous_dropout: float = 0.5
    """Share of samples trained with no previous frame."""
    previous_noise: float = 0.15
    """Noise added to the previous frame during training (it is the network's own output at render time)."""
    previous_gap: int = 3
    """The "previous" frame is 1 to this many frames back, so copying it is wrong often enough that the
    mouth must come from the conditioning (with the frame just before, a network learns to copy it)."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    eval_every: int = 1000
    """Steps between held-out evaluations."""
    pretrained: str = ""
    """A local diffusers UNet folder to start from (empty: from scratch)."""
    network: DiffusionNetConfig = field(default_factory=DiffusionNetConfig)
    """Network sizes and noise schedule."""
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    """Rasteriser settings."""
    render: DiffusionRenderConfig = field(default_factory=DiffusionRenderConfig)
    """Sampling settings saved with the renderer (and used for the held-out evaluation)."""


class CropBatcher:
    """The batch of each step, drawn from one chunk of one identity at a time (see the module docstring)."""

    def __init__(self, people: list[HeadCrops], config: DiffusionTrainConfig) -> None:
        self.people = people
        self.config = config
        self.slots = [(p, c) for p, person in enumerate(people) for c in person.chunks]

    def _slot(self, step: int) -> tuple[int, int]:
        """(identity, chunk) of step ``step``."""
        return scheduled(self.slots, step, self.config.steps_per_chunk, self.config.seed)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        cfg = self.config
        person, chunk = self._slot(step)
        crops = self.people[person]
        data = crops.chunk(chunk)
        rng = np.random.default_rng([cfg.seed, step, 2])
        picks = rng.choice(len(data["ids"]), cfg.batch_size, replace=len(data["ids"]) < cfg.batch_size)
        position = {int(i): k for k, i in enumerate(data["ids"])}
        previous = np.zeros_like(data["rgba"][picks])
        for n, k in enumerate(picks):
            before = position.get(int(data["ids"][k]) - int(rng.integers(1, cfg.previous_gap + 1)))
            if before is not None and rng.random() >= cfg.previous_dropout:
                noise = rng.normal(0.0, cfg.previous_noise, previous[n].shape).astype(np.float32)
                previous[n] = np.clip(data["rgba"][before] + noise, -1.0, 1.0)
        return {
            "rgba": data["rgba"][picks],
            "conditioning": data["conditioning"][picks],
            "weight": data["weight"][picks],
            "previous": previous,
            "reference": np.broadcast_to(crops.reference, (len(picks), *crops.reference.shape)).copy(),
        }


def model_config_for(person: Footage, crops: HeadCrops, config: DiffusionTrainConfig) -> DiffusionModelConfig:
    """The renderer's saved description for the (first) identity trained on."""
    return DiffusionModelConfig(
        network=config.network,
        render=config.render,
        conditioning=config.conditioning,
        image_size=person.size,
        focal=float(crops.fit.focal),
        window=tuple(int(v) for v in crops.window),
    )


def evaluate(renderer: DiffusionRenderer, crops: HeadCrops, frames: list[int]) -> dict[str, float]:
    """PSNR (dB) of the painted RGBA against the held-out frames' crops (colour times matte, and matte)."""
    if not frames:
        return {}
    painted = renderer.paint(crops.conditioning(np.array(frames)))
    return {"psnr_holdout": image_quality.psnr(premultiplied(painted), premultiplied(crops.target(frames)))}


def train(
    footage: Footage | Sequence[Footage],
    out_dir: str | Path,
    config: DiffusionTrainConfig | None = None,
    progress: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> DiffusionRenderer:
    """Train (or resume) the diffusion renderer on the footage of one or more identities into ``out_dir``.

    The saved renderer paints the first identity by default (its face model, window and reference frame).
    """
    config = config or DiffusionTrainConfig()
    identities = list(footage) if isinstance(footage, (list, tuple)) else [footage]
    if not identities:
        raise InputError("no identity to train on", "name one with --identity")
    out_dir = Path(out_dir)
    size = config.network.sample_size
    people = []
    for person in identities:
        frames = person.tracked_frames("train")
        if len(frames) == 0:
            raise InputError(f"identity {person.name} has no usable training frames", "prepare a longer clip")
        people.append(HeadCrops(person, frames, size, config.conditioning, config.mouth_weight))
    first = people[0]
    model_config = model_config_for(identities[0], first, config)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    net = HeadDiffusion(config.network)
    if config.pretrained:
        summary = init_from_pretrained(net, config.pretrained)
        log.info("initialised from %s: %s", config.pretrained, summary)
    net.to(device)
    renderer = DiffusionRenderer(model_config, first.fit.shape, first.reference, net)
    renderer.device = device
    renderer.ema = EMA(net, config.ema_decay)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    settings = {
        "model": asdict(model_config),
        "train": to_dict(config),
        "identities": [person.name for person in identities],
    }

    def load_weights(saved: DiffusionRenderer) -> None:
        net.load_state_dict(saved.net.state_dict())
        renderer.ema.load_state_dict({k: v.to(device) for k, v in saved.ema.state_dict().items()})

    state = resume(out_dir, settings, optimizer, load_weights)

    batcher = CropBatcher(people, config)
    eval_ids = spread(list(identities[0].tracked_frames("holdout")), config.eval_frames)
    autocast = config.mixed_precision and device.type == "cuda"

    def step(k: int) -> dict[str, float]:
        torch.manual_seed(config.seed * 1_000_003 + k)
        for group in optimizer.param_groups:  # linear warm-up
            group["lr"] = config.lr * min(1.0, (k + 1) / max(config.warmup, 1))
        batch = {name: torch.as_tensor(v, device=device) for name, v in batcher.batch(k).items()}
        generator = torch.Generator(device=device).manual_seed(config.seed * 7_919 + k)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, parts = net.loss(
                batch["rgba"],
                batch["conditioning"],
                batch["reference"],
                batch["previous"] if config.network.use_previous else None,
                batch["weight"],
                generator,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        renderer.ema.update(net, k)
        return {"loss": float(loss.detach()), **{name: float(v) for name, v in parts.items()}}

    memory = (
        f"batch {config.batch_size} at {config.network.sample_size} px",
        f"a smaller batch (--set batch_size={max(1, config.batch_size // 2)})",
    )
    run = TrainingRun(
        directory=out_dir,
        renderer=renderer,
        optimizer=optimizer,
        settings=settings,
        config=config,
        step=step,
        evaluate=lambda: evaluate(renderer, first, eval_ids),
        title=f"diffusion on {', '.join(person.name for person in identities)}",
        memory=memory,
        resumed=state,
    )
    run_training(run, progress, on_step)
    return renderer

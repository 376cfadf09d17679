"""The ``diffusion`` renderer: a trained UNet paints the identity's head from the face model at each frame.

Per frame, the identity's face model is rasterised at the frame's motion inside the identity's head window
(:mod:`renderers.diffusion.conditioning`), and the network paints the window's RGBA from that image, the
identity's reference frame and its own previous output, in a few denoising steps. Every frame starts from
the same noise (a fixed seed), so the output is deterministic and still frames do not shimmer. The RGBA
goes to the compositor like the NeRF renderer's heads.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from common.errors import InputError
from common.progress import bar as progress_bar
from motion.blendshapes import EXPRESSION_NAMES
from motion.sequence import POSE_RELATIVE, MotionSequence, neck_pivot, to_camera
from renderers.base import HeadFrame, Renderer
from renderers.device import pick_device
from renderers.diffusion.conditioning import ConditioningConfig, FaceConditioner
from renderers.diffusion.model import EMA, DiffusionNetConfig, HeadDiffusion


@dataclass
class DiffusionRenderConfig:
    """How a trained network paints frames."""

    steps: int = 4
    """Denoising steps per frame (1-8)."""
    sampler: str = "ddim"
    """ddim or dpm++ (DPM-Solver++)."""
    seed: int = 0
    """Seed of the initial noise (the same for every frame)."""
    batch: int = 8
    """Frames painted at once when no previous frame is fed (``previous`` false, or a network without it)."""
    previous: bool = True
    """Feed each frame the previous output (steadier; frames then go one at a time). False paints batches."""
    device: str = "auto"
    """cuda, cpu or auto."""


@dataclass
class DiffusionModelConfig:
    """Everything that defines a trained diffusion renderer (saved in ``config.json``)."""

    network: DiffusionNetConfig = field(default_factory=DiffusionNetConfig)
    """The network's sizes and noise schedule."""
    render: DiffusionRenderConfig = field(default_factory=DiffusionRenderConfig)
    """Sampling settings."""
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    """Rasteriser settings."""
    image_size: int = 512
    """Side of the workspace frames the camera and the window refer to."""
    focal: float = 1100.0
    """Focal length in pixels at ``image_size``."""
    window: tuple[int, int, int] = (0, 0, 512)
    """(x0, y0, side) of the square head window in the frame."""


class DiffusionRenderer(Renderer):
    """Paint a trained identity. Build it with :func:`renderers.diffusion.train.train` or load_renderer.

    Args:
        config: the saved settings. shape: the identity's neutral face [478, 3] (the rasteriser's mesh).
        reference: the identity's reference frame, float32 [3, S, S] in [-1, 1].
        net: the network (the EMA weights are what renders).
    """

    name = "diffusion"
    config_type = DiffusionModelConfig

    def __init__(
        self,
        config: DiffusionModelConfig,
        shape: np.ndarray,
        reference: np.ndarray,
        net: HeadDiffusion | None = None,
    ) -> None:
        self.config = config
        self.shape = np.asarray(shape, np.float32)
        self.reference = np.asarray(reference, np.float32)
        self.net = net or HeadDiffusion(config.network)
        self.ema = EMA(self.net)
        self.device = pick_device(config.render.device)
        self.portrait_pose: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        """(rest rotation [3], translation [3], shape [478, 3]) of a photo (:meth:`for_portrait`): relative
        speech motion is drawn about it."""

    def conditioner(self) -> FaceConditioner:
        return FaceConditioner(
            self.shape, self.config.focal, self.config.image_size, self.config.conditioning
        ).cropped(self.config.window)

    @torch.no_grad()
    def paint(
        self,
        conditioning: np.ndarray,
        previous: torch.Tensor | None = None,
        reference: np.ndarray | None = None,
    ) -> torch.Tensor:
        """RGBA [N, 4, S, S] in [-1, 1] for conditioning images [N, C, S, S] (EMA weights)."""
        net = self.net.to(self.device)
        cfg = self.config.render
        cond = torch.as_tensor(conditioning, device=self.device)
        ref = torch.as_tensor(self.reference if reference is None else reference, device=self.device)
        ref = ref.expand(len(cond), -1, -1, -1)
        with self.ema.applied(net):
            return net.sample(cond, ref, previous, steps=cfg.steps, scheduler=cfg.sampler, seed=cfg.seed)

    def for_portrait(self, photo: np.ndarray, fit, focal_factor: float = 2.2) -> DiffusionRenderer:
        """This network painting the person of one photo (single-portrait use of a checkpoint trained on
        several identities): the photo's fitted face model, a head window around it and the photo as the
        reference frame. Drive it with :meth:`portrait_motion` of speech motion.

        Args:
            photo: uint8 [S, S, 3] the framed portrait. fit: its :class:`motion.face_model.FaceFit`.
            focal_factor: the assumed focal length in photo widths (the fit's camera is weak-perspective).
        """
        from renderers.diffusion.data import head_window, to_unit

        size = photo.shape[0]
        focal = focal_factor * size
        rot = np.asarray(fit.rotation, np.float64)
        trans = np.asarray(fit.translation, np.float64).copy()
        trans[0] += (fit.centre[0] - size / 2) / fit.scale
        trans[1] -= (fit.centre[1] - size / 2) / fit.scale
        trans[2] = -focal / fit.scale  # perspective depth whose magnification is the fit's scale
        left, top, side = head_window(fit.shape, focal, rot[None], trans[None], size, margin=0.075)
        n = self.config.network.sample_size
        crop = photo[top : top + side, left : left + side]
        reference = to_unit(cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA))
        config = copy.deepcopy(self.config)
        config.image_size, config.focal, config.window = size, float(focal), (left, top, side)
        out = DiffusionRenderer(config, fit.shape, reference, self.net)
        out.ema, out.device = self.ema, self.device
        out.portrait_pose = (rot, trans, fit.shape)
        return out

    def portrait_motion(self, motion: MotionSequence) -> MotionSequence:
        """Speech motion (relative head motion about the neck) -> the portrait's camera poses."""
        if self.portrait_pose is None:
            raise InputError(
                "this diffusion renderer paints no portrait", "build it with for_portrait(photo, fit)"
            )
        base_rot, base_trans, shape = self.portrait_pose
        return to_camera(motion, base_rot, base_trans, neck_pivot(shape))

    def render(self, motion: MotionSequence, progress: bool = False) -> Iterator[HeadFrame]:
        if motion.pose_kind == POSE_RELATIVE and self.portrait_pose is not None:
            motion = self.portrait_motion(motion)
        self.check_motion(motion)
        motion = motion.with_names(EXPRESSION_NAMES) if motion.names != EXPRESSION_NAMES else motion
        conditioner = self.conditioner()
        size = self.config.network.sample_size
        x0, y0, side = self.config.window
        box = (x0, y0, x0 + side, y0 + side)
        sequential = self.config.network.use_previous and self.config.render.previous
        step = 1 if sequential else max(1, self.config.render.batch)
        unit = "batch" if step > 1 else "frame"
        starts = progress_bar(range(0, len(motion), step), desc="render", unit=unit, enabled=progress)
        previous = None
        for start in starts:
            sl = slice(start, start + step)
            pose = motion.pose[sl]
            cond = conditioner.render_batch(motion.expression[sl], pose[:, :3], pose[:, 3:], size)
            out = self.paint(cond, previous)
            if sequential:
                previous = out
            images = ((out.float().cpu().numpy() + 1.0) * 0.5).clip(0.0, 1.0)
            for image in images:
                rgb = (image[:3].transpose(1, 2, 0) * 255).round().astype(np.uint8)
                yield HeadFrame(rgb, image[3].astype(np.float32), box)

    # ---- saving --------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, np.ndarray]:
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        state.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        out = {k: v.detach().cpu().numpy() for k, v in state.items()}
        out["identity.shape"] = self.shape
        out["identity.reference"] = self.reference
        return out

    @classmethod
    def from_saved(cls, config: DiffusionModelConfig, tensors: dict[str, np.ndarray]) -> DiffusionRenderer:
        problem = "missing its face model or reference frame"
        if "identity.shape" in tensors and "identity.reference" in tensors:
            renderer = cls(config, tensors["identity.shape"], tensors["identity.reference"])
            state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
            try:
                renderer.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
                renderer.ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
                return renderer
            except (RuntimeError, ValueError) as err:
                problem = f"its weights do not fit its config ({str(err).splitlines()[0]})"
        raise InputError(
            f"the checkpoint is not a diffusion renderer this version can read: {problem}",
            "train it again with talking-portrait train --renderer diffusion",
        )


def portrait_renderer(
    photo: np.ndarray, fit, settings: Any = None, checkpoint: str = ""
) -> DiffusionRenderer:
    """A diffusion renderer trained on several people painting the person of one framed photo (uint8
    [S, S, 3]) with its fitted face (:class:`motion.face_model.FaceFit`). ``checkpoint``: the trained
    renderer's folder."""
    from renderers.base import load_renderer

    if not checkpoint:
        raise InputError(
            "renderer diffusion needs a trained checkpoint",
            "train one on several people (talking-portrait train --renderer diffusion --identity A "
            "--identity B --out DIR) and pass --checkpoint DIR",
        )
    trained = load_renderer(checkpoint)
    if not isinstance(trained, DiffusionRenderer):
        raise InputError(f"{checkpoint} holds a {trained.name} renderer", "give a diffusion one")
    return trained.for_portrait(photo, fit)

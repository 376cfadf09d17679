"""A person's own audio-to-mouth model, learned from their prepared footage.

The generic motion stage (:mod:`motion.audio2motion`) speaks in everyone's magnitudes and timing. This model
learns how one person's mouth moves with their speech: from the speech features ``prepare`` writes (log-mel
spectrogram, phone posteriors, :mod:`motion.speech_features`) and the generic stage's own mouth as a prior,
to the mouth coefficients (:data:`motion.blendshapes.MOUTH_NAMES`) the clip fit tracked on every frame.

The network runs at the log-mel rate (100 steps a second), whatever the video's frame rate: the inputs are
laid on that grid (:func:`speech_inputs`) and the outputs are read back at each video frame's centre time, so
one model drives video at any fps. It is a stack of dilated 1-D convolutions that sees about 0.3 s of
speech before and after each step (lips move before the sound they shape), plus a direct path from the
generic mouth, so that with little footage it starts from the generic stage and learns a correction.

It saves like a renderer: ``config.json`` (``{"class", "schema_version", "model": {...}}``) and
``model.safetensors``. Training is ``pipeline/motion_training.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from common.config import from_dict, to_dict
from common.errors import InputError
from common.files import atomic_path, write_json
from motion.blendshapes import EXPRESSION_INDEX, MOUTH_NAMES
from motion.sequence import MotionSequence
from motion.speech_features import LOG_MEL_FLOOR, MEL_RATE, SpeechFeatures

MODEL_CLASS = "LipMotionModel"
SCHEMA_VERSION = 1
MOUTH_COLUMNS = [EXPRESSION_INDEX[name] for name in MOUTH_NAMES]


@dataclass
class LipMotionConfig:
    """The network's shape (saved with it)."""

    channels: int = 32
    """Width of the convolution stack (20 k weights at 32: small enough to learn from 20 s of footage)."""
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    """One residual block per entry, kernel 3: together they see 0.31 s each side at 100 steps a second."""
    dropout: float = 0.5
    """Dropout on the inputs while training."""
    mel_bands: int = 80
    """Log-mel bands of the speech features."""
    phones: int = 40
    """Phone posterior columns of the speech features."""
    members: int = 3
    """Networks trained side by side from different starts, their outputs averaged (an ensemble: on
    ``talk_andrew_b`` unseen, r 0.52 for one member on average over three seeds, 0.54-0.55 for three)."""


def normalised_mel(mel: np.ndarray) -> np.ndarray:
    """float32 [M, n]: each band's log energy less its mean, over its standard deviation, both taken over the
    clip's louder 70% of frames (so that long pauses do not set the level). Takes out the microphone, the
    level and the room's colour: the same voice reads the same through another recording chain."""
    mel = np.asarray(mel, np.float32)
    if len(mel) == 0:
        return mel
    energy = mel.mean(1)
    loud = energy >= np.percentile(energy, 30)
    mean, std = mel[loud].mean(0), mel[loud].std(0)
    return (mel - mean) / (std + 0.1)


def grid_length(features: SpeechFeatures) -> int:
    """Steps of the 100-a-second grid that cover both the spectrogram and every video frame."""
    return max(len(features.mel), int(np.ceil(features.num_frames / features.fps * MEL_RATE)) + 1)


def speech_inputs(features: SpeechFeatures, generic_mouth: np.ndarray) -> np.ndarray:
    """float32 [C, M]: the network's input on the 100-a-second grid.

    Rows: the normalised log-mel (:func:`normalised_mel`, silence past the end), the phone posteriors and the
    generic stage's mouth coefficients ``generic_mouth`` [T, len(MOUTH_NAMES)], each step taking the video
    frame it falls in.
    """
    generic_mouth = np.asarray(generic_mouth, np.float32)
    if generic_mouth.shape != (features.num_frames, len(MOUTH_NAMES)):
        raise ValueError(
            f"generic mouth must be [{features.num_frames}, {len(MOUTH_NAMES)}], got {generic_mouth.shape}"
        )
    length = grid_length(features)
    mel = np.full((length, features.mel.shape[1]), LOG_MEL_FLOOR, np.float32)
    mel[: len(features.mel)] = features.mel
    mel = normalised_mel(mel)
    frame = np.clip(np.floor(np.arange(length) / MEL_RATE * features.fps).astype(np.int64), 0, None)
    frame = np.minimum(frame, max(features.num_frames - 1, 0))
    if features.num_frames == 0:
        rest = np.zeros((length, features.phones.shape[1] + len(MOUTH_NAMES)), np.float32)
        return np.concatenate([mel, rest], 1).T.copy()
    return np.concatenate([mel, features.phones[frame], generic_mouth[frame]], 1).T.copy()


def frame_positions(num_frames: int, fps: float) -> np.ndarray:
    """float [T]: where each video frame's centre time falls on the 100-a-second grid."""
    return (np.arange(num_frames) + 0.5) / fps * MEL_RATE


def read_at(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``values`` [..., M] read at fractional ``positions`` [F] by linear interpolation (clamped to the
    ends): [..., F]."""
    last = values.shape[-1] - 1
    positions = positions.clamp(0, last)
    lo = positions.floor().long()
    hi = (lo + 1).clamp(max=last)
    w = (positions - lo).to(values.dtype)
    return values[..., lo] * (1 - w) + values[..., hi] * w


class LipMotionNet(nn.Module):
    """``config.members`` networks (:class:`LipMotionMember`) whose outputs are averaged."""

    def __init__(self, config: LipMotionConfig) -> None:
        super().__init__()
        self.members = nn.ModuleList(LipMotionMember(config) for _ in range(max(1, config.members)))

    def each(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, M] -> every member's output [K, B, len(MOUTH_NAMES), M] (what training fits)."""
        return torch.stack([member(x) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, M] -> the members' mean [B, len(MOUTH_NAMES), M]."""
        return self.each(x).mean(0)


class LipMotionMember(nn.Module):
    """Dilated residual 1-D convolutions over the speech inputs, plus a direct path from the generic mouth;
    outputs the mouth coefficients in units of the person's own spread (``scale``) about their rest."""

    def __init__(self, config: LipMotionConfig) -> None:
        super().__init__()
        c = config.channels
        self.inputs = config.mel_bands + config.phones + len(MOUTH_NAMES)
        self.drop = nn.Dropout(config.dropout)
        self.project = nn.Conv1d(self.inputs, c, 1)
        self.norms = nn.ModuleList(nn.GroupNorm(1, c) for _ in config.dilations)
        self.blocks = nn.ModuleList(nn.Conv1d(c, c, 3, padding=d, dilation=d) for d in config.dilations)
        self.out = nn.Conv1d(c, len(MOUTH_NAMES), 1)
        self.prior = nn.Conv1d(len(MOUTH_NAMES), len(MOUTH_NAMES), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, M] -> [B, len(MOUTH_NAMES), M]."""
        h = self.project(self.drop(x))
        for norm, block in zip(self.norms, self.blocks, strict=True):
            h = h + block(nn.functional.gelu(norm(h)))
        return self.out(nn.functional.gelu(h)) + self.prior(x[:, -len(MOUTH_NAMES) :])


class LipMotionModel:
    """The network with the person's resting mouth and spread, as saved and loaded.

    Args:
        config: the network's shape.
        rest: float [len(MOUTH_NAMES)] the person's resting mouth, lips closed
            (:func:`motion.lip_measures.resting_mouth`).
        scale: float [len(MOUTH_NAMES)] the spread of each coefficient in the footage (the output unit).
        extent: float [len(MOUTH_NAMES)] how much further from rest the predicted mouth is taken when it
            drives a face (1: as predicted). A model fitted by least squares moves less than the person does
            (it averages what it cannot tell apart); training sets this so that its mouth on the training
            speech moves as much as the person's did.
    """

    name = MODEL_CLASS

    def __init__(
        self, config: LipMotionConfig, rest: np.ndarray, scale: np.ndarray, extent: np.ndarray | None = None
    ) -> None:
        self.config = config
        self.net = LipMotionNet(config)
        self.rest = np.asarray(rest, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self.extent = np.ones_like(self.rest) if extent is None else np.asarray(extent, np.float32)

    def coefficients(
        self, x: torch.Tensor, units: tuple[np.ndarray, np.ndarray] | None = None
    ) -> torch.Tensor:
        """x [B, C, M] -> absolute mouth coefficients [B, len(MOUTH_NAMES), M], in ``units`` (a person's
        resting mouth and spread; default the model's own)."""
        rest, scale = units if units is not None else (self.rest, self.scale)
        rest = torch.as_tensor(np.asarray(rest, np.float32))[None, :, None]
        scale = torch.as_tensor(np.asarray(scale, np.float32))[None, :, None]
        return rest + scale * self.net(x)

    @torch.no_grad()
    def at_frames(
        self,
        inputs: np.ndarray,
        fps: float,
        num_frames: int,
        units: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """float [T, len(MOUTH_NAMES)]: the network's absolute mouth coefficients for ``inputs`` [C, M]
        (:func:`speech_inputs`) read at each of ``num_frames`` video frames' centres (no dropout)."""
        training = self.net.training
        self.net.eval()
        out = self.coefficients(torch.from_numpy(inputs)[None], units)[0]
        self.net.train(training)
        return read_at(out, torch.from_numpy(frame_positions(num_frames, fps))).T.numpy()

    def mouth(self, features: SpeechFeatures, generic_mouth: np.ndarray) -> np.ndarray:
        """float32 [T, len(MOUTH_NAMES)]: the person's absolute mouth coefficients at each video frame, taken
        ``extent`` times further from rest than the network predicts."""
        inputs = speech_inputs(features, generic_mouth)
        mouth = self.at_frames(inputs, features.fps, features.num_frames)
        return (self.rest + self.extent * (mouth - self.rest)).astype(np.float32)

    def predict(self, features: SpeechFeatures, generic: MotionSequence) -> MotionSequence:
        """``generic`` (the generic stage's motion for the same speech) with its mouth replaced by this
        person's, relative to their resting mouth as the motion stage's mouth always is (0 = at rest).

        The generic stage's silence model still rules: where it holds the mouth shut (every mouth coefficient
        0, outside speech and its ramps) the mouth is at rest, reached over two frames.
        """
        if len(generic) != features.num_frames:
            raise ValueError(f"{len(generic)} motion frames for {features.num_frames} feature frames")
        generic_mouth = generic.expression[:, [generic.names.index(n) for n in MOUTH_NAMES]]
        relative = self.mouth(features, generic_mouth) - self.rest
        speaking = np.abs(generic_mouth).sum(1) > 0
        gate = ndimage.uniform_filter1d(speaking.astype(np.float32), 3, mode="nearest")
        gate[~speaking] = 0.0
        expression = generic.expression.copy()
        for k, name in enumerate(MOUTH_NAMES):
            expression[:, generic.names.index(name)] = relative[:, k] * gate
        return MotionSequence(
            generic.fps, expression, generic.pose, generic.names, pose_kind=generic.pose_kind
        )

    def state_tensors(self) -> dict[str, np.ndarray]:
        tensors = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        return {**tensors, "rest": self.rest, "scale": self.scale, "extent": self.extent}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory`` (each file atomically)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.state_tensors().items()}, str(tmp))
        write_json(
            directory / "config.json",
            {"class": MODEL_CLASS, "schema_version": SCHEMA_VERSION, "model": to_dict(self.config)},
        )
        return directory

    def load_weights(self, other: LipMotionModel) -> None:
        """Copy ``other``'s weights and rest into this model (same shape)."""
        self.net.load_state_dict(other.net.state_dict())
        self.rest, self.scale, self.extent = other.rest.copy(), other.scale.copy(), other.extent.copy()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> LipMotionModel:
        """Read a model written by :meth:`save`.

        Raises:
            InputError: when the folder holds no model, another kind of model, or damaged files.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        directory = Path(directory)
        fix = "train it again: talking-portrait train --identity NAME --motion"
        try:
            saved = json.loads((directory / "config.json").read_text())
            tensors = load_file(str(directory / "model.safetensors"))
        except FileNotFoundError as error:
            raise InputError(f"no motion model in {directory} ({error.filename} is missing)", fix) from error
        except (OSError, ValueError, SafetensorError) as error:
            raise InputError(f"the motion model in {directory} is unreadable ({error})", fix) from error
        if saved.get("class") != MODEL_CLASS or saved.get("schema_version") != SCHEMA_VERSION:
            raise InputError(
                f"{directory} holds a {saved.get('class')} of schema {saved.get('schema_version')}, not a "
                f"{MODEL_CLASS} of schema {SCHEMA_VERSION}",
                fix,
            )
        config = from_dict(LipMotionConfig, saved["model"], where=str(directory / "config.json"))
        model = cls(config, tensors["rest"], tensors["scale"], tensors.get("extent"))
        try:
            model.net.load_state_dict(
                {k[4:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("net.")}
            )
        except RuntimeError as error:
            raise InputError(
                f"the motion model in {directory} does not match its config ({error})", fix
            ) from error
        model.net.eval()
        return model


__all__ = [
    "MOUTH_COLUMNS",
    "LipMotionConfig",
    "LipMotionMember",
    "LipMotionModel",
    "LipMotionNet",
    "frame_positions",
    "normalised_mel",
    "read_at",
    "speech_inputs",
]

"""Training an identity's own audio-to-mouth model (:mod:`motion.lip_motion`) on its prepared footage.

What it learns from: the workspace's speech features (``audio_features.npz``), the generic motion stage run
on the workspace's speech (the model's prior input), and the mouth coefficients the clip fit tracked on every
usable frame of the training part. The held-out end of the clip is never trained on: every evaluation
reports how well the model's mouth opening follows the real one there (``heldout_opening_r``), beside the
generic stage's (``generic_opening_r``).

The loss is measured where it shows: on the lip points of the person's own face model (the coefficients'
effect on the outer and inner lip contours), on the gap between the lips, and on their frame-to-frame
motion, each relative to how much the footage itself moves (1 = no better than holding the mean).

Twenty seconds of footage is little, so every training window is changed as speech from another take would
be: faster or slower (the features and the targets stretched together), pitch moved (the log-mel bands
shifted), louder or softer, noisier, and the phone posteriors made less certain.

Checkpoints, resume, the log and the curves are the renderers' (:func:`renderers.training.run_training`):
the model folder holds ``config.json`` + ``model.safetensors`` plus the training state.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import to_dict
from common.errors import InputError
from motion.audio import load_audio
from motion.audio2motion import Audio2MotionConfig, audio_to_motion
from motion.blendshapes import MOUTH_NAMES
from motion.face_model import FaceModel
from motion.lip_measures import MOUTH_GAP_PAIRS, model_mouth_opening, mouth_opening, resting_mouth
from motion.lip_motion import (
    MOUTH_COLUMNS,
    LipMotionConfig,
    LipMotionModel,
    frame_positions,
    read_at,
    speech_inputs,
)
from motion.speech_features import SpeechFeatures
from pipeline.metrics import MOUTH_POINTS, pearson
from pipeline.workspace import Workspace
from renderers.training import TrainingRun, restore_optimizer, resume_state, run_training

log = logging.getLogger(__name__)


@dataclass
class MotionTrainConfig:
    """Settings of ``talking-portrait train --motion``. The defaults train in about a minute on 2 CPU
    cores, whatever the footage's length: each step sees the same amount of speech."""

    iterations: int = 500
    """Optimisation steps (more overfit 20 s of footage: 1200 measured worse than 600 on unseen speech)."""
    batch: int = 16
    """Windows of speech per step."""
    window_seconds: float = 4.0
    """Length of each window (shorter when the training part is shorter)."""
    learning_rate: float = 2e-3
    """Peak learning rate (warm-up over 100 steps, then a cosine decay to 5% of it)."""
    weight_decay: float = 1e-3
    """AdamW weight decay."""
    tempo: float = 0.15
    """Windows are played up to this much faster or slower (features and targets stretched together)."""
    pitch_bands: int = 3
    """Log-mel bands the spectrum is shifted by, up or down (a higher or lower voice)."""
    loudness: float = 0.3
    """Spread of the level offset added to the normalised log-mel."""
    noise: float = 0.2
    """Largest spread of the noise added to the normalised log-mel."""
    phone_blur: float = 0.5
    """Largest share of uniform probability mixed into the phone posteriors."""
    gap_weight: float = 1.0
    """Weight of the lip-gap loss beside the lip-points loss."""
    velocity_weight: float = 0.5
    """Weight of the frame-to-frame lip motion loss."""
    checkpoint_every: int = 200
    """Steps between checkpoints."""
    eval_every: int = 100
    """Steps between held-out evaluations."""
    max_seconds: float = 0.0
    """When above 0, the run also ends (evaluated and checkpointed) once its training time reaches this."""
    seed: int = 0
    """Seed of every random draw."""
    threads: int = 2
    """CPU threads for torch."""
    model: LipMotionConfig = field(default_factory=LipMotionConfig)
    """The network's shape."""
    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """Settings of the generic stage whose mouth is the model's prior input."""


@dataclass
class MotionData:
    """One identity's training material on the model's grid.

    Attributes:
        inputs: float32 [C, M] speech inputs (:func:`motion.lip_motion.speech_inputs`).
        targets: float32 [T, len(MOUTH_NAMES)] tracked mouth coefficients.
        expression: float32 [T, E] the full tracked expression (the rest of the face for the opening).
        train: bool [T] usable frames of the training part.
        heldout: bool [T] usable frames of the held-out part.
        real_opening: float [T] the mouth opening measured on the tracked landmarks.
        generic_mouth: float32 [T, len(MOUTH_NAMES)] the generic stage's mouth (relative to rest).
        fps: video frame rate.
        face: the person's face model.
    """

    inputs: np.ndarray
    targets: np.ndarray
    expression: np.ndarray
    train: np.ndarray
    heldout: np.ndarray
    real_opening: np.ndarray
    generic_mouth: np.ndarray
    fps: float
    face: FaceModel


def identity_data(ws: Workspace, generic: Audio2MotionConfig) -> MotionData:
    """The training material of a prepared identity (its speech features, speech and clip fit)."""
    ws.require("audio")
    ws.require("tracking")
    fit = ws.fit()
    features = SpeechFeatures.load(ws.file("audio_features.npz"))
    if features.num_frames != ws.num_frames:
        raise InputError(
            f"{ws.name}'s speech features cover {features.num_frames} frames, its footage {ws.num_frames}",
            f"prepare it again: talking-portrait prepare VIDEO --identity {ws.name} --force",
        )
    speech = load_audio(ws.file("audio.wav"))
    motion = audio_to_motion(speech, ws.fps, ws.num_frames, config=generic)
    generic_mouth = motion.expression[:, [motion.names.index(n) for n in MOUTH_NAMES]]
    names = list(fit.names)
    targets = fit.expression[:, [names.index(n) for n in MOUTH_NAMES]].astype(np.float32)
    split = np.zeros(ws.num_frames, bool)
    split[ws.split("train").start : ws.split("train").stop] = True
    train, heldout = fit.valid & split, fit.valid & ~split
    if train.sum() < 2 * ws.fps:
        raise InputError(
            f"{ws.name} has {train.sum() / ws.fps:.1f} s of usable training footage; the motion model "
            "needs 2 s",
            "prepare a longer clip (20 seconds or more of the person speaking)",
        )
    return MotionData(
        inputs=speech_inputs(features, generic_mouth),
        targets=targets,
        expression=fit.expression.astype(np.float32),
        train=train,
        heldout=heldout,
        real_opening=mouth_opening(fit.landmarks),
        generic_mouth=generic_mouth.astype(np.float32),
        fps=ws.fps,
        face=FaceModel(fit.shape),
    )


def lip_bases(face: FaceModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The mouth coefficients' effect on the person's lips: [len(MOUTH_NAMES), 3 * lip points] on the lip
    contours, and [len(MOUTH_NAMES)] on the gap between the central inner-lip points."""
    basis = face.basis[MOUTH_COLUMNS].astype(np.float32)  # [8, 478, 3]
    points = basis[:, list(MOUTH_POINTS)].reshape(len(MOUTH_NAMES), -1)
    upper = [u for u, _ in MOUTH_GAP_PAIRS]
    lower = [lo for _, lo in MOUTH_GAP_PAIRS]
    gap = (basis[:, upper, 1] - basis[:, lower, 1]).mean(1)
    return torch.from_numpy(points), torch.from_numpy(gap)


class MotionLoss:
    """Lip-points, lip-gap and lip-motion errors of predicted mouth coefficients, each relative to the
    footage's own spread (so 1 is the error of always predicting the mean)."""

    def __init__(self, data: MotionData, config: MotionTrainConfig) -> None:
        self.points, self.gap = lip_bases(data.face)
        target = torch.from_numpy(data.targets[data.train])
        centred = target - target.mean(0)
        self.points_var = float(((centred @ self.points) ** 2).mean()) + 1e-12
        self.gap_var = float(((centred @ self.gap) ** 2).mean()) + 1e-12
        step = torch.from_numpy(np.diff(data.targets, axis=0)[data.train[1:] & data.train[:-1]])
        self.velocity_var = float(((step @ self.points) ** 2).mean()) + 1e-12
        self.config = config

    def __call__(
        self, predicted: torch.Tensor, target: torch.Tensor, keep: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """predicted, target [F, 8] for consecutive frames; keep bool [F]."""
        d = predicted - target
        points = ((d[keep] @ self.points) ** 2).mean() / self.points_var
        gap = ((d[keep] @ self.gap) ** 2).mean() / self.gap_var
        pair = keep[1:] & keep[:-1]
        velocity = (((d[1:] - d[:-1])[pair] @ self.points) ** 2).mean() / self.velocity_var
        return {"points": points, "gap": gap, "velocity": velocity}


def _window(
    data: MotionData, rng: np.random.Generator, config: MotionTrainConfig, width: int, train_end: int
):
    """One training window, stretched in time by a random tempo: inputs [C, width], the video frames it
    covers and where their centres fall in the stretched window."""
    tempo = rng.uniform(1 - config.tempo, 1 + config.tempo)
    span = min(round(width * tempo), train_end)
    start = int(rng.integers(0, train_end - span + 1))
    piece = torch.from_numpy(data.inputs[:, start : start + span])
    piece = torch.nn.functional.interpolate(piece[None], size=width, mode="linear", align_corners=False)[0]
    first = math.ceil(start / 100.0 * data.fps - 0.5)
    last = math.floor((start + span) / 100.0 * data.fps - 0.5)
    frames = np.arange(max(first, 0), min(last, len(data.targets) - 1) + 1)
    positions = (frame_positions(len(data.targets), data.fps)[frames] - start) * (width / span)
    return piece, frames, torch.from_numpy(positions)


def _augment(
    x: torch.Tensor, rng: np.random.Generator, config: MotionTrainConfig, bands: int, phones: int
) -> None:
    """Change a batch of windows [B, C, W] in place as another take of the speech would."""
    for b in range(len(x)):
        shift = int(rng.integers(-config.pitch_bands, config.pitch_bands + 1))
        mel = x[b, :bands]
        if shift > 0:
            mel[shift:] = mel[:-shift].clone()
            mel[:shift] = mel[shift]
        elif shift < 0:
            mel[:shift] = mel[-shift:].clone()
            mel[shift:] = mel[shift - 1]
        mel += float(rng.normal(0.0, config.loudness))
        mel += torch.from_numpy(rng.normal(0.0, config.noise * rng.uniform(), mel.shape).astype(np.float32))
        mix = float(rng.uniform(0.0, config.phone_blur))
        x[b, bands : bands + phones] = (1 - mix) * x[b, bands : bands + phones] + mix / phones


def _learning_rate(config: MotionTrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / 100.0)
    progress = min(1.0, step / max(config.iterations, 1))
    return config.learning_rate * warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def heldout_figures(
    model: LipMotionModel, data: MotionData, units: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, float]:
    """The model's and the generic stage's mouth-opening correlation with the real footage on the held-out
    frames (nan without any). ``units``: the person's resting mouth and spread (default: the model's)."""
    if not data.heldout.any():
        return {"heldout_opening_r": math.nan, "generic_opening_r": math.nan}
    rest = units[0] if units is not None else model.rest
    mouth = model.at_frames(data.inputs, data.fps, len(data.targets), units)
    keep = data.heldout

    def opening(mouth: np.ndarray) -> np.ndarray:
        expression = data.expression[keep].copy()
        expression[:, MOUTH_COLUMNS] = mouth[keep]
        return model_mouth_opening(data.face, expression)

    generic = rest + data.generic_mouth
    return {
        "heldout_opening_r": pearson(opening(mouth), data.real_opening[keep]),
        "generic_opening_r": pearson(opening(generic), data.real_opening[keep]),
    }


def preset_file(preset: str) -> Path | None:
    """``configs/motion_PRESET.yaml`` where that preset exists (tiny), else None: the defaults."""
    from common.config import CONFIG_DIR

    path = CONFIG_DIR / f"motion_{preset}.yaml"
    return path if path.is_file() else None


def heldout_line(figures: dict[str, Any]) -> str:
    """A trained model's held-out figure beside the generic stage's, as the CLI and the web page show it."""
    return (
        f"held-out mouth-opening correlation: {figures['heldout_opening_r']:.2f} "
        f"(generic: {figures['generic_opening_r']:.2f})"
    )


def train_motion_model(
    ws: Workspace, out: Path, config: MotionTrainConfig | None = None, progress: bool = False
) -> dict[str, Any]:
    """Train (or go on training) ``ws``'s motion model into ``out``; returns the last held-out figures."""
    config = config or MotionTrainConfig()
    started = time.perf_counter()
    data = identity_data(ws, config.motion)
    log.info("%s: motion training material ready in %.1f s", ws.name, time.perf_counter() - started)
    figures = fit_motion_model(data, out, config, f"motion model of {ws.name}", progress)
    figures["seconds"] = time.perf_counter() - started
    return figures


def person_scale(data: MotionData) -> tuple[np.ndarray, np.ndarray]:
    """A person's resting mouth (lips closed, :func:`motion.lip_measures.resting_mouth`) and the spread of
    each mouth coefficient, from the training part."""
    train_targets = data.targets[data.train]
    return resting_mouth(train_targets, data.real_opening[data.train]), train_targets.std(0) + 1e-3


def fit_motion_model(
    data: MotionData | list[MotionData],
    out: Path,
    config: MotionTrainConfig,
    title: str,
    progress: bool = False,
    start: LipMotionModel | None = None,
) -> dict[str, Any]:
    """Train (or go on training) a motion model on ``data`` into ``out``; returns the held-out figures.

    ``data`` may hold several people: the network works in each person's own units (their resting mouth and
    spread), so one network learns from all, and the saved model carries the first person's units (a model
    for one identity) or, for several, the mean of theirs. ``start``: weights a new run starts from (a model
    learned on other people).
    """
    people = data if isinstance(data, list) else [data]
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    scales = [person_scale(d) for d in people]
    rest, spread = scales[0] if len(people) == 1 else np.mean([np.stack(s) for s in scales], 0)
    model = LipMotionModel(config.model, rest, spread)
    if start is not None:
        model.net.load_state_dict(start.net.state_dict())
    optimizer = torch.optim.AdamW(
        model.net.parameters(), config.learning_rate, weight_decay=config.weight_decay
    )
    train_settings = {k: v for k, v in to_dict(config).items() if k not in ("model", "motion", "threads")}
    settings = {"model": to_dict(config.model), "train": train_settings, "generic": to_dict(config.motion)}
    resumed = resume_state(out, settings)
    if resumed is not None:
        model.load_weights(LipMotionModel.load(out))
        restore_optimizer(out, optimizer, resumed)
        log.info("resuming %s from step %d", out, resumed["step"])
    losses = [MotionLoss(d, config) for d in people]
    ends = [min(int((np.flatnonzero(d.train).max() + 1) / d.fps * 100), d.inputs.shape[1]) for d in people]
    width = max(16, min(round(config.window_seconds * 100), int(min(ends) / (1 + config.tempo))))
    share = np.array(ends, np.float64) / sum(ends)
    units = [tuple(torch.from_numpy(v.astype(np.float32))[:, None] for v in pair) for pair in scales]
    targets = [torch.from_numpy(d.targets) for d in people]
    bands, phones = config.model.mel_bands, config.model.phones
    model.net.train()

    def step(k: int) -> dict[str, float]:
        rng = np.random.default_rng([config.seed, k])
        who = rng.choice(len(people), size=config.batch, p=share)
        windows = [_window(people[p], rng, config, width, ends[p]) for p in who]
        x = torch.stack([w[0] for w in windows])
        _augment(x, rng, config, bands, phones)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, k)
        each = model.net.each(x)  # every member fits the targets on its own
        parts = {"points": 0.0, "gap": 0.0, "velocity": 0.0}
        share_of_loss = 1.0 / (config.batch * len(each))
        for raw in each:
            for b, (p, (_, frames, positions)) in enumerate(zip(who, windows, strict=True)):
                if len(frames) < 2:
                    continue
                rest_p, spread_p = units[p]
                predicted = read_at(rest_p + spread_p * raw[b], positions).T
                terms = losses[p](predicted, targets[p][frames], torch.from_numpy(people[p].train[frames]))
                for name, value in terms.items():
                    if torch.isfinite(value):
                        parts[name] = parts[name] + value * share_of_loss
        loss = parts["points"] + config.gap_weight * parts["gap"] + config.velocity_weight * parts["velocity"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {
            "loss": float(loss.detach()),
            **{k: float(torch.as_tensor(v).detach()) for k, v in parts.items()},
        }

    def evaluate() -> dict[str, float]:
        figures = [heldout_figures(model, d, units=scales[i]) for i, d in enumerate(people)]
        mean = lambda values: float(np.mean(values)) if values else math.nan
        return {key: mean([f[key] for f in figures if np.isfinite(f[key])]) for key in figures[0]}

    def set_extent() -> None:  # before the last checkpoint: the saved model drives faces this far
        if len(people) == 1:
            model.extent = movement_extent(model, people[0])

    run = TrainingRun(
        directory=out,
        renderer=model,
        optimizer=optimizer,
        settings=settings,
        config=config,
        step=step,
        evaluate=evaluate,
        title=title,
        memory=("the motion model", "a smaller batch (--set batch=8)"),
        resumed=resumed,
        before_final_checkpoint=set_extent,
    )
    run_training(run, progress=progress)
    return evaluate()


def movement_extent(
    model: LipMotionModel, data: MotionData, limits: tuple[float, float] = (1.0, 2.0)
) -> np.ndarray:
    """float32 [len(MOUTH_NAMES)]: per coefficient, how much more the person's mouth moved than the model's
    prediction on the training frames (spread over spread, within ``limits``)."""
    predicted = model.at_frames(data.inputs, data.fps, len(data.targets))
    keep = data.train
    ratio = data.targets[keep].std(0) / np.maximum(predicted[keep].std(0), 1e-6)
    return np.clip(ratio, *limits).astype(np.float32)


__all__ = [
    "MotionData",
    "MotionLoss",
    "MotionTrainConfig",
    "fit_motion_model",
    "heldout_figures",
    "identity_data",
    "movement_extent",
    "train_motion_model",
]

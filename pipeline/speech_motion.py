"""Speech -> motion for a job: the identity's own learned mouth model when it has one, else the generic stage.

Every job that turns speech into motion for a person (``render``, ``dub``, ``eval``, ``motion``) asks here,
so the choice (``motion.model``: ``auto``, ``identity``, ``generic``) is made the same way everywhere.
The motion is always relative to the person's resting mouth (0 = at rest); what differs is its scale:
the generic stage speaks in everyone's magnitudes (a job scales them to the person,
:func:`pipeline.drive.adapt_to_identity`), the identity's model already in this person's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import InputError
from motion.audio import Audio
from motion.audio2motion import Audio2MotionConfig, audio_to_motion
from motion.lip_motion import LipMotionModel
from motion.sequence import MotionSequence
from motion.speech_features import compute_speech_features
from pipeline.workspace import Workspace

MODELS = ("auto", "identity", "generic")


@dataclass
class MotionConfig:
    """Settings of ``talking-portrait motion`` (``--set motion.model=generic``, as in every other job)."""

    motion: Audio2MotionConfig = field(default_factory=Audio2MotionConfig)
    """The motion stage, and which model makes the mouth (``motion.model``)."""


@dataclass
class SpeechMotion:
    """Motion for speech and which model made it.

    Attributes:
        motion: relative motion (mouth 0 at rest), one frame per output frame.
        model: ``identity`` or ``generic``.
    """

    motion: MotionSequence
    model: str

    @property
    def in_person_scale(self) -> bool:
        """True when the mouth is already in the person's own range (no rescaling wanted)."""
        return self.model == "identity"


def chosen_model(ws: Workspace | None, which: str) -> str:
    """``identity`` or ``generic`` for ``which`` (``motion.model``) and the identity ``ws`` (None: no
    identity, the generic stage)."""
    if which not in MODELS:
        raise InputError(f"unknown motion model {which!r}", f"use --set motion.model={'|'.join(MODELS)}")
    if which == "generic" or ws is None:
        if which == "identity":
            raise InputError("motion.model=identity needs an identity", "give --identity NAME")
        return "generic"
    if ws.has_motion_model():
        return "identity"
    if which == "identity":
        raise InputError(
            f"identity {ws.name!r} has no motion model ({ws.motion_model_dir} is empty)",
            f"train it first: talking-portrait train --identity {ws.name} --motion",
        )
    return "generic"


def compared_models(ws: Workspace | None, which: str) -> list[str]:
    """The models an evaluation measures, side by side: the one ``which`` picks (:func:`chosen_model`) and,
    when that is the identity's own, the generic stage after it."""
    first = chosen_model(ws, which)
    return [first, "generic"] if first == "identity" else [first]


def speech_motion(
    speech: Audio,
    fps: float,
    num_frames: int | None = None,
    ws: Workspace | None = None,
    config: Audio2MotionConfig | None = None,
    transcript: str | None = None,
    progress: bool = False,
    generic: MotionSequence | None = None,
) -> SpeechMotion:
    """Motion for ``speech`` at ``fps`` (``num_frames`` default: as long as the speech) for the identity
    ``ws`` (None: anyone), by the model ``config.model`` chooses (:func:`chosen_model`). ``generic``: the
    generic stage's motion for this speech when already made (it is the identity model's prior input)."""
    config = config or Audio2MotionConfig()
    model = chosen_model(ws, config.model)
    generic = audio_to_motion(
        speech, fps, num_frames, transcript=transcript, config=config, progress=progress
    )
    if model == "generic":
        return SpeechMotion(generic, "generic")
    lips = LipMotionModel.load(ws.motion_model_dir)
    features = compute_speech_features(speech, fps, len(generic), transcript)
    return SpeechMotion(lips.predict(features, generic), "identity")


__all__ = ["MODELS", "MotionConfig", "SpeechMotion", "chosen_model", "compared_models", "speech_motion"]

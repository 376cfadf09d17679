"""Audio -> MotionSequence without training data: phonemes, coarticulation, loudness, silence, idle motion.

The mouth is driven by sources that are combined:

- **phones** (pocketsphinx, recognised or aligned to a transcript) give the mouth's *shape*: lip closure for
  /p b m/, lip rounding, spreading, lip-teeth contact, through a viseme table and Cohen-Massaro
  coarticulation (``motion.visemes``);
- **loudness** gives the jaw's *timing and extent*: the speech-band envelope, normalised per clip, plus a
  bump on every syllable nucleus, so that the mouth opens and closes once per syllable in any language,
  with any voice, even where the English phone model is wrong;
- the **vowel's openness** (its first formant F1, ``motion.audio_features.first_formant``, normalised per
  clip: high on "a", low on "i", "u" in every language) takes ``formant_weight`` of the jaw.

An explicit silence model then closes the mouth: outside voice activity every mouth coefficient is exactly 0
after a short closing ramp. Voice activity is where the sound is over its noise floor *and* a speech
detector (``motion.voice_activity``) hears a voice, so the mouth stays shut through breaths, music, tones
and room noise. Blinks, head sway, nods and brow raises are generated (``motion.idle``).

The whole mouth, silence gate included, is shown ``lead_ms`` ahead of the sound it is computed from: real
mouths move ahead of their sound. That lead and the jaw's gains are fitted to real speakers
(``talking-portrait bench lipsync --fit``, ``pipeline/bench/lipsync.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from common.errors import InputError
from common.progress import bar as progress_bar
from motion.audio import Audio
from motion.audio_features import (
    AudioFeatures,
    VadParams,
    analyse_audio,
    analysis_times,
    speech_spans,
    to_frames,
)
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES, MOUTH_NAMES
from motion.idle import blink_curves, emphasis_curve, head_pose
from motion.phonemes import PhoneSegment, audio_to_phones
from motion.sequence import MotionSequence
from motion.visemes import closure_curve, coarticulate
from motion.voice_activity import speech_mask, speech_seconds

_JAW = EXPRESSION_INDEX["jaw_open"]
_LIPS_TOGETHER = EXPRESSION_INDEX["lips_together"]
_MOUTH_COLS = [EXPRESSION_INDEX[n] for n in MOUTH_NAMES]


@dataclass
class Audio2MotionConfig:
    """Settings of :func:`audio_to_motion`. The defaults are the tuned values (lead and jaw: fitted)."""

    anticipation_ms: float = 90.0
    """Decay constant of a phone's dominance before it starts: lip shapes form this early."""
    rounding_anticipation_ms: float = 140.0
    """The same for lip rounding (pucker, funnel), which anticipates further."""
    carryover_ms: float = 60.0
    """Decay constant of a phone's dominance after it ends."""
    smoothing_ms: float = 25.0
    """Sigma of the Gaussian smoothing of the mouth-shape curves."""
    jaw_smoothing_ms: float = 20.0
    """Sigma of the Gaussian smoothing of the jaw curve."""
    lead_ms: float = 30.0
    """The mouth curves (and the silence gate with them) are shown this much earlier than the sound they are
    computed from: a speaker's mouth moves ahead of the sound it makes."""
    # lead_ms, the jaw settings and the formant settings were fitted by `talking-portrait bench lipsync --fit
    # --min-loudness-r 0.6` on 10 clips of 9 real speakers (2026-12-02): the lag-0 r of the mouth opening they
    # mean with the tracked one, 0.10 (hand-set) -> 0.21 held out (leave one person out), with jaw_open kept
    # following the loudness (r >= 0.6 on every clip: what opens the mouth in any language). Hand-set before:
    # lead 0, gain 0.85, compression 0.75, phone weight 0.35, syllable weight 0.3, no formant.
    # BENCHMARKS.md, "Lip sync of the generic motion stage", has the figures.
    jaw_gain: float = 0.62
    """jaw_open on a loud, open syllable (the envelope's 95th percentile)."""
    jaw_compression: float = 0.385
    """Exponent applied to the envelope: under 1 opens the jaw more on soft syllables."""
    phone_jaw_weight: float = 0.40
    """How much the phone's openness (open vowel vs closed consonant) modulates the loudness-driven jaw."""
    syllable_weight: float = 0.21
    """Share of the jaw curve from one open-close bump per syllable nucleus (the rest: the envelope)."""
    formant_weight: float = 0.3
    """Share of the jaw curve from the vowel's openness (its first formant, :func:`formant_openness`); the
    rest comes from loudness, syllables and phones as above. 0: loudness alone."""
    formant_low_percentile: float = 50.0
    """The first formant is normalised per clip over its voiced frames: this percentile means a closed vowel
    (openness 0) ..."""
    formant_high_percentile: float = 90.0
    """... and this one an open vowel (openness 1), whatever the voice and the microphone."""
    formant_smoothing_ms: float = 30.0
    """Sigma of the Gaussian smoothing of the vowel openness."""
    formant_min_periodicity: float = 0.0
    """Frames less periodic than this (noise, fricatives, breath: :func:`motion.audio_features.first_formant`)
    carry no vowel; the openness counts fully from 0.3 above it. Lower values keep the openness up through
    consonants within voice activity."""
    shape_gain: float = 1.0
    """Scale of the phone-driven lip shapes (pucker, mouth_wide, funnel, lip-teeth contact)."""
    envelope_window_ms: float = 25.0
    """RMS window of the loudness envelope (speech band 300-3400 Hz)."""
    silence_threshold_db: float = 9.0
    """Voice activity starts this many dB above the adaptive noise floor."""
    speech_threshold: float = 0.5
    """Speech probability (Silero VAD, per 32 ms) over which sound counts as speech; 0: energy alone."""
    speech_hangover_ms: float = 100.0
    """Speech detections are widened this much each side (the detector's lag at word edges)."""
    min_pause_ms: float = 180.0
    """Shorter gaps in speech are bridged; longer ones close the mouth."""
    close_ramp_ms: float = 100.0
    """The mouth closes over this time after the voice stops."""
    onset_lead_ms: float = 60.0
    """The mouth starts to open this long before the voice starts."""
    blink_interval_s: float = 3.5
    """Mean time between blinks."""
    min_blink_interval_s: float = 1.5
    """Shortest time between blinks."""
    blink_duration_ms: float = 220.0
    """Length of one blink (close, shut, open)."""
    head_amplitude_deg: float = 1.5
    """Scale of the idle head sway in degrees: peak pitch 0.8x, yaw 1.2x, roll 0.55x of it."""
    head_speech_boost: float = 0.6
    """Relative extra head sway while speaking."""
    nod_deg: float = 0.8
    """Pitch of a nod on a stressed syllable, in degrees."""
    head_translation: float = 0.0
    """Peak head translation in face-model units (0: rotation only)."""
    brow_raise: float = 0.2
    """brow_up on a stressed syllable."""
    seed: int = 0
    """Seed of the generated blinks and head motion."""
    model: str = "auto"
    """Whose mouth motion drives a trained identity: ``identity`` (its own learned model, trained with
    ``talking-portrait train --motion``), ``generic`` (this stage alone) or ``auto`` (the identity's model
    when it has one)."""


def _silence_gate(features: AudioFeatures, close_ramp_s: float, onset_lead_s: float) -> np.ndarray:
    """float [K] on the analysis grid: 1 in speech, 0 in silence, raised-cosine ramps at the edges.

    The ramp after speech (the mouth closing) lasts ``close_ramp_s``; the one before speech (the mouth
    preparing) ``onset_lead_s``. Away from the ramps silence is exactly 0.
    """
    voiced = features.voiced
    step = 1.0 / features.rate
    if not voiced.any():
        return np.zeros(len(voiced))
    # Distance in seconds to the nearest voiced frame, split by side.
    index = np.arange(len(voiced))
    voiced_idx = np.flatnonzero(voiced)
    after = np.searchsorted(voiced_idx, index, side="right") - 1  # last voiced frame at or before
    before = np.searchsorted(voiced_idx, index, side="left")  # first voiced frame at or after
    since_end = np.where(after >= 0, (index - voiced_idx[np.maximum(after, 0)]) * step, np.inf)
    until_start = np.where(
        before < len(voiced_idx), (voiced_idx[np.minimum(before, len(voiced_idx) - 1)] - index) * step, np.inf
    )

    def ramp(distance: np.ndarray, length: float) -> np.ndarray:
        if length <= 0:
            return (distance <= 0).astype(np.float64)
        u = np.clip(distance / length, 0.0, 1.0)
        return 0.5 * (1.0 + np.cos(np.pi * u))

    return np.maximum(ramp(since_end, close_ramp_s), ramp(until_start, onset_lead_s))


def _syllable_bumps(features: AudioFeatures) -> np.ndarray:
    """float [K]: one raised-cosine open-close bump per syllable nucleus, as high as its envelope peak.

    Each bump spans from halfway to the previous nucleus to halfway to the next (60-180 ms each side),
    so neighbouring syllables are separated by a dip.
    """
    out = np.zeros(len(features.times))
    nuclei = features.nuclei
    for s, (t0, height) in enumerate(zip(nuclei, features.nucleus_strength, strict=True)):
        left = 0.5 * (t0 - nuclei[s - 1]) if s > 0 else 0.15
        right = 0.5 * (nuclei[s + 1] - t0) if s + 1 < len(nuclei) else 0.15
        lo, hi = np.searchsorted(features.times, [t0 - 0.18, t0 + 0.18])
        d = features.times[lo:hi] - t0
        width = np.where(d < 0, np.clip(left, 0.06, 0.18), np.clip(right, 0.06, 0.18))
        u = np.clip(np.abs(d) / width, 0.0, 1.0)
        out[lo:hi] = np.maximum(out[lo:hi], float(height) * 0.5 * (1.0 + np.cos(np.pi * u)))
    return out


def formant_openness(
    f1: np.ndarray, periodicity: np.ndarray, voiced: np.ndarray, rate: float, config: Audio2MotionConfig
) -> np.ndarray:
    """float [K] in [0, 1]: how open the vowel sounds, from its first formant, per analysis frame.

    F1 is normalised per clip to its own ``formant_low_percentile`` .. ``formant_high_percentile`` over the
    voiced, periodic frames (so voice and microphone do not matter), weighted by how periodic the frame is
    (a vowel, not a fricative or noise: ``formant_min_periodicity``), 0 outside voice activity, and smoothed
    by ``formant_smoothing_ms``.

    Args:
        f1: float [K] first-formant estimate in Hz (nan where none). periodicity: float [K] in [0, 1].
        voiced: bool [K] voice activity. rate: analysis frames per second. config: the settings.
    """
    f1 = np.asarray(f1, np.float64)
    periodicity = np.asarray(periodicity, np.float64)
    confidence = np.clip((periodicity - config.formant_min_periodicity) / 0.3, 0.0, 1.0)
    confidence = np.where(np.asarray(voiced, bool) & np.isfinite(f1), confidence, 0.0)
    reliable = confidence > 0.5
    if reliable.sum() < 3:
        return np.zeros(len(f1))
    low, high = np.percentile(f1[reliable], [config.formant_low_percentile, config.formant_high_percentile])
    openness = np.clip((np.nan_to_num(f1, nan=low) - low) / max(high - low, 1.0), 0.0, 1.0) * confidence
    sigma = config.formant_smoothing_ms / 1000.0 * rate
    return ndimage.gaussian_filter1d(openness, sigma, mode="nearest") if sigma > 0 else openness


def _jaw_curve(
    envelope: np.ndarray,
    bumps: np.ndarray,
    phone_jaw: np.ndarray,
    closure: np.ndarray,
    rate: float,
    config: Audio2MotionConfig,
    openness: np.ndarray | None = None,
) -> np.ndarray:
    """float [K] jaw opening on the analysis grid from loudness, syllables, the phones' and the vowel's
    openness.

    Args:
        envelope: float [K], the clip's normalised loudness envelope.
        bumps: float [K], one open-close bump per syllable nucleus (:func:`_syllable_bumps`).
        phone_jaw: float [K], coarticulated jaw_open target of the phones (0 closed .. ~0.9 open vowel).
        closure: float [K], bilabial closure curve (the jaw nearly shuts on /p b m/).
        rate: analysis frames per second.
        config: gains and weights.
        openness: float [K] in [0, 1], the vowel's openness from its first formant (:func:`formant_openness`);
            used with ``config.formant_weight`` > 0.
    """
    envelope = np.clip(envelope.astype(np.float64), 0.0, 1.3)
    loudness = (1.0 - config.syllable_weight) * envelope + config.syllable_weight * bumps
    loudness = np.clip(loudness, 0.0, None) ** config.jaw_compression
    # The phones' openness is relative to a mid vowel (0.55): open vowels open further, consonants less.
    phone_openness = np.clip(phone_jaw / 0.55, 0.0, 1.6)
    modulation = (1.0 - config.phone_jaw_weight) + config.phone_jaw_weight * phone_openness
    drive = loudness * modulation
    if config.formant_weight > 0 and openness is not None:
        drive = (1.0 - config.formant_weight) * drive + config.formant_weight * openness
    jaw = config.jaw_gain * drive * (1.0 - 0.8 * closure)
    sigma = config.jaw_smoothing_ms / 1000.0 * rate
    return ndimage.gaussian_filter1d(np.clip(jaw, 0.0, 1.0), sigma, mode="nearest")


def _speech(audio: Audio, config: Audio2MotionConfig) -> np.ndarray | None:
    """bool [K] on the analysis grid where the speech detector hears a voice; None when it is turned off."""
    if config.speech_threshold <= 0:
        return None
    times = analysis_times(len(audio.samples), audio.rate)
    return speech_mask(
        audio.samples, audio.rate, times, config.speech_threshold, config.speech_hangover_ms / 1000.0
    )


def analyse_speech(audio: Audio, config: Audio2MotionConfig | None = None) -> AudioFeatures:
    """Loudness and voice activity of ``audio`` as the motion stage sees them."""
    config = config or Audio2MotionConfig()
    vad = VadParams(
        on_db=config.silence_threshold_db,
        off_db=max(1.0, config.silence_threshold_db - 4.0),
        min_pause_s=config.min_pause_ms / 1000.0,
    )
    window_s = config.envelope_window_ms / 1000.0
    return analyse_audio(audio.samples, audio.rate, window_s, vad, speech=_speech(audio, config))


def require_speech(audio: Audio, name: str, config: Audio2MotionConfig | None = None) -> None:
    """Raise :class:`InputError` when ``audio`` holds no speech (silence, noise, music, a tone)."""
    config = config or Audio2MotionConfig()
    if analyse_speech(audio, config).voiced.any():
        return
    detector_on = config.speech_threshold > 0
    if detector_on and speech_seconds(audio.samples, audio.rate, config.speech_threshold) == 0:
        raise InputError(
            f"{name} holds no speech (it sounds like silence, noise, music or a tone)",
            "give a clip with speech in it",
        )
    raise InputError(
        f"no speech found in {name}: its level never rises {config.silence_threshold_db:g} dB over its "
        "own noise floor",
        "give a clip with speech in it (or lower motion.silence_threshold_db for very quiet speech)",
    )


def audio_to_motion(
    audio: Audio,
    fps: float,
    num_frames: int | None = None,
    transcript: str | None = None,
    config: Audio2MotionConfig | None = None,
    progress: bool = False,
) -> MotionSequence:
    """Predict face motion for ``audio``.

    Args:
        audio: mono speech (``samples`` float32 [N]).
        fps: video frame rate.
        num_frames: T; defaults to ``round(audio.duration * fps)`` so the video is as long as the audio.
        transcript: optional text of the speech; aligned for more accurate phones when given (falls back to
            free phone recognition, with a warning, when it cannot be used).
        config: settings (defaults when None).
        progress: show a progress bar over the stages.

    Returns:
        MotionSequence with ``expression`` float32 [T, E] over ``EXPRESSION_NAMES`` (mouth coefficients in
        [0, 1], blinks in [0, 1], brow_up >= 0) and ``pose`` float32 [T, 6].
    """
    config = config or Audio2MotionConfig()
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_frames is None:
        num_frames = round(audio.duration * fps)
    rng = np.random.default_rng(config.seed)

    with progress_bar(total=4, desc="audio to motion", enabled=progress) as bar:
        bar.set_postfix_str("loudness and voice activity")
        features = analyse_speech(audio, config)
        bar.update()

        bar.set_postfix_str("phonemes")
        segments: list[PhoneSegment] = []
        if features.voiced.any():
            segments = audio_to_phones(audio, transcript, speech_spans(features), progress=progress)
        bar.update()

        bar.set_postfix_str("coarticulation")
        expression = _mouth(features, segments, num_frames, fps, config)
        bar.update()

        bar.set_postfix_str("blinks and head motion")
        pose = _idle(features, expression, num_frames, fps, rng, config)
        bar.update()
    return MotionSequence(fps=fps, expression=expression, pose=pose, names=EXPRESSION_NAMES)


@dataclass
class MouthParts:
    """The mouth of one clip on the analysis grid before the jaw settings and the lead apply.

    :func:`mouth_parts` makes it from the speech features and phones (the slow part: coarticulation,
    closures, the silence gate); :func:`mouth_expression` turns it into video frames under the jaw settings
    (``jaw_gain``, ``jaw_compression``, ``phone_jaw_weight``, ``syllable_weight``, ``jaw_smoothing_ms``,
    ``formant_weight`` and the formant's normalisation)
    and ``lead_ms``, fast enough to be called many times when those settings are fitted.

    Attributes:
        times: float64 [K] analysis times in seconds. rate: analysis frames per second.
        envelope: float32 [K] normalised loudness. bumps: float64 [K] syllable bumps.
        phone_jaw: float [K] the phones' coarticulated jaw target. closure: float [K] bilabial closures.
        shapes: float64 [K, E] every mouth coefficient but jaw_open, final up to the gate.
        gate: float64 [K] the silence gate (1 in speech, exactly 0 in silence).
        f1: float [K] the first-formant estimate in Hz (nan where none). periodicity: float [K] in [0, 1].
        voiced: bool [K] voice activity.
    """

    times: np.ndarray
    rate: float
    envelope: np.ndarray
    bumps: np.ndarray
    phone_jaw: np.ndarray
    closure: np.ndarray
    shapes: np.ndarray
    gate: np.ndarray
    f1: np.ndarray | None = None
    periodicity: np.ndarray | None = None
    voiced: np.ndarray | None = None

    def openness(self, config: Audio2MotionConfig) -> np.ndarray | None:
        """float [K]: the vowel's openness under ``config`` (:func:`formant_openness`); None without F1."""
        if self.f1 is None or self.periodicity is None or self.voiced is None:
            return None
        return formant_openness(self.f1, self.periodicity, self.voiced, self.rate, config)


def mouth_parts(
    features: AudioFeatures, segments: list[PhoneSegment], fps: float, config: Audio2MotionConfig
) -> MouthParts:
    """The :class:`MouthParts` of a clip from its features (:func:`analyse_speech`) and phones."""
    times = features.times
    shapes = coarticulate(
        segments,
        times,
        anticipation_s=config.anticipation_ms / 1000.0,
        rounding_anticipation_s=config.rounding_anticipation_ms / 1000.0,
        carryover_s=config.carryover_ms / 1000.0,
        smoothing_s=config.smoothing_ms / 1000.0,
    )  # [K, E]
    # A closure is only believed where the audio is not at its loudest: lips cannot be shut on a vowel.
    loud = ndimage.maximum_filter1d(features.envelope, max(1, round(0.03 * features.rate)))
    plausible = np.clip((0.8 - loud) / 0.4, 0.0, 1.0)
    closure = closure_curve(segments, times, min_width_s=max(1.0 / fps, 0.04)) * plausible  # [K]

    out = np.zeros((len(times), len(EXPRESSION_NAMES)), np.float64)
    out[:, _MOUTH_COLS] = config.shape_gain * shapes[:, _MOUTH_COLS]
    out[:, _LIPS_TOGETHER] = np.maximum(shapes[:, _LIPS_TOGETHER] * plausible, closure)
    out[:, _JAW] = 0.0
    # While the lips press together the other lip shapes give way.
    for name in ("mouth_wide", "pucker", "funnel", "lower_lip_down", "upper_lip_up", "lower_lip_in"):
        out[:, EXPRESSION_INDEX[name]] *= 1.0 - 0.8 * closure
    # Lip shapes scale a little with loudness: mumbled speech moves the lips less than projected speech.
    effort = np.clip(
        0.6 + 0.6 * ndimage.uniform_filter1d(features.envelope, round(0.2 * features.rate)), 0.0, 1.0
    )
    for col in _MOUTH_COLS:
        if col not in (_JAW, _LIPS_TOGETHER):
            out[:, col] *= effort
    gate = _silence_gate(features, config.close_ramp_ms / 1000.0, config.onset_lead_ms / 1000.0)
    return MouthParts(
        times=times,
        rate=features.rate,
        envelope=features.envelope,
        bumps=_syllable_bumps(features),
        phone_jaw=shapes[:, _JAW],
        closure=closure,
        shapes=out,
        gate=gate,
        f1=features.f1,
        periodicity=features.periodicity,
        voiced=features.voiced,
    )


def mouth_expression(
    parts: MouthParts, num_frames: int, fps: float, config: Audio2MotionConfig
) -> np.ndarray:
    """float32 [T, E] with the mouth columns filled (others 0): shapes, jaw, closures, silence gate.

    Video frame ``i`` shows the mouth computed for the instant ``(i + 0.5) / fps + lead``: every mouth curve,
    and the silence gate with them, is moved ``config.lead_ms`` earlier.
    """
    out = parts.shapes.copy()
    openness = parts.openness(config) if config.formant_weight > 0 else None
    out[:, _JAW] = _jaw_curve(
        parts.envelope, parts.bumps, parts.phone_jaw, parts.closure, parts.rate, config, openness
    )
    out[:, _MOUTH_COLS] = np.clip(out[:, _MOUTH_COLS], 0.0, 1.0) * parts.gate[:, None]
    times = parts.times - config.lead_ms / 1000.0
    frames = np.zeros((num_frames, out.shape[1]), np.float32)
    for j in _MOUTH_COLS:
        frames[:, j] = to_frames(times, out[:, j], num_frames, fps)
    # Silence is exactly closed: frames whose neighbouring analysis frames are all gated off are zeroed.
    frame_gate = to_frames(times, parts.gate, num_frames, fps)
    frames[frame_gate <= 0.0] = 0.0
    return frames


def _mouth(
    features: AudioFeatures,
    segments: list[PhoneSegment],
    num_frames: int,
    fps: float,
    config: Audio2MotionConfig,
) -> np.ndarray:
    """float32 [T, E] with the mouth columns filled (others 0): shapes, jaw, closures, silence gate."""
    return mouth_expression(mouth_parts(features, segments, fps, config), num_frames, fps, config)


def _idle(
    features: AudioFeatures,
    expression: np.ndarray,
    num_frames: int,
    fps: float,
    rng: np.random.Generator,
    config: Audio2MotionConfig,
) -> np.ndarray:
    """Fill blinks and brows into ``expression`` ([T, E], in place) and return the head pose [T, 6]."""
    expression[:, [EXPRESSION_INDEX["blink_left"], EXPRESSION_INDEX["blink_right"]]] = blink_curves(
        num_frames,
        fps,
        rng,
        mean_interval_s=config.blink_interval_s,
        min_interval_s=config.min_blink_interval_s,
        duration_s=config.blink_duration_ms / 1000.0,
    )
    emphasis = emphasis_curve(features.nuclei, features.nucleus_strength, num_frames, fps)
    expression[:, EXPRESSION_INDEX["brow_up"]] = config.brow_raise * emphasis
    # Speech activity, slow: the head sways more over a phrase, not per syllable.
    voiced = to_frames(features.times, features.voiced.astype(np.float64), num_frames, fps)
    activity = ndimage.gaussian_filter1d(voiced.astype(np.float64), 0.5 * fps, mode="nearest")
    amp = config.head_amplitude_deg
    return head_pose(
        num_frames,
        fps,
        rng,
        activity=activity,
        # A nod is slower than a brow raise: the head is heavy.
        emphasis=ndimage.gaussian_filter1d(emphasis.astype(np.float64), 0.1 * fps, mode="nearest"),
        amplitude_deg=(amp * 0.8, amp * 1.2, amp * 0.55),
        speech_boost=config.head_speech_boost,
        nod_deg=config.nod_deg,
        translation=config.head_translation,
    )


__all__ = [
    "Audio2MotionConfig",
    "MouthParts",
    "analyse_speech",
    "audio_to_motion",
    "formant_openness",
    "mouth_expression",
    "mouth_parts",
]

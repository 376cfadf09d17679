"""Generated motion that is not lip sync: eye blinks, head motion and brow raises.

All of it is drawn from a seeded ``numpy.random.Generator`` so that a seed gives the same motion, and none of
it is replayed from footage.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def blink_onsets(
    duration_s: float, rng: np.random.Generator, mean_interval_s: float = 3.5, min_interval_s: float = 1.5
) -> np.ndarray:
    """Start times [B] of blinks over ``duration_s``.

    Inter-blink intervals are gamma distributed (shape 4: spontaneous blinking is neither periodic nor
    Poisson), with the given mean, redrawn when under ``min_interval_s`` and capped at 3x the mean.
    """
    shape = 4.0
    onsets, t = [], float(rng.uniform(0.3, max(0.4, min(mean_interval_s, 2.5))))
    while t < duration_s:
        onsets.append(t)
        interval = rng.gamma(shape, mean_interval_s / shape)
        while interval < min_interval_s:
            interval = rng.gamma(shape, mean_interval_s / shape)
        t += min(interval, 3.0 * mean_interval_s)
    return np.asarray(onsets, np.float64)


def _blink_shape(t: np.ndarray, close_s: float, hold_s: float, open_s: float) -> np.ndarray:
    """Eyelid closure [K] at times ``t`` after a blink's start: fast ease-in close, hold, slower open."""
    out = np.zeros_like(t)
    closing = (t >= 0) & (t < close_s)
    out[closing] = 0.5 * (1.0 - np.cos(np.pi * t[closing] / close_s))
    out[(t >= close_s) & (t < close_s + hold_s)] = 1.0
    opening = (t >= close_s + hold_s) & (t < close_s + hold_s + open_s)
    u = (t[opening] - close_s - hold_s) / open_s
    out[opening] = (1.0 - u) ** 2 * (1.0 + 2.0 * u)  # smoothstep down, slower tail than the close
    return out


def blink_curves(
    num_frames: int,
    fps: float,
    rng: np.random.Generator,
    mean_interval_s: float = 3.5,
    min_interval_s: float = 1.5,
    duration_s: float = 0.22,
) -> np.ndarray:
    """float32 [T, 2] (left, right) eyelid closure in [0, 1] for ``num_frames`` video frames.

    A blink lasts about ``duration_s``: the lid closes in ~35 % of it, stays shut for at least one frame
    (so that the video shows it closed) and reopens more slowly. Both eyes blink together, the right one
    offset by a few milliseconds.
    """
    times = (np.arange(num_frames) + 0.5) / fps
    out = np.zeros((num_frames, 2), np.float64)
    for onset in blink_onsets(num_frames / fps, rng, mean_interval_s, min_interval_s):
        length = duration_s * rng.uniform(0.85, 1.15)
        close_s, hold_s = 0.35 * length, max(0.1 * length, 1.0 / fps)
        open_s = length - close_s - 0.1 * length
        depth = rng.uniform(0.92, 1.0)
        offset = rng.uniform(-0.008, 0.008)
        for eye, shift in enumerate((0.0, offset)):
            t = times - onset - shift
            near = (t > -0.05) & (t < length + hold_s + 0.05)
            out[near, eye] = np.maximum(
                out[near, eye], depth * _blink_shape(t[near], close_s, hold_s, open_s)
            )
    return out.astype(np.float32)


def _smooth_noise(times: np.ndarray, rng: np.random.Generator, low_hz: float, high_hz: float) -> np.ndarray:
    """[K] a sum of six sinusoids with log-uniform frequencies in [low_hz, high_hz], peak |x| <= 1.

    Amplitudes fall as 1/sqrt(f) so that slow sway dominates and fast components stay small.
    """
    freqs = np.exp(rng.uniform(np.log(low_hz), np.log(high_hz), 6))
    phases = rng.uniform(0.0, 2.0 * np.pi, 6)
    amps = 1.0 / np.sqrt(freqs)
    amps /= amps.sum()  # the sum can never exceed 1
    return (amps[None, :] * np.sin(2.0 * np.pi * times[:, None] * freqs[None, :] + phases[None, :])).sum(1)


def head_pose(
    num_frames: int,
    fps: float,
    rng: np.random.Generator,
    activity: np.ndarray,
    emphasis: np.ndarray,
    amplitude_deg: tuple[float, float, float] = (1.2, 1.8, 0.8),
    speech_boost: float = 0.6,
    nod_deg: float = 0.8,
    translation: float = 0.0,
) -> np.ndarray:
    """float32 [T, 6] head pose: axis-angle rotation in radians, then translation.

    Args:
        num_frames: T.
        fps: frames per second.
        rng: random generator (the motion is a deterministic function of its state).
        activity: float [T] in [0, 1], slowly varying speech activity; the sway grows with it.
        emphasis: float [T] in [0, 1], bumps on stressed syllables; the head nods with them (pitch).
        amplitude_deg: peak sway about x (pitch), y (yaw), z (roll) when idle, in degrees.
        speech_boost: relative extra sway during speech (0.6: 60 % larger).
        nod_deg: peak pitch of a nod on a fully stressed syllable.
        translation: peak sway of the head's position, in face-model units (0: the head only turns).

    The peak rotation about each axis is at most ``amplitude * (1 + speech_boost) (+ nod_deg for x)``.
    """
    times = np.arange(num_frames) / fps
    gain = 1.0 + speech_boost * np.clip(activity, 0.0, 1.0)
    euler_deg = np.stack(
        [amp * gain * _smooth_noise(times, rng, 0.06, 0.5) for amp in amplitude_deg], axis=1
    )  # [T, 3]
    euler_deg[:, 0] += nod_deg * np.clip(emphasis, 0.0, 1.0)
    pose = np.zeros((num_frames, 6), np.float64)
    if num_frames:
        pose[:, :3] = Rotation.from_euler("xyz", euler_deg, degrees=True).as_rotvec()
    if translation > 0.0:
        pose[:, 3:] = np.stack([translation * _smooth_noise(times, rng, 0.05, 0.3) for _ in range(3)], 1)
    return pose.astype(np.float32)


def emphasis_curve(
    nuclei: np.ndarray,
    strength: np.ndarray,
    num_frames: int,
    fps: float,
    min_gap_s: float = 1.2,
    rise_s: float = 0.12,
    fall_s: float = 0.35,
) -> np.ndarray:
    """float32 [T] in [0, 1]: a bump on each stressed syllable, for nods and brow raises.

    A syllable counts as stressed when it is among the loudest third of the clip's nuclei and at least
    ``min_gap_s`` after the previous stressed one. Each bump rises over ``rise_s`` before the nucleus and
    falls over ``fall_s`` after it, with height growing with the syllable's loudness.
    """
    out = np.zeros(num_frames, np.float64)
    if len(nuclei) == 0:
        return out.astype(np.float32)
    times = (np.arange(num_frames) + 0.5) / fps
    threshold = np.percentile(strength, 67)
    last = -np.inf
    for t0, s in zip(nuclei, strength, strict=True):
        if s < threshold or t0 - last < min_gap_s:
            continue
        last = t0
        height = float(np.clip(s, 0.5, 1.0))
        d = times - t0
        bump = np.where(
            d < 0,
            np.exp(-0.5 * (d / (0.5 * rise_s)) ** 2),
            np.exp(-0.5 * (d / (0.5 * fall_s)) ** 2),
        )
        out = np.maximum(out, height * bump)
    return out.astype(np.float32)

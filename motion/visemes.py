"""Phones -> visemes -> mouth-shape curves, with Cohen-Massaro coarticulation.

Each ARPAbet phone maps to a viseme (a mouth shape shared by phones that look alike) and each viseme to
target weights of the named expression coefficients (``motion.blendshapes``). :func:`coarticulate` turns a
timed phone sequence into smooth per-frame curves: every phone spreads its target over time with a
dominance function (flat over the phone, decaying before it, the anticipation, and after it, the
carry-over), and the curves are the dominance-weighted mean of the targets (Cohen & Massaro 1993).
Bilabial closures get a high dominance and are enforced after smoothing, so short /p b m/ still close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.phonemes import PhoneSegment


@dataclass(frozen=True)
class Viseme:
    """A mouth shape: coefficient targets and how strongly it holds against its neighbours."""

    targets: dict[str, float]
    """Coefficient name -> target weight (unnamed coefficients target 0)."""
    dominance: float = 1.0
    """Weight against neighbouring phones; high for shapes that must be reached (closures)."""
    rounding: bool = False
    """Lip rounding anticipates further ahead than other shapes (it starts during preceding consonants)."""


VISEMES: dict[str, Viseme] = {
    "rest": Viseme({}, dominance=0.6),
    "bilabial": Viseme({"lips_together": 1.0, "jaw_open": 0.04}, dominance=8.0),
    "labiodental": Viseme({"lower_lip_in": 0.8, "upper_lip_up": 0.25, "jaw_open": 0.1}, dominance=4.0),
    "dental": Viseme({"jaw_open": 0.18, "mouth_wide": 0.12, "lower_lip_down": 0.2}, dominance=1.5),
    "alveolar": Viseme({"jaw_open": 0.2, "mouth_wide": 0.15}, dominance=0.8),
    "lateral": Viseme({"jaw_open": 0.28, "mouth_wide": 0.1}, dominance=0.7),
    "sibilant": Viseme({"jaw_open": 0.07, "mouth_wide": 0.45, "lower_lip_down": 0.1}, dominance=1.5),
    "postalveolar": Viseme(
        {"jaw_open": 0.12, "funnel": 0.7, "pucker": 0.3, "upper_lip_up": 0.2}, dominance=2.0, rounding=True
    ),
    "velar": Viseme({"jaw_open": 0.3, "mouth_wide": 0.1}, dominance=0.6),
    "glottal": Viseme({"jaw_open": 0.3}, dominance=0.3),
    "rhotic": Viseme({"jaw_open": 0.15, "pucker": 0.4, "funnel": 0.25}, dominance=1.2, rounding=True),
    "glide_w": Viseme({"jaw_open": 0.08, "pucker": 0.9, "funnel": 0.15}, dominance=3.0, rounding=True),
    "glide_y": Viseme({"jaw_open": 0.12, "mouth_wide": 0.45}, dominance=1.0),
    "open": Viseme({"jaw_open": 0.9, "lower_lip_down": 0.3}, dominance=1.2),
    "open_front": Viseme(
        {"jaw_open": 0.7, "mouth_wide": 0.35, "lower_lip_down": 0.3, "upper_lip_up": 0.1}, dominance=1.2
    ),
    "mid": Viseme({"jaw_open": 0.55, "lower_lip_down": 0.2}, dominance=1.0),
    "open_round": Viseme({"jaw_open": 0.65, "funnel": 0.55, "pucker": 0.15}, dominance=1.2, rounding=True),
    "mid_front": Viseme({"jaw_open": 0.45, "mouth_wide": 0.3, "lower_lip_down": 0.15}, dominance=1.0),
    "rhotic_vowel": Viseme({"jaw_open": 0.3, "pucker": 0.35, "funnel": 0.3}, dominance=1.0, rounding=True),
    "near_close": Viseme({"jaw_open": 0.3, "mouth_wide": 0.4}, dominance=1.0),
    "close_front": Viseme(
        {"jaw_open": 0.18, "mouth_wide": 0.7, "smile_left": 0.12, "smile_right": 0.12}, dominance=1.2
    ),
    "mid_round": Viseme({"jaw_open": 0.45, "funnel": 0.7, "pucker": 0.35}, dominance=1.2, rounding=True),
    "near_close_round": Viseme({"jaw_open": 0.3, "pucker": 0.5, "funnel": 0.3}, dominance=1.2, rounding=True),
    "close_round": Viseme({"jaw_open": 0.15, "pucker": 0.9, "funnel": 0.2}, dominance=1.5, rounding=True),
}

PHONE_TO_VISEME: dict[str, str] = {
    "SIL": "rest",
    "M": "bilabial", "B": "bilabial", "P": "bilabial",
    "F": "labiodental", "V": "labiodental",
    "TH": "dental", "DH": "dental",
    "T": "alveolar", "D": "alveolar", "N": "alveolar",
    "L": "lateral",
    "S": "sibilant", "Z": "sibilant",
    "SH": "postalveolar", "ZH": "postalveolar", "CH": "postalveolar", "JH": "postalveolar",
    "K": "velar", "G": "velar", "NG": "velar",
    "HH": "glottal",
    "R": "rhotic",
    "W": "glide_w",
    "Y": "glide_y",
    "AA": "open",
    "AE": "open_front",
    "AH": "mid",
    "AO": "open_round",
    "EH": "mid_front",
    "ER": "rhotic_vowel",
    "IH": "near_close",
    "IY": "close_front",
    "OW": "mid_round",
    "UH": "near_close_round",
    "UW": "close_round",
    # Diphthongs: the first half takes the first viseme, the second half the second (see DIPHTHONGS).
    "AW": "open",
    "AY": "open",
    "EY": "mid_front",
    "OY": "open_round",
}  # fmt: skip

# Diphthongs glide between two shapes: (viseme of the first half, viseme of the second half).
DIPHTHONGS: dict[str, tuple[str, str]] = {
    "AW": ("open", "near_close_round"),
    "AY": ("open", "close_front"),
    "EY": ("mid_front", "close_front"),
    "OY": ("open_round", "close_front"),
    "OW": ("mid_round", "close_round"),
}

BILABIALS: frozenset[str] = frozenset({"M", "B", "P"})
_ROUNDING_NAMES = ("pucker", "funnel")


def viseme_vector(viseme: str) -> np.ndarray:
    """float32 [E]: the target weights of ``viseme`` in ``EXPRESSION_NAMES`` order."""
    out = np.zeros(len(EXPRESSION_NAMES), np.float32)
    for name, weight in VISEMES[viseme].targets.items():
        out[EXPRESSION_INDEX[name]] = weight
    return out


def phone_targets(phone: str) -> np.ndarray:
    """float32 [E]: the target weights of ``phone`` (diphthongs: their first shape)."""
    return viseme_vector(PHONE_TO_VISEME.get(phone, "rest"))


def _viseme_spans(segments: list[PhoneSegment]) -> list[tuple[str, float, float]]:
    """Split diphthongs into two halves -> [(viseme, start_s, end_s)]."""
    spans = []
    for phone, start, end in segments:
        if phone in DIPHTHONGS:
            first, second = DIPHTHONGS[phone]
            middle = start + 0.55 * (end - start)
            spans += [(first, start, middle), (second, middle, end)]
        else:
            spans.append((PHONE_TO_VISEME.get(phone, "rest"), start, end))
    return spans


def coarticulate(
    segments: list[PhoneSegment],
    times: np.ndarray,
    anticipation_s: float = 0.09,
    rounding_anticipation_s: float = 0.14,
    carryover_s: float = 0.06,
    smoothing_s: float = 0.025,
    shape: float = 1.5,
) -> np.ndarray:
    """Blend phone targets into curves sampled at ``times``.

    Args:
        segments: timed phones, sorted.
        times: float [K] sample times in seconds, evenly spaced.
        anticipation_s: decay constant of the dominance before a phone (the shape forms this early).
        rounding_anticipation_s: the same for pucker/funnel of rounded shapes, which anticipate further.
        carryover_s: decay constant of the dominance after a phone.
        smoothing_s: sigma of the final Gaussian smoothing.
        shape: exponent of the dominance decay, ``exp(-(distance / tau) ** shape)``.

    Returns:
        float32 [K, E] coefficient curves (mouth shapes only; blink and brow columns are 0).
    """
    num, num_coeffs = len(times), len(EXPRESSION_NAMES)
    if num == 0:
        return np.zeros((0, num_coeffs), np.float32)
    step = float(times[1] - times[0]) if num > 1 else 0.01
    rounding_cols = [EXPRESSION_INDEX[n] for n in _ROUNDING_NAMES]
    # A faint neutral dominance everywhere: far from every phone the mouth rests.
    weighted = np.zeros((num, num_coeffs), np.float64)
    total = np.full((num, num_coeffs), 1e-3, np.float64)
    for viseme, start, end in _viseme_spans(segments):
        spec = VISEMES[viseme]
        tau = np.full(num_coeffs, anticipation_s)
        if spec.rounding:
            tau[rounding_cols] = rounding_anticipation_s
        reach = 4.0 * max(float(tau.max()), carryover_s)
        lo = max(0, int(np.searchsorted(times, start - reach)))
        hi = min(num, int(np.searchsorted(times, end + reach)) + 1)
        t = times[lo:hi, None]  # [k, 1]
        before = np.clip(start - t, 0.0, None) / tau[None, :]  # [k, E]
        after = np.clip(t - end, 0.0, None) / carryover_s  # [k, 1]
        dominance = spec.dominance * np.exp(-((before + after) ** shape))  # [k, E]
        weighted[lo:hi] += dominance * viseme_vector(viseme)[None, :]
        total[lo:hi] += dominance
    curves = weighted / total
    curves = ndimage.gaussian_filter1d(curves, max(smoothing_s / step, 1e-3), axis=0, mode="nearest")
    return curves.astype(np.float32)


def closure_curve(
    segments: list[PhoneSegment], times: np.ndarray, min_width_s: float, max_width_s: float = 0.15
) -> np.ndarray:
    """float32 [K]: 1 at every bilabial closure, with smooth shoulders, so that closures survive smoothing.

    Each /p b m/ gets a flat top over its span, widened to at least ``min_width_s`` (one video frame, so
    that some frame shows the lips shut) and narrowed to at most ``max_width_s`` around its centre (a
    closure longer than that is a recognition error more often than a hummed /m/), and raised-cosine
    shoulders of ``min_width_s``.
    """
    out = np.zeros(len(times), np.float32)
    for phone, start, end in segments:
        if phone not in BILABIALS:
            continue
        centre = 0.5 * (start + end)
        half = 0.5 * float(np.clip(end - start, min_width_s, max(max_width_s, min_width_s)))
        lo, hi = np.searchsorted(times, [centre - half - min_width_s, centre + half + min_width_s])
        distance = np.clip(np.abs(times[lo:hi] - centre) - half, 0.0, None) / min_width_s
        bump = np.where(distance < 1.0, 0.5 * (1.0 + np.cos(np.pi * np.minimum(distance, 1.0))), 0.0)
        out[lo:hi] = np.maximum(out[lo:hi], bump.astype(np.float32))
    return out

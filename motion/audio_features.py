"""Language-independent speech features: loudness envelope, voice activity, syllable nuclei and the first
formant (vowel openness).

Everything here works on any voice in any language: it looks at the energy of the speech band and at the
spectral envelope under 1.1 kHz only. Voice
activity can be narrowed to where a speech detector hears a voice (``motion.voice_activity``), which energy
alone cannot tell from a tone, music or noise.
Features are computed on an analysis grid of ``ANALYSIS_RATE`` frames per second (10 ms hop) and then
resampled to video frames with :func:`to_frames`. Video frame ``i`` is taken to show the instant
``(i + 0.5) / fps``, the middle of the interval it is on screen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

ANALYSIS_RATE = 100.0  # analysis frames per second (10 ms hop)
_EPS_ENERGY = 1e-12  # -120 dBFS: the level of digital silence


@dataclass
class VadParams:
    """Settings of the energy voice-activity detector (see :func:`voice_activity`)."""

    on_db: float = 9.0
    """Speech starts where the level rises this many dB above the local noise floor."""
    off_db: float = 5.0
    """Speech ends where the level falls below the noise floor plus this many dB (hysteresis)."""
    dynamic_range_db: float = 38.0
    """Nothing quieter than this many dB under the clip's speech level counts as speech."""
    absolute_floor_db: float = -62.0
    """Nothing quieter than this (dBFS, speech band) counts as speech, whatever the noise floor."""
    min_pause_s: float = 0.18
    """Gaps in speech shorter than this are bridged (stop closures, short breaths)."""
    min_speech_s: float = 0.06
    """Bursts shorter than this are dropped (clicks, pops)."""
    floor_window_s: float = 2.0
    """Window of the minimum-statistics noise-floor tracker."""


@dataclass
class AudioFeatures:
    """Speech features of one clip on the analysis grid (``K`` frames at ``rate`` Hz).

    Attributes:
        rate: analysis frames per second.
        times: float64 [K], the time in seconds at the centre of each analysis window.
        level_db: float32 [K], speech-band (300-3400 Hz) RMS level in dBFS.
        noise_floor_db: float32 [K], tracked noise floor in dBFS.
        envelope: float32 [K], noise-subtracted speech-band RMS divided by the clip's robust speech level
            (95th percentile over voiced frames): about 0 in silence, about 1 on loud syllables, whatever
            the recording level.
        voiced: bool [K], voice activity after hysteresis and minimum-pause bridging.
        nuclei: float64 [S], times in seconds of syllable nuclei (envelope peaks inside speech).
        nucleus_strength: float32 [S], ``envelope`` at each nucleus.
        f1: float32 [K], an estimate of the first formant in Hz (:func:`first_formant`; nan in silence).
        periodicity: float32 [K], how periodic the sound is (near 1 on vowels, low on noise and fricatives).
    """

    rate: float
    times: np.ndarray
    level_db: np.ndarray
    noise_floor_db: np.ndarray
    envelope: np.ndarray
    voiced: np.ndarray
    nuclei: np.ndarray
    nucleus_strength: np.ndarray
    f1: np.ndarray | None = None
    periodicity: np.ndarray | None = None


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """float64 [T]: the instant each video frame shows, ``(i + 0.5) / fps``."""
    return (np.arange(num_frames, dtype=np.float64) + 0.5) / fps


def to_frames(times: np.ndarray, values: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """Linearly resample a curve given at ``times`` ([K]) to ``num_frames`` video frames -> [T]."""
    return np.interp(frame_times(num_frames, fps), times, values).astype(np.float32)


def analysis_times(num_samples: int, rate: int, hop_s: float = 1.0 / ANALYSIS_RATE) -> np.ndarray:
    """float64 [K]: centres (s) of the analysis windows over ``num_samples`` samples, one every ``hop_s``."""
    hop = rate * hop_s
    num = max(1, int(np.ceil(num_samples / hop)))
    return np.round((np.arange(num) + 0.5) * hop) / rate


def band_energy(
    samples: np.ndarray,
    rate: int,
    band_hz: tuple[float, float] = (300.0, 3400.0),
    window_s: float = 0.025,
    hop_s: float = 1.0 / ANALYSIS_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-square energy of the speech band in sliding windows.

    Args:
        samples: float32 [N] mono audio in [-1, 1].
        rate: sample rate in Hz.
        band_hz: pass band of the zero-phase Butterworth filter applied first.
        window_s: RMS window length (rectangular, centred on each analysis time).
        hop_s: analysis hop.

    Returns:
        times float64 [K] (window centres, s) and energy float64 [K] (mean square, full scale = 1).
    """
    x = np.asarray(samples, dtype=np.float64)
    high = min(band_hz[1], 0.45 * rate)
    if len(x) > 30:
        sos = signal.butter(4, [band_hz[0], high], btype="bandpass", fs=rate, output="sos")
        x = signal.sosfiltfilt(sos, x, padlen=min(len(x) - 1, 3 * 13))
    half = max(1, round(rate * window_s / 2))
    centres = np.round(analysis_times(len(x), rate, hop_s) * rate).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    lo = np.clip(centres - half, 0, len(x))
    hi = np.clip(centres + half, 0, len(x))
    energy = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return centres / rate, np.maximum(energy, 0.0)


def noise_floor(level_db: np.ndarray, rate: float, window_s: float) -> np.ndarray:
    """Minimum-statistics noise floor -> float64 [K] dBFS.

    The floor is the running minimum of the 50 ms-smoothed level over ``window_s``, smoothed again over the
    same window, plus a 3 dB bias (the minimum of a noisy level sits under its mean). It follows a noise
    floor that drifts (broadcast hiss, room tone) and is capped by the clip's median so that a clip with no
    pause at all does not read its quiet consonants as noise.
    """
    smooth = ndimage.uniform_filter1d(level_db, max(1, round(0.05 * rate)), mode="nearest")
    size = max(3, round(window_s * rate))
    floor = ndimage.minimum_filter1d(smooth, size, mode="nearest")
    floor = ndimage.uniform_filter1d(floor, size, mode="nearest") + 3.0
    return np.minimum(floor, np.median(smooth))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)] index ranges where ``mask`` is True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def voice_activity(level_db: np.ndarray, floor_db: np.ndarray, rate: float, params: VadParams) -> np.ndarray:
    """Energy VAD with an adaptive floor, hysteresis and minimum pause -> bool [K].

    Args:
        level_db: float [K], speech-band level in dBFS.
        floor_db: float [K], noise floor from :func:`noise_floor`.
        rate: analysis frames per second.
        params: thresholds and durations.
    """
    smooth = ndimage.uniform_filter1d(level_db, max(1, round(0.03 * rate)), mode="nearest")
    speech_level = float(np.percentile(smooth, 95))
    # The on-threshold never needs more than half the speech-to-noise range: in loud noise a fixed margin
    # above the floor would miss soft syllables.
    margin_on = np.minimum(params.on_db, 0.5 * np.maximum(speech_level - floor_db, 0.0))
    margin_off = np.minimum(params.off_db, 0.3 * np.maximum(speech_level - floor_db, 0.0))
    lowest = max(speech_level - params.dynamic_range_db, params.absolute_floor_db)
    on = np.maximum(floor_db + margin_on, lowest)
    off = np.maximum(floor_db + margin_off, lowest - 3.0)
    if speech_level < params.absolute_floor_db:
        return np.zeros(len(level_db), bool)

    voiced = np.zeros(len(level_db), bool)
    active = False
    for k, value in enumerate(smooth):
        active = value > off[k] if active else value > on[k]
        voiced[k] = active

    min_pause = round(params.min_pause_s * rate)
    for start, stop in _runs(~voiced):
        if start > 0 and stop < len(voiced) and stop - start < min_pause:
            voiced[start:stop] = True
    return drop_short_bursts(voiced, rate, params.min_speech_s)


def drop_short_bursts(voiced: np.ndarray, rate: float, min_speech_s: float) -> np.ndarray:
    """bool [K]: ``voiced`` without its runs shorter than ``min_speech_s`` (clicks, pops)."""
    voiced = voiced.copy()
    min_speech = round(min_speech_s * rate)
    for start, stop in _runs(voiced):
        if stop - start < min_speech:
            voiced[start:stop] = False
    return voiced


def speech_spans(
    features: AudioFeatures, margin_s: float = 0.2, max_length_s: float = 12.0
) -> list[tuple[float, float]]:
    """[(start_s, end_s)] stretches of speech to decode as separate utterances.

    Voiced runs are widened by ``margin_s`` each side (never past the middle of the pause to the next
    run) and consecutive runs are grouped while the group stays under ``max_length_s``.
    """
    runs = [
        (features.times[a] - 0.5 / features.rate, features.times[b - 1] + 0.5 / features.rate)
        for a, b in _runs(features.voiced)
    ]
    if not runs:
        return []
    end_of_clip = float(features.times[-1] + 0.5 / features.rate)
    padded = []
    for k, (start, end) in enumerate(runs):
        lo = max(0.0, start - margin_s, 0.5 * (runs[k - 1][1] + start) if k else 0.0)
        hi = min(end_of_clip, end + margin_s, 0.5 * (end + runs[k + 1][0]) if k + 1 < len(runs) else np.inf)
        padded.append((lo, hi))
    groups = [padded[0]]
    for start, end in padded[1:]:
        if end - groups[-1][0] <= max_length_s:
            groups[-1] = (groups[-1][0], end)
        else:
            groups.append((start, end))
    return [(float(a), float(b)) for a, b in groups]


def syllable_nuclei(
    envelope: np.ndarray,
    voiced: np.ndarray,
    rate: float,
    min_gap_s: float = 0.1,
    min_prominence: float = 0.08,
) -> np.ndarray:
    """Indices [S] of syllable nuclei: peaks of the smoothed envelope inside voiced regions.

    A syllable is a rise and fall of loudness around its vowel; its peak must stand ``min_prominence``
    (in units of the normalised envelope) above the dips on either side and lie ``min_gap_s`` from the
    next peak (speech rarely exceeds 8-10 syllables per second).
    """
    smooth = ndimage.gaussian_filter1d(envelope.astype(np.float64), sigma=0.02 * rate, mode="nearest")
    peaks, _ = signal.find_peaks(
        smooth, distance=max(1, round(min_gap_s * rate)), prominence=min_prominence, height=0.12
    )
    return peaks[voiced[peaks]]


def analyse_audio(
    samples: np.ndarray,
    rate: int,
    window_s: float = 0.025,
    vad: VadParams | None = None,
    normalise_percentile: float = 95.0,
    speech: np.ndarray | None = None,
) -> AudioFeatures:
    """Compute :class:`AudioFeatures` for one clip.

    Args:
        samples: float32 [N] mono audio in [-1, 1].
        rate: sample rate in Hz.
        window_s: RMS window length.
        vad: voice-activity settings (defaults when None).
        normalise_percentile: percentile of the voiced envelope that maps to 1.
        speech: bool [K] on the analysis grid (:func:`analysis_times`), where a speech detector hears a
            voice (``motion.voice_activity``); voice activity is kept only there, so that tones, music and
            noise loud enough to pass the energy test still count as silence. None: energy alone.
    """
    vad = vad or VadParams()
    times, energy = band_energy(samples, rate, window_s=window_s)
    level_db = 10.0 * np.log10(energy + _EPS_ENERGY)
    floor_db = noise_floor(level_db, ANALYSIS_RATE, vad.floor_window_s)
    voiced = voice_activity(level_db, floor_db, ANALYSIS_RATE, vad)
    if speech is not None:
        voiced = drop_short_bursts(voiced & speech, ANALYSIS_RATE, vad.min_speech_s)

    # Subtract the noise energy so that the envelope falls to ~0 between syllables even over hiss.
    noise_energy = 10.0 ** (floor_db / 10.0)
    amplitude = np.sqrt(np.maximum(energy - noise_energy, 0.0))
    reference = float(np.percentile(amplitude[voiced], normalise_percentile)) if voiced.any() else 0.0
    scale = 1.0 / reference if reference > 1e-6 else 0.0  # a clip with no speech has a flat envelope
    envelope = np.clip(amplitude * scale, 0.0, 1.5)

    peaks = syllable_nuclei(envelope, voiced, ANALYSIS_RATE)
    f1, periodicity = first_formant(samples, rate, times)
    return AudioFeatures(
        rate=ANALYSIS_RATE,
        times=times,
        level_db=level_db.astype(np.float32),
        noise_floor_db=floor_db.astype(np.float32),
        envelope=envelope.astype(np.float32),
        voiced=voiced,
        nuclei=times[peaks],
        nucleus_strength=envelope[peaks].astype(np.float32),
        f1=f1.astype(np.float32),
        periodicity=periodicity.astype(np.float32),
    )


FORMANT_RATE = 8000
"""Sample rate the first formant is estimated at: the band up to 4 kHz holds F1 and F2 (F1 <= ~1 kHz)."""


def _levinson(autocorr: np.ndarray, order: int) -> np.ndarray:
    """LPC coefficients [F, order + 1] (a[0] = 1) of each row of ``autocorr`` [F, >= order + 1]."""
    r = autocorr[:, : order + 1]
    a = np.zeros((len(r), order + 1))
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.einsum("fj,fj->f", a[:, 1:i], r[:, i - 1 : 0 : -1])
        k = -acc / np.maximum(error, 1e-12)
        previous = a[:, 1:i].copy()
        a[:, 1:i] = previous + k[:, None] * previous[:, ::-1]
        a[:, i] = k
        error = error * np.maximum(1.0 - k * k, 1e-6)
    return a


def first_formant(
    samples: np.ndarray,
    rate: int,
    times: np.ndarray,
    window_s: float = 0.03,
    order: int = 10,
    band_hz: tuple[float, float] = (200.0, 1100.0),
    pre_emphasis: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """An estimate of the first formant F1 and how periodic (voiced) the sound is, per analysis frame.

    F1 follows the jaw in every language: an open vowel ("a") has a high F1 (700-900 Hz), a closed one ("i",
    "u") a low one (250-350 Hz). Each frame (``window_s``, Hamming, at 8 kHz after a ``pre_emphasis``) is
    fitted with an all-pole model of ``order`` (autocorrelation LPC, 40 Hz lag window); the estimate is the
    centroid of that envelope's squared power within ``band_hz``: where the F1 peak lies. Picking the
    model's lowest pole instead fails often (F1 merged with F0 or with F2, a broad pole taken for a formant);
    the centroid degrades gently: it reads a back vowel whose F2 is near F1 ("o", "u") somewhat high.

    Args:
        samples: float32 [N] mono audio in [-1, 1].
        rate: sample rate in Hz.
        times: float64 [K] analysis times (s), e.g. :func:`analysis_times`.
        window_s: analysis window length.
        order: LPC order (2 per formant under 4 kHz, plus 2).
        band_hz: the band F1 lies in.
        pre_emphasis: first-order pre-emphasis coefficient (flattens the voice's spectral tilt).

    Returns:
        f1 float64 [K] in Hz (nan where the frame is silent) and periodicity float64 [K] in [0, 1]: the
        normalised autocorrelation peak at a pitch lag of 60-400 Hz (near 1 on vowels, low on noise,
        fricatives and silence).
    """
    from math import gcd

    x = np.asarray(samples, dtype=np.float64)
    if rate != FORMANT_RATE and len(x) > 1:
        g = gcd(int(rate), FORMANT_RATE)
        x = signal.resample_poly(x, FORMANT_RATE // g, int(rate) // g)
    fs = float(FORMANT_RATE)
    if len(x) > 30:  # hum and rumble under the voice would pull the envelope down
        sos = signal.butter(4, 150.0, btype="highpass", fs=fs, output="sos")
        x = signal.sosfiltfilt(sos, x, padlen=min(len(x) - 1, 3 * 13))
    if len(x) > 1:
        x = np.append(x[:1], x[1:] - pre_emphasis * x[:-1])
    n = max(8, round(window_s * fs))
    window = np.hamming(n)
    centres = np.round(np.asarray(times) * fs).astype(np.int64)
    index = centres[:, None] + np.arange(n)[None, :] - n // 2
    inside = (index >= 0) & (index < len(x))
    padded = x if len(x) else np.zeros(1)
    frames = np.where(inside, padded[np.clip(index, 0, len(padded) - 1)], 0.0)
    frames = (frames - frames.mean(1, keepdims=True)) * window
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    autocorr = np.fft.irfft(np.abs(np.fft.rfft(frames, nfft)) ** 2, nfft)[:, :n]
    window_corr = np.fft.irfft(np.abs(np.fft.rfft(window, nfft)) ** 2, nfft)[:n]
    energy = autocorr[:, 0]
    audible = energy > 1e-10 * n

    # Periodicity: the autocorrelation's peak over pitch lags, divided by the window's own (Boersma 1993).
    lo, hi = int(fs / 400.0), min(int(fs / 60.0), n - 1)
    normalised = autocorr[:, lo:hi] / np.maximum(energy[:, None], 1e-20)
    normalised /= window_corr[lo:hi] / window_corr[0]
    periodicity = np.where(audible, np.clip(normalised.max(1), 0.0, 1.0), 0.0)

    f1 = np.full(len(times), np.nan)
    rows = np.flatnonzero(audible)
    if len(rows):
        lag_window = np.exp(-0.5 * (2 * np.pi * 40.0 / fs * np.arange(order + 1)) ** 2)
        lagged = autocorr[rows, : order + 1] * lag_window
        lagged[:, 0] *= 1.0 + 1e-6  # a little white noise keeps the recursion stable
        a = _levinson(lagged, order)
        freqs = np.arange(band_hz[0], band_hz[1] + 1.0, 10.0)
        response = a @ np.exp(-2j * np.pi * np.outer(np.arange(order + 1), freqs) / fs)  # [F, B]
        weight = 1.0 / np.maximum(np.abs(response), 1e-6) ** 4  # the envelope's power, squared
        f1[rows] = (weight * freqs).sum(1) / weight.sum(1)
    return f1, periodicity

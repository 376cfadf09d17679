"""Frame-aligned speech features for learned audio-to-motion models: log-mel spectrogram and phone posteriors.

Two features per clip, both computed offline with what the installed packages carry:

- a log-mel spectrogram at 100 frames per second (:func:`log_mel`), kept at its own rate and cut into a window
  around any video frame with :meth:`SpeechFeatures.mel_window`;
- phone posteriors per video frame (:func:`phone_posteriors`): for each frame, the probability of each entry
  of :data:`motion.phonemes.PHONES` (39 ARPAbet phones + ``SIL``), from the lattice of pocketsphinx's bundled
  en-US model.

Where the posteriors come from. pocketsphinx's "allphone" search (used by :mod:`motion.phonemes` for free
recognition) keeps only its best path: it builds no lattice, its segments' ``prob`` is a constant 1 and it has
no n-best list (pocketsphinx 5.x ``allphone_search.c``). The n-gram and finite-state-grammar searches do build
a lattice and run forward-backward over it, and they accept any dictionary: here each phone is a one-phone
"word". So:

- with no transcript, an n-gram search over phone-words with the bundled phone trigram LM
  (``en-us-phone.lm.bin``) decodes the clip;
- with a transcript, a finite-state grammar of the transcript's phone sequence (every pronunciation variant of
  every word in the bundled dictionary, optional silence anywhere) decodes it;

and each lattice link's posterior (pocketsphinx's own forward-backward, the ``p=`` field of its HTK lattice
export) is spread over the 10 ms frames its phone spans. Summed over the links covering a frame, these are
real posteriors P(phone at t | audio) under the decoder's model (they sum to 1 within 1%, and are
renormalised). Frames no link covers (the final ``</s>`` node's span, frames past the decoded ones) and time
past the audio count as ``SIL``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import save_npz
from motion.audio import Audio
from motion.phonemes import (
    FRAME_RATE,
    PHONES,
    SILENCE,
    align_decoder,
    clean_phone,
    decode,
    missing_words,
    model_files,
    pcm16,
    transcript_words,
)
from motion.phonemes import decoder_lock as dictionary_lock

SCHEMA_VERSION = 1
FILE_KIND = "talking-portrait/speech-features"  # tells this file from other .npz files (MotionSequence, ...)
MEL_RATE = 100.0  # log-mel frames per second (10 ms hop)
MEL_FLOOR = 1e-10  # mel power floor before the log: the level of 16-bit quantisation noise (see log_mel)
LOG_MEL_FLOOR = float(np.log(np.float32(MEL_FLOOR)))  # log-mel of silence and of padding, as stored (float32)
_SIL = PHONES.index(SILENCE)

# Search settings, chosen on the project's demo clip against the forced alignment of its transcript.
# Free decoding: a language weight of 2 in all three passes (pocketsphinx's defaults of 6.5-9.5 are for word
# LMs and drop most short phones), a word-insertion penalty of 1 and a low silence probability (the defaults
# insert silences inside words); second-pass beams narrower than the defaults, which keep the lattice at
# hundreds of links per second of audio instead of 20,000-50,000 (on a 25 s clip, 2 s in all instead of
# 12 s) with the same best path and argmax, and the aligned phone's probability within 1%;
# an acoustic scale of 1/4 for the posteriors: of 1/1, 1/2, 1/4, 1/8 and 1/20 (the default, calibrated for
# word confidences) it gave the highest argmax agreement and mean probability of the aligned phone, while
# 1/1 gives near one-hot rows.
_FREE_SEARCH = dict(
    lw=2.0, fwdflatlw=2.0, bestpathlw=2.0, wip=1.0, silprob=1e-4, fwdflatbeam=1e-20, fwdflatwbeam=1e-10,
    ascale=4.0,
)  # fmt: skip
# Transcript decoding: pocketsphinx's default beams and acoustic scale (1/20); wider beams or other scales
# changed neither the argmax nor, by more than a few percent, the probability of the aligned phone.
_TRANSCRIPT_SEARCH = dict(ascale=20.0)
_lock = threading.Lock()  # the decoders below are stateful: one utterance at a time


# ---- log-mel ---------------------------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def _mel_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """float32 [n_fft // 2 + 1, n_mels]: triangular filters, equally spaced in mel, each of unit area in Hz.

    Unit area (Slaney's normalisation) makes a band's value the power density around its centre, so the
    wide high bands do not read louder than the narrow low ones for the same white noise.
    """
    bin_hz = np.arange(n_fft // 2 + 1) * rate / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # [n_mels, 1]
    rising = (bin_hz[None] - lower) / (centre - lower)
    falling = (upper - bin_hz[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))  # [n_mels, F]
    return weights.T.astype(np.float32)


def log_mel(
    audio: Audio,
    n_mels: int = 80,
    hop_s: float = 0.01,
    win_s: float = 0.025,
    fmin: float = 55.0,
    fmax: float = 7600.0,
) -> np.ndarray:
    """Log-mel spectrogram -> float32 [M, n_mels], ``M = ceil(duration / hop_s)``.

    Frame ``m`` is a Hann window of ``win_s`` centred at ``m * hop_s`` seconds (zeros before the start and
    past the end of the audio). Values are the natural log of the mel-band power, floored at
    :data:`MEL_FLOOR` (silence reads :data:`LOG_MEL_FLOOR`, about -23). Power is the squared spectrum
    divided by the squared window sum (a sine of amplitude A peaks at A^2 / 4 in its FFT bin, whatever
    ``win_s``); with the unit-area bands, a full-scale 1 kHz sine reads about -5.4 in its band and 16-bit
    quantisation noise sits at the floor.

    Args:
        audio: mono audio at any rate; ``fmax`` is capped at 95% of its Nyquist frequency.
        n_mels: number of mel bands (HTK mel scale, unit-area triangles) between ``fmin`` and ``fmax`` Hz.
        hop_s: frame hop in seconds.
        win_s: analysis window length in seconds (FFT size: the next power of two).
    """
    rate = int(audio.rate)
    samples = np.asarray(audio.samples, dtype=np.float32)
    hop = hop_s * rate
    win = max(2, round(win_s * rate))
    n_fft = 1 << (win - 1).bit_length()
    num = math.ceil(len(samples) / hop - 1e-9)
    fmax = min(fmax, 0.95 * rate / 2)
    if not 0 <= fmin < fmax:
        raise ValueError(f"need 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax} at {rate} Hz")

    half = win // 2
    padded = np.concatenate([np.zeros(half, np.float32), samples, np.zeros(win, np.float32)])
    starts = np.round(np.arange(num) * hop).astype(np.int64)  # window m starts at centre - half
    frames = padded[starts[:, None] + np.arange(win)[None, :]]  # [M, win]
    window = np.hanning(win + 2)[1:-1].astype(np.float32)  # no zero end points
    spectrum = np.fft.rfft(frames * window, n=n_fft, axis=1)  # [M, F]
    power = (spectrum.real**2 + spectrum.imag**2) / float(window.sum()) ** 2
    mel = power.astype(np.float32) @ _mel_filterbank(rate, n_fft, n_mels, float(fmin), float(fmax))
    return np.log(np.maximum(mel, MEL_FLOOR)).astype(np.float32)


# ---- phone posteriors ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _phone_dictionary() -> Iterator[str]:
    """Path of a temporary pronunciation dictionary whose words are the phones themselves (``AA AA``, ...)."""
    with tempfile.TemporaryDirectory(prefix=f"tp-speech-{os.getpid()}-") as folder:
        path = os.path.join(folder, "phones.dict")
        with open(path, "w") as f:
            f.writelines(f"{phone} {phone}\n" for phone in PHONES if phone != SILENCE)
        yield path


def _phone_word_decoder(**settings):
    """A decoder of the bundled acoustic model whose dictionary holds one word per phone."""
    import pocketsphinx

    hmm, _, _ = model_files()
    with _phone_dictionary() as dictionary:  # read once, at construction
        return pocketsphinx.Decoder(hmm=hmm, dict=dictionary, loglevel="FATAL", **settings)


@functools.lru_cache(maxsize=1)
def _free_decoder():
    """An n-gram decoder over phone-words with the bundled phone trigram LM (built once, ~0.05 s)."""
    _, phone_lm, _ = model_files()
    return _phone_word_decoder(lm=phone_lm, **_FREE_SEARCH)


@functools.lru_cache(maxsize=1)
def _grammar_decoder():
    """A decoder over phone-words with no search module, to be given a transcript grammar per call."""
    return _phone_word_decoder(lm=None, **_TRANSCRIPT_SEARCH)


def _pronunciations(word: str) -> list[tuple[str, ...]]:
    """Every pronunciation of ``word`` in the bundled dictionary, as tuples of :data:`PHONES` entries."""
    with dictionary_lock:
        decoder = align_decoder()
        entries = [decoder.lookup_word(word)] + [decoder.lookup_word(f"{word}({k})") for k in range(2, 10)]
    variants = []
    for entry in filter(None, entries):
        phones = tuple(p for p in map(clean_phone, entry.split()) if p != SILENCE)
        if phones and phones not in variants:
            variants.append(phones)
    return variants


def _transcript_grammar(decoder, words: list[str]):
    """A finite-state grammar accepting the phones of ``words`` in order, any pronunciation of each word.

    Optional silence between (and inside) words comes from the decoder's filler loops on every state.
    """
    transitions: list[tuple[int, int, float, str]] = []
    state = 0  # the state before the current word
    next_free = 1
    for word in words:
        variants = _pronunciations(word)
        after = next_free
        next_free += 1
        for phones in variants:
            current = state
            for k, phone in enumerate(phones):
                last = k == len(phones) - 1
                target = after if last else next_free
                if not last:
                    next_free += 1
                transitions.append((current, target, 1.0 / len(variants) if k == 0 else 1.0, phone))
                current = target
        state = after
    return decoder.create_fsg("transcript", 0, state, transitions)


def _lattice_posteriors(decoder, num_bins: int) -> np.ndarray | None:
    """Per-10-ms phone posteriors float64 [num_bins, P] from the decoder's current lattice, or None.

    Each lattice link stands for its source node's phone from that node's start frame to the start frame
    of its destination node; its posterior is added to that phone's column over those frames. Rows no link
    covers (the ``</s>`` node's span, frames past the decoded ones) are ``SIL``.
    """
    if decoder.hyp() is None:  # also runs the best-path search and the lattice forward-backward
        return None
    lattice = decoder.get_lattice()
    if lattice is None:
        return None
    with tempfile.TemporaryDirectory(prefix=f"tp-speech-{os.getpid()}-") as folder:
        path = os.path.join(folder, "lattice.slf")
        lattice.write_htk(path)
        with open(path) as f:
            text = f.read()
    nodes = re.findall(r"^I=\d+\tt=([\d.]+)\tW=(\S+)", text, re.M)
    links = re.findall(r"^J=\d+\tS=(\d+)\tE=(\d+)\ta=\S+\tp=(\S+)", text, re.M)
    if not nodes or not links:
        return None
    column = {phone: k for k, phone in enumerate(PHONES)}
    node_bin = np.round(np.array([t for t, _ in nodes], np.float64) * FRAME_RATE).astype(np.int64)
    node_phone = np.array([column.get(w, _SIL) for _, w in nodes])  # !SENT_START, !NULL (fillers) -> SIL
    link_table = np.array(links, dtype=np.float64)  # [L, 3]: source, destination, posterior
    source, destination = link_table[:, 0].astype(np.int64), link_table[:, 1].astype(np.int64)
    posterior = np.nan_to_num(link_table[:, 2], nan=0.0, posinf=0.0)
    first = np.clip(node_bin[source], 0, num_bins)
    stop = np.clip(node_bin[destination], 0, num_bins)

    # Add each link's posterior over [first, stop) with a difference array: +p at first, -p at stop.
    delta = np.zeros((num_bins + 1, len(PHONES)))
    np.add.at(delta, (first, node_phone[source]), posterior)
    np.add.at(delta, (stop, node_phone[source]), -posterior)
    rows = np.maximum(np.cumsum(delta, axis=0)[:num_bins], 0.0)
    total = rows.sum(axis=1, keepdims=True)
    uncovered = total[:, 0] < 0.5
    rows = np.where(uncovered[:, None], 0.0, rows / np.maximum(total, 1e-12))
    rows[uncovered, _SIL] = 1.0
    return rows


def _decode_posteriors(decoder, pcm: bytes, num_bins: int) -> np.ndarray | None:
    """Decode ``pcm`` as one utterance -> :func:`_lattice_posteriors`, or None when decoding fails."""
    try:
        decode(decoder, pcm)
    except RuntimeError:
        return None
    return _lattice_posteriors(decoder, num_bins)


def _analysis_posteriors(audio: Audio, transcript: str | None) -> np.ndarray:
    """float64 [K, P] phone posteriors on 10 ms bins ``[k / 100, (k + 1) / 100)``, K = ceil(100 * seconds)."""
    num_bins = max(1, math.ceil(audio.duration * FRAME_RATE - 1e-9))
    pcm = pcm16(audio)
    words = transcript_words(transcript) if transcript else []
    if words:
        unknown = missing_words(words)
        if unknown:
            warnings.warn(
                f"words not in the pronunciation dictionary: {', '.join(unknown[:8])}; "
                "using free phone recognition instead",
                stacklevel=3,
            )
        else:
            with _lock:
                decoder = _grammar_decoder()
                decoder.add_fsg("transcript", _transcript_grammar(decoder, words))
                decoder.activate_search("transcript")
                rows = _decode_posteriors(decoder, pcm, num_bins)
            if rows is not None:
                return rows
            warnings.warn(
                "the transcript could not be aligned with the audio; using free phone recognition instead",
                stacklevel=3,
            )
    with _lock:
        rows = _decode_posteriors(_free_decoder(), pcm, num_bins)
    if rows is None:  # nothing decodable (e.g. digital silence)
        rows = np.zeros((num_bins, len(PHONES)))
        rows[:, _SIL] = 1.0
    return rows


def _average_over_frames(
    rows: np.ndarray, rate: float, duration: float, fps: float, num_frames: int
) -> np.ndarray:
    """Average piecewise-constant rows over video frames -> float64 [num_frames, P].

    ``rows[k]`` holds over ``[k / rate, (k + 1) / rate)`` clipped to ``[0, duration)``; video frame ``t`` is
    the interval ``[t / fps, (t + 1) / fps)``; time past ``duration`` is ``SIL``. Each output row is the
    time-weighted mean of the rows its interval overlaps, so it still sums to 1.
    """
    num_bins = len(rows)
    edges = np.minimum(np.arange(num_bins + 1) / rate, duration)  # [K + 1], strictly increasing
    integral = np.zeros((num_bins + 1, rows.shape[1]))
    integral[1:] = np.cumsum(rows * np.diff(edges)[:, None], axis=0)
    bounds = np.arange(num_frames + 1) / fps  # [T + 1]
    inside = np.minimum(bounds, duration)
    k = np.clip(np.searchsorted(edges, inside, side="right") - 1, 0, num_bins - 1)
    fraction = (inside - edges[k]) / (edges[k + 1] - edges[k])
    at_bounds = integral[k] + fraction[:, None] * (integral[k + 1] - integral[k])  # [T + 1, P]
    at_bounds[:, _SIL] += np.maximum(bounds - duration, 0.0)
    frames = np.diff(at_bounds, axis=0)
    return frames / np.maximum(frames.sum(axis=1, keepdims=True), 1e-12)


def phone_posteriors(audio: Audio, fps: float, num_frames: int, transcript: str | None = None) -> np.ndarray:
    """Phone posteriors per video frame -> float32 [num_frames, len(PHONES)], each row summing to 1.

    Video frame ``t`` covers ``[t / fps, (t + 1) / fps)``; its row is the time-weighted mean of the 10 ms
    posteriors inside it (frames past the end of the audio are ``SIL`` = 1, one that straddles the end is
    mixed in proportion). Columns follow :data:`motion.phonemes.PHONES`.

    The 10 ms posteriors are pocketsphinx lattice posteriors (see the module docstring): with a transcript,
    of a grammar of its words' phones (any dictionary pronunciation, optional silences), so only timing and
    pronunciation are uncertain; without one, of free phone decoding with the phone trigram LM, so the rows
    also spread over acoustically confusable phones. A transcript with words missing from the dictionary,
    or that cannot be aligned, gives a warning and free decoding, never an error.

    Args:
        audio: mono speech at any rate (resampled to 16 kHz for the decoder).
        fps: video frames per second.
        num_frames: T, the number of video frames (may run past the audio, or stop before its end).
        transcript: optional text of the speech.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    rows = _analysis_posteriors(audio, transcript) if audio.duration > 0 else None
    return _phones_over_frames(rows, audio.duration, fps, num_frames)


def _phones_over_frames(rows: np.ndarray | None, duration: float, fps: float, num_frames: int) -> np.ndarray:
    """float32 [num_frames, P] from the 10 ms posteriors ``rows`` of ``duration`` seconds of audio (None, or
    no audio: silence)."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if duration <= 0 or rows is None:
        silence = np.zeros((num_frames, len(PHONES)), np.float32)
        silence[:, _SIL] = 1.0
        return silence
    return _average_over_frames(rows, FRAME_RATE, duration, fps, num_frames).astype(np.float32)


# ---- the stored features ---------------------------------------------------------------------------------


@dataclass
class SpeechFeatures:
    """Speech features of one clip, aligned to its ``num_frames`` video frames.

    Attributes:
        fps: video frames per second; video frame ``t`` covers ``[t / fps, (t + 1) / fps)``.
        num_frames: T.
        mel: float32 [M, n_mels], log-mel spectrogram from :func:`log_mel`; frame ``m`` centred at
            ``m / mel_rate`` s. M follows the audio, not T: use :meth:`mel_window` to read it per video frame.
        phones: float32 [T, P], phone posteriors from :func:`phone_posteriors`, rows summing to 1.
        mel_rate: mel frames per second (100).
        phone_names: the P phone symbols in column order (:data:`motion.phonemes.PHONES`).
    """

    fps: float
    num_frames: int
    mel: np.ndarray
    phones: np.ndarray
    mel_rate: float = MEL_RATE
    phone_names: tuple[str, ...] = field(default=PHONES)

    def __post_init__(self) -> None:
        self.fps = float(self.fps)
        self.num_frames = int(self.num_frames)
        self.mel_rate = float(self.mel_rate)
        self.mel = np.asarray(self.mel, dtype=np.float32)
        self.phones = np.asarray(self.phones, dtype=np.float32)
        self.phone_names = tuple(str(name) for name in self.phone_names)
        if not self.fps > 0 or not self.mel_rate > 0:
            raise ValueError(f"fps and mel_rate must be positive, got {self.fps} and {self.mel_rate}")
        if self.mel.ndim != 2:
            raise ValueError(f"mel must be [M, n_mels], got {self.mel.shape}")
        if self.phones.shape != (self.num_frames, len(self.phone_names)):
            raise ValueError(
                f"phones must be [{self.num_frames}, {len(self.phone_names)}], got {self.phones.shape}"
            )

    def mel_window(self, frame: int, width: int = 16) -> np.ndarray:
        """float32 [width, n_mels]: the ``width`` mel frames centred on video frame ``frame``'s centre time.

        The centre time is ``(frame + 0.5) / fps``; mel frames before the start or past the end of the
        spectrogram read :data:`LOG_MEL_FLOOR` (silence).
        """
        centre = (frame + 0.5) / self.fps * self.mel_rate
        first = math.floor(centre - (width - 1) / 2 + 0.5)
        out = np.full((width, self.mel.shape[1]), LOG_MEL_FLOOR, np.float32)
        lo, hi = max(first, 0), min(first + width, len(self.mel))
        if hi > lo:
            out[lo - first : hi - first] = self.mel[lo:hi]
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``.npz`` atomically (a temporary file in the same folder, renamed when complete)."""
        save_npz(
            path,
            kind=np.array(FILE_KIND),
            schema_version=np.int32(SCHEMA_VERSION),
            fps=np.float64(self.fps),
            num_frames=np.int64(self.num_frames),
            mel=self.mel,
            mel_rate=np.float64(self.mel_rate),
            phones=self.phones,
            phone_names=np.array(self.phone_names),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpeechFeatures:
        """Read features written by :meth:`save`.

        Raises:
            InputError: when the file is missing, unreadable, not a speech-features file, from another
                schema version, or inconsistent.
        """
        path = Path(path)
        fix = "prepare the identity again to rewrite its speech features"
        if not path.is_file():
            raise InputError(f"speech features not found: {path}", fix)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "kind" not in data.files or str(data["kind"]) != FILE_KIND:
                    raise InputError(f"{path} is not a speech-features file", fix)
                version = int(data["schema_version"])
                if version != SCHEMA_VERSION:
                    raise InputError(
                        f"{path} holds speech features of schema version {version}, this version reads "
                        f"{SCHEMA_VERSION}",
                        fix,
                    )
                return cls(
                    fps=float(data["fps"]),
                    num_frames=int(data["num_frames"]),
                    mel=data["mel"],
                    phones=data["phones"],
                    mel_rate=float(data["mel_rate"]),
                    phone_names=tuple(str(name) for name in data["phone_names"]),
                )
        except InputError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise InputError(f"cannot read speech features from {path} ({error})", fix) from error


@dataclass
class SpeechAnalysis:
    """The part of the speech features that does not depend on the video: what :func:`analyse_speech`
    computes, before :meth:`for_frames` lays it over the video frames.

    Attributes:
        duration: seconds of audio analysed.
        mel: float32 [M, n_mels] log-mel spectrogram (:func:`log_mel`).
        rows: float64 [K, P] phone posteriors on 10 ms bins, or None when there was no audio to decode.
    """

    duration: float
    mel: np.ndarray
    rows: np.ndarray | None

    def for_frames(self, fps: float, num_frames: int) -> SpeechFeatures:
        """The speech features for ``num_frames`` video frames at ``fps``."""
        return SpeechFeatures(
            fps=fps,
            num_frames=num_frames,
            mel=self.mel,
            phones=_phones_over_frames(self.rows, self.duration, fps, num_frames),
            mel_rate=MEL_RATE,
            phone_names=PHONES,
        )


def analyse_speech(audio: Audio, transcript: str | None = None) -> SpeechAnalysis:
    """Log-mel spectrogram and 10 ms phone posteriors of ``audio`` (the slow part of
    :func:`compute_speech_features`, which needs no video frame count)."""
    rows = _analysis_posteriors(audio, transcript) if audio.duration > 0 else None
    return SpeechAnalysis(audio.duration, log_mel(audio), rows)


def compute_speech_features(
    audio: Audio, fps: float, num_frames: int, transcript: str | None = None
) -> SpeechFeatures:
    """Log-mel spectrogram and per-frame phone posteriors of ``audio`` for ``num_frames`` frames at ``fps``.

    See :func:`log_mel` (80 bands, 10 ms hop) and :func:`phone_posteriors`.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    return analyse_speech(audio, transcript).for_frames(fps, num_frames)

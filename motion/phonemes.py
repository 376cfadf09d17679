"""Phonemes with times from speech, using pocketsphinx's bundled US-English model (offline, no training).

Two modes:

- free phone recognition ("allphone" search with the bundled phone bigram LM) when there is no transcript;
- forced alignment of a transcript (word alignment, then a second pass for phone times) when there is one.
  Words missing from the pronunciation dictionary, or a transcript that does not fit the audio, fall back to
  free recognition with a warning.

Output is a list of :class:`PhoneSegment` ``(phone, start_s, end_s)`` over ARPAbet phones without stress
marks plus ``SIL``, sorted, non-overlapping, inside the audio.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import warnings
from typing import NamedTuple

import numpy as np

from common.progress import bar as progress_bar
from motion.audio import Audio

# The 39 ARPAbet phones of CMUdict, plus silence.
PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
    "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y",
    "Z", "ZH", "SIL",
)  # fmt: skip
SILENCE = "SIL"
FRAME_RATE = 100.0  # pocketsphinx's default feature frame rate (-frate)
_PS_RATE = 16000  # the bundled acoustic model is for 16 kHz audio
decoder_lock = threading.Lock()  # decoders are stateful; one utterance at a time per decoder


class PhoneSegment(NamedTuple):
    """One recognised phone: ARPAbet symbol (or ``SIL``) and its time span in seconds."""

    phone: str
    start: float
    end: float


def model_files() -> tuple[str, str, str]:
    """Paths of the bundled acoustic model, phone LM and dictionary."""
    import pocketsphinx

    root = pocketsphinx.get_model_path()
    return (
        os.path.join(root, "en-us", "en-us"),
        os.path.join(root, "en-us", "en-us-phone.lm.bin"),
        os.path.join(root, "en-us", "cmudict-en-us.dict"),
    )


@functools.lru_cache(maxsize=1)
def _phone_decoder():
    """A decoder in allphone mode (built once: loading the model takes ~0.1 s)."""
    import pocketsphinx

    hmm, phone_lm, dictionary = model_files()
    # Wide beams and a language weight of 2 recover more consonants than the defaults (which merge
    # short phones into their neighbours), at no measurable cost in speed.
    return pocketsphinx.Decoder(
        hmm=hmm, allphone=phone_lm, dict=dictionary, loglevel="FATAL", beam=1e-20, pbeam=1e-20, lw=2.0
    )


@functools.lru_cache(maxsize=1)
def align_decoder():
    """A decoder with no search module, to be given an alignment text per call."""
    import pocketsphinx

    hmm, _, dictionary = model_files()
    return pocketsphinx.Decoder(hmm=hmm, dict=dictionary, lm=None, loglevel="FATAL")


def pcm16(audio: Audio) -> bytes:
    """16 kHz signed 16-bit little-endian PCM of ``audio``, with a fixed dither of -1, 0 or +1 LSB.

    Stretches of digital silence (exact zeros, common in synthetic and edited speech) give the decoder's
    log-spectra minus infinity, and batch cepstral normalisation then reads phones into them. One LSB of
    noise is inaudible and removes this; the fixed seed keeps every call's result the same.
    """
    samples = audio.samples
    if audio.rate != _PS_RATE:
        from scipy.signal import resample_poly

        g = np.gcd(int(audio.rate), _PS_RATE)
        samples = resample_poly(samples, _PS_RATE // g, int(audio.rate) // g)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int32)
    pcm += np.random.default_rng(0).integers(-1, 2, size=len(pcm), dtype=np.int32)
    return np.clip(pcm, -32768, 32767).astype("<i2").tobytes()


def clean_phone(phone: str) -> str:
    """Map a decoder symbol to an entry of :data:`PHONES` (noise fillers such as ``+NSN+`` -> ``SIL``)."""
    base = re.sub(r"\d", "", phone.upper())
    return base if base in PHONES else SILENCE


def _finish(raw: list[tuple[str, float, float]], duration: float) -> list[PhoneSegment]:
    """Clean symbols, clamp into ``[0, duration]``, drop empty spans and merge repeated silences."""
    out: list[PhoneSegment] = []
    for phone, start, end in raw:
        phone = clean_phone(phone)
        start, end = max(0.0, start), min(duration, end)
        if out:
            start = max(start, out[-1].end)
        if end <= start:
            continue
        if out and phone == SILENCE and out[-1].phone == SILENCE:
            out[-1] = PhoneSegment(SILENCE, out[-1].start, end)
        else:
            out.append(PhoneSegment(phone, start, end))
    return out


def decode(decoder, pcm: bytes) -> None:
    """Run one whole utterance through ``decoder``.

    The front end is reset first: the bundled model subtracts a noise estimate that it carries from one
    utterance to the next, so without it the same audio would decode differently after other audio.
    """
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def recognize_phones(
    audio: Audio, spans: list[tuple[float, float]] | None = None, progress: bool = False
) -> list[PhoneSegment]:
    """Free phone recognition -> [(phone, start_s, end_s)] for any speech (accuracy is best on English).

    Args:
        audio: mono speech; resampled to 16 kHz when it is not.
        spans: optional [(start_s, end_s)] stretches to decode, each as its own utterance (for example the
            speech found by voice activity, with some margin); time outside them is ``SIL``. Decoding
            per utterance skips the silences and normalises the cepstra per utterance.
        progress: show a progress bar over the spans.
    """
    samples = Audio(audio.samples, audio.rate)
    spans = [(0.0, audio.duration)] if spans is None else spans
    raw: list[tuple[str, float, float]] = []
    for start, end in progress_bar(spans, desc="phonemes", unit="utt", enabled=progress):
        lo, hi = round(start * audio.rate), round(end * audio.rate)
        pcm = pcm16(Audio(samples.samples[lo:hi], audio.rate))
        raw.append((SILENCE, raw[-1][2] if raw else 0.0, start))
        with decoder_lock:
            decoder = _phone_decoder()
            decode(decoder, pcm)
            raw += [
                (s.word, start + s.start_frame / FRAME_RATE, start + (s.end_frame + 1) / FRAME_RATE)
                for s in decoder.seg()
            ]
    raw.append((SILENCE, raw[-1][2] if raw else 0.0, audio.duration))
    return _finish(raw, audio.duration)


def transcript_words(text: str) -> list[str]:
    """Normalise a transcript to dictionary words: lower case, punctuation removed, apostrophes kept."""
    text = text.lower().replace("\u2019", "'")
    words = re.findall(r"[a-z0-9']+", text)
    return [w.strip("'") for w in words if w.strip("'")]


def missing_words(words: list[str]) -> list[str]:
    """The words of ``words`` that the bundled pronunciation dictionary lacks."""
    with decoder_lock:
        decoder = align_decoder()
        return [w for w in words if decoder.lookup_word(w) is None]


def align_phones(audio: Audio, transcript: str) -> list[PhoneSegment]:
    """Forced alignment of ``transcript`` -> [(phone, start_s, end_s)], optional pauses as ``SIL``.

    Raises:
        ValueError: when a word is not in the dictionary, the transcript is empty, or it cannot be aligned
            with the audio.
    """
    words = transcript_words(transcript)
    if not words:
        raise ValueError("the transcript holds no words")
    unknown = missing_words(words)
    if unknown:
        raise ValueError(f"words not in the pronunciation dictionary: {', '.join(unknown[:8])}")
    pcm = pcm16(audio)
    with decoder_lock:
        decoder = align_decoder()
        try:
            # First pass: word alignment; second pass on the same audio: phone and state times.
            decoder.set_align_text(" ".join(words))
            decode(decoder, pcm)
            decoder.set_alignment()
            decode(decoder, pcm)
            alignment = decoder.get_alignment()
        except RuntimeError as error:
            raise ValueError(f"the transcript could not be aligned with the audio ({error})") from error
        if alignment is None:
            raise ValueError("the transcript could not be aligned with the audio")
        raw = [
            (p.name, p.start / FRAME_RATE, (p.start + p.duration) / FRAME_RATE) for p in alignment.phones()
        ]
    if not any(clean_phone(p) != SILENCE for p, _, _ in raw):
        raise ValueError("the alignment holds no phones")
    return _finish(raw, audio.duration)


def audio_to_phones(
    audio: Audio,
    transcript: str | None = None,
    spans: list[tuple[float, float]] | None = None,
    progress: bool = False,
) -> list[PhoneSegment]:
    """Phones of ``audio``: aligned to ``transcript`` when given and alignable, else freely recognised.

    A transcript that cannot be used (out-of-dictionary words, mismatched audio) gives a warning and
    free recognition, never an error. ``spans`` and ``progress``: see :func:`recognize_phones`.
    """
    if transcript and transcript.strip():
        try:
            return align_phones(audio, transcript)
        except ValueError as error:
            warnings.warn(f"{error}; using free phone recognition instead", stacklevel=2)
    return recognize_phones(audio, spans, progress)

"""Phone recognition, forced alignment and the viseme table."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from motion.audio import load_audio
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES
from motion.phonemes import (
    PHONES,
    SILENCE,
    PhoneSegment,
    align_decoder,
    align_phones,
    audio_to_phones,
    recognize_phones,
    transcript_words,
)
from motion.visemes import PHONE_TO_VISEME, VISEMES, closure_curve, coarticulate, phone_targets

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo_speech.flac"
DEMO_TEXT = (
    "Hello, and welcome. This portrait speaks from a single photo. "
    "Every word moves the lips, and the mouth rests when the voice stops."
)


@pytest.fixture(scope="module")
def demo():
    return load_audio(DEMO)


def _check_segments(segments: list[PhoneSegment], duration: float) -> None:
    assert segments
    for phone, start, end in segments:
        assert phone in PHONES
        assert 0.0 <= start < end <= duration + 1e-6
    for previous, current in itertools.pairwise(segments):
        assert current.start >= previous.end - 1e-9


def test_free_recognition_on_demo(demo):
    segments = recognize_phones(demo)  # its speed is a benchmark's (bench oneshot), not a test's
    _check_segments(segments, demo.duration)
    speech = [s for s in segments if s.phone != SILENCE]
    assert len(speech) >= 40  # ~100 phones spoken; the free recogniser merges some
    assert speech[0].start > 0.3  # the clip opens with 0.4 s of silence
    assert speech[-1].end < demo.duration - 0.3
    vowels = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
    assert sum(s.phone in vowels for s in speech) >= 15
    # The 1.2 s pause after "photo" is recognised as silence.
    assert any(s.phone == SILENCE and s.start < 5.0 and s.end > 5.6 for s in segments)


def test_forced_alignment_gives_each_words_phones_in_order(demo):
    segments = align_phones(demo, DEMO_TEXT)
    _check_segments(segments, demo.duration)
    spoken = [s.phone for s in segments if s.phone != SILENCE]
    decoder = align_decoder()
    position = 0
    for word in transcript_words(DEMO_TEXT):
        variants = [decoder.lookup_word(word)] + [decoder.lookup_word(f"{word}({k})") for k in range(2, 5)]
        for variant in filter(None, variants):
            phones = variant.split()
            if spoken[position : position + len(phones)] == phones:
                position += len(phones)
                break
        else:
            raise AssertionError(f"{word!r} not found at phone {position}: {spoken[position : position + 6]}")
    assert position == len(spoken)
    # Word timing is right: "hello" starts after the leading silence, "stops" ends before the trailing one.
    assert 0.3 < segments[1].start < 0.6
    assert segments[-1].phone == SILENCE and segments[-1].start > 9.8


def test_unknown_word_falls_back_with_a_warning(demo):
    with pytest.warns(UserWarning, match="not in the pronunciation dictionary"):
        segments = audio_to_phones(demo, "hello zzyzxqw world")
    _check_segments(segments, demo.duration)


def test_transcript_normalisation():
    assert transcript_words("Hello, World! It\u2019s 'fine'.") == ["hello", "world", "it's", "fine"]


def test_viseme_table_covers_every_phone():
    assert set(PHONES) <= set(PHONE_TO_VISEME)
    for viseme in VISEMES.values():
        for name, weight in viseme.targets.items():
            assert name in EXPRESSION_NAMES
            assert 0.0 <= weight <= 1.0
    for phone in ("M", "B", "P"):
        target = phone_targets(phone)
        assert target[EXPRESSION_INDEX["lips_together"]] == 1.0
        assert target[EXPRESSION_INDEX["jaw_open"]] < 0.1
    for phone in ("UW", "W", "OW"):
        assert (
            phone_targets(phone)[EXPRESSION_INDEX["pucker"]]
            + phone_targets(phone)[EXPRESSION_INDEX["funnel"]]
            > 0.6
        )
    for phone in ("IY", "S"):
        assert phone_targets(phone)[EXPRESSION_INDEX["mouth_wide"]] >= 0.4
    for phone in ("AA", "AE", "AO"):
        assert phone_targets(phone)[EXPRESSION_INDEX["jaw_open"]] >= 0.6
    assert phone_targets("F")[EXPRESSION_INDEX["lower_lip_in"]] > 0.5
    assert not phone_targets(SILENCE).any()


def test_coarticulation_anticipates_rounding_and_keeps_short_closures():
    segments = [
        PhoneSegment("AA", 0.10, 0.30),
        PhoneSegment("P", 0.30, 0.33),  # a 30 ms closure, under one 25 fps frame
        PhoneSegment("AA", 0.33, 0.50),
        PhoneSegment("S", 0.50, 0.62),
        PhoneSegment("UW", 0.62, 0.80),
    ]
    times = np.arange(0.0, 1.0, 0.01)
    curves = coarticulate(segments, times)
    pucker = curves[:, EXPRESSION_INDEX["pucker"]]
    # The lips start rounding during the /s/, before the /u/.
    assert pucker[np.searchsorted(times, 0.58)] > 0.25
    assert pucker[np.searchsorted(times, 0.40)] < 0.05
    frames = (np.arange(25) + 0.5) / 25.0
    closure = closure_curve(segments, frames, min_width_s=1.0 / 25.0)
    assert closure.max() >= 0.99
    assert closure[np.searchsorted(frames, 0.15)] == 0.0

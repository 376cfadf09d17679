"""Frame-aligned speech features: log-mel spectrogram, phone posteriors, and their stored file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from common.errors import InputError
from motion.audio import Audio, load_audio
from motion.phonemes import PHONES, SILENCE, align_phones
from motion.sequence import MotionSequence
from motion.speech_features import (
    LOG_MEL_FLOOR,
    SCHEMA_VERSION,
    SpeechFeatures,
    compute_speech_features,
    log_mel,
    phone_posteriors,
)
from tests.conftest import DEMO_TRANSCRIPT

SIL = PHONES.index(SILENCE)


def _tone(freq_hz: float, seconds: float, rate: int = 16000, amplitude: float = 0.5) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    return Audio((amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32), rate)


def _band_centres_hz(n_mels: int = 80, fmin: float = 55.0, fmax: float = 7600.0) -> np.ndarray:
    """Centre frequencies of the mel bands, from the HTK mel formula (independent of the module's code)."""
    mel = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    return (700 * (10 ** (mel / 2595) - 1))[1:-1]


@pytest.fixture(scope="module")
def demo(demo_speech) -> Audio:
    return load_audio(demo_speech)


@pytest.fixture(scope="module")
def aligned(demo):
    """The forced alignment of the demo clip: [(phone, start_s, end_s)]."""
    return align_phones(demo, DEMO_TRANSCRIPT)


def _phone_at(segments, times: np.ndarray) -> np.ndarray:
    """Index into PHONES of the aligned phone at each time (SIL outside every segment) -> int [N]."""
    out = np.full(len(times), SIL)
    for phone, start, end in segments:
        out[(times >= start) & (times < end)] = PHONES.index(phone)
    return out


# ---- log-mel -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("freq_hz", "rate"), [(250.0, 16000), (1000.0, 16000), (3000.0, 16000), (1000.0, 48000)]
)
def test_tone_energy_peaks_in_the_band_holding_its_frequency(freq_hz, rate):
    mel = log_mel(_tone(freq_hz, 1.0, rate))
    assert mel.dtype == np.float32 and mel.shape == (100, 80)
    profile = mel[20:80].mean(axis=0)  # frames whose window lies wholly inside the tone
    nearest = int(np.argmin(np.abs(_band_centres_hz() - freq_hz)))
    assert abs(int(profile.argmax()) - nearest) <= 1
    far = np.abs(np.arange(80) - nearest) > 10
    assert profile.max() - profile[far].max() > 8.0  # > 35 dB down away from the tone


def test_log_mel_frames_are_centred_at_multiples_of_the_hop_and_cover_the_clip():
    rate = 16000
    samples = np.zeros(round(2.345 * rate), np.float32)
    click_s = 1.234
    samples[round(click_s * rate)] = 1.0
    mel = log_mel(Audio(samples, rate))
    assert mel.shape == (235, 80)  # ceil(2.345 / 0.01)
    assert int(mel.sum(axis=1).argmax()) == round(click_s / 0.01)
    assert (mel[:100] == LOG_MEL_FLOOR).all()  # digital silence reads the floor
    assert log_mel(Audio(samples, rate), hop_s=0.02).shape == (118, 80)


def test_log_mel_is_deterministic():
    audio = Audio(np.random.default_rng(0).normal(0, 0.1, 25 * 16000).astype(np.float32))
    mel = log_mel(audio)
    assert mel.shape == (2500, 80)
    np.testing.assert_array_equal(mel, log_mel(audio))


# ---- phone posteriors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_posteriors_match_the_forced_alignment_frame_by_frame(demo, aligned, fps):
    num_frames = int(demo.duration * fps) + 20  # runs 20 frames past the audio
    posteriors = phone_posteriors(demo, fps, num_frames, transcript=DEMO_TRANSCRIPT)
    assert posteriors.dtype == np.float32 and posteriors.shape == (num_frames, len(PHONES))
    assert posteriors.min() >= 0.0
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, atol=1e-5)

    centres = (np.arange(num_frames) + 0.5) / fps
    reference = _phone_at(aligned, centres)
    speech = reference != SIL
    best = posteriors.argmax(axis=1)
    assert speech.sum() > 0.5 * demo.duration * fps
    assert np.mean(best[speech] == reference[speech]) > 0.75  # measured 0.85 at 25 fps, 0.89 at 30 fps
    assert np.mean(best[speech] != SIL) > 0.9
    # Silence: the leading 0.3 s, and every frame wholly past the end of the audio.
    assert (best[centres < 0.3] == SIL).all()
    past_end = np.arange(num_frames) / fps >= demo.duration
    assert past_end.sum() >= 19
    np.testing.assert_array_equal(posteriors[past_end, SIL], 1.0)


def test_frame_t_covers_t_over_fps_to_t_plus_one_over_fps(demo):
    """Rows at 25 and 30 fps are time-weighted means of the rows at 100 fps (the analysis rate)."""
    fine = phone_posteriors(demo, 100.0, 1100, transcript=DEMO_TRANSCRIPT).astype(np.float64)
    at_25 = phone_posteriors(demo, 25.0, 250, transcript=DEMO_TRANSCRIPT)
    np.testing.assert_allclose(at_25, fine[:1000].reshape(250, 4, -1).mean(axis=1), atol=1e-5)
    # At 30 fps frame 3 is [0.1, 0.1333...) s: fine rows 10, 11, 12 and a third of row 13.
    at_30 = phone_posteriors(demo, 30.0, 40, transcript=DEMO_TRANSCRIPT)
    for t in (3, 17, 31):
        lo, hi = t / 30 * 100, (t + 1) / 30 * 100
        weights = np.clip(np.minimum(np.arange(1, 1101), hi) - np.maximum(np.arange(1100), lo), 0, None)
        np.testing.assert_allclose(at_30[t], weights @ fine / weights.sum(), atol=1e-5)
    # Fewer frames than the audio holds: the first rows are the same.
    np.testing.assert_allclose(
        phone_posteriors(demo, 25.0, 10, transcript=DEMO_TRANSCRIPT), at_25[:10], atol=1e-6
    )


@pytest.fixture(scope="module")
def free_fine(demo) -> np.ndarray:
    """Free-decoding posteriors of the demo clip at the analysis rate (100 frames per second)."""
    return phone_posteriors(demo, 100.0, int(np.ceil(demo.duration * 100)))


def test_free_decoding_gives_soft_posteriors_that_follow_the_speech(free_fine, aligned):
    np.testing.assert_allclose(free_fine.sum(axis=1), 1.0, atol=1e-5)
    centres = (np.arange(len(free_fine)) + 0.5) / 100
    reference = _phone_at(aligned, centres)
    speech = reference != SIL
    best = free_fine.argmax(axis=1)
    # No transcript: free phone decoding agrees with the alignment far above chance (~0.1 for the commonest
    # phone; measured 0.46), and speech is speech.
    assert np.mean(best[speech] == reference[speech]) > 0.35
    assert np.mean(best[speech] != SIL) > 0.85
    # The 1.2 s pause after "photo" is silence.
    pause = (centres > 5.05) & (centres < 5.55)
    assert (best[pause] == SIL).all()
    # Lattice posteriors, not a one-hot best path: at 10 ms, where no averaging over a video frame softens
    # them, a share of speech frames still hedge between phones.
    assert np.mean(free_fine[speech].max(axis=1) < 0.9) > 0.1


def test_a_transcript_with_unknown_words_warns_and_decodes_freely(demo, free_fine):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posteriors = phone_posteriors(demo, 100.0, len(free_fine), transcript="Zorblax quintessential")
    assert any("zorblax" in str(w.message) for w in caught)
    np.testing.assert_array_equal(posteriors, free_fine)  # same audio, same result, whatever ran before


def test_silence_is_silence():
    rng = np.random.default_rng(1)
    # A second of digital zeros, then a second of faint noise (-50 dBFS).
    samples = np.concatenate([np.zeros(16000), rng.normal(0, 3e-3, 16000)]).astype(np.float32)
    posteriors = phone_posteriors(Audio(samples), 25.0, 60)
    assert posteriors.shape == (60, len(PHONES))
    assert (posteriors.argmax(axis=1) == SIL).all()
    assert posteriors[:, SIL].mean() > 0.95
    np.testing.assert_array_equal(posteriors[50:, SIL], 1.0)  # past the end of the audio
    empty = phone_posteriors(Audio(np.zeros(0, np.float32)), 25.0, 3)
    np.testing.assert_array_equal(empty[:, SIL], 1.0)


# ---- SpeechFeatures ----------------------------------------------------------------------------------------


def test_compute_speech_features_on_the_demo(demo):
    features = compute_speech_features(demo, 30.0, 330, transcript=DEMO_TRANSCRIPT)
    assert features.fps == 30.0 and features.num_frames == 330 and features.mel_rate == 100.0
    assert features.mel.shape == (int(np.ceil(demo.duration * 100)), 80)
    assert features.phones.shape == (330, len(PHONES))
    assert features.phone_names == PHONES
    assert features.mel_window(100).shape == (16, 80)


def _features(num_frames: int = 50, fps: float = 25.0, mel_frames: int = 200) -> SpeechFeatures:
    rng = np.random.default_rng(2)
    mel = np.repeat(np.arange(mel_frames, dtype=np.float32)[:, None], 80, axis=1)  # row m holds m
    phones = rng.dirichlet(np.ones(len(PHONES)), size=num_frames).astype(np.float32)
    return SpeechFeatures(fps=fps, num_frames=num_frames, mel=mel, phones=phones)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_mel_window_is_centred_on_the_frame_and_padded_with_silence(fps):
    features = _features(fps=fps)
    for frame in (10, 20, 33):
        window = features.mel_window(frame)
        assert window.shape == (16, 80) and window.dtype == np.float32
        centre = (frame + 0.5) / fps * 100  # in mel frames
        assert abs(window[:, 0].mean() - centre) <= 0.5
        np.testing.assert_array_equal(np.diff(window[:, 0]), 1.0)  # consecutive mel frames
    first = features.mel_window(0, width=20)  # starts before the spectrogram
    padding = int((first[:, 0] == LOG_MEL_FLOOR).sum())
    assert padding > 0 and (first[:padding] == LOG_MEL_FLOOR).all()
    np.testing.assert_array_equal(first[padding:, 0], np.arange(20 - padding))
    assert abs(-padding + 9.5 - 0.5 / fps * 100) <= 0.5
    assert (features.mel_window(500) == LOG_MEL_FLOOR).all()  # past the end


def test_save_load_round_trip_is_exact(tmp_path):
    features = _features(num_frames=37, fps=30.0)
    path = tmp_path / "audio_features.npz"
    features.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["audio_features.npz"]  # no temporary file left
    loaded = SpeechFeatures.load(path)
    assert loaded.fps == features.fps and loaded.num_frames == features.num_frames
    assert loaded.mel_rate == features.mel_rate and loaded.phone_names == features.phone_names
    np.testing.assert_array_equal(loaded.mel, features.mel)
    np.testing.assert_array_equal(loaded.phones, features.phones)
    assert loaded.mel.dtype == np.float32 and loaded.phones.dtype == np.float32
    with np.load(path) as data:
        assert int(data["schema_version"]) == SCHEMA_VERSION


def test_loading_a_missing_corrupt_or_foreign_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        SpeechFeatures.load(tmp_path / "absent.npz")

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(InputError, match="cannot read"):
        SpeechFeatures.load(garbage)

    good = tmp_path / "good.npz"
    _features().save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError):
        SpeechFeatures.load(truncated)

    motion = tmp_path / "motion.npz"
    MotionSequence.rest(10, 25.0).save(motion)
    with pytest.raises(InputError, match="not a speech-features file"):
        SpeechFeatures.load(motion)

    with np.load(good) as data:
        arrays = dict(data)
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**arrays, "schema_version": np.int32(SCHEMA_VERSION + 1)})
    with pytest.raises(InputError, match="schema version"):
        SpeechFeatures.load(newer)

    inconsistent = tmp_path / "inconsistent.npz"
    np.savez(inconsistent, **{**arrays, "num_frames": np.int64(7)})
    with pytest.raises(InputError):
        SpeechFeatures.load(inconsistent)

    missing_key = tmp_path / "missing_key.npz"
    np.savez(missing_key, **{k: v for k, v in arrays.items() if k != "phones"})
    with pytest.raises(InputError):
        SpeechFeatures.load(missing_key)


def test_features_check_their_shapes():
    with pytest.raises(ValueError, match="phones"):
        SpeechFeatures(fps=25.0, num_frames=5, mel=np.zeros((10, 80)), phones=np.zeros((4, len(PHONES))))
    with pytest.raises(ValueError, match="fps"):
        SpeechFeatures(fps=0.0, num_frames=0, mel=np.zeros((10, 80)), phones=np.zeros((0, len(PHONES))))

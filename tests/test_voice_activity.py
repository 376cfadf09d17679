"""The speech detector: noise, tones and music are not speech; real speech is, clean, noisy, in Mandarin."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InputError
from motion.audio import SAMPLE_RATE, Audio, load_audio
from motion.audio2motion import Audio2MotionConfig, analyse_speech, audio_to_motion, require_speech
from motion.blendshapes import EXPRESSION_INDEX, MOUTH_NAMES
from motion.voice_activity import CHUNK, FRAME_S, speech_probability, speech_seconds
from tests.conftest import REPO, shared_file

RATE = SAMPLE_RATE
MOUTH_COLS = [EXPRESSION_INDEX[n] for n in MOUTH_NAMES]
ENERGY_ALONE = Audio2MotionConfig(speech_threshold=0.0)


def _at_level(x: np.ndarray, dbfs: float = -20.0) -> np.ndarray:
    """``x`` with its mean removed and its RMS set to ``dbfs`` -> float32."""
    x = np.asarray(x, np.float64) - np.mean(x)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    return np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), n)


def _harmonic(f0: float, t: np.ndarray, harmonics: int = 7) -> np.ndarray:
    return sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, harmonics + 1))


def _non_speech(kind: str, seconds: float = 4.0) -> np.ndarray:
    """float32 [N] at -20 dBFS: a sound an energy detector takes for speech and a speech detector must not."""
    rng = np.random.default_rng(0)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if kind == "white noise":
        x = rng.standard_normal(n)
    elif kind == "pink noise":
        x = _pink(n, rng)
    elif kind == "440 Hz tone":
        x = np.sin(2 * np.pi * 440 * t)
    elif kind == "chord":  # C major, harmonic notes
        x = sum(_harmonic(f, t, 3) for f in (261.6, 329.6, 392.0))
    elif kind == "melody":  # plucked harmonic notes, two a second
        x = np.zeros(n)
        for k, f0 in enumerate([261.6, 329.6, 392.0, 523.3, 392.0, 329.6, 293.7, 349.2]):
            inside = (t >= 0.5 * k) & (t < 0.5 * k + 0.5)
            x[inside] = _harmonic(f0, t[inside]) * np.exp(-4 * (t[inside] - 0.5 * k))
    elif kind == "drum pulses":  # a noise snap and a 60 Hz thump four times a second
        x = np.zeros(n)
        m = np.arange(2000)
        for start in range(0, n - len(m), RATE // 4):
            x[start : start + len(m)] += rng.standard_normal(len(m)) * np.exp(-m / 300)
            x[start : start + len(m)] += np.sin(2 * np.pi * 60 * m / RATE) * np.exp(-m / 800)
    elif kind == "speech-shaped noise":  # the demo's long-term spectrum with random phases
        demo = load_audio(REPO / "assets" / "demo_speech.flac").samples[:n]
        spectrum = np.fft.rfft(demo)
        x = np.fft.irfft(np.abs(spectrum) * np.exp(2j * np.pi * rng.random(len(spectrum))), len(demo))
    elif kind == "noise modulated at 4 Hz":  # the syllable rate, without a voice
        x = rng.standard_normal(n) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    else:
        raise ValueError(kind)
    return _at_level(x)


NON_SPEECH = [
    "white noise",
    "pink noise",
    "440 Hz tone",
    "chord",
    "melody",
    "drum pulses",
    "speech-shaped noise",
    "noise modulated at 4 Hz",
]


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    return _at_level(load_audio(REPO / "assets" / "demo_speech.flac").samples)


@pytest.mark.parametrize("kind", NON_SPEECH)
def test_non_speech_is_refused(kind):
    audio = Audio(_non_speech(kind), RATE)
    # Loud enough that the energy detector alone takes it for speech: what the speech detector is for.
    assert analyse_speech(audio, ENERGY_ALONE).voiced.any()
    assert speech_seconds(audio.samples, RATE) == 0.0
    assert not analyse_speech(audio).voiced.any()
    with pytest.raises(InputError, match="holds no speech") as refused:
        require_speech(audio, "clip.wav")
    assert "\n" not in refused.value.message and "give a clip with speech" in refused.value.message


def _with_noise(speech: np.ndarray, kind: str, snr_db: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(len(speech)) if kind == "white" else _pink(len(speech), rng)
    return _at_level(_at_level(speech, 0.0) + _at_level(noise, -snr_db), -20.0)


@pytest.mark.parametrize("noise", [None, "white", "pink"])
def test_demo_speech_is_heard_clean_and_at_10_db_snr(demo, noise):
    samples = demo if noise is None else _with_noise(demo, noise, 10.0)
    # Measured: 72-76 % of the demo's 32 ms chunks are speech, clean or noisy (its pauses are the rest).
    assert speech_seconds(samples, RATE) / (len(samples) / RATE) > 0.6
    require_speech(Audio(samples, RATE), "demo")


@pytest.mark.parametrize(
    "name", ["speech_en_male_8s.wav", "speech_zh_female_8s.wav", "talk_may_5s.mp4", "talk_pcavs_00473.mp4"]
)
def test_recorded_speech_is_heard_in_english_and_mandarin(name):
    audio = load_audio(shared_file(name))
    for samples in (audio.samples, _with_noise(audio.samples, "pink", 10.0)):
        assert speech_seconds(samples, RATE) / audio.duration > 0.6  # measured 0.78-0.97
        require_speech(Audio(samples, RATE), name)


def test_probability_grid_and_sample_rate(demo):
    times, probability = speech_probability(demo, RATE)
    assert probability.shape == (int(np.ceil(len(demo) / CHUNK)),) and probability.dtype == np.float32
    assert np.allclose(np.diff(times), FRAME_S) and 0.0 <= probability.min() <= probability.max() <= 1.0
    from scipy import signal

    at_48k = signal.resample_poly(demo, 3, 1).astype(np.float32)
    assert abs(speech_seconds(at_48k, 48000) - speech_seconds(demo, RATE)) < 0.1
    assert speech_probability(np.zeros(0, np.float32), RATE)[1].shape == (0,)


def test_mouth_stays_shut_through_music_and_noise_around_speech(demo):
    speech = demo[: int(4.9 * RATE)]  # its first sentence: speech from 0.4 to 4.75 s
    music = _non_speech("melody", 2.0)
    noise = _at_level(_pink(2 * RATE, np.random.default_rng(2)), -26.0)
    samples = np.concatenate([music, speech, noise])
    fps = 25.0
    t = (np.arange(round(len(samples) / RATE * fps)) + 0.5) / fps
    music_frames = t < 2.0
    noise_frames = t > 2.0 + 4.9 + 0.25  # the mouth closes over 100 ms after the last word
    speech_frames = ~music_frames & ~noise_frames

    motion = audio_to_motion(Audio(samples, RATE), fps)
    mouth = motion.expression[:, MOUTH_COLS]
    assert np.all(mouth[music_frames] == 0.0) and np.all(mouth[noise_frames] == 0.0)
    assert motion.coefficient("jaw_open")[speech_frames].max() > 0.5
    # The loudness path alone opens the mouth on the music: the speech detector is what keeps it shut.
    alone = audio_to_motion(Audio(samples, RATE), fps, config=ENERGY_ALONE)
    assert alone.coefficient("jaw_open")[music_frames].max() > 0.1


def test_mouth_stays_shut_through_a_breath_in_a_pause(demo):
    # An in-breath: noise in 400-2500 Hz swelling and fading over 0.45 s, 10 dB under the speech, placed
    # in the demo's mid-sentence pause (4.75-5.9 s). The detector scores it 0.33 at most.
    from scipy import signal

    n = int(0.45 * RATE)
    band = signal.butter(2, [400, 2500], "bandpass", fs=RATE, output="sos")
    hiss = signal.sosfilt(band, np.random.default_rng(3).standard_normal(n))
    samples = demo.copy()
    breath = _at_level(hiss * np.sin(np.pi * np.arange(n) / n) ** 2, -30.0)
    samples[int(5.1 * RATE) : int(5.1 * RATE) + n] += breath
    fps = 25.0
    t = (np.arange(round(len(samples) / RATE * fps)) + 0.5) / fps
    pause = (t > 4.95) & (t < 5.7)
    motion = audio_to_motion(Audio(samples, RATE), fps)
    assert np.all(motion.expression[pause][:, MOUTH_COLS] == 0.0)
    alone = audio_to_motion(Audio(samples, RATE), fps, config=ENERGY_ALONE)
    assert alone.coefficient("jaw_open")[pause].max() > 0.1  # the energy detector opens the mouth on it


def test_generate_refuses_a_tone_with_one_line_and_writes_nothing(tmp_path, portrait_path, capsys):
    from pipeline.cli import main
    from pipeline.prepare import write_wav

    tone = tmp_path / "tone.wav"
    write_wav(tone, Audio(_non_speech("440 Hz tone", 3.0), RATE))
    out = tmp_path / "videos" / "talk.mp4"  # in a folder that does not exist yet: none is left behind
    code = main(["generate", "--image", str(portrait_path), "--audio", str(tone), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "holds no speech" in errors[0] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tone.wav"]


def test_missing_weights_say_what_to_install(monkeypatch):
    import importlib.util

    import motion.voice_activity as voice_activity

    voice_activity._weights.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(InputError, match="pip install silero-vad"):
            speech_probability(np.zeros(RATE, np.float32))
    finally:
        monkeypatch.undo()
        voice_activity._weights.cache_clear()

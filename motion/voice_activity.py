"""Speech or not: the probability that each 32 ms of audio is someone speaking (Silero VAD, offline).

An energy threshold cannot tell a voice from a tone, music or room noise: all of them rise over a noise
floor. Silero VAD is a small trained network (a fixed STFT, four convolutions, one LSTM cell; 0.3 M
weights, MIT licence) that answers that question for any language. Its pip package ships the 16 kHz
weights as ``silero_vad_16k.safetensors``; they are read from there with safetensors (no TorchScript, no
pickle, nothing downloaded) and run here in plain torch, the convolutions over every chunk at once and the
LSTM over the sequence, so an 11 s clip takes about 50 ms on one CPU core. The package itself is not
imported: its ``__init__`` sets torch's global thread count.

Measured on the project's speech (13 real recordings, English and Mandarin, some noisy): 72-97 % of each
clip's 32 ms chunks score over 0.5, and 74-91 % of four of them with white or pink noise added at 10 dB
SNR (the rest are pauses). On synthetic non-speech (white and pink noise, 150 and 440 Hz tones, a chord,
a melody of harmonic notes, a drum pulse train, speech-shaped noise, noise modulated at 4 Hz; at -40, -20
and -3 dBFS) one chunk of the melody does (0.51-0.55 by level), no other chunk scores over 0.31. A pure
tone whose pitch glides like a voice (200 Hz +- 20 Hz at 5 Hz: a hum, a siren) does score as speech.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, signal

from common.errors import InputError

RATE = 16000  # the network's sample rate
CHUNK = 512  # samples per decision (32 ms)
CONTEXT = 64  # samples of the previous chunk each decision also sees
FRAME_S = CHUNK / RATE
_WEIGHTS = "silero_vad_16k.safetensors"
_PACKAGE = "silero-vad==6.2.3"


def _weights_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without running its __init__
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / _WEIGHTS if spec else None
    if path is None or not path.is_file():
        raise InputError(
            f"the speech detector's weights ({_WEIGHTS} of the silero-vad package) are not installed",
            f"install them with pip install {_PACKAGE}",
        )
    return path


@functools.lru_cache(maxsize=1)
def _weights() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(_weights_path()))


def speech_probability(samples: np.ndarray, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """Probability of speech in each 32 ms chunk.

    Args:
        samples: float32 [N] mono audio in [-1, 1].
        rate: its sample rate in Hz (resampled to 16 kHz when different).

    Returns:
        times float64 [C] (the centre of each chunk, s) and probability float32 [C] in [0, 1],
        ``C = ceil(N16 / 512)`` where ``N16`` is the length at 16 kHz.
    """
    x = np.asarray(samples, dtype=np.float32)
    if rate != RATE:
        x = signal.resample_poly(x, RATE, rate).astype(np.float32)
    if len(x) == 0:
        return np.zeros(0), np.zeros(0, np.float32)
    w = _weights()
    conv = torch.nn.functional.conv1d
    with torch.no_grad():
        wave = torch.nn.functional.pad(torch.from_numpy(x), (CONTEXT, (-len(x)) % CHUNK))
        chunks = wave.unfold(0, CHUNK + CONTEXT, CHUNK)[:, None]  # [C, 1, 576]: a chunk after its context
        chunks = torch.nn.functional.pad(chunks, (0, CONTEXT), mode="reflect")
        spectrum = conv(chunks, w["stft_conv.weight"], stride=128)  # real, imaginary rows of a 256-point STFT
        half = spectrum.shape[1] // 2
        y = torch.sqrt(spectrum[:, :half] ** 2 + spectrum[:, half:] ** 2)
        y = torch.relu(conv(y, w["conv1.weight"], w["conv1.bias"], padding=1))
        y = torch.relu(conv(y, w["conv2.weight"], w["conv2.bias"], stride=2, padding=1))
        y = torch.relu(conv(y, w["conv3.weight"], w["conv3.bias"], stride=2, padding=1))
        y = torch.relu(conv(y, w["conv4.weight"], w["conv4.bias"], padding=1)).mean(dim=-1)  # [C, 128]
        # One LSTM cell carried from chunk to chunk (gates in torch's order: input, forget, cell, output).
        inputs = y @ w["lstm_cell.weight_ih"].T + w["lstm_cell.bias_ih"] + w["lstm_cell.bias_hh"]
        h = torch.zeros(y.shape[1])
        c = torch.zeros(y.shape[1])
        hidden = torch.empty_like(y)
        for k in range(len(y)):
            i, f, g, o = (inputs[k] + w["lstm_cell.weight_hh"] @ h).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hidden[k] = h
        logit = torch.relu(hidden) @ w["final_conv.weight"][0, :, 0] + w["final_conv.bias"]
        probability = torch.sigmoid(logit).numpy().astype(np.float32)
    times = (np.arange(len(probability)) + 0.5) * FRAME_S
    return times, probability


def speech_chunks(probability: np.ndarray, threshold: float = 0.5, min_speech_s: float = 0.09) -> np.ndarray:
    """bool [C]: chunks scored over ``threshold``, without runs shorter than ``min_speech_s``.

    A word lasts longer than 90 ms and the network's score is smooth over a word, so a shorter run is a
    stray (one chunk of a melody scored 0.51-0.55 in the measurements above).
    """
    speech = np.asarray(probability) > threshold
    padded = np.concatenate([[False], speech, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    min_chunks = round(min_speech_s / FRAME_S)
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start < min_chunks:
            speech[start:stop] = False
    return speech


def speech_mask(
    samples: np.ndarray, rate: int, times: np.ndarray, threshold: float = 0.5, hangover_s: float = 0.1
) -> np.ndarray:
    """bool [K]: which of ``times`` (s, any grid) fall in speech (:func:`speech_chunks`), widened.

    Speech chunks are widened by ``hangover_s`` each side: that covers the network's decision lag at the
    edges of words and its 32 ms granularity, so that a finer grid (the 10 ms analysis grid of
    ``motion.audio_features``) keeps a word's onset and release.
    """
    _, probability = speech_probability(samples, rate)
    if len(probability) == 0:
        return np.zeros(len(times), bool)
    speech = speech_chunks(probability, threshold)
    reach = int(np.ceil(hangover_s / FRAME_S))
    if reach > 0:
        speech = ndimage.binary_dilation(speech, np.ones(2 * reach + 1, bool))
    index = np.clip(np.floor(np.asarray(times) / FRAME_S).astype(np.int64), 0, len(speech) - 1)
    return speech[index]


def speech_seconds(samples: np.ndarray, rate: int, threshold: float = 0.5) -> float:
    """Seconds of ``samples`` (float32 [N]) that :func:`speech_chunks` counts as speech."""
    _, probability = speech_probability(samples, rate)
    return float(np.count_nonzero(speech_chunks(probability, threshold)) * FRAME_S)

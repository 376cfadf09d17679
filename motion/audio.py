"""Audio in: any file ffmpeg reads (wav, flac, mp3, m4a, a video's audio track) -> 16 kHz mono float32."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError

SAMPLE_RATE = 16000


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg carries."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class Audio:
    """Mono speech at ``rate`` Hz. ``samples``: float32 [N] in [-1, 1]."""

    samples: np.ndarray
    rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate


def load_audio(path: str | os.PathLike, max_seconds: float = 600.0) -> Audio:
    """Decode ``path`` to 16 kHz mono float32.

    Raises :class:`InputError` with a fix when the file is missing, has no audio, is corrupt, empty,
    silent or longer than ``max_seconds``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file not found: {path}", "check the path given to --audio")
    cmd = [
        ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        text = proc.stderr.decode(errors="replace")
        reason = text.strip().splitlines()
        detail = reason[-1] if reason else "ffmpeg could not decode it"
        # ffmpeg says so on an earlier line; its last one is "Error opening output files: Invalid argument"
        if "matches no streams" in text or "Stream map" in text:
            raise InputError(
                f"{path} has no audio stream",
                "give a speech file (wav, flac, mp3, m4a) or a video with sound",
            )
        raise InputError(
            f"cannot read audio from {path} ({detail})",
            "give a speech file ffmpeg can decode (wav, flac, mp3, m4a, or a video with sound)",
        )
    samples = np.frombuffer(proc.stdout, dtype=np.float32).copy()
    if samples.size < SAMPLE_RATE // 10:
        raise InputError(f"audio in {path} is empty or shorter than 0.1 s", "give a clip with speech in it")
    duration = samples.size / SAMPLE_RATE
    if duration > max_seconds:
        raise InputError(
            f"audio in {path} is {duration:.0f} s long, over the {max_seconds:.0f} s limit",
            f"split it into shorter clips or raise the limit with --set max_seconds={duration:.0f}",
        )
    if not np.isfinite(samples).all():
        raise InputError(f"audio in {path} holds invalid samples", "re-export it as a plain wav")
    peak = float(np.abs(samples).max())
    if peak < 1e-3:
        raise InputError(f"audio in {path} is silent (peak {peak:.1e})", "give a clip with audible speech")
    return Audio(samples, SAMPLE_RATE)

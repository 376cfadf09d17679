"""The speech analysis of ``prepare``'s audio step, started in a process of its own when preparation starts.

The analysis (decoding the audio, log-mel, pocketsphinx phone posteriors) needs nothing from the video but
its frame count, which only lays the finished posteriors over the frames; pocketsphinx holds the GIL, so a
thread would stall the frame loop. A separate, lower-priority process does it on the CPU time the face mesh
leaves idle, and the audio step collects it: the same numbers as computing it in place
(:func:`motion.speech_features.compute_speech_features`).

Run as ``python -m pipeline.prepare_audio SOURCE OUT.npz MAX_SECONDS``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from motion.audio import Audio
from motion.speech_features import SpeechAnalysis

log = logging.getLogger(__name__)

NICENESS = 10
"""How much lower the analysis runs than the preparation (it has until the audio step to finish)."""


class AudioJob:
    """The speech analysis of ``source`` running in another process; :meth:`result` waits for it."""

    def __init__(self, source: Path, max_seconds: float) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="prepare-audio-")
        self._out = Path(self._dir.name) / "analysis.npz"
        cmd = [sys.executable, "-m", "pipeline.prepare_audio", str(source), str(self._out), repr(max_seconds)]
        root = str(Path(__file__).resolve().parents[1])  # this copy of the project, whatever the venv holds
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
        self._log = Path(self._dir.name) / "job.log"
        with open(self._log, "wb") as log_file:  # a file, not a pipe: a chatty job can never block on it
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file, env=env
            )

    def result(self) -> tuple[Audio, SpeechAnalysis] | None:
        """The decoded audio and its analysis, or None when the job failed (the caller does it in place,
        where a bad file raises its usual error)."""
        try:
            self._proc.wait()
            if self._proc.returncode != 0 or not self._out.is_file():
                err = self._log.read_text(errors="replace") if self._log.is_file() else ""
                log.debug("the background speech analysis failed: %s", err[-500:])
                return None
            try:
                with np.load(self._out, allow_pickle=False) as data:
                    audio = Audio(data["samples"], int(data["rate"]))
                    rows = data["rows"] if bool(data["has_rows"]) else None
                    return audio, SpeechAnalysis(float(data["duration"]), data["mel"], rows)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                log.debug("the background speech analysis left an unreadable result: %s", error)
                return None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the job if it still runs and remove its files."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._dir.cleanup()


def main(argv: list[str]) -> int:
    from motion.audio import load_audio
    from motion.speech_features import analyse_speech

    source, out, max_seconds = argv
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    audio = load_audio(source, max_seconds=float(max_seconds))
    analysis = analyse_speech(audio)
    rows = analysis.rows if analysis.rows is not None else np.zeros((0, 0))
    tmp = Path(out).with_suffix(".part.npz")
    np.savez(
        tmp,
        samples=audio.samples,
        rate=np.int64(audio.rate),
        duration=np.float64(analysis.duration),
        mel=analysis.mel,
        rows=rows,
        has_rows=np.bool_(analysis.rows is not None),
    )
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

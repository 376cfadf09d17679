"""Video I/O: write a browser-playable H.264 + AAC mp4 atomically, probe and read videos.

Everything video goes through the ffmpeg binary that imageio-ffmpeg carries (there is no ffprobe).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError, OutputError
from common.files import make_temp_dir, remove_stale_temporaries, temp_name
from motion.audio import Audio, ffmpeg_exe

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Output paths
# ----------------------------------------------------------------------------------------------------


def check_output_path(path: str | os.PathLike, suffix: str = ".mp4") -> Path:
    """Resolve ``path`` for writing. Missing parent folders are made only when the file is written, so a
    run refused later leaves no empty folder behind.

    Raises :class:`OutputError` with a fix when the suffix is not ``suffix``, the path is a folder, or the
    parent folder could not be created or written.
    """
    raw = Path(path).expanduser()
    if suffix and raw.suffix.lower() != suffix.lower():
        raise OutputError(
            f"output {raw} does not end in {suffix}",
            f"use a {suffix} path, e.g. {raw.with_suffix(suffix).name}",
        )
    out = raw.resolve()
    if out.is_dir():
        raise OutputError(
            f"output {out} is a folder", f"give a file path inside it, e.g. {out / ('out' + suffix)}"
        )
    existing = out.parent
    while not existing.exists():  # the folder that would hold the new ones
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"cannot write {out}: {existing} is a file, not a folder", "choose another output path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(
            f"the output folder {existing} is not writable",
            "choose an output path in a folder you can write to",
        )
    return out


# ----------------------------------------------------------------------------------------------------
# Video writing
# ----------------------------------------------------------------------------------------------------

_LIBX264_CHECKED: dict[str, bool] = {}


def _check_libx264(exe: str) -> None:
    if exe not in _LIBX264_CHECKED:
        proc = subprocess.run([exe, "-hide_banner", "-nostdin", "-encoders"], capture_output=True)
        _LIBX264_CHECKED[exe] = b" libx264 " in proc.stdout
    if not _LIBX264_CHECKED[exe]:
        raise OutputError(
            f"the ffmpeg at {exe} has no libx264 H.264 encoder",
            "reinstall imageio-ffmpeg (pip install --force-reinstall imageio-ffmpeg); its ffmpeg has it",
        )


_GENERIC = re.compile(
    r"^(Conversion failed|frame=|Stream mapping|Consider increasing|Press \[q\])"
    r"|Terminating thread|Task finished with error|Nothing was written into output|Error opening output file"
    r"|Error writing trailer|Error closing file|Last message repeated"
)
_CAUSE = re.compile(r"error|invalid|could not|cannot|no such|unable|fail|not found|unknown|permission", re.I)


def _ffmpeg_reason(text: str) -> str:
    """The line of ffmpeg's stderr that says what went wrong, on one line without object addresses."""
    lines = [re.sub(r" @ 0x[0-9a-f]+", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    specific = [ln for ln in lines if not _GENERIC.search(ln)]
    causes = [ln for ln in specific if _CAUSE.search(ln)]
    if causes:
        return causes[0].rstrip(".")
    return (specific or lines or [""])[-1].rstrip(".")


def _last_line(log_path: Path) -> str:
    try:
        return _ffmpeg_reason(log_path.read_text(errors="replace"))
    except OSError:
        return ""


class VideoWriter:
    """Stream RGB frames (and optional audio) into an H.264 + AAC mp4 that browsers play.

    ``size`` is (width, height), both even. Frames go to ffmpeg's stdin as raw rgb24; the mp4 is written to a
    hidden temp file next to ``path`` and moved onto ``path`` only when everything succeeded. On any error, or
    an exception inside the ``with`` block, the temp file is removed and ``path`` is left as it was.

    >>> with VideoWriter("out.mp4", 25, (512, 512), audio=audio) as w:
    ...     for frame in frames:
    ...         w.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size: tuple[int, int],
        audio: Audio | None = None,
        crf: int = 18,
        preset: str = "veryfast",
        threads: int = 2,
        color_range: str = "tv",
    ) -> None:
        width, height = (int(v) for v in size)
        if color_range not in ("tv", "pc"):
            raise ValueError(f"color_range must be tv (limited) or pc (full), got {color_range!r}")
        if width <= 0 or height <= 0:
            raise ValueError(f"video size must be positive, got {width}x{height}")
        if width % 2 or height % 2:
            raise OutputError(
                f"video size {width}x{height} is odd; H.264 yuv420p needs an even width and height",
                "crop or pad the frames by one pixel to an even size",
            )
        if not (fps > 0 and np.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        self.path = check_output_path(path, ".mp4")
        self.fps = float(fps)
        self.size = (width, height)
        self.frames_written = 0
        self._closed = False
        self._exe = exe = ffmpeg_exe()
        _check_libx264(exe)
        self._audio = None
        if audio is not None:
            samples = np.asarray(audio.samples, dtype=np.float32).reshape(-1)
            if samples.size == 0:
                raise ValueError("audio has no samples")
            self._audio = Audio(np.clip(np.nan_to_num(samples), -1.0, 1.0), int(audio.rate))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(
                f"cannot create the output folder {self.path.parent} ({err.strerror or err})",
                "choose an output path in a folder you can write to",
            ) from err
        # what runs killed outright left here and in the temp directory goes first
        for stale in remove_stale_temporaries(self.path.parent, ".mp4", temp_dirs=True):
            log.info("removed %s, left by a run that was killed", stale)
        unique = uuid.uuid4().hex[:8]  # two writers of one process never share a temporary
        self._tmp = temp_name(self.path, unique)
        # with audio, frames stream into a video-only file first; close() muxes the audio in, cut or padded
        # to the video's exact length (ffmpeg's -shortest is off by up to an audio frame)
        self._video_tmp = temp_name(self.path, f"{unique}.video") if self._audio is not None else self._tmp
        self._workdir = make_temp_dir("video")
        self._log = self._workdir / "ffmpeg.log"
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", _rate(self.fps),
            "-i", "pipe:0", "-map", "0:v:0",
            "-c:v", "libx264", "-preset", preset, "-crf", str(int(crf)), "-threads", str(int(threads)),
            "-vf", f"scale=out_color_matrix=bt709:out_range={color_range},format=yuv420p",
            "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-color_range", color_range,
        ]  # fmt: skip
        if self._audio is None:  # with audio, the muxing pass in close() moves the index to the front
            cmd += ["-movflags", "+faststart"]
        cmd += ["-f", "mp4", str(self._video_tmp)]
        self._log_file = open(self._log, "wb")  # noqa: SIM115 - closed in _cleanup
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log_file
            )
        except OSError as err:
            self.abort()
            raise OutputError(f"cannot start ffmpeg ({err})", "reinstall imageio-ffmpeg") from err

    def _mux_audio(self) -> None:
        """Encode the audio (AAC 128k) next to the finished video stream, cut or padded to its length."""
        assert self._audio is not None
        rate = self._audio.rate
        duration = self.frames_written / self.fps
        n = round(duration * rate)
        samples = self._audio.samples
        if len(samples) / rate > duration + 1.0 / self.fps:
            log.warning(
                "audio is %.2f s but the video only %.2f s (%d frames); cutting the audio",
                len(samples) / rate,
                duration,
                self.frames_written,
            )
        samples = samples[:n] if len(samples) >= n else np.pad(samples, (0, n - len(samples)))
        raw = self._workdir / "audio.f32"
        samples.astype("<f4").tofile(raw)
        out_rate = rate if rate in (44100, 48000) else 48000
        cmd = [
            self._exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-i", str(self._video_tmp), "-f", "f32le", "-ar", str(rate), "-ac", "1", "-i", str(raw),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "128k", "-ar", str(out_rate), "-threads", "2",
            "-movflags", "+faststart", "-f", "mp4", str(self._tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=self._log_file)
        if proc.returncode != 0:
            self._log_file.flush()
            msg = _last_line(self._log) or f"ffmpeg exited with code {proc.returncode}"
            raise OutputError(f"ffmpeg failed to add the audio to {self.path}: {msg}", _ENCODER_FIX)
        self._video_tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        """Append one frame uint8 [H, W, 3] RGB, or a batch [N, H, W, 3]."""
        if self._closed:
            raise ValueError("write() on a closed VideoWriter")
        frame = np.asarray(frame)
        w, h = self.size
        if frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB, got {frame.dtype}")
        if frame.ndim == 3:
            frame = frame[None]
        if frame.ndim != 4 or frame.shape[1:] != (h, w, 3):
            raise ValueError(f"frames must be [H, W, 3] or [N, H, W, 3] with H={h}, W={w}; got {frame.shape}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError) as err:
            self._proc.wait()
            msg = _last_line(self._log) or f"ffmpeg exited with code {self._proc.returncode}"
            self.abort()
            raise OutputError(f"ffmpeg stopped while writing {self.path}: {msg}", _ENCODER_FIX) from err
        self.frames_written += len(frame)

    def close(self) -> Path:
        """Finish the file and move it onto ``path``. Returns the final path."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}")
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        rc = self._proc.wait()
        if rc != 0 or not self._video_tmp.is_file() or self._video_tmp.stat().st_size == 0:
            self._log_file.flush()
            msg = _last_line(self._log) or f"ffmpeg exited with code {rc}"
            self.abort()
            raise OutputError(f"ffmpeg failed to write {self.path}: {msg}", _ENCODER_FIX)
        try:
            if self._audio is not None:
                self._mux_audio()
            os.replace(self._tmp, self.path)
        except OutputError:
            self.abort()
            raise
        except OSError as err:
            self.abort()
            raise OutputError(
                f"cannot move the finished video onto {self.path} ({err.strerror})",
                "check that the path is writable and not open in another program",
            ) from err
        self._closed = True
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove the temp file; ``path`` is left untouched."""
        self._closed = True
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            proc.wait()
        for name in ("_video_tmp", "_tmp"):
            tmp = getattr(self, name, None)
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._cleanup()

    def _cleanup(self) -> None:
        lf = getattr(self, "_log_file", None)
        if lf is not None and not lf.closed:
            lf.close()
        wd = getattr(self, "_workdir", None)
        if wd is not None:
            shutil.rmtree(wd, ignore_errors=True)

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.abort()


_ENCODER_FIX = (
    "check the writer's settings (preset, crf), free disk space and that the output folder is writable"
)


def _rate(fps: float) -> str:
    """fps as ffmpeg wants it: exact NTSC fractions for 23.976/29.97/59.94."""
    for num, den in ((24000, 1001), (30000, 1001), (60000, 1001)):
        if abs(fps - num / den) < 1e-3:
            return f"{num}/{den}"
    return str(int(fps)) if float(fps).is_integer() else repr(float(fps))


# ----------------------------------------------------------------------------------------------------
# Video reading
# ----------------------------------------------------------------------------------------------------


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool
    audio_duration: float
    video_codec: str
    pix_fmt: str
    audio_codec: str | None
    color_range: str = "tv"
    """pc (full range, 0-255: many phones and screen recorders) or tv (limited, 16-235)."""


def _split_top(s: str) -> list[str]:
    """Split at commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def probe_video(path: str | os.PathLike, decode: bool = True) -> VideoInfo:
    """Size, frame rate, frame count, durations and codecs of a video file.

    Args:
        decode: count frames by decoding them (exact, but a full decoding pass); False counts the
            packets instead (as fast as reading the file; equal for every usual codec and container).
    Raises :class:`InputError` when the file is missing or holds no decodable video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file not found: {path}", "check the path")
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path),
        "-map", "0:v:0", "-map", "0:a:0?", *([] if decode else ["-c", "copy"]), "-f", "framecrc", "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    header = err.split("Stream mapping:")[0].split("Output #0")[0]
    video_line = re.search(r"Stream #0:\d+.*?: Video: (.*)", header)
    if proc.returncode != 0 or video_line is None:
        detail = _ffmpeg_reason(err) or "ffmpeg could not read it"
        if video_line is None and "Input #0" in err:
            detail = "it has no video stream"
        raise InputError(
            f"{path} is not a readable video ({detail})",
            "give a video file ffmpeg can decode (mp4, mov, mkv, webm)",
        )
    vparts = _split_top(video_line.group(1))
    video_codec = vparts[0].split()[0]
    pix_fmt = re.match(r"[\w]+", vparts[1]).group(0) if len(vparts) > 1 else ""
    fps = 0.0
    for part in vparts:
        m = re.match(r"([\d.]+)(k?) (fps|tbr)$", part)
        if m and (fps == 0.0 or m.group(3) == "fps"):
            fps = float(m.group(1)) * (1000 if m.group(2) else 1)
            if m.group(3) == "fps":
                break
    full = pix_fmt.startswith("yuvj") or (len(vparts) > 1 and re.search(r"\(pc\b", vparts[1]) is not None)
    audio_line = re.search(r"Stream #0:\d+.*?: Audio: (.*)", header)
    audio_codec = _split_top(audio_line.group(1))[0].split()[0] if audio_line else None
    # the frame list: what was decoded, with per-stream time bases
    out = proc.stdout.decode(errors="replace").splitlines()
    tbs: dict[int, float] = {}
    dims: tuple[int, int] | None = None
    counts: dict[int, int] = {}
    ends: dict[int, float] = {}
    starts: dict[int, float] = {}
    kinds: dict[int, str] = {}
    for line in out:
        if line.startswith("#"):
            m = re.match(r"#tb (\d+): (\d+)/(\d+)", line)
            if m:
                tbs[int(m.group(1))] = int(m.group(2)) / int(m.group(3))
            m = re.match(r"#media_type (\d+): (\w+)", line)
            if m:
                kinds[int(m.group(1))] = m.group(2)
            m = re.match(r"#dimensions 0: (\d+)x(\d+)", line)
            if m:
                dims = (int(m.group(1)), int(m.group(2)))
            continue
        f = line.split(",")
        if len(f) < 4:
            continue
        s = int(f[0])
        pts, dur = int(f[2]), int(f[3])
        counts[s] = counts.get(s, 0) + 1
        tb = tbs.get(s, 0.0)
        starts.setdefault(s, pts * tb)
        ends[s] = max(ends.get(s, 0.0), (pts + dur) * tb)
    vs = next((s for s, k in kinds.items() if k == "video"), 0)
    as_ = next((s for s, k in kinds.items() if k == "audio"), None)
    num_frames = counts.get(vs, 0)
    if num_frames == 0:
        raise InputError(f"{path} holds no decodable video frames", "give a video file ffmpeg can decode")
    if dims is None:
        m = re.search(r"\b(\d{2,5})x(\d{2,5})\b", video_line.group(1))
        dims = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", header)
    duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else 0.0
    if duration <= 0 and fps > 0:
        duration = num_frames / fps
    audio_duration = 0.0
    if as_ is not None and as_ in counts:
        audio_duration = ends[as_] - starts[as_]
    return VideoInfo(
        width=dims[0],
        height=dims[1],
        fps=fps,
        num_frames=num_frames,
        duration=duration,
        has_audio=audio_codec is not None,
        audio_duration=audio_duration,
        video_codec=video_codec,
        pix_fmt=pix_fmt,
        audio_codec=audio_codec,
        color_range="pc" if full else "tv",
    )


def first_frame_offset(path: str | os.PathLike) -> float:
    """How long after the file's start (the time ffmpeg's seeks count from) its first video frame shows,
    in seconds: 0 for most files, more where the sound starts before the picture."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path), "-map", "0:v:0", "-frames:v", "1",
           "-f", "framecrc", "-"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    start = re.search(r"Duration: .*?, start: (-?[\d.]+)", err)
    tb = re.search(r"#tb 0: (\d+)/(\d+)", proc.stdout.decode(errors="replace"))
    rows = [r for r in proc.stdout.decode(errors="replace").splitlines() if r and not r.startswith("#")]
    if proc.returncode != 0 or start is None or tb is None or not rows:
        return 0.0
    pts = int(rows[0].split(",")[2]) * int(tb.group(1)) / int(tb.group(2))
    return max(0.0, pts - float(start.group(1)))


def read_video_frames(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    filters: str | None = None,
    seek: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield the frames of a video as uint8 RGB [H, W, 3].

    Args:
        size: (width, height) to resize the frames to.
        filters: an ffmpeg filter chain run before the resize (for example ``fps=25,crop=...``); frames
            come out exactly as the chain emits them, none duplicated or dropped to keep a frame rate.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file not found: {path}", "check the path")
    chain = [filters] if filters else []
    if size is not None:
        chain.append(f"scale={int(size[0])}:{int(size[1])}:flags=area")
    output_params = ["-vf", ",".join(chain)] if chain else []
    # every frame as decoded, once: none repeated to fill a gap before the first (a picture that starts
    # after the sound) or to keep a frame rate
    output_params += ["-fps_mode", "passthrough"]
    input_params = ["-ss", f"{seek:.6f}"] if seek is not None else []
    gen = imageio_ffmpeg.read_frames(
        str(path), pix_fmt="rgb24", input_params=input_params, output_params=output_params
    )
    try:
        try:
            # it warns (through logging) when filters change the frame size, which is the point here
            logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as err:
            raise InputError(f"cannot read video {path}", "give a video file ffmpeg can decode") from err
        w, h = meta["size"]
        for buf in gen:
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        gen.close()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class read_ahead:  # a class so that closing it works before the first frame is read
    """The items of ``frames`` (a generator, such as :func:`read_video_frames`), pulled by a thread from
    now on, up to ``depth`` ahead of the reader: decoding starts at once and runs beside what the reader
    does with each frame. An error of ``frames`` is raised to the reader where it happened; :meth:`close`
    (also at the end, and on an error) stops the thread and closes ``frames``."""

    def __init__(self, frames: Iterator[np.ndarray], depth: int) -> None:
        self._frames = frames
        self._ahead: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pull, name="read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._ahead.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _pull(self) -> None:
        try:
            for frame in self._frames:
                if not self._put(frame):
                    return
            self._put(_END)
        except BaseException as error:
            self._put(_Failure(error))
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> read_ahead:
        return self

    def __next__(self) -> np.ndarray:
        if self._stop.is_set():
            raise StopIteration
        item = self._ahead.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __del__(self) -> None:
        self._stop.set()

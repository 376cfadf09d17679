"""``bench lipsync``: how well the generic motion stage's mouth follows real speakers, and fitting its timing
and jaw settings across people.

For each clip of a real person speaking, the clip's own speech goes through :func:`audio_to_motion`'s mouth;
the mouth coefficients are scaled to the person as rendering does (:func:`pipeline.drive.adapt_to_identity`,
added to the person's resting mouth as in :func:`pipeline.drive.with_footage_expression`, kept within the
range the footage shows) and turned into the mouth opening they mean through the person's own face model
(:func:`motion.lip_measures.model_mouth_opening`). That is compared with the opening tracked on the
footage (:func:`motion.lip_measures.mouth_opening`) on the frames whose tracking is valid: Pearson r at lag 0,
the best r within +-0.2 s and its lag.

``--fit`` fits :data:`FITTED` (the lead, the jaw settings, the vowel openness' share and normalisation) to
maximise the lag-0 r, by leave-one-person-out (fit on everyone else, measure on the person left out), then
once on everyone. The slow part (speech features, phones, coarticulation, the first formant:
:class:`motion.audio2motion.MouthParts`) is computed once per clip; one evaluation of the settings on all
clips takes milliseconds.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from common.errors import InputError
from motion.audio2motion import Audio2MotionConfig, MouthParts, mouth_expression
from motion.audio_features import to_frames
from motion.blendshapes import EXPRESSION_INDEX, EXPRESSION_NAMES, MOUTH_NAMES
from pipeline.metrics import pearson

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CLIPS = (
    "talk_andrew_a",
    "talk_andrew_b",
    "talk_may_5s",
    "talk_retalking_face3",
    "talk_retalking_face4",
    "talk_pcavs_731200067",
    "talk_pcavs_00473",
    "talk_latentsync_demo1",
    "talk_latentsync_demo2",
    "talk_latentsync_demo3",
)
"""The real speakers of ``../shared/data`` (its README), by file name without ``.mp4``."""
PERSONS = {"talk_andrew_a": "andrew", "talk_andrew_b": "andrew"}
"""Clips of the same person (the rest: one person per clip). A person is held out with all their clips."""
IDENTITIES = "outputs/bench_lipsync/identities"
"""Where the clips are prepared as identities (once; reused when present)."""
ZH_SPEECH = DATA / "speech_zh_female_8s.wav"
"""Speech in another language, for the closing-in-pauses plot."""
EN_SPEECH = DATA / "speech_en_male_8s.wav"
"""English speech, for the first-formant plot (with :data:`ZH_SPEECH`)."""
MAX_LAG_S = 0.2
"""The best lag is looked for within this much either way."""
FITTED: dict[str, tuple[float, float]] = {
    "lead_ms": (0.0, 160.0),
    "jaw_gain": (0.4, 1.5),
    "jaw_compression": (0.05, 1.5),
    "phone_jaw_weight": (0.0, 1.0),
    "syllable_weight": (0.0, 1.0),
    "formant_weight": (0.0, 1.0),
    "formant_low_percentile": (0.0, 50.0),
    "formant_min_periodicity": (0.0, 0.6),
}
"""The settings ``--fit`` fits, with their bounds."""
FORMANT_GRID: dict[str, tuple[float, ...]] = {
    "formant_weight": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    "formant_low_percentile": (10.0, 30.0, 50.0),
    "formant_min_periodicity": (0.0, 0.2, 0.45),
}
"""Before its local search, the fit tries these values of the vowel-openness settings (those it fits) and
starts from the best: the loudness condition makes the surface flat around the start, where a local search
alone stays."""
MIN_LOUDNESS_R = 0.6
"""The fit keeps jaw_open following the speech's loudness (r with the envelope at least this on every clip):
what opens the mouth in any language. Without it the fit hands the jaw to the phone recogniser's openness
(compression near 0, all phone weight), which is English-only and fails on other languages."""
_MOUTH_COLS = [EXPRESSION_INDEX[n] for n in MOUTH_NAMES]


@dataclass
class ClipCase:
    """One clip, with everything that does not depend on the fitted settings computed.

    Attributes:
        name: the clip's name. person: whose it is (clips of one person are held out together).
        fps: frame rate. parts: the generic mouth before the jaw settings and the lead.
        real: float [T] the tracked mouth opening. valid: bool [T] frames whose tracking is usable.
        model: the person's face model (:class:`motion.face_model.FaceModel`).
        tracked: float [V, E] the tracked coefficients on valid frames (names ``EXPRESSION_NAMES``).
        rest: float [E] the face the mouth is added to: the resting mouth (each mouth coefficient's 10th
            percentile) and a calm frame's other coefficients.
        tracked_r: r of the tracked coefficients' own model opening with ``real`` (what the face model can
            show at best; nan when unknown).
    """

    name: str
    person: str
    fps: float
    parts: MouthParts
    real: np.ndarray
    valid: np.ndarray
    model: object
    tracked: np.ndarray
    rest: np.ndarray
    tracked_r: float = math.nan

    @property
    def num_frames(self) -> int:
        return len(self.real)

    @cached_property
    def loudness(self) -> np.ndarray:
        """float32 [T]: the speech's normalised loudness envelope per video frame."""
        return to_frames(self.parts.times, self.parts.envelope, self.num_frames, self.fps)


def generic_mouth(case: ClipCase, config: Audio2MotionConfig) -> np.ndarray:
    """float32 [T, E]: the generic motion stage's mouth for the clip's speech under ``config``."""
    return mouth_expression(case.parts, case.num_frames, case.fps, config)


def person_expression(case: ClipCase, generic: np.ndarray) -> np.ndarray:
    """float [T, E]: ``generic`` as rendering drives the person with it: each mouth coefficient scaled to the
    person's range, added to their resting face, and kept within what their footage shows."""
    from pipeline.drive import adapt_to_identity, within_trained_range

    adapted = adapt_to_identity(generic, EXPRESSION_NAMES, case.tracked)
    expression = np.tile(case.rest, (len(generic), 1))
    expression[:, _MOUTH_COLS] += adapted[:, _MOUTH_COLS]
    return within_trained_range(expression, case.tracked)


def generic_opening(case: ClipCase, config: Audio2MotionConfig) -> np.ndarray:
    """float [T]: the mouth opening the generic mouth means on the person's face model."""
    from motion.lip_measures import model_mouth_opening

    return model_mouth_opening(case.model, person_expression(case, generic_mouth(case, config)))


def lagged_r(
    predicted: np.ndarray, real: np.ndarray, valid: np.ndarray, max_lag: int
) -> tuple[float, float, int]:
    """(r at lag 0, best r, its lag in frames) of ``predicted`` against ``real`` on ``valid`` frames.

    A positive lag means ``predicted`` is late: ``predicted[t + lag]`` matches ``real[t]`` best.
    """
    real = np.where(valid, real, np.nan)
    best, best_lag = -math.inf, 0
    r0 = math.nan
    for lag in range(-max_lag, max_lag + 1):
        shifted = np.full(len(predicted), np.nan)
        if lag >= 0:
            shifted[: len(predicted) - lag] = predicted[lag:]
        else:
            shifted[-lag:] = predicted[:lag]
        r = pearson(shifted, real)
        if lag == 0:
            r0 = r
        if np.isfinite(r) and r > best:
            best, best_lag = r, lag
    return r0, (best if np.isfinite(best) else math.nan), best_lag


def measure(case: ClipCase, config: Audio2MotionConfig) -> dict[str, float]:
    """The clip's figures under ``config``: r of the opening at lag 0, the best r, its lag (ms; positive:
    the generic mouth is late), and r of the plain jaw_open coefficient at lag 0."""
    mouth = generic_mouth(case, config)
    opening = generic_opening(case, config)
    max_lag = round(MAX_LAG_S * case.fps)
    r0, best, lag = lagged_r(opening, case.real, case.valid, max_lag)
    jaw_r = pearson(mouth[:, EXPRESSION_INDEX["jaw_open"]], np.where(case.valid, case.real, np.nan))
    return {"r": r0, "best_r": best, "lag_ms": 1000.0 * lag / case.fps, "jaw_r": jaw_r}


def lag0_r(case: ClipCase, config: Audio2MotionConfig) -> float:
    """r of the generic opening with the real one at lag 0 (the fitting objective, per clip)."""
    return pearson(generic_opening(case, config), np.where(case.valid, case.real, np.nan))


def persons(cases: list[ClipCase]) -> list[str]:
    """The people of ``cases`` in order of first appearance."""
    return list(dict.fromkeys(c.person for c in cases))


def mean_person_r(cases: list[ClipCase], config: Audio2MotionConfig) -> float:
    """Mean over people of their clips' mean lag-0 r: a person with two clips counts once."""
    per_person = []
    for person in persons(cases):
        rs = [lag0_r(c, config) for c in cases if c.person == person]
        rs = [r for r in rs if np.isfinite(r)]
        if rs:
            per_person.append(float(np.mean(rs)))
    return float(np.mean(per_person)) if per_person else math.nan


def loudness_shortfall(
    cases: list[ClipCase], config: Audio2MotionConfig, floor: float = MIN_LOUDNESS_R
) -> float:
    """Sum over clips of how far jaw_open's r with the loudness envelope falls under ``floor`` (0: none)."""
    jaw = EXPRESSION_INDEX["jaw_open"]
    total = 0.0
    for case in cases:
        r = pearson(generic_mouth(case, config)[:, jaw], case.loudness)
        total += max(0.0, floor - r) if np.isfinite(r) else floor
    return total


def fit_settings(
    cases: list[ClipCase],
    start: Audio2MotionConfig,
    fitted: dict[str, tuple[float, float]] | None = None,
    max_evaluations: int = 600,
    min_loudness_r: float | None = MIN_LOUDNESS_R,
) -> Audio2MotionConfig:
    """``start`` with the settings ``fitted`` ({name: (low, high)}, default :data:`FITTED`) chosen to maximise
    :func:`mean_person_r` on ``cases`` while jaw_open keeps an r of ``min_loudness_r`` with every clip's
    loudness (:func:`loudness_shortfall`, a penalty; None: no such condition). Powell's method within the
    bounds, from the best of ``start`` and :data:`FORMANT_GRID`; ``start`` itself when nothing better is
    found."""
    from scipy.optimize import minimize

    fitted = fitted or FITTED
    names = list(fitted)
    low = np.array([fitted[n][0] for n in names])
    high = np.array([fitted[n][1] for n in names])

    def config_at(u: np.ndarray) -> Audio2MotionConfig:
        values = low + np.clip(u, 0.0, 1.0) * (high - low)
        return replace(start, **{n: float(v) for n, v in zip(names, values, strict=True)})

    def loss(u: np.ndarray) -> float:
        config = config_at(u)
        r = mean_person_r(cases, config)
        penalty = 0.0 if min_loudness_r is None else 5.0 * loudness_shortfall(cases, config, min_loudness_r)
        return (1.0 - r if np.isfinite(r) else 2.0) + penalty

    def coordinates(config: Audio2MotionConfig) -> np.ndarray:
        return np.clip((np.array([getattr(config, n) for n in names]) - low) / (high - low), 0.0, 1.0)

    u0 = coordinates(start)
    grid = {n: v for n, v in FORMANT_GRID.items() if n in fitted}
    first = u0
    if grid:
        candidates = [
            coordinates(replace(start, **dict(zip(grid, values, strict=True))))
            for values in itertools.product(*grid.values())
        ]
        first = min([u0, *candidates], key=loss)
    result = minimize(
        loss,
        first,
        method="Powell",
        bounds=[(0.0, 1.0)] * len(names),
        options={"maxfev": max_evaluations, "xtol": 1e-3, "ftol": 1e-5},
    )
    return config_at(result.x) if loss(result.x) <= loss(u0) else start


def leave_one_person_out(
    cases: list[ClipCase],
    start: Audio2MotionConfig,
    fitted: dict[str, tuple[float, float]] | None = None,
    min_loudness_r: float | None = MIN_LOUDNESS_R,
) -> dict[str, dict]:
    """{person: {"start", "fitted" (their clips' mean lag-0 r under ``start`` and under the settings fitted
    on everyone else), "values" (those fitted settings)}}."""
    out = {}
    for person in persons(cases):
        train = [c for c in cases if c.person != person]
        test = [c for c in cases if c.person == person]
        fold = fit_settings(train, start, fitted, min_loudness_r=min_loudness_r)
        out[person] = {
            "start": mean_person_r(test, start),
            "fitted": mean_person_r(test, fold),
            "values": {n: getattr(fold, n) for n in (fitted or FITTED)},
        }
    return out


# ---- the real clips ---------------------------------------------------------------------------------------


def identity_for(video: Path, root: Path, size: int = 256):
    """The workspace of ``video`` under ``root`` (named after the file), prepared once at ``size``."""
    from pipeline.workspace import Workspace, identity_dir

    folder = identity_dir(video.stem, root)
    if folder.is_dir():
        try:
            ws = Workspace.open(folder)
            if ws.step_done("tracking") and ws.step_done("audio"):
                return ws
        except InputError:
            pass
    from pipeline.prepare import PrepareConfig, prepare

    print(f"preparing {video.name} -> {folder}", flush=True)
    return prepare(video, video.stem, root, PrepareConfig(size=size, min_seconds=1.0))


def load_case(ws, person: str, config: Audio2MotionConfig) -> ClipCase:
    """A :class:`ClipCase` from a prepared workspace: its own speech's features and phones, its tracking."""
    from motion.audio import load_audio
    from motion.audio2motion import analyse_speech, mouth_parts
    from motion.audio_features import speech_spans
    from motion.face_model import FaceModel
    from motion.lip_measures import model_mouth_opening, mouth_opening
    from motion.phonemes import audio_to_phones
    from motion.sequence import MotionSequence
    from pipeline.drive import with_footage_expression

    fit = ws.fit()
    fps = float(ws.fps)
    audio = load_audio(ws.file("audio.wav"))
    features = analyse_speech(audio, config)
    segments = audio_to_phones(audio, None, speech_spans(features)) if features.voiced.any() else []
    parts = mouth_parts(features, segments, fps, config)

    names = tuple(fit.names)
    pose = np.zeros((len(fit.expression), 6), np.float32)
    tracked_all = MotionSequence(fps, fit.expression, pose, names).with_names(EXPRESSION_NAMES).expression
    valid = np.asarray(fit.valid, bool)
    tracked = tracked_all[valid].astype(np.float64)
    # The calmest frame (other coefficients nearest their median) gives the face the mouth is added to.
    others = [j for j in range(len(EXPRESSION_NAMES)) if j not in _MOUTH_COLS]
    deviation = np.abs(tracked[:, others] - np.median(tracked[:, others], 0)).sum(1)
    calm = int(np.flatnonzero(valid)[int(np.argmin(deviation))])
    zero = np.zeros((1, len(names)), np.float32)
    rest_named = with_footage_expression(zero, names, fit, np.array([calm]))
    rest = MotionSequence(fps, rest_named, pose[:1], names).with_names(EXPRESSION_NAMES).expression[0]
    model = FaceModel(fit.shape)
    real = mouth_opening(fit.landmarks)
    tracked_r = pearson(model_mouth_opening(model, tracked_all)[valid], real[valid])
    return ClipCase(
        name=ws.name,
        person=person,
        fps=fps,
        parts=parts,
        real=np.asarray(real, np.float64),
        valid=valid & np.isfinite(real),
        model=model,
        tracked=tracked,
        rest=rest.astype(np.float64),
        tracked_r=tracked_r,
    )


def clip_videos(clips: list[str] | None) -> list[Path]:
    """The videos of ``clips`` (names in ``../shared/data`` or paths); default: those of :data:`CLIPS` that
    are present (absent ones are named and skipped)."""
    if clips:
        videos = []
        for clip in clips:
            path = Path(clip) if Path(clip).suffix else DATA / f"{clip}.mp4"
            if not path.is_file():
                raise InputError(
                    f"clip {clip} is not found ({path})", "give a video path or a name in ../shared/data"
                )
            videos.append(path)
        return videos
    videos = [DATA / f"{c}.mp4" for c in CLIPS]
    missing = [v.name for v in videos if not v.is_file()]
    if missing:
        print(f"note: skipping absent clips: {', '.join(missing)}")
    present = [v for v in videos if v.is_file()]
    if not present:
        raise InputError(
            f"none of the benchmark clips is in {DATA}", "the lip-sync benchmark reads ../shared/data"
        )
    return present


def _plot_openings(cases: list[ClipCase], configs: dict[str, Audio2MotionConfig], path: Path) -> None:
    """Real against generic mouth opening over time, one panel per clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.files import atomic_path

    fig, axes = plt.subplots(len(cases), 1, figsize=(12, 2.6 * len(cases)), squeeze=False)
    for ax, case in zip(axes[:, 0], cases, strict=True):
        t = np.arange(case.num_frames) / case.fps
        ax.plot(t, np.where(case.valid, case.real, np.nan), color="k", lw=1.6, label="real (tracked)")
        for (label, config), colour in zip(configs.items(), ("tab:orange", "tab:blue"), strict=False):
            r = lag0_r(case, config)
            ax.plot(
                t, generic_opening(case, config), color=colour, lw=1.1, label=f"generic, {label} (r {r:.2f})"
            )
        ax.set_title(case.name, fontsize=10)
        ax.set_ylabel("gap / width")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _plot_language(speech: Path, configs: dict[str, Audio2MotionConfig], path: Path) -> dict[str, float]:
    """jaw_open over the speech's loudness envelope (frame RMS); returns the share of pause frames (no voice
    activity, away from the edges' ramps) where the mouth is not exactly shut, per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.files import atomic_path
    from motion.audio import load_audio
    from motion.audio2motion import analyse_speech, audio_to_motion
    from motion.audio_features import to_frames

    fps = 25.0
    audio = load_audio(speech)
    fig, ax = plt.subplots(figsize=(12, 3.2))
    hop = audio.rate / fps
    num = round(audio.duration * fps)
    samples = audio.samples - audio.samples.mean()
    rms = np.array([np.sqrt(np.mean(samples[int(i * hop) : int((i + 1) * hop)] ** 2)) for i in range(num)])
    t = np.arange(num) / fps
    ax.fill_between(t, 0, rms / np.percentile(rms, 99), color="0.8", label="loudness (frame RMS, scaled)")
    open_in_pauses = {}
    for (label, config), colour in zip(configs.items(), ("tab:orange", "tab:blue"), strict=False):
        motion = audio_to_motion(audio, fps, config=config)
        mouth = motion.expression[:, _MOUTH_COLS]
        features = analyse_speech(audio, config)
        voiced = to_frames(features.times, features.voiced.astype(np.float64), num, fps)
        # Pause frames: no voice activity within 0.25 s either way (the ramps and the lead lie inside that).
        far = np.convolve(voiced > 0, np.ones(2 * round(0.25 * fps) + 1), mode="same") == 0
        open_in_pauses[label] = float(np.mean(np.any(mouth[far] != 0.0, axis=1))) if far.any() else 0.0
        ax.plot(t, motion.coefficient("jaw_open"), color=colour, lw=1.2, label=f"jaw_open, {label}")
    ax.set_xlabel("seconds")
    ax.set_title(f"{speech.name}: generic jaw_open over the loudness", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return open_in_pauses


def _plot_formant(speeches: list[Path], config: Audio2MotionConfig, path: Path) -> None:
    """The first-formant estimate over each speech's spectrogram, and the vowel openness it gives (with the
    loudness envelope) under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import signal

    from common.files import atomic_path
    from motion.audio import load_audio
    from motion.audio2motion import analyse_speech, formant_openness

    fig, axes = plt.subplots(2 * len(speeches), 1, figsize=(14, 5.5 * len(speeches)), squeeze=False)
    for k, speech in enumerate(speeches):
        audio = load_audio(speech)
        features = analyse_speech(audio, config)
        freqs, times, power = signal.spectrogram(audio.samples, audio.rate, nperseg=512, noverlap=512 - 160)
        level = 10.0 * np.log10(power + 1e-12)
        ax = axes[2 * k, 0]
        ax.pcolormesh(times, freqs, level, shading="auto", cmap="magma", vmin=np.percentile(level, 40))
        periodic = features.voiced & (features.periodicity > 0.6)
        ax.plot(features.times, np.where(periodic, features.f1, np.nan), "c.", ms=2.5, label="F1 estimate")
        ax.set_ylim(0, 3000)
        ax.set_ylabel("Hz")
        ax.set_title(f"{speech.name}: first formant (voiced, periodic frames), spectrogram", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        ax = axes[2 * k + 1, 0]
        openness = formant_openness(features.f1, features.periodicity, features.voiced, features.rate, config)
        ax.fill_between(features.times, 0, features.envelope, color="0.8", label="loudness envelope")
        ax.plot(features.times, openness, color="tab:red", lw=1.2, label="vowel openness (F1, normalised)")
        ax.set_xlim(times[0], times[-1])
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=70, format="png")
    plt.close(fig)


def _fmt(value: float) -> str:
    return f"{value:5.2f}" if np.isfinite(value) else "  nan"


def bench_lipsync(
    clips: list[str] | None = None,
    out: str = "outputs/bench_lipsync",
    fit: bool = False,
    identities: str | None = None,
    config: Audio2MotionConfig | None = None,
    min_loudness_r: float = MIN_LOUDNESS_R,
) -> dict:
    """Run the lip-sync benchmark (and with ``fit`` the leave-one-person-out fit); print the table, write
    ``report.json`` and the plots into ``out``, and return the report.

    Args:
        clips: videos or names in ``../shared/data`` (default: :data:`CLIPS` present).
        out: the report folder.
        fit: fit :data:`FITTED`, leave-one-person-out and then on everyone, starting from ``config``.
        identities: where the clips are prepared (default :data:`IDENTITIES`).
        config: the motion settings measured and fitted from (default: :class:`Audio2MotionConfig`'s).
        min_loudness_r: the fit keeps jaw_open's r with every clip's loudness at least this.
    """
    from pipeline.bench.measure import machine

    videos = clip_videos(clips)
    root = Path(identities or IDENTITIES)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    start = config or Audio2MotionConfig()
    cases = []
    began = time.perf_counter()
    for video in videos:
        ws = identity_for(video, root)
        cases.append(load_case(ws, PERSONS.get(video.stem, video.stem), start))
    took = time.perf_counter() - began
    print(f"{len(cases)} clips of {len(persons(cases))} people; speech analysed in {took:.1f} s", flush=True)

    report: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "start": asdict(start)}
    configs = {"start": start}
    if fit:
        print("fitting: leave one person out, then on everyone ...", flush=True)
        began = time.perf_counter()
        held_out = leave_one_person_out(cases, start, min_loudness_r=min_loudness_r)
        final = fit_settings(cases, start, min_loudness_r=min_loudness_r)
        took = time.perf_counter() - began
        configs["fitted"] = final
        report["held_out"] = held_out
        report["held_out_mean"] = {
            k: float(np.mean([v[k] for v in held_out.values()])) for k in ("start", "fitted")
        }
        report["fitted"] = {n: getattr(final, n) for n in FITTED}
        report["fit_seconds"] = took
        report["min_loudness_r"] = min_loudness_r
        report["people"] = len(persons(cases))

    # Columns: valid frames; r of the tracked coefficients' own model opening (what the face model can show);
    # r of the speech's loudness envelope; then per config r at lag 0, the best r within +-0.2 s, its lag
    # (positive: the generic mouth is late) and r of the plain jaw_open coefficient.
    rows = []
    header = f"{'clip':24s} {'person':22s} {'frames':>6s} {'tracked':>7s} {'loud':>5s}"
    for label in configs:
        header += f" | {label}: {'r':>5s} {'best':>5s} {'lag ms':>6s} {'jaw r':>5s}"
    print(header)
    for case in cases:
        loudness_r = pearson(case.loudness, np.where(case.valid, case.real, np.nan))
        row = {
            "clip": case.name,
            "person": case.person,
            "frames": int(case.valid.sum()),
            "tracked_r": case.tracked_r,
            "loudness_r": loudness_r,
        }
        line = f"{case.name:24s} {case.person:22s} {int(case.valid.sum()):6d} {_fmt(case.tracked_r):>7s}"
        line += f" {_fmt(loudness_r)}"
        for label, config in configs.items():
            m = measure(case, config)
            row[label] = m
            figures = f"{_fmt(m['r'])} {_fmt(m['best_r'])} {m['lag_ms']:6.0f} {_fmt(m['jaw_r'])}"
            line += f" | {'':{len(label) + 1}s} {figures}"
        rows.append(row)
        print(line)
    report["clips"] = rows
    for label, config in configs.items():
        report[f"mean_person_r_{label}"] = mean_person_r(cases, config)
        print(f"mean over people of lag-0 r, {label}: {report[f'mean_person_r_{label}']:.3f}")
    if fit:
        print("leave-one-person-out (fitted on the others, measured on the person held out):")
        for person, v in report["held_out"].items():
            print(f"  {person:24s} start {_fmt(v['start'])}  fitted {_fmt(v['fitted'])}")
        means = report["held_out_mean"]
        print(f"  {'mean':24s} start {_fmt(means['start'])}  fitted {_fmt(means['fitted'])}")
        values = ", ".join(f"{n}={v:.3g}" for n, v in report["fitted"].items())
        print(f"fitted on all {report['people']} people in {report['fit_seconds']:.1f} s: {values}")
        better = means["fitted"] > means["start"]
        print(
            "the held-out mean improves: these values may become the defaults"
            if better
            else "the held-out mean does not improve: keep the defaults"
        )

    shown = sorted(cases, key=lambda c: -c.valid.sum())[:3]
    _plot_openings(shown, configs, folder / "openings.png")
    print(f"plot: {folder / 'openings.png'} ({', '.join(c.name for c in shown)})")
    if ZH_SPEECH.is_file():
        report["open_in_pauses_zh"] = _plot_language(ZH_SPEECH, configs, folder / "jaw_zh.png")
        shares = ", ".join(f"{k} {v:.3f}" for k, v in report["open_in_pauses_zh"].items())
        print(f"plot: {folder / 'jaw_zh.png'}; share of pause frames with the mouth not shut: {shares}")
    speeches = [s for s in (EN_SPEECH, ZH_SPEECH) if s.is_file()]
    if speeches:
        _plot_formant(speeches, configs.get("fitted", start), folder / "formant.png")
        print(f"plot: {folder / 'formant.png'} (first formant over the spectrogram)")
    (folder / "report.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"report: {folder / 'report.json'}")
    return report

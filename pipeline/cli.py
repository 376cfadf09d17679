"""The ``talking-portrait`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# Before numpy loads: OpenBLAS would spread every small solve (a per-frame fit is a 1000x15 least squares)
# over all cores, and on a 2-core machine with mediapipe and ffmpeg busy beside it that made each solve
# 10-20x slower (lstsq 10 ms instead of 0.5). The heavy numerical work runs in torch, with its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from common.errors import UserError
from renderers import registry

# Exit status of a run stopped by SIGTERM (128 + the signal's number, as shells report it).
TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, cluster schedulers) unwinds the run exactly as Ctrl-C does, so every
    ``finally`` and ``except BaseException`` that removes a temporary file runs."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _files_given(*values: str | None) -> list[str]:
    """The values that name existing files (a ``--transcript`` may be text, a ``--config`` a preset name)."""
    return [v for v in values if v and os.path.isfile(v)]


def _transcript(value: str | None) -> str | None:
    """``--transcript``: the text itself, or the text of the file it names."""
    return Path(value).read_text() if value and os.path.isfile(value) else value


def _config_file(name: str | None) -> str | None:
    from common.config import CONFIG_DIR

    if not name:
        return None
    return name if os.path.isfile(name) else str(CONFIG_DIR / name)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (a path, or a name in configs/)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set motion.jaw_gain=1.1 (repeatable)",
    )


def _add_identity_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--identity", required=True, help=f"the {what} identity's name")
    parser.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")


def _config_from_args(cls: type, args: argparse.Namespace, flags: tuple[str, ...]):
    """``cls`` from defaults, ``--config``, ``--set`` and then the command's own flags (``flags``)."""
    from common.config import load_config

    overrides = list(args.set)
    for key in flags:
        value = getattr(args, key, None)
        if value is not None:  # JSON is YAML: a string flag stays a string ("#00b140" is no comment)
            overrides.append(f"{key}={json.dumps(value)}")
    return load_config(cls, args.config, overrides)


def _generate_config(args: argparse.Namespace):
    from pipeline.oneshot import GenerateConfig

    return _config_from_args(GenerateConfig, args, ("size", "fps", "tracker", "renderer", "checkpoint"))


def _check_generate(args: argparse.Namespace, config) -> None:
    """Before any work: the settings in range and no output over an input."""
    from pipeline.checks import check_fps, check_input_file, check_size, check_writes_spare_reads
    from pipeline.oneshot import output_paths

    check_size(config.size)
    check_fps(config.fps)
    check_input_file(args.image, "--image")
    check_input_file(args.audio, "--audio")
    reads = [args.image, args.audio, *_files_given(args.transcript, _config_file(args.config))]
    check_writes_spare_reads(reads, output_paths(args.out, save_motion=args.save_motion))


def _run_generate(args: argparse.Namespace) -> int:
    from pipeline.oneshot import generate

    config = _generate_config(args)
    _check_generate(args, config)
    transcript = _transcript(args.transcript)
    start = time.perf_counter()
    result = generate(
        args.image,
        args.audio,
        args.out,
        transcript=transcript,
        config=config,
        progress=not args.quiet,
        save_motion=args.save_motion,
        motion=getattr(args, "motion", None),
    )
    took = time.perf_counter() - start
    print(
        f"wrote {result.video} ({result.num_frames} frames, {result.audio_seconds:.2f} s of audio, "
        f"{took:.1f} s); config {result.config}"
    )
    return 0


def _run_motion(args: argparse.Namespace) -> int:
    """``motion``: speech -> a MotionSequence .npz (the identity's own model when given, else the generic)."""
    from motion.audio import load_audio
    from motion.audio2motion import require_speech
    from pipeline.checks import check_fps, check_input_file, check_writes_spare_reads
    from pipeline.speech_motion import MotionConfig, speech_motion
    from pipeline.video_io import check_output_path
    from pipeline.workspace import Workspace, identity_dir

    config = _config_from_args(MotionConfig, args, ()).motion
    check_input_file(args.audio, "--audio")
    out = check_output_path(args.out, ".npz")
    check_writes_spare_reads([args.audio], [out])
    ws = None
    if args.identity:
        ws = Workspace.open(identity_dir(args.identity, args.workspace))
        ws.require("tracking")
    fps = args.fps or (ws.fps if ws is not None else 25.0)
    check_fps(fps)
    speech = load_audio(args.audio)
    require_speech(speech, args.audio, config)
    made = speech_motion(speech, fps, ws=ws, config=config, transcript=_transcript(args.transcript))
    made.motion.save(out)
    whose = f"{ws.name}'s own model" if made.model == "identity" else "the generic model"
    print(f"wrote {out} ({len(made.motion)} frames at {fps:g} fps, mouth by {whose})")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.oneshot import demo_inputs

    photo, speech, transcript = demo_inputs()
    args.image, args.audio, args.transcript = str(photo), str(speech), transcript
    print(f"demo: {photo.name} saying {speech.name}")
    return _run_generate(args)


def _run_bench(args: argparse.Namespace) -> int:
    from pipeline.bench.oneshot import bench_oneshot
    from pipeline.checks import check_fps, check_size, check_writes_spare_reads

    config = _generate_config(args)
    check_size(config.size)
    check_fps(config.fps)
    check_writes_spare_reads([args.image, args.audio], [args.out])
    bench_oneshot(config, image=args.image, audio=args.audio, repeats=args.repeats, out=args.out)
    return 0


def _prepare_config(args: argparse.Namespace):
    from pipeline.prepare import PrepareConfig

    return _config_from_args(PrepareConfig, args, ("size", "fps", "holdout"))


_QUICK_EXIT: dict[str, bool] = {"after": False}
"""Set by commands after which the process may end without the interpreter's teardown (see :func:`run`)."""


def _run_prepare(args: argparse.Namespace) -> int:
    from pipeline.checks import check_fps, check_input_file, check_size, check_writes_spare_reads
    from pipeline.prepare import prepare
    from pipeline.prepare_report import format_summary
    from pipeline.workspace import identity_dir

    _QUICK_EXIT["after"] = True  # prepare closes and flushes all it writes before it returns
    config = _prepare_config(args)
    check_size(config.size)
    check_fps(config.fps)
    check_input_file(args.video, "VIDEO")
    if args.audio:
        check_input_file(args.audio, "--audio")
    # --force empties the identity's folder: an input inside it would go with it
    folder = identity_dir(args.identity, args.workspace) if args.force else None
    check_writes_spare_reads([args.video, args.audio, _config_file(args.config)], [], [folder])
    start = time.perf_counter()
    ws = prepare(
        args.video,
        args.identity,
        args.workspace,
        config,
        audio=args.audio,
        force=args.force,
        progress=not args.quiet,
    )
    print(format_summary(ws))
    print(f"prepared {ws.path} in {time.perf_counter() - start:.1f} s")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from pipeline.prepare_report import format_summary
    from pipeline.workspace import Workspace, identity_dir

    path = Path(args.workspace)
    if args.identity:
        path = identity_dir(args.identity, path)
    elif not path.exists() and os.sep not in args.workspace:
        path = identity_dir(args.workspace)  # a bare identity name under the default root
    ws = Workspace.open(path)
    damage = ws.verify()
    print(format_summary(ws, damage))
    ws.require_intact(damage)  # damaged: the error line with the repair command, exit status 2
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from pipeline.workspace import Workspace, identity_dir

    people = [Workspace.open(identity_dir(name, args.workspace)) for name in args.identity]
    for ws in people:  # before any work: a damaged chunk would otherwise fail deep into training
        ws.require_intact()
    if args.motion:
        return _train_motion(people, args)
    entry = registry.entry(args.renderer)
    if len(people) > 1 and not entry.several_identities:
        raise UserError(f"a {entry.name} renderer is trained on one identity", "give --identity once")
    Config, train = entry.trainer()
    preset = args.config or f"{args.renderer}_{args.preset}.yaml"
    config = _config_from_args(Config, argparse.Namespace(config=preset, set=args.set), ())
    out = Path(args.out) if args.out else people[0].renderer_dir(args.renderer)
    _check_train_out(out, [ws.path for ws in people])
    start = time.perf_counter()
    train(people if len(people) > 1 else people[0], out, config, progress=not args.quiet)
    names = ", ".join(ws.path.name for ws in people)
    print(f"trained {args.renderer} for {names} in {time.perf_counter() - start:.1f} s -> {out}")
    missing = [ws for ws in people if not ws.has_motion_model()]
    if missing and not args.out:
        print("training the motion model of " + ", ".join(ws.name for ws in missing) + " (it has none yet)")
        return _train_motion(missing, argparse.Namespace(**{**vars(args), "config": None, "set": []}))
    return 0


def _train_motion(people: list, args: argparse.Namespace) -> int:
    """``train --motion``: each identity's own audio-to-mouth model, into its ``motion_model`` folder."""
    from pipeline.motion_training import MotionTrainConfig, heldout_line, preset_file, train_motion_model

    given = args.config or preset_file(args.preset)
    config = _config_from_args(MotionTrainConfig, argparse.Namespace(config=given, set=args.set), ())
    for ws in people:
        out = Path(args.out) if args.out and len(people) == 1 else ws.motion_model_dir
        _check_train_out(out, [ws.path] if out != ws.motion_model_dir else [])
        figures = train_motion_model(ws, out, config, progress=not args.quiet)
        took = f"{figures['seconds']:.1f} s"
        print(f"trained the motion model of {ws.name} in {took} -> {out}\n  {heldout_line(figures)}")
    return 0


def _check_train_out(out: Path, workspaces: list[Path]) -> None:
    """The checkpoint folder is a folder, and neither an identity's folder nor one holding it."""
    from pipeline.checks import check_output_folder

    check_output_folder(out)
    target = out.expanduser().resolve()
    for ws in workspaces:
        ws = ws.resolve()
        if target == ws or target in ws.parents:
            raise UserError(
                f"--out {out} would put the checkpoint over the workspace {ws}",
                "leave --out out (the identity's renderers folder) or choose a folder outside it",
            )


def _check_render(args: argparse.Namespace, config) -> None:
    """Before any work: the input files what they must be, and no output over an input."""
    from pipeline.checks import check_input_file, check_motion_file, check_range, check_writes_spare_reads
    from pipeline.identity_render import parse_background
    from pipeline.oneshot import output_paths

    check_input_file(args.audio, "--audio")
    if config.poses not in ("footage", "static"):
        if not config.poses.endswith(".npz"):
            raise UserError(
                f"--poses {config.poses!r} is neither footage, static nor a .npz motion file",
                "use --poses footage, static or the path of a MotionSequence .npz",
            )
        check_motion_file(config.poses)
    check_range(config.resolution, "--set resolution", 0, 4096)
    parse_background(config.background)  # a colour that does not parse or an image that does not read
    reads = [args.audio, *_files_given(args.transcript, config.poses, config.background)]
    reads += _files_given(_config_file(args.config))
    check_writes_spare_reads(reads, output_paths(args.out))


def _run_render(args: argparse.Namespace) -> int:
    from pipeline.identity_render import IdentityRenderConfig, render_identity

    config = _config_from_args(IdentityRenderConfig, args, ("renderer", "poses", "background"))
    _check_render(args, config)
    transcript = _transcript(args.transcript)
    start = time.perf_counter()
    out = render_identity(
        args.identity,
        args.audio,
        args.out,
        args.workspace,
        config,
        transcript=transcript,
        progress=not args.quiet,
    )
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _run_dub(args: argparse.Namespace) -> int:
    from pipeline.checks import check_input_file, check_writes_spare_reads
    from pipeline.dub import DubConfig, dub
    from pipeline.oneshot import output_paths

    _QUICK_EXIT["after"] = True  # dub closes its writer and joins its threads before it returns
    config = _config_from_args(DubConfig, args, ("renderer", "timeline", "face", "identity", "preset"))
    check_input_file(args.video, "VIDEO")
    check_input_file(args.audio, "--audio")
    reads = [args.video, args.audio, *_files_given(args.transcript, _config_file(args.config))]
    check_writes_spare_reads(reads, output_paths(args.out))
    transcript = _transcript(args.transcript)
    start = time.perf_counter()
    result = dub(
        args.video,
        args.audio,
        args.out,
        config=config,
        transcript=transcript,
        workspace=args.workspace,
        progress=not args.quiet,
    )
    took = time.perf_counter() - start
    print(f"wrote {result.video} ({result.summary}; {took:.1f} s); config {result.config}")
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    from pipeline.batch.runner import run_batch

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} is below 1", "give 1 or more workers")
    result = run_batch(
        args.manifest,
        args.out_root,
        workers=args.workers,
        ray=args.ray,
        retry_failed=args.retry_failed,
        dry_run=args.dry_run,
        config=args.config,
        sets=args.set,
        workspace=args.workspace,
        progress=not args.quiet,
    )
    return result.exit_code


def _run_ui(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError(
            "the web page needs gradio, which is not installed", "install it with pip install -e .[ui]"
        ) from None
    from pipeline.ui.app import launch, read_auth

    auth = read_auth(args.auth_file) if args.auth_file else None
    if auth is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {args.host} without a login: anyone who reaches this address can run jobs "
            "(give --auth-file FILE of USER:PASSWORD lines)",
            file=sys.stderr,
        )
    print(f"serving the page on http://{args.host}:{args.port} (workspace {args.workspace}); Ctrl+C stops it")
    launch(args.workspace, host=args.host, port=args.port, auth=auth)
    return 0


def _run_batch_status(args: argparse.Namespace) -> int:
    from pipeline.batch.runner import batch_status

    return batch_status(args.out_root)


def _run_eval(args: argparse.Namespace) -> int:
    from pipeline.checks import check_output_folder, check_range
    from pipeline.evaluate import EvalConfig, evaluate_identity, format_report

    config = _config_from_args(EvalConfig, args, ("renderer", "max_frames"))
    check_range(config.max_frames, "--max-frames", 1, 1_000_000)
    if args.out:
        check_output_folder(args.out)
    if args.dub:
        from pipeline.evaluate_dub import evaluate_dub, format_dub_report

        renderer = args.renderer or "warp"
        dubbed = evaluate_dub(
            args.identity, args.workspace, renderer, config.max_frames, args.out, config.resolution,
            on=args.on, motion_model=config.motion.model,
        )  # fmt: skip
        print(format_dub_report(dubbed))
        return 0
    if config.renderer == "warp":
        raise UserError("the warp renderer is not trained: eval measures it only with --dub", "add --dub")
    report = evaluate_identity(
        args.identity, args.workspace, on=args.on, config=config, out=args.out, progress=not args.quiet
    )
    print(format_report(report))
    return 0


def _run_bench_nerf(args: argparse.Namespace) -> int:
    from pipeline.bench.nerf import bench_nerf

    bench_nerf(
        args.identity,
        args.workspace,
        preset=args.preset,
        resolution=args.resolution or 0,
        frames=args.frames,
        points=args.points or 0,
        device=args.device,
    )
    return 0


def _run_bench_diffusion(args: argparse.Namespace) -> int:
    from pipeline.bench.diffusion import bench_diffusion

    bench_diffusion(args.preset, tuple(args.sizes), tuple(args.steps), args.batch, args.device)
    return 0


def _run_bench_autoencoder(args: argparse.Namespace) -> int:
    from pipeline.bench.autoencoder import bench_autoencoder

    bench_autoencoder(
        args.identity,
        args.workspace,
        renderer=args.renderer,
        size=args.size,
        factor=args.factor,
        seconds=args.seconds,
        preset=args.preset,
        device=args.device,
    )
    return 0


def _run_bench_dub(args: argparse.Namespace) -> int:
    from pipeline.bench.dub import bench_dub

    bench_dub(out=args.out, long_seconds=args.long_seconds)
    return 0


def _run_bench_batch(args: argparse.Namespace) -> int:
    from pipeline.bench.batch import bench_batch

    bench_batch(args.out, jobs=args.jobs, seconds=args.seconds, video=args.video, audio=args.audio,
                ray=not args.no_ray)  # fmt: skip
    return 0


def _run_bench_photo_lipsync(args: argparse.Namespace) -> int:
    from pipeline.bench.photo_lipsync import bench_photo_lipsync

    bench_photo_lipsync(
        clips=args.clips, out=args.out, config=_generate_config(args), max_seconds=args.seconds
    )
    return 0


def _run_bench_lipsync(args: argparse.Namespace) -> int:
    from common.config import load_config
    from motion.audio2motion import Audio2MotionConfig
    from pipeline.bench.lipsync import bench_lipsync

    config = load_config(Audio2MotionConfig, args.config, args.set)
    bench_lipsync(
        clips=args.clips,
        out=args.out,
        fit=args.fit,
        identities=args.workspace,
        config=config,
        min_loudness_r=args.min_loudness_r,
    )
    return 0


def _run_bench_prepare(args: argparse.Namespace) -> int:
    from pipeline.bench.prepare import bench_prepare

    bench_prepare(_prepare_config(args), video=args.video, upscaled=not args.no_upscaled, out=args.out)
    return 0


def _run_bench_gpu(args: argparse.Namespace) -> int:
    from pipeline.bench.gpu import bench_gpu

    bench_gpu(args.out, video=args.video, minutes=args.minutes, device=args.device, tests=args.tests)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talking-portrait", description="Photoreal talking-portrait video from speech."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="one photo + one speech clip -> a talking video (no training)")
    gen.add_argument("--image", required=True, help="portrait photo (png, jpg, webp, ...)")
    gen.add_argument("--audio", required=True, help="speech: wav, flac, mp3, m4a or a video's audio track")
    gen.add_argument("--transcript", help="text of the speech (or a .txt path): aligned for sharper visemes")
    gen.add_argument("--out", default="outputs/talking.mp4", help="output .mp4 (default: %(default)s)")
    gen.add_argument(
        "--renderer", choices=registry.portrait_names(), help="warp (default) or a trained diffusion"
    )
    gen.add_argument("--checkpoint", help="the diffusion renderer's folder (trained on several people)")
    gen.add_argument(
        "--motion", help="a MotionSequence .npz (talking-portrait motion) to drive the photo with instead"
    )
    mot = sub.add_parser(
        "motion", help="speech -> face motion as a .npz (the identity's own model or generic)"
    )
    mot.add_argument("--audio", required=True, help="speech: wav, flac, mp3, m4a or a video's audio track")
    mot.add_argument("--out", required=True, help="output MotionSequence .npz")
    mot.add_argument("--identity", help="a prepared identity: its own motion model when trained, its fps")
    mot.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")
    mot.add_argument("--fps", type=float, help="frames per second (default: the identity's, else 25)")
    mot.add_argument("--transcript", help="text of the speech (or a .txt path)")
    _add_config_args(mot)
    mot.set_defaults(func=_run_motion)

    demo = sub.add_parser("demo", help="generate on the embedded default photo and speech clip")
    demo.add_argument("--out", default="outputs/demo.mp4", help="output .mp4 (default: %(default)s)")
    for p in (gen, demo):
        p.add_argument("--size", type=int, help="output width and height in pixels (default 512)")
        p.add_argument("--fps", type=float, help="output frame rate (default 25)")
        p.add_argument("--tracker", choices=["mediapipe", "face-alignment"], help="landmark tracker")
        p.add_argument("--save-motion", action="store_true", help="also write <out>.motion.npz")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        _add_config_args(p)
    gen.set_defaults(func=_run_generate)
    demo.set_defaults(func=_run_demo)

    bench = sub.add_parser("bench", help="measure speed")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    one = bench_sub.add_parser("oneshot", help="single-portrait generation: render frames/s, command time")
    one.add_argument("--image", help="portrait (default: the demo photo)")
    one.add_argument("--audio", help="speech (default: the demo clip)")
    one.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")
    one.add_argument("--out", default="outputs/bench_oneshot.mp4", help="where the timed video goes")
    one.add_argument("--size", type=int, help="output size (default 512)")
    one.add_argument("--fps", type=float, help="frame rate (default 25)")
    one.add_argument("--tracker", choices=["mediapipe", "face-alignment"], help=argparse.SUPPRESS)
    _add_config_args(one)
    one.set_defaults(func=_run_bench)
    bdub = bench_sub.add_parser(
        "dub", help="dubbing: paste-back frames/s at 512 and 1080p, dub time against the speech, peak RAM"
    )
    bdub.add_argument("--out", default="outputs/bench_dub", help="scratch folder")
    bdub.add_argument("--long-seconds", dest="long_seconds", type=float, default=60.0, help="the long source")
    bdub.set_defaults(func=_run_bench_dub)

    bbat = bench_sub.add_parser(
        "batch", help="batch: jobs per hour of short warp dubs with 1 and 2 workers, and on Ray"
    )
    bbat.add_argument("--out", default="outputs/bench_batch", help="scratch folder (emptied first)")
    bbat.add_argument("--jobs", type=int, default=6, help="warp dubs in the batch (default: %(default)s)")
    bbat.add_argument("--seconds", type=float, default=3.0, help="speech per dub (default: %(default)s)")
    bbat.add_argument("--video", help="the source (default ../shared/data/talk_may_5s.mp4)")
    bbat.add_argument("--audio", help="the speech (default ../shared/data/speech_en_male_8s.wav)")
    bbat.add_argument("--no-ray", dest="no_ray", action="store_true", help="leave the Ray path out")
    bbat.set_defaults(func=_run_bench_batch)

    blip = bench_sub.add_parser(
        "lipsync",
        help="lip sync of the generic motion stage on real speakers; --fit fits its lead and jaw settings",
    )
    blip.add_argument(
        "--clips", nargs="+", help="videos, or names in ../shared/data (default: its real speakers present)"
    )
    blip.add_argument("--out", default="outputs/bench_lipsync", help="report folder (default: %(default)s)")
    blip.add_argument(
        "--workspace",
        help="where the clips are prepared as identities (default outputs/bench_lipsync/identities)",
    )
    blip.add_argument(
        "--fit", action="store_true", help="fit the lead and jaw settings, leave-one-person-out, then on all"
    )
    blip.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a motion setting to measure and fit from, e.g. --set lead_ms=0 (repeatable)",
    )
    blip.add_argument("--config", help="YAML of motion settings to measure and fit from")
    blip.add_argument(
        "--min-loudness-r",
        type=float,
        default=0.6,
        help="the fit keeps jaw_open's r with every clip's loudness at least this (default: %(default)s)",
    )
    blip.set_defaults(func=_run_bench_lipsync)

    bphoto = bench_sub.add_parser(
        "photo-lipsync",
        help="single-photo generate from a real clip's first frame and its speech, against the real mouth",
    )
    bphoto.add_argument(
        "--clips", nargs="+", help="videos, or names in ../shared/data (default: talk_andrew_b, talk_may_5s)"
    )
    bphoto.add_argument(
        "--out", default="outputs/bench_photo_lipsync", help="report folder (default: %(default)s)"
    )
    bphoto.add_argument("--seconds", type=float, default=30.0, help="longest stretch of each clip measured")
    _add_config_args(bphoto)
    bphoto.set_defaults(func=_run_bench_photo_lipsync, size=None, fps=None, tracker=None, renderer=None,
                        checkpoint=None)  # fmt: skip

    bprep = bench_sub.add_parser(
        "prepare", help="identity preparation: frames/s end to end, peak RAM, wall over a bare face-mesh pass"
    )
    bprep.add_argument("--video", help="footage (default: ../shared/data/talk_andrew_a.mp4)")
    bprep.add_argument("--no-upscaled", action="store_true", help="skip the upscaled and 1920x1080 copies")
    bprep.add_argument("--out", default="outputs/bench_prepare", help="scratch workspace root")
    bprep.add_argument("--size", type=int, help="workspace frame size (default 512)")
    bprep.add_argument("--fps", type=float, help=argparse.SUPPRESS)
    bprep.add_argument("--holdout", type=float, help=argparse.SUPPRESS)
    _add_config_args(bprep)
    bprep.set_defaults(func=_run_bench_prepare)

    bnerf = bench_sub.add_parser("nerf", help="NeRF: hash-grid encoding speed per backend, render frames/s")
    bnerf.add_argument("--identity", help="a trained identity whose render speed to measure")
    bnerf.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")
    bnerf.add_argument("--preset", choices=registry.PRESETS, default="preview", help="grid sizes")
    bnerf.add_argument("--resolution", type=int, help="render side (default: the renderer's own)")
    bnerf.add_argument("--frames", type=int, default=20, help="frames rendered (default 20)")
    bnerf.add_argument("--points", type=int, help="points per encoding call (default 2^20 GPU, 2^16 CPU)")
    bnerf.add_argument("--device", default="auto", help="cuda, cpu or auto")
    bnerf.set_defaults(func=_run_bench_nerf)

    bdiff = bench_sub.add_parser("diffusion", help="diffusion renderer: painting frames/s per size and steps")
    bdiff.add_argument("--preset", choices=registry.PRESETS, default="full", help="network size")
    bdiff.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="sample sizes (256 512)")
    bdiff.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="step counts (1 2 4 8)")
    bdiff.add_argument("--batch", type=int, default=4, help="frames painted at once (4)")
    bdiff.add_argument("--device", default="auto", help="cuda, cpu or auto")
    bdiff.set_defaults(func=_run_bench_diffusion)

    bae = bench_sub.add_parser(
        "autoencoder", help="latent or pixel diffusion: a small autoencoder's reconstruction and the cost"
    )
    bae.add_argument("--identity", required=True, help="a prepared identity to train the autoencoder on")
    bae.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")
    bae.add_argument(
        "--renderer", default="", help="a trained pixel diffusion renderer to compare (e.g. diffusion)"
    )
    bae.add_argument("--size", type=int, default=0, help="crop side (default: the renderer's, else 128)")
    bae.add_argument("--factor", type=int, default=4, help="latent downsampling (4)")
    bae.add_argument("--seconds", type=float, default=600, help="autoencoder training time (600)")
    bae.add_argument("--preset", choices=registry.PRESETS, default="full", help="network timed")
    bae.add_argument("--device", default="auto", help="cuda, cpu or auto")
    bae.set_defaults(func=_run_bench_autoencoder)

    bgpu = bench_sub.add_parser(
        "gpu", help="on a lent GPU, in one run: GPU tests, NeRF training and render speed, diffusion speed"
    )
    bgpu.add_argument("--out", default="outputs/bench_gpu", help="report folder (default: %(default)s)")
    bgpu.add_argument("--video", help="footage to train on (default: a clip made from the demo inputs)")
    bgpu.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        help="wall-clock budget of the whole run; the NeRF training gets what the rest leaves (8)",
    )
    bgpu.add_argument(
        "--device", choices=["cuda", "cpu"], default="cuda", help="cuda, or cpu for a small run at tiny sizes"
    )
    bgpu.add_argument("--tests", nargs="+", help="test files run with -m gpu (default: tests/)")
    bgpu.set_defaults(func=_run_bench_gpu)

    prep = sub.add_parser("prepare", help="footage of one person -> an identity workspace for training")
    prep.add_argument(
        "video", help="video of one person talking (10 s to 10 minutes; any format ffmpeg reads)"
    )
    prep.add_argument("--identity", required=True, help="name of the identity (its folder name)")
    prep.add_argument(
        "--workspace", help="root folder holding one folder per identity (default outputs/identities)"
    )
    prep.add_argument("--size", type=int, help="side of the stored square frames (default 512)")
    prep.add_argument("--fps", type=float, help="frame rate to resample to (default 25)")
    prep.add_argument(
        "--holdout", type=float, help="share of the clip's end held out for evaluation (default 0.1)"
    )
    prep.add_argument("--audio", help="speech to use instead of the video's own audio track")
    prep.add_argument("--force", action="store_true", help="discard an existing workspace of this identity")
    prep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_config_args(prep)
    prep.set_defaults(func=_run_prepare)

    tr = sub.add_parser("train", help="train a renderer on a prepared identity")
    tr.add_argument(
        "--identity",
        required=True,
        action="append",
        help="the prepared identity's name; repeat it to train a diffusion renderer on several people",
    )
    tr.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")
    tr.add_argument(
        "--renderer", choices=registry.trainable_names(), default="nerf", help="renderer to train"
    )
    tr.add_argument(
        "--motion",
        action="store_true",
        help="train the identity's own audio-to-mouth model instead of a renderer (about 2 minutes on a CPU)",
    )
    tr.add_argument(
        "--out", help="checkpoint folder (default: the first identity's renderers/RENDERER or motion_model)"
    )
    tr.add_argument("--preset", choices=registry.PRESETS, default="preview", help="size and length")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_config_args(tr)
    tr.set_defaults(func=_run_train)

    ren = sub.add_parser("render", help="a trained identity saying new audio -> video")
    _add_identity_args(ren, "trained")
    ren.add_argument("--renderer", choices=registry.trainable_names(), help="trained renderer (default nerf)")
    ren.add_argument("--audio", required=True, help="speech: wav, flac, mp3, m4a or a video's audio track")
    ren.add_argument("--transcript", help="text of the speech (or a .txt path)")
    ren.add_argument("--poses", help="footage (default), static, or a MotionSequence .npz")
    ren.add_argument("--background", help="new background: a colour (#00b140 or 0,177,64) or an image")
    ren.add_argument("--out", default="outputs/identity.mp4", help="output .mp4 (default: %(default)s)")
    ren.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_config_args(ren)
    ren.set_defaults(func=_run_render)

    dub = sub.add_parser(
        "dub", help="a video of someone speaking + new speech -> the same video, lips dubbed"
    )
    dub.add_argument("video", metavar="VIDEO", help="the footage: mp4, mov, mkv, webm (any resolution)")
    dub.add_argument("--audio", required=True, help="the new speech: wav, flac, mp3, m4a or a video's audio")
    dub.add_argument("--out", default="outputs/dubbed.mp4", help="output .mp4 (default: %(default)s)")
    dub.add_argument(
        "--renderer",
        choices=("auto", "warp", *registry.trainable_names()),
        help="warp (no training), or a renderer trained on the footage; auto: nerf with a GPU, else warp",
    )
    dub.add_argument("--identity", help="name of the footage's identity workspace (default: from the file)")
    dub.add_argument("--preset", help="training preset when the identity has no trained renderer")
    dub.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")
    dub.add_argument("--timeline", choices=("pingpong", "loop", "cut"), help="when the speech is longer")
    dub.add_argument(
        "--face", help="X,Y: a point on the speaker's face in the first frame (default: largest)"
    )
    dub.add_argument("--transcript", help="text of the speech (or a .txt path)")
    dub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_config_args(dub)
    dub.set_defaults(func=_run_dub)

    bat = sub.add_parser(
        "batch", help="run a manifest of dub, generate and render jobs: resumable, on local workers or Ray"
    )
    bat.add_argument("manifest", metavar="JOBS", help="a .csv with a header row or a .jsonl, one job a row")
    bat.add_argument("--out-root", dest="out_root", required=True, help="folder every output goes under")
    bat.add_argument(
        "--workers", type=int, help="local worker processes (default: half the cores, at most 4)"
    )
    bat.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray: alone, a local Ray runtime; with an address (ray://host:10001 or auto), a cluster",
    )
    bat.add_argument("--retry-failed", dest="retry_failed", action="store_true", help="run failed jobs again")
    bat.add_argument(
        "--dry-run", dest="dry_run", action="store_true", help="check the manifest, print the plan"
    )
    bat.add_argument("--workspace", help="root folder of the identities (default outputs/identities)")
    bat.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    bat.add_argument(
        "--config", help="YAML of base settings (keys of any kind, or dub:/generate:/render: sections)"
    )
    bat.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a base setting of every kind that has it (crf=20) or of one (generate.size=256); repeatable",
    )
    bat.set_defaults(func=_run_batch)

    bst = sub.add_parser("batch-status", help="print the job table of a batch's output root")
    bst.add_argument("out_root", metavar="DIR", help="the --out-root of a batch")
    bst.set_defaults(func=_run_batch_status)

    ev = sub.add_parser("eval", help="measure a trained identity on held-out footage: images and lip sync")
    _add_identity_args(ev, "trained")
    ev.add_argument(
        "--renderer",
        choices=("warp", *registry.trainable_names()),
        help="trained renderer (default nerf; with --dub also warp, its default)",
    )
    ev.add_argument(
        "--dub", action="store_true", help="dub the held-out footage with its own speech and measure that"
    )
    ev.add_argument(
        "--on", help="another prepared clip of the same person (identity name) to evaluate on, all of it"
    )
    ev.add_argument("--max-frames", dest="max_frames", type=int, help="longest stretch evaluated (250)")
    ev.add_argument("--out", help="report folder (default: the identity's report/eval_<renderer>)")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_config_args(ev)
    ev.set_defaults(func=_run_eval)

    ui = sub.add_parser("ui", help="the web page (Gradio): photo -> video, dub, identities, batch")
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    ui.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    ui.add_argument(
        "--workspace",
        default="outputs",
        help="folder of the page's identities/ and results/ (default: %(default)s)",
    )
    ui.add_argument(
        "--auth-file",
        help="a file of USER:PASSWORD lines: the page asks for a login (default: none, on 127.0.0.1 only)",
    )
    ui.set_defaults(func=_run_ui)

    insp = sub.add_parser("inspect", help="print the summary of a prepared identity")
    insp.add_argument("workspace", help="an identity's folder (or the root, with --identity)")
    insp.add_argument("--identity", help="identity name under the WORKSPACE root")
    insp.set_defaults(func=_run_inspect)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Log records to whatever ``sys.stderr`` is when each is written (it changes while C++ library
    logs are hidden)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def _library_logs_hidden() -> Iterator[None]:
    """Keep the C++ log lines of mediapipe, absl and TensorFlow Lite off the terminal.

    They go straight to file descriptor 2 (absl ignores GLOG_minloglevel), so that descriptor is pointed
    at the null device while this program's own messages (errors, warnings, progress) keep going to the
    terminal through ``sys.stderr``, now on a copy of the original descriptor. Only done when ``sys.stderr``
    is the process's own (not when a caller captured it).
    """
    try:
        own = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        own = False
    if not own:
        yield
        return
    previous = sys.stderr
    previous.flush()
    terminal = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=previous.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        sys.stderr.close()
        sys.stderr = previous


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        return _main(args)
    with _library_logs_hidden():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        handlers=[_StderrHandler()],
    )
    # signal handlers can only be set from the main thread (main() called from another one keeps its own)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return args.func(args)
    except UserError as err:
        if args.verbose:
            raise
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    except Terminated:
        print("terminated; nothing half-written was kept", file=sys.stderr)
        return TERMINATED
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The ``talking-portrait`` command: :func:`main`, then exit with its code.

    After ``prepare`` and ``dub`` the process ends without the interpreter's teardown, which takes longer
    than some whole steps (0.7 s for torch's alone, 2 CPU cores): by then every file is written and closed,
    and no thread or child process is left. Other commands exit the usual way.
    """
    code = main()
    if _QUICK_EXIT["after"]:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()

"""``talking-portrait ui``: the Gradio web page over :mod:`pipeline.ui.jobs`.

Tabs: Photo -> video, Dub a video, Identities, Batch. A button queues its job in the server's
:class:`~pipeline.ui.tasks.TaskQueue` (one job at a time per GPU) and follows it: a progress bar with the
stage's name, a live curve while a model trains, the batch's job table as it fills in. A reloaded page finds
each tab's latest job, running or finished, and follows it again. Uploads are limited in size and type;
files are served only from the page's results folder (and Gradio's own upload cache). A
:class:`common.errors.UserError` reaches the page as its one-line message, never a traceback.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from common.errors import InputError, UserError
from pipeline.ui import jobs
from pipeline.ui.jobs import Folders
from pipeline.ui.tasks import Task, TaskQueue, named_uploads
from pipeline.ui.workers import Job

MAX_FILE_SIZE = "500mb"
TAB_NAMES = ("Photo -> video", "Dub a video", "Identities", "Batch")
POLL_SECONDS = 0.5
PLOT_SECONDS = 3.0
HIDDEN = "hidden"  # Gradio's own overlay is not shown: the status line above each result says more

CSS = """
.tp-status progress { width: 100%; height: 0.9em; }
.tp-status .failed { color: #b91c1c; font-weight: 600; }
.tp-status .done { color: #15803d; }
.tp-status .stopped { color: #b45309; font-weight: 600; }
"""


def _clear_errors(fn):
    """Run ``fn`` with a UserError shown on the page as its message (the line the CLI prints), an uploaded
    file named as the user named it rather than by its path in the server's upload cache."""

    def shown(err: UserError, args: tuple) -> gr.Error:
        uploads = [arg for arg in args if isinstance(arg, str) and Path(arg).is_file()]
        return gr.Error(named_uploads(err.message, uploads), duration=None, print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def following(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as err:
                raise shown(err, args) from None

        return following

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            raise shown(err, args) from None

    return wrapped


def _minutes(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def user(request: gr.Request | None) -> str:
    """Who is asking: the login's user name on a page with logins, else empty (everyone is one user)."""
    return (getattr(request, "username", None) or "") if request is not None else ""


def _still_there(value: Any) -> Any:
    """An input restored after a reload: an uploaded file the server has lost becomes empty."""
    if isinstance(value, list):
        return [v for v in value if _still_there(v) is not None] or None
    if isinstance(value, str) and os.path.isabs(value) and not os.path.exists(value):
        return None
    return value


def status_html(task: Task | None, ahead: int = 0) -> str:
    """One job's state as the page shows it above its result."""
    if task is None:
        return ""
    title = html.escape(task.title)
    if task.state == "queued":
        waiting = f"{ahead} job(s) ahead" if ahead else "starting"
        body = f"queued ({waiting}): {title}"
    elif task.state == "running":
        fraction = task.fraction()
        bar = (
            f'<progress value="{fraction:.3f}" max="1"></progress>'
            if fraction is not None
            else "<progress></progress>"
        )
        where = html.escape(task.where() or "starting")
        if task.stop_asked:
            where += " · stopping"
        body = f"{bar}<br>running {_minutes(task.seconds())} · {where}"
    elif task.state == "done":
        body = f'<span class="done">done in {task.seconds():.1f} s</span>: {title}'
    else:
        body = f'<span class="{task.state}">{html.escape(task.error or task.state)}</span>'
    return f'<div class="tp-status">{body}</div>'


def build_app(folders: Folders, tasks: TaskQueue | None = None) -> gr.Blocks:
    """The page's Blocks (not launched)."""
    folders.results.mkdir(parents=True, exist_ok=True)
    tasks = tasks or TaskQueue(folders.results, folders.new_job)
    identities = folders.identities

    def follow(task: Task, view: Callable[[Task, dict], tuple], raise_error: bool) -> Iterator[tuple]:
        """The tab's outputs while ``task`` runs, then its result; a failed job's message raised (for the
        button and the API) when ``raise_error``."""
        memo: dict[str, Any] = {}
        while not task.over:
            yield view(task, memo)
            tasks.wait(task, POLL_SECONDS)
        yield view(task, {})  # the whole result once more: an API caller's answer is the last one
        if raise_error and task.state == "failed":
            raise gr.Error(task.error or "the job failed", duration=None, print_exception=False)

    def status(task: Task) -> str:
        return status_html(task, tasks.ahead(task))

    def once(memo: dict, key: str, value: Any) -> Any:
        """``value`` the first time it differs from what was sent for ``key``, else nothing is sent."""
        if key in memo and memo[key] == value:
            return gr.skip()
        memo[key] = value
        return value

    def restore(kind: str, count: int):
        """On (re)load: the inputs the tab's latest job was started with (an upload the server no longer
        has is left empty)."""

        def restored(request: gr.Request):
            task = tasks.latest(kind, user(request))
            values = task.details.get("inputs") if task else None
            if not values or len(values) != count:
                return tuple(gr.skip() for _ in range(count))
            return tuple(_still_there(value) for value in values)

        return restored

    def attach(kind: str, view: Callable[[Task, dict], tuple], count: int):
        """On (re)load: follow the tab's latest job, running or finished."""

        def attached(request: gr.Request):
            task = tasks.latest(kind, user(request))
            if task is None:
                yield tuple(gr.skip() for _ in range(count))
                return
            yield from follow(task, view, raise_error=False)

        return attached

    # Photo -> video
    def photo_view(task: Task, memo: dict) -> tuple:
        done = task.state == "done"
        video = once(memo, "video", task.result.get("video")) if done else gr.skip()
        settings = once(memo, "settings", task.result.get("settings")) if done else gr.skip()
        return status(task), video, settings

    @_clear_errors
    def photo(image, audio, transcript, size, request: gr.Request = None):
        jobs.need(image, "portrait photo")
        jobs.need(audio, "speech recording")
        text = transcript or ""
        task = tasks.submit(
            "photo",
            f"{Path(image).name} saying {Path(audio).name}",
            Job(jobs.run_photo, dict(image=image, audio=audio, transcript=text, size=int(size))),
            uploads=[image, audio],
            details={"inputs": [image, audio, transcript, size]},
            owner=user(request),
        )
        yield from follow(task, photo_view, raise_error=True)

    def preview(path):
        return path if path and jobs.looks_like_image(path) else None

    # Dub a video
    @_clear_errors
    def show_first_frame(video):
        if not video:
            return None, "", None
        frame, boxes = jobs.first_frame(video)
        return jobs.marked_faces(frame, boxes, None), "", (frame, boxes)

    def pick_face(first, evt: gr.SelectData):
        x, y = (int(v) for v in evt.index)
        if first is None:
            return gr.skip(), f"{x},{y}"
        frame, boxes = first
        return jobs.marked_faces(frame, boxes, (x, y)), f"{x},{y}"

    def dub_view(task: Task, memo: dict) -> tuple:
        done = task.state == "done"
        video = once(memo, "video", task.result.get("video")) if done else gr.skip()
        summary = once(memo, "summary", task.result.get("summary")) if done else gr.skip()
        source = once(memo, "source", task.details.get("source"))  # shown again after a reload
        return status(task), video, summary, source

    @_clear_errors
    def dub(video, audio, renderer, face, transcript, request: gr.Request = None):
        jobs.need(video, "video")
        jobs.need(audio, "speech recording")
        task = tasks.submit(
            "dub",
            f"{Path(video).name} dubbed with {Path(audio).name} ({renderer})",
            Job(
                jobs.run_dub,
                dict(
                    identities=identities,
                    video=video,
                    audio=audio,
                    renderer=renderer,
                    face=face or "",
                    transcript=transcript or "",
                ),
            ),
            uploads=[video, audio],
            details={"source": video, "inputs": [video, audio, renderer, face, transcript]},
            owner=user(request),
        )
        yield from follow(task, dub_view, raise_error=True)

    # Identities
    def identity_table():
        return jobs.list_identities(identities)

    def identity_names(chosen=None):
        names = [row[0] for row in jobs.list_identities(identities)]
        return gr.Dropdown(choices=names, value=chosen if chosen in names else None)

    def prepare_view(task: Task, memo: dict) -> tuple:
        done = task.state == "done"
        sheet = once(memo, "sheet", task.result.get("sheet")) if done else gr.skip()
        summary = once(memo, "summary", task.result.get("summary")) if done else gr.skip()
        table = once(memo, "table", identity_table()) if task.over else gr.skip()
        return status(task), sheet, summary, table

    @_clear_errors
    def prepare(video, identity, request: gr.Request = None):
        jobs.need(video, "video")
        name = (identity or "").strip()
        if not name:
            raise InputError("no identity name was given", "type a name: letters, digits, - and _")
        task = tasks.submit(
            "prepare",
            f"{Path(video).name} prepared as {name}",
            Job(jobs.run_prepare, dict(identities=identities, video=video, identity=name)),
            uploads=[video],
            details={"inputs": [video, identity]},
            owner=user(request),
        )
        yield from follow(task, prepare_view, raise_error=True)

    def pictures(identity):
        if not identity:
            return None
        try:
            return jobs.identity_pictures(identities, identity) or None
        except UserError:
            return None

    def curves(rows: list[dict[str, float]], model: str):
        import pandas as pd

        held = [
            {"step": row["step"], "value": row[key], "figure": name}
            for row in rows
            for key, name in jobs.HELD_OUT.get(model, {}).items()
            if key in row
        ]
        loss = [{"step": row["step"], "loss": row["loss"]} for row in rows if "loss" in row]
        # nothing yet is sent as None: a plot first given an empty frame keeps its colours' legend empty and
        # draws no coloured lines when the rows come
        return (
            pd.DataFrame(held).astype({"step": float, "value": float}) if held else None,
            pd.DataFrame(loss).astype(float) if loss else None,
        )

    def saved_curve(identity, model):
        if not identity or model not in jobs.TRAINABLE:
            return curves([], model or "motion")
        try:
            folder = jobs.model_dir(identities, identity, model)
        except UserError:
            return curves([], model)
        return curves(jobs.training_curve(folder), model)

    def train_view(task: Task, memo: dict) -> tuple:
        model, folder = task.details.get("model", ""), task.details.get("folder")
        live = [row for rows in task.curve().values() for row in rows]
        now = time.monotonic()
        plots = (gr.skip(), gr.skip())
        # redrawn when rows came, at most every PLOT_SECONDS: a browser on the same machine draws each one
        if "plotted" not in memo or (len(live) != memo["rows"] and now - memo["plotted"] >= PLOT_SECONDS):
            saved = jobs.training_curve(Path(folder)) if folder else []  # from before a resumed run
            first = live[0]["step"] if live else float("inf")
            plots = curves([row for row in saved if row["step"] < first] + live, model)
            memo["rows"], memo["plotted"] = len(live), now
        summary = once(memo, "summary", task.result.get("summary")) if task.state == "done" else gr.skip()
        table = once(memo, "table", identity_table()) if task.over else gr.skip()
        return status(task), summary, *plots, table

    @_clear_errors
    def train(identity, model, preset, request: gr.Request = None):
        folder = jobs.model_dir(identities, identity, model) if model in jobs.TRAINABLE else None
        task = tasks.submit(
            "train",
            f"training {model} of {identity} ({preset})",
            Job(jobs.run_train, dict(identities=identities, identity=identity, model=model, preset=preset)),
            details={"model": model, "folder": str(folder) if folder else None},
            owner=user(request),
        )
        yield from follow(task, train_view, raise_error=True)

    def render_view(task: Task, memo: dict) -> tuple:
        done = task.state == "done"
        return status(task), (once(memo, "video", task.result.get("video")) if done else gr.skip())

    @_clear_errors
    def render(identity, audio, renderer, request: gr.Request = None):
        jobs.need_identity(identities, identity)
        jobs.need(audio, "speech recording")
        task = tasks.submit(
            "render",
            f"{identity} saying {Path(audio).name} ({renderer})",
            Job(
                jobs.run_render,
                dict(identities=identities, identity=identity, audio=audio, renderer=renderer),
            ),
            uploads=[audio],
            owner=user(request),
        )
        yield from follow(task, render_view, raise_error=True)

    def eval_view(task: Task, memo: dict) -> tuple:
        if task.state != "done":
            return status(task), gr.skip(), gr.skip(), gr.skip()
        result = task.result
        return (
            status(task),
            once(memo, "summary", result.get("summary")),
            once(memo, "pictures", result.get("pictures") or None),
            once(memo, "video", result.get("video")),
        )

    @_clear_errors
    def evaluate(identity, renderer, frames, request: gr.Request = None):
        jobs.need_identity(identities, identity)
        task = tasks.submit(
            "eval",
            f"{identity} measured ({renderer}, up to {int(frames)} frames)",
            Job(
                jobs.run_eval,
                dict(identities=identities, identity=identity, renderer=renderer, max_frames=int(frames)),
            ),
            owner=user(request),
        )
        yield from follow(task, eval_view, raise_error=True)

    # Batch
    def batch_view(task: Task, memo: dict) -> tuple:
        table = once(memo, "table", jobs.batch_table(task.folder))
        if task.state != "done":
            return status(task), table, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        result = task.result
        videos = result.get("videos") or []
        names = [(Path(v).name, v) for v in videos]
        return (
            status(task),
            table,
            once(memo, "report", result.get("report")),
            once(memo, "videos", videos or None),
            once(memo, "summary", result.get("summary")),
            gr.Dropdown(choices=names, value=videos[0] if videos else None),
        )

    @_clear_errors
    def batch(manifest, inputs=None, request: gr.Request = None):
        jobs.need(manifest, "manifest")
        inputs = [str(path) for path in inputs or []]
        task = tasks.submit(
            "batch",
            f"batch {Path(manifest).name}" + (f" with {len(inputs)} input file(s)" if inputs else ""),
            Job(jobs.run_batch_job, dict(identities=identities, manifest=manifest, inputs=inputs)),
            uploads=[manifest, *inputs],
            details={"inputs": [manifest, inputs]},
            owner=user(request),
        )
        yield from follow(task, batch_view, raise_error=True)

    def stop_button(kind: str) -> gr.Button:
        """A Stop button for the tab's latest job of ``kind`` (queued: dropped; running: unwound at once, as
        Ctrl-C unwinds a command)."""

        def stop(request: gr.Request):
            task = tasks.latest(kind, user(request))
            if task is not None:
                tasks.stop(task)

        button = gr.Button("Stop", variant="stop", size="sm", scale=1, min_width=80)
        button.click(stop, None, None, api_name=f"stop_{kind}", show_progress=HIDDEN)
        return button

    # every job of the server
    def job_rows(request: gr.Request):
        """The server's last 20 jobs: the asker's in full, another login's by kind and state only."""
        rows, me = [], user(request)
        for task in tasks.tasks()[:20]:
            if task.owner != me:
                seconds = f"{task.seconds():.0f}"
                rows.append(["-", f"{task.kind} job of another user", task.state, seconds, ""])
                continue
            where = task.where() if task.running else (task.error or "")
            rows.append([task.id, task.title, task.state, f"{task.seconds():.0f}", where])
        return rows

    with gr.Blocks(title="talking-portrait") as demo:
        gr.Markdown("# talking-portrait\nA talking video from a photo or a video and a speech recording.")
        with gr.Tab(TAB_NAMES[0]):
            with gr.Row():
                with gr.Column():
                    p_image = gr.File(
                        label="Portrait photo (png, jpg, webp)",
                        file_types=list(jobs.IMAGE_TYPES),
                        type="filepath",
                    )
                    p_preview = gr.Image(label="Photo", interactive=False, height=240)
                    p_audio = gr.Audio(
                        label="Speech (upload or record)", sources=["upload", "microphone"], type="filepath"
                    )
                    p_text = gr.Textbox(label="Transcript (optional: sharper lip shapes)", lines=2)
                    p_size = gr.Dropdown([256, 384, 512, 768], value=512, label="Size (pixels, square)")
                    with gr.Row():
                        p_run = gr.Button("Make the video", variant="primary", scale=4)
                        stop_button("photo")
                with gr.Column():
                    p_status = gr.HTML()
                    p_video = gr.Video(label="Result", interactive=False)
                    p_settings = gr.Code(
                        label="Resolved settings (.config.yaml)", language="yaml", max_lines=16
                    )
            p_image.change(preview, p_image, p_preview)
            p_outputs = [p_status, p_video, p_settings]
            p_inputs = [p_image, p_audio, p_text, p_size]
            p_run.click(
                photo,
                p_inputs,
                p_outputs,
                api_name="photo_to_video",
                show_progress=HIDDEN,
            )
        with gr.Tab(TAB_NAMES[1]):
            with gr.Row():
                with gr.Column():
                    d_video = gr.File(
                        label="Video of the person speaking",
                        file_types=list(jobs.VIDEO_TYPES),
                        type="filepath",
                    )
                    d_frame = gr.Image(
                        label="First frame: click the speaker's face (default: the largest face)",
                        interactive=False,
                        height=300,
                        elem_id="speaker-frame",
                    )
                    d_face = gr.Textbox(
                        label="Speaker point X,Y",
                        placeholder="click the first frame",
                        elem_id="speaker-point",
                    )
                    d_audio = gr.Audio(
                        label="New speech (upload or record)",
                        sources=["upload", "microphone"],
                        type="filepath",
                    )
                    d_renderer = gr.Radio(["warp", "nerf", "diffusion"], value="warp", label="Renderer")
                    d_text = gr.Textbox(label="Transcript (optional)", lines=2)
                    with gr.Row():
                        d_run = gr.Button("Dub the video", variant="primary", scale=4)
                        stop_button("dub")
                with gr.Column():
                    d_status = gr.HTML()
                    with gr.Row():
                        d_source = gr.Video(label="Source", interactive=False)
                        d_out = gr.Video(label="Dubbed", interactive=False)
                    d_summary = gr.Markdown()
            d_first = gr.State()  # the first frame as decoded, and its faces
            d_video.change(show_first_frame, d_video, [d_frame, d_face, d_first]).then(
                lambda v: v, d_video, d_source
            )
            d_frame.select(pick_face, d_first, [d_frame, d_face])
            d_outputs = [d_status, d_out, d_summary, d_source]
            d_inputs = [d_video, d_audio, d_renderer, d_face, d_text]
            d_run.click(
                dub,
                d_inputs,
                d_outputs,
                api_name="dub",
                show_progress=HIDDEN,
            )
        with gr.Tab(TAB_NAMES[2]):
            gr.Markdown(f"Identities under `{identities}`: footage of one person prepared for training.")
            i_table = gr.Dataframe(headers=jobs.IDENTITY_COLUMNS, value=identity_table, interactive=False)
            gr.Markdown("### Prepare footage into an identity")
            with gr.Row():
                with gr.Column():
                    i_video = gr.File(
                        label="Footage of one person", file_types=list(jobs.VIDEO_TYPES), type="filepath"
                    )
                    i_name = gr.Textbox(label="Identity name", placeholder="letters, digits, - and _")
                    with gr.Row():
                        i_run = gr.Button("Prepare", variant="primary", scale=4)
                        stop_button("prepare")
                    i_status = gr.HTML()
                    i_summary = gr.Markdown()
                i_sheet = gr.Image(label="Report: contact sheet", interactive=False)
            gr.Markdown("### A prepared identity")
            with gr.Row():
                i_pick = gr.Dropdown(
                    choices=[row[0] for row in jobs.list_identities(identities)],
                    label="Identity",
                    allow_custom_value=True,  # checked by the job: the list may be older than the folder
                )
            i_pictures = gr.Gallery(label="Its prepare report", columns=4, height=260)
            with gr.Row():
                with gr.Column(scale=1):
                    i_model = gr.Radio(
                        list(jobs.TRAINABLE),
                        value="motion",
                        label="Train: its own motion model, or a renderer",
                    )
                    i_preset = gr.Radio(
                        list(jobs.PRESETS),
                        value="preview",
                        label="Preset (tiny: a check in seconds; full: the real run, hours on a GPU)",
                    )
                    with gr.Row():
                        i_train = gr.Button("Train, or go on from the last checkpoint", scale=4)
                        stop_button("train")
                    t_status = gr.HTML()
                    t_summary = gr.Markdown()
                with gr.Column(scale=2):
                    t_held = gr.LinePlot(
                        x="step", y="value", color="figure", title="Held-out figure", height=220
                    )
                    t_loss = gr.LinePlot(x="step", y="loss", title="Training loss", height=180)
            gr.Markdown("### New speech, with a trained renderer")
            with gr.Row():
                with gr.Column():
                    i_audio = gr.Audio(
                        label="New speech (upload or record)",
                        sources=["upload", "microphone"],
                        type="filepath",
                    )
                    i_renderer = gr.Radio(["nerf", "diffusion"], value="nerf", label="Trained renderer")
                    with gr.Row():
                        i_render = gr.Button("Render the speech", variant="primary", scale=4)
                        stop_button("render")
                    r_status = gr.HTML()
                i_video_out = gr.Video(label="Rendered", interactive=False)
            gr.Markdown(
                "### Measure it on held-out footage\n"
                "warp: the footage dubbed with its own speech (`eval --dub`); nerf, diffusion: a trained "
                "renderer (`eval`)."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    e_renderer = gr.Radio(["warp", "nerf", "diffusion"], value="warp", label="Renderer")
                    e_frames = gr.Number(
                        value=250, precision=0, minimum=1, label="Frames to measure, at most"
                    )
                    with gr.Row():
                        e_run = gr.Button("Evaluate", scale=4)
                        stop_button("eval")
                    e_status = gr.HTML()
                with gr.Column(scale=2):
                    e_summary = gr.Code(label="Report", language=None, max_lines=24, wrap_lines=True)
                    e_pictures = gr.Gallery(label="Real | made", columns=3, height=300)
                    e_video = gr.Video(label="Side by side", interactive=False)
            i_outputs = [i_status, i_sheet, i_summary, i_table]
            i_inputs = [i_video, i_name]
            i_run.click(prepare, i_inputs, i_outputs, api_name="prepare", show_progress=HIDDEN).then(
                identity_names, i_name, i_pick
            )
            i_pick.change(pictures, i_pick, i_pictures).then(saved_curve, [i_pick, i_model], [t_held, t_loss])
            i_model.change(saved_curve, [i_pick, i_model], [t_held, t_loss])
            t_outputs = [t_status, t_summary, t_held, t_loss, i_table]
            i_train.click(
                train, [i_pick, i_model, i_preset], t_outputs, api_name="train", show_progress=HIDDEN
            )
            r_outputs = [r_status, i_video_out]
            i_render.click(
                render, [i_pick, i_audio, i_renderer], r_outputs, api_name="render", show_progress=HIDDEN
            )
            e_outputs = [e_status, e_summary, e_pictures, e_video]
            e_run.click(
                evaluate, [i_pick, e_renderer, e_frames], e_outputs, api_name="evaluate", show_progress=HIDDEN
            )
        with gr.Tab(TAB_NAMES[3]):
            gr.Markdown(
                "A manifest (csv or jsonl) of dub, generate and render jobs; see the README's batch "
                "section. Upload its input files with it and name them in it by their file names, or "
                "give absolute paths of files on the server."
            )
            with gr.Row():
                b_manifest = gr.File(
                    label="Manifest", file_types=list(jobs.MANIFEST_TYPES), type="filepath", scale=1
                )
                b_inputs = gr.File(
                    label="Its input files (videos, photos, speech; optional)",
                    file_count="multiple",
                    type="filepath",
                    scale=2,
                )
            with gr.Row():
                b_run = gr.Button("Run the batch", variant="primary", scale=4)
                stop_button("batch")
            b_status = gr.HTML()
            b_table = gr.Dataframe(headers=jobs.BATCH_COLUMNS, interactive=False)
            b_summary = gr.Markdown()
            with gr.Row():
                b_report = gr.File(label="report.csv", interactive=False)
                b_videos = gr.File(label="Videos made", file_count="multiple", interactive=False)
            with gr.Row():
                b_pick = gr.Dropdown(label="Watch a video made", choices=[], scale=1)
                b_watch = gr.Video(label="Video", interactive=False, scale=2)
            b_pick.change(lambda path: path or None, b_pick, b_watch)
            b_outputs = [b_status, b_table, b_report, b_videos, b_summary, b_pick]
            b_given = [b_manifest, b_inputs]
            b_run.click(batch, b_given, b_outputs, api_name="batch", show_progress=HIDDEN)
        with gr.Accordion("Jobs on this server (newest first; one runs at a time per GPU)", open=False):
            q_table = gr.Dataframe(
                headers=["job", "what", "state", "seconds", "stage or message"], interactive=False
            )
        timer = gr.Timer(2.0)
        timer.tick(job_rows, None, q_table, show_progress=HIDDEN)
        # a reloaded page finds each tab's latest job and the identities as they are now
        demo.load(identity_names, None, i_pick)
        for kind, view, outputs in (
            ("photo", photo_view, p_outputs),
            ("dub", dub_view, d_outputs),
            ("prepare", prepare_view, i_outputs),
            ("train", train_view, t_outputs),
            ("render", render_view, r_outputs),
            ("eval", eval_view, e_outputs),
            ("batch", batch_view, b_outputs),
        ):
            demo.load(attach(kind, view, len(outputs)), None, outputs, show_progress=HIDDEN)
        given = (("photo", p_inputs), ("dub", d_inputs), ("prepare", i_inputs), ("batch", b_given))
        for kind, inputs in given:  # what each tab's latest job was started with
            demo.load(restore(kind, len(inputs)), None, inputs, show_progress=HIDDEN)
    # the jobs themselves queue in ``tasks``; the page's events only start and follow them
    demo.queue(default_concurrency_limit=None)
    return demo


def read_auth(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``USER:PASSWORD`` lines of ``path`` (blank lines and ``#`` comments skipped)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InputError(
            f"cannot read the password file {path} ({err.strerror})", "give a readable file"
        ) from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise InputError(f"{path} line {number} is not USER:PASSWORD", "write one USER:PASSWORD a line")
        pairs.append((user, password))
    if not pairs:
        raise InputError(f"{path} holds no USER:PASSWORD line", "write one USER:PASSWORD a line")
    return pairs


def launch(
    workspace: str | Path = "outputs",
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    auth: list[tuple[str, str]] | None = None,
) -> gr.Blocks:
    """Build and serve the page; with ``block`` false the server runs in a background thread. ``auth``
    (user, password) pairs make the page ask for a login."""
    folders = Folders(Path(workspace).expanduser().resolve())
    demo = build_app(folders)
    demo.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(folders.results)],
        max_file_size=MAX_FILE_SIZE,
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=["api"],
        auth=auth,
        css=CSS,
    )
    return demo

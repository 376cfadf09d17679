"""``talking-portrait ui``: the Gradio web page over :mod:`pipeline.ui.jobs`.

Tabs: Photo -> video, Dub a video, Identities, Batch. Jobs run through Gradio's queue one at a time (one
machine, one GPU at most); uploads are limited in size and type; files are served only from the page's
results folder (and Gradio's own upload cache). A :class:`common.errors.UserError` reaches the page as its
one-line message, never a traceback.
"""

from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from common.errors import UserError
from pipeline.ui import jobs
from pipeline.ui.jobs import Folders

MAX_FILE_SIZE = "500mb"
# the progress bar follows the pipeline's own tqdm bars (one instance as the default, as Gradio reads it)
TRACKED = gr.Progress(track_tqdm=True)
TAB_NAMES = ("Photo -> video", "Dub a video", "Identities", "Batch")


def _clear_errors(fn):
    """Run ``fn`` with a UserError shown on the page as its message (the line the CLI prints), an uploaded
    file named as the user named it rather than by its path in the server's upload cache."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            message = err.message
            for arg in args:
                if isinstance(arg, str) and len(arg) > 1 and Path(arg).is_file():
                    message = message.replace(arg, Path(arg).name)
            raise gr.Error(message, duration=None, print_exception=False) from None

    return wrapped


def build_app(folders: Folders) -> gr.Blocks:
    """The page's Blocks (not launched)."""
    folders.results.mkdir(parents=True, exist_ok=True)

    @_clear_errors
    def photo(image, audio, transcript, size, progress=TRACKED):
        progress(0, desc="reading the photo and speech")
        video, settings = jobs.run_photo(folders, image, audio, transcript or "", int(size), progress=True)
        return str(video), settings

    def preview(path):
        return path if path and jobs.looks_like_image(path) else None

    @_clear_errors
    def show_first_frame(video):
        if not video:
            return None, ""
        return jobs.first_frame(video), ""

    def pick_face(evt: gr.SelectData):
        x, y = evt.index
        return f"{int(x)},{int(y)}"

    @_clear_errors
    def dub(video, audio, renderer, face, transcript, progress=TRACKED):
        progress(0, desc="reading the video and speech")
        out, summary = jobs.run_dub(folders, video, audio, renderer, face or "", transcript or "", True)
        return str(out), summary

    def identities():
        return jobs.list_identities(folders)

    @_clear_errors
    def prepare(video, identity, progress=TRACKED):
        progress(0, desc="preparing the footage")
        sheet, summary = jobs.run_prepare(folders, video, identity or "", progress=True)
        return (str(sheet) if sheet else None), summary, jobs.list_identities(folders)

    def identity_names(chosen=None):
        names = [row[0] for row in jobs.list_identities(folders)]
        return gr.Dropdown(choices=names, value=chosen if chosen in names else None)

    @_clear_errors
    def train_motion(identity, progress=TRACKED):
        progress(0, desc="training the motion model")
        return jobs.run_train_motion(folders, identity or "", progress=True), jobs.list_identities(folders)

    @_clear_errors
    def render(identity, audio, renderer, progress=TRACKED):
        progress(0, desc="rendering")
        return str(jobs.run_render(folders, identity or "", audio, renderer, progress=True))

    @_clear_errors
    def batch(manifest, progress=TRACKED):
        progress(0, desc="running the manifest's jobs")
        table, csv, videos, summary = jobs.run_batch_job(folders, manifest)
        return table, (str(csv) if csv else None), [str(v) for v in videos] or None, summary

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
                    p_run = gr.Button("Make the video", variant="primary")
                with gr.Column():
                    p_video = gr.Video(label="Result", interactive=False)
                    p_settings = gr.Code(
                        label="Resolved settings (.config.yaml)", language="yaml", max_lines=16
                    )
            p_image.change(preview, p_image, p_preview)
            p_run.click(
                photo, [p_image, p_audio, p_text, p_size], [p_video, p_settings], api_name="photo_to_video"
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
                    )
                    d_face = gr.Textbox(label="Speaker point X,Y", placeholder="click the first frame")
                    d_audio = gr.Audio(
                        label="New speech (upload or record)",
                        sources=["upload", "microphone"],
                        type="filepath",
                    )
                    d_renderer = gr.Radio(["warp", "nerf", "diffusion"], value="warp", label="Renderer")
                    d_text = gr.Textbox(label="Transcript (optional)", lines=2)
                    d_run = gr.Button("Dub the video", variant="primary")
                with gr.Column():
                    d_source = gr.Video(label="Source", interactive=False)
                    d_out = gr.Video(label="Dubbed", interactive=False)
                    d_summary = gr.Markdown()
            d_video.change(show_first_frame, d_video, [d_frame, d_face]).then(lambda v: v, d_video, d_source)
            d_frame.select(pick_face, None, d_face)
            d_run.click(
                dub, [d_video, d_audio, d_renderer, d_face, d_text], [d_out, d_summary], api_name="dub"
            )
        with gr.Tab(TAB_NAMES[2]):
            gr.Markdown(
                f"Identities under `{folders.identities}`: footage of one person prepared for training."
            )
            i_table = gr.Dataframe(
                headers=["identity", "motion model trained", "report"], value=identities, interactive=False
            )
            with gr.Row():
                with gr.Column():
                    i_video = gr.File(
                        label="Footage of one person", file_types=list(jobs.VIDEO_TYPES), type="filepath"
                    )
                    i_name = gr.Textbox(label="Identity name", placeholder="letters, digits, - and _")
                    i_run = gr.Button("Prepare", variant="primary")
                    i_summary = gr.Markdown()
                i_sheet = gr.Image(label="Report: contact sheet", interactive=False)
            gr.Markdown(
                "### A prepared identity: its own motion model, and new speech with a trained renderer"
            )
            with gr.Row():
                with gr.Column():
                    i_pick = gr.Dropdown(
                        choices=[row[0] for row in jobs.list_identities(folders)],
                        label="Identity",
                        allow_custom_value=False,
                    )
                    i_train = gr.Button("Train the motion model (about a minute on a CPU)")
                    i_train_out = gr.Markdown()
                    i_audio = gr.Audio(
                        label="New speech (upload or record)",
                        sources=["upload", "microphone"],
                        type="filepath",
                    )
                    i_renderer = gr.Radio(["nerf", "diffusion"], value="nerf", label="Trained renderer")
                    i_render = gr.Button("Render the speech", variant="primary")
                i_video_out = gr.Video(label="Rendered", interactive=False)
            i_run.click(prepare, [i_video, i_name], [i_sheet, i_summary, i_table], api_name="prepare").then(
                identity_names, i_name, i_pick
            )
            i_train.click(train_motion, i_pick, [i_train_out, i_table], api_name="train_motion")
            i_render.click(render, [i_pick, i_audio, i_renderer], i_video_out, api_name="render")
        with gr.Tab(TAB_NAMES[3]):
            gr.Markdown(
                "A manifest (csv or jsonl) of dub, generate and render jobs; see the README's "
                "batch section. Give absolute paths in it: the uploaded file is not beside your inputs."
            )
            b_manifest = gr.File(label="Manifest", file_types=list(jobs.MANIFEST_TYPES), type="filepath")
            b_run = gr.Button("Run the batch", variant="primary")
            b_summary = gr.Markdown()
            b_table = gr.Dataframe(
                headers=["line", "kind", "out", "state", "seconds", "error"], interactive=False
            )
            with gr.Row():
                b_report = gr.File(label="report.csv", interactive=False)
                b_videos = gr.File(label="Videos made", file_count="multiple", interactive=False)
            b_run.click(batch, b_manifest, [b_table, b_report, b_videos, b_summary], api_name="batch")
        # what lists the workspace's identities is read again on each visit (the page survives a reload)
        demo.load(identity_names, None, i_pick)
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(
    workspace: str | Path = "outputs", host: str = "127.0.0.1", port: int = 7860, block: bool = True
) -> gr.Blocks:
    """Build and serve the page; with ``block`` false the server runs in a background thread."""
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
    )
    return demo

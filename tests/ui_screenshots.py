"""Screenshots of each tab of the web page with real results, from the shared footage folder:

    PYTHONPATH=. python -m tests.ui_screenshots outputs/ui

Runs Photo -> video (portrait_woman.png + speech_en_male_8s.wav), a dub (talk_may_5s.mp4 + the same
speech, the speaker clicked on the first frame; the page reloaded while it runs), prepares talk_andrew_b.mp4
as an identity, trains its motion model (live curve) and measures it, and runs a three-row batch manifest; a
PNG of each tab while and after its job runs goes to the given folder. About 15 minutes on a 2-core CPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.chromium import free_port, headless_page
from tests.conftest import SHARED_DATA

DONE_VIDEO = (
    "(() => [...document.querySelectorAll('video')].filter(v => v.src && v.offsetParent !== null"
    " && v.readyState >= 1).length)()"
)


def tab(page, name: str) -> None:
    page.js(
        "[...document.querySelectorAll('button[role=tab]')]"
        f".find(b => b.innerText.trim() === {name!r}).click()"
    )
    time.sleep(1.0)


def click(page, label: str) -> None:
    page.js(
        f"[...document.querySelectorAll('button')].find(b => b.innerText.trim() === {label!r}"
        " && b.offsetParent !== null).click()"
    )


def text_in(page, selector_label: str, value: str) -> None:
    """Type ``value`` into the shown textbox labelled ``selector_label``."""
    page.js(
        "(() => { const l = [...document.querySelectorAll('label')].find(l => l.offsetParent !== null"
        f" && l.innerText.includes({selector_label!r})); const t = l.querySelector('textarea, input')"
        " || l.parentElement.querySelector('textarea, input');"
        f" t.value = {value!r}; t.dispatchEvent(new Event('input', {{bubbles: true}})); }})()"
    )


def main(out: Path, only: str = "") -> None:
    from pipeline.ui.app import launch

    data = SHARED_DATA
    workspace = Path(tempfile.mkdtemp(prefix="ui-shots-"))
    port = free_port()
    demo = launch(workspace, port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        with headless_page(1280, 1500) as page:
            page.navigate(url, "document.body && document.body.innerText.includes('Make the video')")
            time.sleep(2)
            try:
                steps(page, data, workspace, out, only, url)
            except Exception:
                page.screenshot(out / "failed.png")
                raise
    finally:
        demo.close()


RUNNING = "document.body.innerText.includes('running ')"


def two_speakers(data: Path, out: Path) -> Path:
    """A clip with two people in shot, side by side (talk_may_5s left, talk_andrew_b right), 5 s."""
    import subprocess

    import imageio_ffmpeg

    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
            "-i", str(data / "talk_may_5s.mp4"), "-i", str(data / "talk_andrew_b.mp4"),
            "-filter_complex", "[1:v]scale=512:512,fps=25[b];[0:v][b]hstack=inputs=2[v]",
            "-map", "[v]", "-map", "0:a?", "-t", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out),
        ],
        check=True,
    )  # fmt: skip
    return out


def steps(page, data: Path, workspace: Path, out: Path, only: str, url: str) -> None:
    en_speech = data / "speech_en_male_8s.wav"
    if only in ("", "photo"):
        page.set_files('input[type=file][accept*=".png"]', 0, data / "portrait_woman.png")
        page.wait_for("document.body.innerText.includes('portrait_woman.png')", 60)
        page.set_files('input[type=file][accept*="audio/"]', 0, en_speech)
        time.sleep(3)
        click(page, "Make the video")  # started, then stopped
        page.wait_for(RUNNING, 60)
        click(page, "Stop")
        page.wait_for("document.body.innerText.includes('stopped from the page')", 60)
        time.sleep(1)
        page.screenshot(out / "tab_photo_stopped.png")
        click(page, "Make the video")
        page.wait_for(RUNNING, 60)
        time.sleep(2)
        page.screenshot(out / "tab_photo_running.png")
        page.wait_for(DONE_VIDEO, 600)
        time.sleep(1)
        page.screenshot(out / "tab_photo_to_video.png")
        print("photo -> video done", flush=True)

    if only in ("", "dub"):
        tab(page, "Dub a video")
        two = two_speakers(data, workspace / "two_speakers.mp4")
        page.set_files('input[type=file][accept*=".mp4"]', 0, two)
        page.wait_for(
            "(() => { const i = document.querySelector('#speaker-frame img');"
            " return !!i && i.naturalWidth > 0; })()",
            120,
        )
        time.sleep(1)
        page.screenshot(out / "tab_dub_first_frame.png")
        page.click_at("#speaker-frame img", 0.75, 0.45)  # the person on the right speaks
        page.wait_for(
            "document.querySelector('#speaker-point textarea, #speaker-point input').value !== ''", 30
        )
        time.sleep(2)
        page.screenshot(out / "tab_dub_clicked.png")
        page.set_files('input[type=file][accept*="audio/"]', 0, en_speech)
        time.sleep(3)
        click(page, "Dub the video")
        page.wait_for(RUNNING, 60)
        # the page is reloaded while the dub runs: it finds the job and follows it again
        page.navigate(url, "document.body && document.body.innerText.includes('Make the video')")
        tab(page, "Dub a video")
        page.wait_for(RUNNING, 60)
        time.sleep(1)
        page.screenshot(out / "tab_dub_after_reload.png")
        page.wait_for("/done in [0-9.]+ s: two_speakers.mp4/.test(document.body.innerText)", 900)
        time.sleep(2)
        page.screenshot(out / "tab_dub.png")
        print("dub done", flush=True)

    if only in ("", "identities"):
        tab(page, "Identities")
        page.set_files('input[type=file][accept*=".mp4"]', 0, data / "talk_andrew_b.mp4")
        text_in(page, "Identity name", "andrew_b")
        time.sleep(3)
        click(page, "Prepare")
        page.wait_for(RUNNING, 60)
        time.sleep(8)
        page.screenshot(out / "tab_identities_preparing.png")
        page.wait_for("document.body.innerText.includes('prepared identity andrew_b')", 1200)
        time.sleep(4)
        page.screenshot(out / "tab_identities_prepared.png")
        click(page, "Train, or go on from the last checkpoint")
        page.wait_for("document.body.innerText.includes('/500 step')", 300)
        time.sleep(12)
        time.sleep(3)
        page.screenshot(out / "tab_identities_training.png")
        page.wait_for("document.body.innerText.includes('held-out mouth-opening')", 600)
        time.sleep(3)
        page.screenshot(out / "tab_identities_trained.png")
        click(page, "Evaluate")
        page.wait_for(
            "document.body.innerText.includes('LMD') || document.body.innerText.includes('lmd')", 900
        )
        time.sleep(4)
        page.screenshot(out / "tab_identities_eval.png")
        # a tiny NeRF (a check of the path, not a usable renderer), then new speech with it
        page.js(
            "[...document.querySelectorAll('label')].find(l => l.innerText.trim() === 'nerf'"
            " && l.offsetParent !== null).click()"
        )
        page.js(
            "[...document.querySelectorAll('label')].find(l => l.innerText.trim() === 'tiny'"
            " && l.offsetParent !== null).click()"
        )
        time.sleep(1)
        click(page, "Train, or go on from the last checkpoint")
        page.wait_for("document.body.innerText.includes('trained nerf for andrew_b')", 1200)
        time.sleep(3)
        page.screenshot(out / "tab_identities_nerf.png")
        page.set_files('input[type=file][accept*="audio/"]', 0, data / "speech_zh_female_8s.wav")
        time.sleep(3)
        click(page, "Render the speech")
        page.wait_for("document.body.innerText.includes('andrew_b saying')", 60)
        page.wait_for("/done in [0-9.]+ s: andrew_b saying/.test(document.body.innerText)", 1200)
        time.sleep(3)
        page.screenshot(out / "tab_identities_render.png")
        print("identities done", flush=True)

    if only in ("", "batch"):
        tab(page, "Batch")
        manifest = workspace / "jobs.csv"
        macron, zh, en = data / "portrait_macron.png", data / "speech_zh_female_8s.wav", en_speech
        manifest.write_text(
            "kind,video,image,identity,audio,out\n"
            f"generate,,{macron.name},,{zh.name},macron_zh.mp4\n"  # uploaded with it: named by file name
            f"generate,,portrait_woman.png,,{zh.name},woman_zh.mp4\n"
            f"generate,,{data / 'missing.png'},,{en},missing.mp4\n"
        )
        page.set_files('input[type=file][accept*=".csv"]', 0, manifest)
        time.sleep(3)
        page.set_files("input[type=file][multiple]", 0, [macron, data / "portrait_woman.png", zh])
        time.sleep(3)
        click(page, "Run the batch")
        page.wait_for("document.body.innerText.includes('running')", 120)
        page.wait_for("document.body.innerText.includes('macron_zh.mp4')", 300)
        time.sleep(1)
        page.screenshot(out / "tab_batch_running.png")
        page.wait_for(
            "document.body.innerText.includes('report.csv') && document.body.innerText.includes('done in')",
            900,
        )
        time.sleep(2)
        page.screenshot(out / "tab_batch.png")
        page.js(
            "[...document.querySelectorAll('button, span, div')].find(e => e.innerText"
            " && e.innerText.trim().startsWith('Jobs on this server') && e.children.length <= 2).click()"
        )
        time.sleep(3)
        page.screenshot(out / "jobs_on_this_server.png")
        print("batch done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/ui"), sys.argv[2] if len(sys.argv) > 2 else "")

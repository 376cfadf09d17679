"""Screenshots of each tab of the web page with real results, from the shared footage folder:

    PYTHONPATH=. python -m tests.ui_screenshots outputs/ui

Runs Photo -> video (portrait_woman.png + speech_en_male_8s.wav), a dub (talk_may_5s.mp4 + the same
speech, the speaker clicked on the first frame), prepares talk_pcavs_731200067.mp4 as an identity and runs
a one-row batch manifest; a PNG of each tab after its job goes to the given folder. Takes a few minutes on a
2-core CPU.
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
                steps(page, data, workspace, out, only)
            except Exception:
                page.screenshot(out / "failed.png")
                raise
    finally:
        demo.close()


def steps(page, data: Path, workspace: Path, out: Path, only: str) -> None:
    en_speech = data / "speech_en_male_8s.wav"
    if only in ("", "photo"):
        page.set_files('input[type=file][accept*=".png"]', 0, data / "portrait_woman.png")
        page.set_files('input[type=file][accept*="audio/"]', 0, data / "speech_en_male_8s.wav")
        time.sleep(3)
        click(page, "Make the video")
        page.wait_for(DONE_VIDEO, 600)
        time.sleep(1)
        page.screenshot(out / "tab_photo_to_video.png")
        print("photo -> video done", flush=True)

    if only in ("", "dub"):
        tab(page, "Dub a video")
        page.set_files('input[type=file][accept*=".mp4"]', 0, data / "talk_may_5s.mp4")
        page.wait_for(
            "[...document.querySelectorAll('img')].some(i => i.offsetParent !== null && i.naturalWidth > 0)",
            120,
        )
        time.sleep(1)
        page.click_at("img", 0.5, 0.4)
        time.sleep(1)
        page.set_files('input[type=file][accept*="audio/"]', 0, data / "speech_en_male_8s.wav")
        time.sleep(3)
        click(page, "Dub the video")
        page.wait_for(f"{DONE_VIDEO} >= 2", 900)
        time.sleep(2)
        page.screenshot(out / "tab_dub.png")
        print("dub done", flush=True)

    if only in ("", "identities"):
        tab(page, "Identities")
        page.set_files('input[type=file][accept*=".mp4"]', 0, data / "talk_pcavs_731200067.mp4")
        text_in(page, "Identity name", "pcavs_731200067")
        time.sleep(3)
        click(page, "Prepare")
        page.wait_for("document.body.innerText.includes('prepared identity pcavs_731200067')", 900)
        time.sleep(2)
        page.screenshot(out / "tab_identities_prepared.png")
        click(page, "Train the motion model (about a minute on a CPU)")
        page.wait_for("document.body.innerText.includes('held-out mouth-opening')", 300)
        time.sleep(2)
        page.screenshot(out / "tab_identities.png")
        print("identities done", flush=True)

    if only in ("", "batch"):
        tab(page, "Batch")
        manifest = workspace / "jobs.csv"
        macron, zh, en = data / "portrait_macron.png", data / "speech_zh_female_8s.wav", en_speech
        manifest.write_text(
            "kind,video,image,identity,audio,out\n"
            f"generate,,{macron},,{zh},macron_zh.mp4\n"
            f"generate,,{data / 'missing.png'},,{en},missing.mp4\n"
        )
        page.set_files('input[type=file][accept*=".csv"]', 0, manifest)
        time.sleep(3)
        click(page, "Run the batch")
        page.wait_for("document.body.innerText.includes('report')", 900)
        page.wait_for("document.body.innerText.includes('done')", 900)
        time.sleep(2)
        page.screenshot(out / "tab_batch.png")
        print("batch done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/ui"), sys.argv[2] if len(sys.argv) > 2 else "")

"""The web page (``talking-portrait ui``) in a real browser: headless Chromium from the distribution's
packages, driven over the DevTools protocol. Uploads go through the page's own file inputs, as a user's
choice in the file dialog does. Skips where gradio or Chromium is absent.

``TP_UI_SCREENSHOTS=DIR`` keeps the screenshots in DIR (default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.chromium import chromium_binary, free_port, headless_page

pytestmark = pytest.mark.slow

gr = pytest.importorskip("gradio")
if chromium_binary() is None:
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

PHOTO_INPUT = 'input[type=file][accept*=".png"]'
AUDIO_INPUT = 'input[type=file][accept*="audio/"]'
# the demo speech (10.9 s) uploaded and shown in the page's player: its length is on screen
SPEECH_LOADED = "document.body.innerText.includes('0:11')"
RUNNING_OR_DONE = "/running \\d+:\\d\\d|done in /.test(document.body.innerText)"
PLAYABLE_VIDEO = (
    "(() => { const v = [...document.querySelectorAll('video')].find(v => v.src);"
    " return v && v.readyState >= 1 && isFinite(v.duration) ? v.duration : 0; })()"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from pipeline.ui.app import launch

    workspace = tmp_path_factory.mktemp("ui")
    port = free_port()
    demo = launch(workspace, port=port, block=False)
    yield f"http://127.0.0.1:{port}/", workspace
    demo.close()


@pytest.fixture()
def shots(tmp_path) -> Path:
    return Path(os.environ.get("TP_UI_SCREENSHOTS", tmp_path))


def click(page, label: str) -> None:
    page.js(f"[...document.querySelectorAll('button')].find(b => b.innerText.trim() === {label!r}).click()")


def open_page(page, url: str) -> None:
    page.navigate(url, "document.body && document.body.innerText.includes('Make the video')")
    page.wait_for(f"!!document.querySelector({PHOTO_INPUT!r})", 30)


def cli_error(argv: list[str], capsys) -> str:
    """The message ``talking-portrait`` prints after ``error:`` for ``argv``."""
    from pipeline.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    return next(line for line in err.splitlines() if line.startswith("error: "))[len("error: ") :]


def test_photo_to_video_plays_in_the_browser(served, shots):
    from pipeline.oneshot import demo_inputs
    from pipeline.video_io import probe_video

    url, workspace = served
    photo, speech, _ = demo_inputs()
    with headless_page() as page:
        open_page(page, url)
        tabs = page.js("[...document.querySelectorAll('button[role=tab]')].map(b => b.innerText.trim())")
        assert tabs == ["Photo -> video", "Dub a video", "Identities", "Batch"]
        page.set_files(PHOTO_INPUT, 0, photo)  # one upload shown before the next starts
        page.wait_for("document.body.innerText.includes('grace_hopper.jpg')", 30)
        page.set_files(AUDIO_INPUT, 0, speech)
        page.wait_for(SPEECH_LOADED, 60)
        click(page, "Make the video")
        page.wait_for(RUNNING_OR_DONE, 60)
        # a reload while the job runs: the page finds the job and follows it to its video, and shows the
        # photo it was started with again
        open_page(page, url)
        page.wait_for(RUNNING_OR_DONE, 30)
        page.wait_for("/grace_hopper\\s*\\.jpg\\s+[\\d.]+\\s*KB/.test(document.body.innerText)", 30)
        duration = page.wait_for(PLAYABLE_VIDEO, 300)
        page.screenshot(shots / "photo_to_video.png")
    videos = list((workspace / "results").glob("photo-*/talking.mp4"))
    assert len(videos) == 1
    info = probe_video(videos[0])
    assert info.width == info.height == 512
    assert abs(info.duration - duration) < 0.1, (info.duration, duration)
    assert 10.0 < duration < 12.0  # the demo speech lasts about 10.9 s
    assert "renderer: warp" in (videos[0].with_name("talking.config.yaml")).read_text()


def test_non_image_upload_shows_the_cli_message(shots, tmp_path, capsys):
    from pipeline.ui.app import launch

    # a server of its own: on the shared one a reload puts the last photo job's uploads back in the fields
    port = free_port()
    demo = launch(tmp_path / "workspace", port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        _bad_photo_upload(url, shots, tmp_path, capsys)
    finally:
        demo.close()


def _bad_photo_upload(url, shots, tmp_path, capsys):
    from pipeline.oneshot import demo_inputs

    _, speech, _ = demo_inputs()
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    expected = cli_error(
        ["generate", "--image", str(fake), "--audio", str(speech), "--out", str(tmp_path / "o.mp4")], capsys
    ).replace(str(fake), fake.name)
    assert "not an image" in expected
    with headless_page() as page:
        open_page(page, url)
        page.set_files(PHOTO_INPUT, 0, fake)  # one upload shown before the next starts
        page.wait_for("document.body.innerText.includes('notes.png')", 30)
        page.set_files(AUDIO_INPUT, 0, speech)
        page.wait_for(SPEECH_LOADED, 60)
        click(page, "Make the video")
        try:
            page.wait_for(f"document.body.innerText.includes({expected!r})", 120)
        finally:
            text = page.js("document.body.innerText")
            page.screenshot(shots / "photo_error.png")
        assert expected in text, text
    assert "Traceback" not in text


def test_speechless_audio_shows_the_cli_message(served, tmp_path, capsys):
    """Through the page's API (the same queue and handler the button uses)."""
    from gradio_client import Client, handle_file

    from pipeline.oneshot import demo_inputs

    url, _ = served
    photo, _, _ = demo_inputs()
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(32000, "<i2").tobytes())
    expected = cli_error(
        ["generate", "--image", str(photo), "--audio", str(silent), "--out", str(tmp_path / "o.mp4")], capsys
    )
    expected = expected.replace(str(silent), silent.name)
    client = Client(url, verbose=False)
    with pytest.raises(Exception) as caught:
        client.predict(handle_file(str(photo)), handle_file(str(silent)), "", 256, api_name="/photo_to_video")
    assert str(caught.value) == expected


def test_only_the_results_folder_is_served(served):
    import urllib.error
    import urllib.request

    url, workspace = served
    inside = workspace / "results" / "served.txt"
    inside.write_text("a result")
    outside = workspace / "identities.txt"
    outside.write_text("not a result")

    def status(path: Path) -> int:
        try:
            with urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as err:
            return err.code

    assert status(inside) == 200
    assert status(outside) == 403
    assert status(Path("/etc/passwd")) == 403


def test_training_draws_its_held_out_curve_as_it_goes(served, prepared):
    """Train an identity's motion model through the page's API (the button's handler): the job is followed
    from queued or running to done, and the held-out curve carries each evaluation the run logged."""
    import shutil

    from gradio_client import Client

    url, workspace = served
    shutil.copytree(
        prepared.path,
        workspace / "identities" / "synthetic",
        ignore=shutil.ignore_patterns("renderers", "motion_model"),
    )
    client = Client(url, verbose=False)
    job = client.submit("synthetic", "motion", "tiny", api_name="/train")
    status, summary, held, loss, table = job.result(timeout=600)
    seen = [output[0] for output in job.outputs()]
    assert any("queued" in s or "running" in s for s in seen[:1]), seen
    assert "done in" in status
    assert summary.startswith("trained the motion model of synthetic")
    steps = {(row[0], row[2]) for row in held["data"]}
    # motion_tiny.yaml: 20 steps, evaluated every 10; the person's own model and the generic one
    assert steps == {(s, f) for s in (10.0, 20.0) for f in ("own model: mouth-opening r", "generic model")}
    assert [row[0] for row in loss["data"]] == [float(s) for s in range(1, 21)]
    assert ["synthetic", table["data"][0][1], "trained", "-", "-"] == table["data"][0]


def test_with_a_password_file_nothing_is_served_before_a_login(tmp_path):
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request

    from pipeline.ui.app import launch

    port = free_port()
    demo = launch(tmp_path, port=port, block=False, auth=[("ann", "secret")])
    base = f"http://127.0.0.1:{port}"
    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def status(path: str, data: dict | None = None, opener=None) -> int:
        body = urllib.parse.urlencode(data).encode() if data else None
        try:
            with (opener or urllib.request.build_opener()).open(base + path, body, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as err:
            return err.code

    try:
        (tmp_path / "results" / "made.txt").write_text("a result")
        assert status("/config") == 401
        assert status(f"/gradio_api/file={tmp_path / 'results' / 'made.txt'}") == 401
        assert status("/login", {"username": "ann", "password": "wrong"}, jar) == 400
        assert status("/config", opener=jar) == 401
        assert status("/login", {"username": "ann", "password": "secret"}, jar) == 200
        assert status("/config", opener=jar) == 200
        assert status(f"/gradio_api/file={tmp_path / 'results' / 'made.txt'}", opener=jar) == 200
    finally:
        demo.close()


def test_with_logins_each_user_follows_and_stops_only_their_own_jobs(tmp_path):
    """Two logins on one server: bob's Stop does not touch ann's running job, nor does his reloaded page
    follow it; ann's own Stop ends it."""
    from gradio_client import Client, handle_file

    from pipeline.oneshot import demo_inputs
    from pipeline.ui.app import launch

    port = free_port()
    demo = launch(tmp_path, port=port, block=False, auth=[("ann", "secret"), ("bob", "hunter2")])
    url = f"http://127.0.0.1:{port}/"
    photo, speech, _ = demo_inputs()
    try:
        ann = Client(url, auth=("ann", "secret"), verbose=False)
        bob = Client(url, auth=("bob", "hunter2"), verbose=False)
        inputs = (handle_file(str(photo)), handle_file(str(speech)), "", 256)
        first = ann.submit(*inputs, api_name="/photo_to_video")
        while not any("running" in output[0] for output in first.outputs()):
            assert not first.done(), first.outputs()
            time.sleep(0.1)
        bob.predict(api_name="/stop_photo")
        status, video, _ = first.result(timeout=300)
        assert "done in" in status and video  # bob's Stop left it alone
        second = ann.submit(*inputs, api_name="/photo_to_video")
        while not any("running" in output[0] for output in second.outputs()):
            time.sleep(0.1)
        ann.predict(api_name="/stop_photo")
        status = second.result(timeout=60)[0]
        assert "stopped from the page" in status
        records = {p: json.loads((p / "task.json").read_text()) for p in (tmp_path / "results").iterdir()}
        owned = sorted((r["owner"], r["state"]) for r in records.values())
        assert owned == [("ann", "done"), ("ann", "stopped")]
        for folder, record in records.items():  # a video only from the job that was not stopped
            assert bool(list(folder.glob("*.mp4"))) == (record["state"] == "done")
    finally:
        demo.close()


def test_a_batch_from_the_page_runs_the_good_rows_and_reports_the_bad(served, tmp_path):
    """Through the page's API (the button's handler): the job table, report.csv and the video made."""
    import csv

    from gradio_client import Client, handle_file

    from pipeline.oneshot import demo_inputs

    url, workspace = served
    photo, speech, _ = demo_inputs()
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(
        "kind,image,audio,out\n"
        f"generate,{photo.name},{speech.name},hopper.mp4\n"  # uploaded with the manifest: by their names
        f"generate,{tmp_path / 'nobody.png'},{speech},nobody.mp4\n"
    )
    client = Client(url, verbose=False)
    inputs = [handle_file(str(photo)), handle_file(str(speech))]
    answer = client.predict(handle_file(str(manifest)), inputs, api_name="/batch")
    status, table, report, videos, summary, pick = answer
    assert "done in" in status
    rows = {row[2]: row for row in table["data"]}
    assert rows["hopper.mp4"][3] == "done" and rows["nobody.mp4"][3] == "invalid"
    assert "file not found" in rows["nobody.mp4"][6]
    assert "not all done: 1 done, 1 invalid" in summary
    with open(report) as f:
        assert {row["out"]: row["state"] for row in csv.DictReader(f)} == {
            "hopper.mp4": "done",
            "nobody.mp4": "invalid",
        }
    assert [Path(v).name for v in videos] == ["hopper.mp4"] and pick["value"].endswith("hopper.mp4")
    made = list((workspace / "results").glob("batch-*/hopper.mp4"))
    assert len(made) == 1 and made[0].stat().st_size > 10_000


def test_stop_ends_a_running_job_with_a_message_and_no_video(served):
    import time

    from gradio_client import Client, handle_file

    from pipeline.oneshot import demo_inputs

    url, workspace = served
    photo, speech, _ = demo_inputs()
    client = Client(url, verbose=False)
    inputs = (handle_file(str(photo)), handle_file(str(speech)), "", 512)
    job = client.submit(*inputs, api_name="/photo_to_video")
    for _ in range(300):  # until the page has queued it
        if job.outputs():
            break
        time.sleep(0.1)
    client.predict(api_name="/stop_photo")
    status, video, _ = job.result(timeout=300)
    assert "stopped from the page" in status, status
    assert video in (None, {"__type__": "update"}), video  # no video is shown
    folder = max((workspace / "results").glob("photo-*"), key=lambda p: p.stat().st_mtime)
    assert not (folder / "talking.mp4").exists()
    assert [p.name for p in folder.iterdir()] == ["task.json"]  # nothing half-written is left

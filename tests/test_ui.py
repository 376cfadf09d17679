"""The web page's command and jobs without a browser (the page itself: test_ui_browser.py)."""

from __future__ import annotations

import sys

import pytest

from common.errors import InputError
from pipeline.cli import main
from pipeline.ui.jobs import Folders, looks_like_image, need


def test_ui_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["ui", "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "error: the web page needs gradio, which is not installed. install it with pip install -e .[ui]."
    )


def test_missing_upload_is_a_clear_message():
    with pytest.raises(InputError) as caught:
        need(None, "portrait photo")
    assert caught.value.message == "no portrait photo was given. upload a portrait photo first."


def test_jobs_write_in_fresh_folders_under_results(tmp_path):
    folders = Folders(tmp_path)
    first, second = folders.new_job("photo"), folders.new_job("photo")
    assert first != second
    assert first.parent == second.parent == tmp_path / "results"
    assert folders.identities == tmp_path / "identities"


def test_preview_only_for_pictures(tmp_path, portrait_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    assert looks_like_image(portrait_path)
    assert not looks_like_image(fake)


def _queue(tmp_path):
    from pipeline.ui.tasks import TaskQueue

    folders = Folders(tmp_path)
    return TaskQueue(folders.results, folders.new_job, workers=1)


def test_a_queued_job_runs_in_the_background_and_keeps_its_result(tmp_path):
    tasks = _queue(tmp_path)
    task = tasks.submit("photo", "a photo", lambda job: {"video": str(job / "v.mp4")}, details={"size": 256})
    tasks.wait(task, 10)
    assert task.state == "done" and task.error is None
    assert task.result == {"video": str(task.folder / "v.mp4")}
    assert task.folder.parent == tmp_path / "results"
    assert tasks.latest("photo") is task and tasks.latest("dub") is None
    tasks.close()


def test_a_failed_job_shows_the_cli_message_with_the_uploads_own_names(tmp_path):
    upload = tmp_path / "gradio-cache" / "abc123" / "portrait.jpg"

    def bad(job):
        raise InputError(f"{upload} is not an image", "give a photo")

    def broken(job):
        raise RuntimeError("boom")

    tasks = _queue(tmp_path)
    failed = tasks.submit("photo", "bad", bad, uploads=[str(upload)])
    crashed = tasks.submit("photo", "broken", broken)
    tasks.wait(crashed, 10)
    assert failed.state == "failed"
    assert failed.error == "portrait.jpg is not an image. give a photo."
    assert crashed.state == "failed" and "RuntimeError: boom" in crashed.error
    assert "Traceback" not in crashed.error
    tasks.close()


def test_a_running_job_names_its_stage_and_count_and_logs_its_curve(tmp_path):
    import threading

    from common.progress import Stages, bar, figures

    halfway, carry_on = threading.Event(), threading.Event()

    def job(folder):
        stages = Stages()
        stages.start("render")
        frames = bar(total=10, desc="frames", unit="frame", enabled=False)
        frames.update(4)
        figures("motion model", {"step": 100, "loss": 0.3, "heldout_opening_r": 0.5})
        halfway.set()
        carry_on.wait(10)
        frames.close()
        stages.end()
        return {}

    tasks = _queue(tmp_path)
    first = tasks.submit("train", "first", job)
    second = tasks.submit("train", "second", lambda folder: {})
    assert halfway.wait(10)
    assert first.running and first.where() == "render › frames 4/10 frame"
    assert first.fraction() == 0.4
    assert first.curve() == {"motion model": [{"step": 100, "loss": 0.3, "heldout_opening_r": 0.5}]}
    assert second.state == "queued" and tasks.ahead(second) == 0  # one at a time: it waits for the first
    carry_on.set()
    tasks.wait(second, 10)
    assert first.state == second.state == "done" and first.where() == ""
    tasks.close()


def test_a_restarted_server_shows_earlier_jobs_and_names_the_one_it_stopped(tmp_path):
    import threading

    from pipeline.ui.tasks import TaskQueue

    started, release = threading.Event(), threading.Event()

    def long(job):
        started.set()
        release.wait(10)
        return {}

    tasks = _queue(tmp_path)
    done = tasks.submit("photo", "made", lambda job: {"video": "v.mp4"})
    tasks.wait(done, 10)
    running = tasks.submit("dub", "cut short", long)
    assert started.wait(10)
    # a second server over the same folder, as after a restart
    again = TaskQueue(tmp_path / "results", Folders(tmp_path).new_job, workers=1)
    assert again.get(done.id).state == "done" and again.get(done.id).result == {"video": "v.mp4"}
    stopped = again.get(running.id)
    assert stopped.state == "stopped" and "server stopped" in stopped.error
    release.set()
    tasks.close()
    again.close()


def test_training_curve_reads_the_log_a_run_writes(tmp_path):
    from pipeline.ui.jobs import training_curve
    from renderers.training import write_log

    write_log(
        tmp_path / "train_log.csv", [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4, "psnr_holdout": 20}]
    )
    assert training_curve(tmp_path) == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.4, "psnr_holdout": 20},
    ]
    assert training_curve(tmp_path / "nothing") == []


def test_auth_file_lines(tmp_path):
    pytest.importorskip("gradio")
    from pipeline.ui.app import read_auth

    good = tmp_path / "users"
    good.write_text("# who may log in\nann:secret\n\nbob:pa:ss\n")
    assert read_auth(good) == [("ann", "secret"), ("bob", "pa:ss")]
    bad = tmp_path / "bad"
    bad.write_text("ann\n")
    with pytest.raises(InputError) as caught:
        read_auth(bad)
    assert caught.value.message == f"{bad} line 1 is not USER:PASSWORD. write one USER:PASSWORD a line."


def test_ui_with_an_unreadable_password_file_stops_before_serving(tmp_path, capsys):
    pytest.importorskip("gradio")
    missing = tmp_path / "users.txt"
    assert main(["ui", "--port", "7999", "--auth-file", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: cannot read the password file {missing} (No such file or directory). give a readable file."
    )


def test_the_speaker_to_follow_is_marked_the_largest_face_until_one_is_clicked():
    import numpy as np

    from pipeline.ui.jobs import marked_faces

    frame = np.zeros((200, 400, 3), np.uint8)
    big, small = (20, 20, 180, 180), (250, 50, 350, 150)  # largest first, as faces_in gives them
    green, white = (40, 220, 80), (255, 255, 255)

    def edge(image, box):
        return tuple(int(v) for v in image[(box[1] + box[3]) // 2, box[0]])

    default = marked_faces(frame, [big, small], None)
    assert edge(default, big) == green and edge(default, small) == white
    clicked = marked_faces(frame, [big, small], (300, 100))
    assert edge(clicked, small) == green and edge(clicked, big) == white
    assert tuple(int(v) for v in clicked[100, 300]) == (255, 64, 64)  # the clicked point
    assert (frame == 0).all()  # the decoded frame itself is left as it was


def test_stop_drops_a_queued_job_and_unwinds_a_running_one_where_it_reports_progress(tmp_path):
    import threading

    from common.progress import bar

    started, unwound, ran = threading.Event(), threading.Event(), []

    def long(job):
        started.set()
        try:
            for _ in bar(range(10_000), desc="frames", enabled=False):
                threading.Event().wait(0.01)
        finally:
            unwound.set()
        return {"video": "never"}

    tasks = _queue(tmp_path)
    running = tasks.submit("dub", "long", long)
    waiting = tasks.submit("dub", "waiting", lambda job: ran.append(job) or {})
    assert started.wait(10)
    tasks.stop(waiting)
    assert waiting.state == "stopped" and waiting.error == "stopped from the page before it started"
    tasks.stop(running)
    tasks.wait(running, 10)
    assert running.state == "stopped" and running.error.startswith("stopped from the page")
    assert unwound.is_set() and running.result == {}
    after = tasks.submit("dub", "after", lambda job: {})  # the worker goes on with later jobs
    tasks.wait(after, 10)
    assert after.state == "done" and ran == []  # the dropped job never ran
    tasks.close()


def test_a_stopped_training_run_leaves_no_half_written_model(tmp_path, prepared):
    import shutil

    from pipeline.ui.jobs import run_train
    from pipeline.workspace import Workspace

    folders = Folders(tmp_path)
    skip = shutil.ignore_patterns("renderers", "motion_model")
    shutil.copytree(prepared.path, folders.identities / "synthetic", ignore=skip)
    tasks = _queue(tmp_path)
    task = tasks.submit("train", "t", lambda job: run_train(job, folders.identities, "synthetic", "motion"))
    for _ in range(600):  # until the run has logged a step
        if task.curve() or task.over:
            break
        tasks.wait(task, 0.1)
    tasks.stop(task)
    tasks.wait(task, 60)
    assert task.state == "stopped", (task.state, task.error)
    model = Workspace.open(folders.identities / "synthetic").motion_model_dir
    # stopped before its first checkpoint (step 200 of the default run): nothing half-written is left
    assert not (model / "model.safetensors").exists()
    assert not [p for p in model.rglob("*") if ".tmp" in p.name]
    tasks.close()

"""The web page's command and jobs without a browser (the page itself: test_ui_browser.py)."""

from __future__ import annotations

import sys

import pytest

from common.errors import InputError
from pipeline.cli import main
from pipeline.ui.jobs import Folders, looks_like_image, need
from pipeline.ui.workers import Job
from tests import page_jobs


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


@pytest.fixture
def queue(tmp_path):
    """A page's job queue over ``tmp_path`` (its worker process started), closed after the test."""
    from pipeline.ui.tasks import TaskQueue

    folders = Folders(tmp_path)
    tasks = TaskQueue(folders.results, folders.new_job, gpus=[None])
    yield tasks
    tasks.close()


def test_a_queued_job_runs_in_a_worker_process_and_keeps_its_result(tmp_path, queue):
    import os

    task = queue.submit("photo", "a photo", Job(page_jobs.made), details={"size": 256})
    where = queue.submit("photo", "where", Job(page_jobs.sees))
    queue.wait(where, 60)
    assert task.state == "done" and task.error is None
    assert task.result == {"video": str(task.folder / "v.mp4")}
    assert task.folder.parent == tmp_path / "results"
    assert queue.latest("photo") is where and queue.latest("dub") is None
    assert where.result["pid"] != os.getpid()  # not in the server's process


def test_a_job_with_a_wrong_argument_is_refused_when_it_is_made():
    with pytest.raises(TypeError):
        Job(page_jobs.made, {"nmae": "x.mp4"})


def test_a_failed_job_shows_the_cli_message_with_the_uploads_own_names(tmp_path, queue):
    upload = str(tmp_path / "gradio-cache" / "abc123" / "portrait.jpg")
    failed = queue.submit("photo", "bad", Job(page_jobs.bad_input, {"upload": upload}), uploads=[upload])
    crashed = queue.submit("photo", "broken", Job(page_jobs.broken))
    queue.wait(crashed, 60)
    assert failed.state == "failed"
    assert failed.error == "portrait.jpg is not an image. give a photo."
    assert crashed.state == "failed" and "RuntimeError: boom" in crashed.error
    assert "Traceback" not in crashed.error


def test_a_job_whose_process_dies_fails_and_the_next_job_gets_a_fresh_process(queue):
    before = queue.submit("photo", "before", Job(page_jobs.sees))
    died = queue.submit("photo", "dies", Job(page_jobs.crashes))
    after = queue.submit("photo", "after", Job(page_jobs.sees))
    queue.wait(after, 120)
    assert died.state == "failed"
    assert died.error == (
        "the job's process ended unexpectedly: exit code 3; the next job starts a fresh one"
    )
    assert after.state == "done" and after.result["pid"] != before.result["pid"]


def test_each_worker_sees_only_its_own_gpu(tmp_path):
    from pipeline.ui.tasks import TaskQueue

    folders = Folders(tmp_path)
    tasks = TaskQueue(folders.results, folders.new_job, gpus=["3", "5"])
    try:
        seen = [tasks.submit("photo", f"job {i}", Job(page_jobs.sees)) for i in range(4)]
        for task in seen:
            tasks.wait(task, 60)
        assert {task.result["gpu"] for task in seen} == {"3", "5"}  # two workers, each pinned
    finally:
        tasks.close()


def test_a_server_closing_stops_its_running_job_which_unwinds(tmp_path):
    from pipeline.ui.tasks import TaskQueue

    folders = Folders(tmp_path)
    tasks = TaskQueue(folders.results, folders.new_job, gpus=[None])
    running = tasks.submit("dub", "cut short", Job(page_jobs.blocked))
    assert page_jobs.wait_for(running.folder / "started")
    tasks.close()
    tasks.wait(running, 30)
    assert running.state == "stopped" and "server stopped" in running.error
    assert (running.folder / "unwound").exists()  # Ctrl-C, not a kill: its finally blocks ran


def test_a_running_job_names_its_stage_and_count_and_logs_its_curve(tmp_path, queue):
    release = tmp_path / "release"
    first = queue.submit("train", "first", Job(page_jobs.halfway, {"release": str(release)}))
    second = queue.submit("train", "second", Job(page_jobs.made))
    assert page_jobs.wait_for(first.folder / "halfway")
    for _ in range(100):  # the events come a moment after the file
        if first.curve() and first.where() == "render › frames 4/10 frame":
            break
        queue.wait(first, 0.05)
    assert first.running and first.where() == "render › frames 4/10 frame"
    assert first.fraction() == 0.4
    assert first.curve() == {"motion model": [{"step": 100, "loss": 0.3, "heldout_opening_r": 0.5}]}
    assert second.state == "queued" and queue.ahead(second) == 0  # one at a time: it waits for the first
    release.write_text("")
    queue.wait(second, 60)
    assert first.state == second.state == "done" and first.where() == ""


def test_a_restarted_server_shows_earlier_jobs_and_names_the_one_it_stopped(tmp_path, queue):
    from pipeline.ui.tasks import TaskQueue

    done = queue.submit("photo", "made", Job(page_jobs.made), owner="ann")
    queue.wait(done, 60)
    running = queue.submit("dub", "cut short", Job(page_jobs.blocked))
    assert page_jobs.wait_for(running.folder / "started")
    # a second server over the same folder, as after a restart
    again = TaskQueue(tmp_path / "results", Folders(tmp_path).new_job, gpus=[None])
    try:
        assert again.get(done.id).state == "done" and again.get(done.id).result == done.result
        # each login's page follows its own jobs
        assert again.latest("photo", "ann").id == done.id and again.latest("photo") is None
        stopped = again.get(running.id)
        assert stopped.state == "stopped" and "server stopped" in stopped.error
    finally:
        again.close()
    queue.stop(running)


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


@pytest.mark.parametrize("helper", [False, True], ids=["sleeping", "waiting-on-a-process"])
def test_stop_drops_a_queued_job_and_unwinds_a_running_one_at_once(tmp_path, queue, helper):
    """A running job blocked without a word of progress is unwound at once, as Ctrl-C does (its finally
    blocks run), and a helper process it waits on is stopped with it."""
    import os
    import time

    running = queue.submit("dub", "long", Job(page_jobs.blocked, {"helper": helper}))
    waiting = queue.submit("dub", "waiting", Job(page_jobs.made))
    assert page_jobs.wait_for(running.folder / "started")
    queue.stop(waiting)
    assert waiting.state == "stopped" and waiting.error == "stopped from the page before it started"
    asked = time.monotonic()
    queue.stop(running)
    queue.wait(running, 30)
    assert running.state == "stopped" and running.error == "stopped from the page"
    assert time.monotonic() - asked < 10  # far less than STOP_GRACE_SECONDS: not killed, unwound
    assert (running.folder / "unwound").exists() and running.result == {}
    if helper:
        pid = int((running.folder / "started").read_text())
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the job's helper process was left running")
    after = queue.submit("dub", "after", Job(page_jobs.made))  # the worker goes on with later jobs
    queue.wait(after, 60)
    assert after.state == "done"
    assert not list(waiting.folder.glob("*.mp4")) and waiting.result == {}  # the dropped job never ran


def test_a_stopped_training_run_leaves_no_half_written_model(tmp_path, prepared, queue):
    import shutil

    from pipeline.ui.jobs import run_train
    from pipeline.workspace import Workspace

    folders = Folders(tmp_path)
    skip = shutil.ignore_patterns("renderers", "motion_model")
    shutil.copytree(prepared.path, folders.identities / "synthetic", ignore=skip)
    job = Job(run_train, {"identities": folders.identities, "identity": "synthetic", "model": "motion"})
    task = queue.submit("train", "t", job)
    for _ in range(1200):  # until the run has logged a step
        if task.curve() or task.over:
            break
        queue.wait(task, 0.1)
    queue.stop(task)
    queue.wait(task, 60)
    assert task.state == "stopped", (task.state, task.error)
    model = Workspace.open(folders.identities / "synthetic").motion_model_dir
    # stopped before its first checkpoint (step 200 of the default run): nothing half-written is left
    assert not (model / "model.safetensors").exists()
    assert not [p for p in model.rglob("*") if ".tmp" in p.name]


def test_batch_inputs_uploaded_with_the_manifest_are_named_by_their_file_names(tmp_path):
    from pipeline.ui.jobs import run_batch_job

    uploads = tmp_path / "cache"
    for folder in ("a", "b"):
        (uploads / folder).mkdir(parents=True)
    manifest = uploads / "a" / "jobs.csv"
    manifest.write_text("kind,image,audio,out\ngenerate,face.png,speech.wav,out.mp4\n")
    (uploads / "a" / "speech.wav").write_bytes(b"one")
    (uploads / "b" / "speech.wav").write_bytes(b"two")
    with pytest.raises(InputError) as caught:
        run_batch_job(tmp_path / "job", tmp_path / "ids", str(manifest), [str(uploads / "a" / "speech.wav"),
                      str(uploads / "b" / "speech.wav")])  # fmt: skip
    assert caught.value.message == (
        "two uploaded files are named speech.wav. rename one, and name it so in the manifest."
    )

"""Batch jobs: the manifest's checks, the job state across runs, the identity lock, and whole batches (a
bad row among good ones, kill -9 in the middle and a rerun, the Ray path giving the same outputs)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError, UserError
from pipeline.batch.manifest import base_overrides, read_manifest
from pipeline.batch.runner import batch_status, run_batch
from pipeline.batch.state import DB_NAME, BatchState, output_fingerprint
from tests.conftest import REPO, first_seconds


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    """Stand-in inputs (the checks only need them to be non-empty files) and an output root."""
    for name in ("clip.mp4", "speech.wav", "photo.jpg"):
        (tmp_path / name).write_bytes(b"x" * 16)
    root = tmp_path / "out"
    root.mkdir()
    return tmp_path, root


def test_manifest_reports_each_bad_row_with_its_line_and_field_and_keeps_the_good(files, tmp_path):
    here, root = files
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "a").mkdir()
    (root / "a" / "good.mp4").write_bytes(b"x" * 16)  # left by an earlier run
    manifest = _write_csv(
        here / "jobs.csv",
        "kind,video,image,audio,out,renderer,timeline",
        [
            "dub,clip.mp4,,speech.wav,a/good.mp4,warp,",  # 2
            "generate,,photo.jpg,speech.wav,gen.mp4,,",  # 3
            "dub,missing.mp4,,speech.wav,m.mp4,warp,",  # 4
            "dub,clip.mp4,,speech.wav,../x.mp4,warp,",  # 5
            f"dub,clip.mp4,,speech.wav,{tmp_path / 'abs.mp4'},warp,",  # 6
            "dub,clip.mp4,,speech.wav,link/escape.mp4,warp,",  # 7
            "dub,clip.mp4,,speech.wav,a/good.mp4,warp,",  # 8: duplicate of line 2
            "translate,clip.mp4,,speech.wav,t.mp4,,",  # 9
            "dub,clip.mp4,,speech.wav,clip.avi,warp,",  # 10
            "dub,clip.mp4,,,noaudio.mp4,warp,",  # 11
            "generate,,photo.jpg,speech.wav,g2.mp4,,loop",  # 12: generate takes no timeline
            "dub,clip.mp4,,speech.wav,r.mp4,nosuch,",  # 13
            "dub,clip.mp4,,speech.wav,logs/l.mp4,warp,",  # 14
            "dub,out/a/good.mp4,,speech.wav,chain.mp4,warp,",  # 15: reads line 2's output
        ],
    )
    checked = read_manifest(manifest, root)
    assert [(j.line, j.kind) for j in checked.jobs] == [(2, "dub"), (3, "generate")]
    found = {(p.line, p.field) for p in checked.problems}
    assert found == {
        (4, "video"), (5, "out"), (6, "out"), (7, "out"), (8, "out"), (9, "kind"), (10, "out"),
        (11, "audio"), (12, "timeline"), (13, "renderer"), (14, "out"), (15, "video"),
    }  # fmt: skip
    text = {p.line: p.message for p in checked.problems}
    assert "not found" in text[4] and "'..'" in text[5] and "absolute" in text[6]
    assert "outside --out-root" in text[7] and "line 2" in text[8] and "output of line 2" in text[15]
    good = checked.jobs[0]
    assert good.out_path == str(root.resolve() / "a" / "good.mp4")
    assert good.inputs["video"] == str((here / "clip.mp4").resolve())
    assert good.config["renderer"] == "warp"
    # the same manifest as JSON lines: the same jobs (their ids hash the row, not the format)
    lines = [
        {"kind": "dub", "video": "clip.mp4", "audio": "speech.wav", "out": "a/good.mp4", "renderer": "warp"},
        {"kind": "dub", "video": "clip.mp4", "audio": "speech.wav", "out": "/abs.mp4"},
        "not json",
    ]
    jsonl = here / "jobs.jsonl"
    jsonl.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    checked = read_manifest(jsonl, root)
    assert [j.line for j in checked.jobs] == [1]
    assert {(p.line, p.field) for p in checked.problems} == {(2, "out"), (3, "row")}


def test_manifest_refuses_unknown_columns_and_settings_map_onto_each_kind(files):
    here, root = files
    with pytest.raises(InputError, match="unknown column"):
        read_manifest(_write_csv(here / "bad.csv", "kind,video,out,command", ["dub,clip.mp4,x.mp4,rm"]), root)
    base = base_overrides(None, ["size=256", "crf=23", "dub.fade_frames=2"])
    assert base["generate"] == ["size=256", "crf=23"]
    assert base["dub"] == ["crf=23", "fade_frames=2"]
    assert base["render"] == ["crf=23"]
    with pytest.raises(InputError, match="belongs to no job kind"):
        base_overrides(None, ["no_such_setting=1"])
    (here / "base.yaml").write_text("crf: 21\ngenerate:\n  size: 128\ndub:\n  motion:\n    jaw_gain: 1.1\n")
    from_file = base_overrides(here / "base.yaml", ["generate.size=256"])
    assert from_file["generate"] == ["crf=21", "size=128", "size=256"]
    assert from_file["dub"] == ["crf=21", "motion.jaw_gain=1.1"]
    manifest = _write_csv(
        here / "jobs.csv", "kind,video,image,audio,out,timeline,face",
        ["dub,clip.mp4,,speech.wav,d.mp4,loop,\"10,20\"", "generate,,photo.jpg,speech.wav,g.mp4,,"],
    )  # fmt: skip
    dub, gen = read_manifest(manifest, root, base).jobs
    assert (dub.config["timeline"], dub.config["face"], dub.config["crf"], dub.config["fade_frames"]) == (
        "loop", "10,20", 23, 2,
    )  # fmt: skip
    assert (gen.config["size"], gen.config["crf"]) == (256, 23)


def test_state_skips_done_jobs_whose_output_matches_and_redoes_the_rest(files):
    here, root = files
    rows = [f"dub,clip.mp4,,speech.wav,o{i}.mp4" for i in range(4)]
    manifest = _write_csv(here / "jobs.csv", "kind,video,image,audio,out", rows)
    jobs = read_manifest(manifest, root).jobs
    state = BatchState(root)
    todo, _ = state.plan(jobs, {}, retry_failed=False)
    assert len(todo) == 4
    for job in jobs:
        state.mark_running(job.id)
    Path(jobs[0].out_path).write_bytes(b"video")
    Path(jobs[1].out_path).write_bytes(b"video")
    state.mark_done(jobs[0].id, 1.0, *output_fingerprint(jobs[0].out_path))
    state.mark_done(jobs[1].id, 1.0, *output_fingerprint(jobs[1].out_path))
    state.mark_failed(jobs[2].id, 1.0, "no speech")
    # jobs[3] stays running: its run was killed
    Path(jobs[1].out_path).write_bytes(b"other")  # a done job's output changed: it is redone
    todo, why = state.plan(jobs, {}, retry_failed=False)
    assert [j.id for j in todo] == [jobs[1].id, jobs[3].id]
    assert "changed" in why[jobs[1].id] and "stopped" in why[jobs[3].id] and "failed" in why[jobs[2].id]
    todo, _ = state.plan(jobs, {}, retry_failed=True, dry=True)
    assert [j.id for j in todo] == [jobs[1].id, jobs[2].id, jobs[3].id]
    assert state.get(jobs[2].id)["state"] == "failed"  # a dry run records nothing
    # a job whose worker finished it just before its run was killed: its note and output match
    state.mark_running(jobs[3].id)
    Path(jobs[3].out_path).write_bytes(b"finished")
    size, sha = output_fingerprint(jobs[3].out_path)
    state.done_note(jobs[3].id).parent.mkdir(parents=True, exist_ok=True)
    state.done_note(jobs[3].id).write_text(json.dumps({"size": size, "sha256": sha, "seconds": 2.0}))
    todo, why = state.plan(jobs, {}, retry_failed=False)
    assert jobs[3].id not in [j.id for j in todo] and "recorded done" in why[jobs[3].id]
    assert (state.get(jobs[3].id)["state"], state.get(jobs[3].id)["completions"]) == ("done", 1)
    state.close()


def _prepare_under_lock(folder: str, record: str) -> None:
    from pipeline.batch.jobs import identity_lock

    with identity_lock(folder):
        start = time.time()
        marker = Path(folder) / "identity.json"
        if marker.exists():
            what = "reused"
        else:
            time.sleep(0.5)  # preparing
            Path(folder).mkdir(parents=True, exist_ok=True)
            marker.write_text("{}")
            what = "prepared"
        with open(record, "a") as f:
            f.write(f"{what} {start} {time.time()}\n")


def test_two_workers_on_one_identity_prepare_it_once(tmp_path):
    folder, record = tmp_path / "ids" / "dub-clip-1234", tmp_path / "record.txt"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_prepare_under_lock, args=(str(folder), str(record))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    entries = sorted(
        (float(a), float(b), what) for what, a, b in (x.split() for x in record.read_text().splitlines())
    )
    assert [e[2] for e in entries] == ["prepared", "reused"]
    assert entries[1][0] >= entries[0][1]  # the second started only after the first had finished


def test_dry_run_prints_the_plan_and_records_nothing(files, capsys):
    from pipeline.cli import main

    here, root = files
    rows = ["dub,clip.mp4,speech.wav,a.mp4", "dub,nope.mp4,speech.wav,b.mp4"]
    manifest = _write_csv(here / "jobs.csv", "kind,video,audio,out", rows)
    code = main(["batch", str(manifest), "--out-root", str(root), "--dry-run", "-q", "--set", "crf=20"])
    printed = capsys.readouterr().out
    assert code == 1  # a row is invalid
    assert "line 3: video: file not found" in printed and "line    2  dub      a.mp4: new" in printed
    assert "1 valid row(s), 1 invalid; 1 to run" in printed
    state = BatchState(root)
    assert state.jobs() == []
    state.close()
    assert main(["batch", str(manifest), "--out-root", str(root), "--set", "nothing=1"]) == 2


def test_each_local_worker_gets_its_own_gpu():
    from pipeline.batch.runner import LocalPool

    pool = LocalPool(2, gpus=["5", "7"])
    try:
        # both workers busy at once, so each answers for itself
        futures = [pool.pool.submit(_visible_gpu_after, 1.0) for _ in range(2)]
        assert sorted(f.result(timeout=60) for f in futures) == ["5", "7"]
    finally:
        pool.close()


def _visible_gpu_after(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_batch_status_without_a_database_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no batch database"):
        batch_status(tmp_path)


# ---- whole batches -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory, footage, demo_speech):
    """The synthetic footage, 2 s of speech and 2 s of a sine tone (no speech in it)."""
    from motion.audio import Audio
    from pipeline.prepare import write_wav

    folder = tmp_path_factory.mktemp("media")
    first_seconds(demo_speech, 2.0, folder / "speech.wav")
    t = np.arange(2 * 16000) / 16000
    write_wav(folder / "tone.wav", Audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000))
    os.symlink(footage.path, folder / "clip.mp4")
    return folder


def _mixed_manifest(media: Path, portrait_path: Path, tmp_path: Path) -> Path:
    return _write_csv(
        media / f"jobs-{tmp_path.name}.csv",
        "kind,video,image,audio,out,renderer",
        [
            "dub,clip.mp4,,speech.wav,dubs/one.mp4,warp",  # 2
            f"generate,,{portrait_path},speech.wav,gen.mp4,",  # 3
            "dub,missing.mp4,,speech.wav,missing.mp4,warp",  # 4
            "dub,clip.mp4,,speech.wav,../x.mp4,warp",  # 5
            "dub,clip.mp4,,speech.wav,dubs/one.mp4,warp",  # 6: duplicate
            "dub,clip.mp4,,tone.wav,tone.mp4,warp",  # 7: fails inside its job
        ],
    )


@pytest.fixture(scope="module")
def local_batch(media, portrait_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    manifest = _mixed_manifest(media, portrait_path, root)
    lines: list[str] = []
    result = run_batch(
        manifest, root, workers=2, sets=["generate.size=256"], progress=False, echo=lines.append
    )
    return root, manifest, result, lines


def _by_line(jobs):
    return {j["line"]: j for j in jobs}


@pytest.mark.slow
def test_batch_runs_the_good_rows_and_reports_the_bad_ones(local_batch):
    from pipeline.video_io import probe_video

    root, manifest, result, lines = local_batch
    assert result.exit_code == 1
    jobs = _by_line(result.jobs)
    assert {line: j["state"] for line, j in jobs.items()} == {
        2: "done", 3: "done", 4: "invalid", 5: "invalid", 6: "invalid", 7: "failed",
    }  # fmt: skip
    assert "no speech" in jobs[7]["error"] and "not found" in jobs[4]["error"]
    assert "'..'" in jobs[5]["error"] and "line 2" in jobs[6]["error"]
    assert probe_video(root / "dubs" / "one.mp4").num_frames == 50  # 2 s at the footage's 25 fps
    assert probe_video(root / "gen.mp4").width == 256
    report = json.loads((root / "report.json").read_text())
    assert report["counts"] == {"pending": 0, "running": 0, "done": 2, "failed": 1, "invalid": 3}
    assert (root / "report.csv").read_text().count("\n") == 7
    assert "no speech" in (root / jobs[7]["log"]).read_text()
    assert any("2 done, 1 failed, 3 invalid" in line for line in lines)
    # the same command again runs nothing: the done ones are checked and skipped, the failed one stays
    again = run_batch(manifest, root, sets=["generate.size=256"], progress=False, echo=lambda s: None)
    assert again.ran == 0 and again.exit_code == 1
    assert {j["line"]: j["attempts"] for j in again.jobs if j["state"] != "invalid"} == {2: 1, 3: 1, 7: 1}


@pytest.mark.slow
def test_ray_runs_the_same_manifest_with_the_same_result(local_batch, tmp_path):
    pytest.importorskip("ray")
    _, manifest, local, _ = local_batch
    result = run_batch(
        manifest,
        tmp_path,
        workers=2,
        ray="local",
        sets=["generate.size=256"],
        progress=False,
        echo=lambda s: None,
    )
    assert result.exit_code == 1
    ray_jobs, local_jobs = _by_line(result.jobs), _by_line(local.jobs)
    assert {k: j["state"] for k, j in ray_jobs.items()} == {k: j["state"] for k, j in local_jobs.items()}
    for line in (2, 3):  # the same bytes
        assert ray_jobs[line]["sha256"] == local_jobs[line]["sha256"]


@pytest.mark.slow
def test_two_dubs_of_one_video_prepare_and_train_its_identity_once(media, tmp_path):
    """Two workers, two nerf dubs (tiny preset) of the same clip: one prepares and trains, the other waits
    for the lock and reuses both."""
    manifest = _write_csv(
        media / "same.csv", "kind,video,audio,out,renderer,preset,timeline",
        [f"dub,clip.mp4,speech.wav,n{i}.mp4,nerf,tiny,cut" for i in range(2)],
    )  # fmt: skip
    root, ids = tmp_path / "out", tmp_path / "ids"
    result = run_batch(
        manifest, root, workers=2, sets=["dub.prepare.size=128"], workspace=ids, progress=False,
        echo=lambda s: None,
    )  # fmt: skip
    assert result.exit_code == 0, result.jobs
    assert len([p for p in ids.iterdir() if p.is_dir()]) == 1
    logs = [(root / j["log"]).read_text() for j in result.jobs]
    assert sum(text.count("training the nerf renderer") for text in logs) == 1
    assert sorted("found, reused" in text for text in logs) == [False, True]
    assert sorted("preparing" in text for text in logs) == [False, True]
    # a render row drives the identity the dubs prepared and trained
    from pipeline.dub_trained import identity_name
    from pipeline.video_io import probe_video

    name = identity_name(media / "clip.mp4")
    render = _write_csv(
        media / "render.csv", "kind,identity,audio,out,renderer", [f"render,{name},speech.wav,r.mp4,nerf"]
    )
    result = run_batch(render, root, workers=1, workspace=ids, progress=False, echo=lambda s: None)
    assert result.exit_code == 0, result.jobs
    assert probe_video(root / "r.mp4").num_frames == 50


def _completions(db: Path) -> int:
    if not db.is_file():
        return 0
    with sqlite3.connect(db, timeout=5) as con:
        return int(con.execute("SELECT COALESCE(SUM(completions), 0) FROM jobs").fetchone()[0])


@pytest.mark.slow
def test_kill_9_in_the_middle_and_rerun_does_every_job_exactly_once(media, tmp_path):
    from pipeline.video_io import probe_video

    manifest = _write_csv(
        media / "kill.csv", "kind,video,audio,out,renderer",
        [f"dub,clip.mp4,speech.wav,k{i}.mp4,warp" for i in range(3)],
    )  # fmt: skip
    root = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "batch", str(manifest), "--out-root", str(root), "-q",
               "--workers", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _completions(root / DB_NAME) < 1:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(root / DB_NAME) as con:
        before = {r[0]: r[1:] for r in con.execute("SELECT id, state, out FROM jobs")}
    assert [s for s, _ in before.values()].count("done") == 1
    first = next(i for i, (s, _) in before.items() if s == "done")
    first_out = root / before[first][1]
    stamp = first_out.stat().st_mtime_ns
    time.sleep(1.5)  # the killed run's worker ends itself when it sees its parent gone
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "all done: 3 done" in rerun.stdout
    with sqlite3.connect(root / DB_NAME) as con:
        after = {r[0]: r[1:] for r in con.execute("SELECT id, state, completions, attempts FROM jobs")}
    assert all(state == "done" and completions == 1 for state, completions, _ in after.values())
    assert after[first][2] == 1  # the job done before the kill was not run again
    assert first_out.stat().st_mtime_ns == stamp
    for i in range(3):
        assert probe_video(root / f"k{i}.mp4").num_frames == 50
    assert not list(root.glob(".*tmp*"))  # nothing half-written left
    status = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "batch-status", str(root)], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0 and "3 done" in status.stdout

"""Workspaces verify themselves: damage to a chunk or file is reported by inspect, refused by train and
repaired by prepare; failed runs leave no stubs and a workspace that was fine stays as it was."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.workspace import IDENTITY_FILE, Workspace

pytestmark = pytest.mark.slow  # every test here prepares or copies a prepared workspace


def _copy(prepared, tmp_path) -> Workspace:
    """A copy of the prepared workspace to damage (its trained renderers left out)."""
    folder = tmp_path / "ws" / prepared.path.name
    shutil.copytree(prepared.path, folder, ignore=shutil.ignore_patterns("renderers"))
    return Workspace.open(folder)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the JPEG frames: the file still opens as an npz
    path.write_bytes(bytes(data))


DAMAGE = [
    ("chunks/00001.npz", _truncate, "bytes where"),
    ("chunks/00003.npz", _flip_a_byte, "checksum differs"),  # the clip's last, shorter chunk
    ("tracking.npz", lambda path: path.unlink(), "missing"),
]


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(("name", "damage", "problem"), DAMAGE, ids=["truncated", "flipped", "deleted"])
def test_damage_is_reported_refused_and_repaired(prepared, tmp_path, capsys, name, damage, problem):
    ws = _copy(prepared, tmp_path)
    assert ws.verify() == []
    recorded = ws.recorded()
    assert {"chunks/00000.npz", "chunks/00003.npz", "tracking.npz", "background.png", "audio.wav"} <= set(
        recorded
    )
    damage(ws.file(name))

    found = ws.verify()
    assert [(d.name, d.step) for d in found] == [(name, "tracking" if name == "tracking.npz" else "frames")]
    assert problem in found[0].problem

    # inspect: the summary names the file, the error line the command that repairs it; exit status 2
    assert main(["inspect", str(ws.path)]) == 2
    out, err = capsys.readouterr()
    assert "DAMAGED" in out and f"{name}: {found[0].problem}" in out
    line = _error_line(err)
    assert name in line and ws.repair_command() in line

    # train refuses before any work, for both renderers, and creates no renderer folder
    for renderer in ("nerf", "diffusion"):
        code = main(
            ["train", "--identity", ws.name, "--workspace", str(ws.path.parent), "--renderer", renderer]
        )
        assert code == 2
        line = _error_line(capsys.readouterr().err)
        assert f"is damaged: {name}" in line and "talking-portrait prepare" in line
    assert not (ws.path / "renderers").exists()

    # the command it names repairs it: the workspace verifies and equals the undamaged one
    words = shlex.split(ws.repair_command())
    assert words[:2] == ["talking-portrait", "prepare"]
    assert main([*words[1:], "-q"]) == 0
    repaired = Workspace.open(ws.path)
    assert repaired.verify() == []
    assert repaired.recorded() == recorded
    assert repaired.info["steps"].keys() == prepared.info["steps"].keys()
    a, b = np.load(prepared.file(name)), np.load(repaired.file(name))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert main(["inspect", str(ws.path)]) == 0
    assert "as written" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["chunks/00001.npz", "tracking.npz"])
def test_repair_redoes_only_the_damaged_part(prepared, tmp_path, name, monkeypatch):
    """A damaged chunk is rebuilt alone (the tracking alone for damaged tracking) and, coming out the same,
    the steps that read it are not redone: every other file keeps its time stamp."""
    import pipeline.prepare as prep

    ws = _copy(prepared, tmp_path)
    _truncate(ws.file(name))
    untouched = {n: ws.file(n).stat().st_mtime_ns for n in ws.recorded() if n != name}
    written, fits = [], []
    write_chunk, fit_clip = prep.write_chunk, prep.fit_clip
    monkeypatch.setattr(
        prep, "write_chunk", lambda path, *a: written.append(path.name) or write_chunk(path, *a)
    )
    monkeypatch.setattr(prep, "fit_clip", lambda *a: fits.append(1) or fit_clip(*a))
    assert main([*shlex.split(ws.repair_command())[1:], "-q"]) == 0
    assert written == (["00001.npz"] if name.startswith("chunks") else [])
    assert len(fits) == (name == "tracking.npz")
    assert {n: ws.file(n).stat().st_mtime_ns for n in untouched} == untouched
    assert Workspace.open(ws.path).verify() == []


def test_a_workspace_without_records_still_opens(prepared, tmp_path, capsys):
    ws = _copy(prepared, tmp_path)
    info = json.loads(ws.file(IDENTITY_FILE).read_text())
    del info["files"]
    ws.file(IDENTITY_FILE).write_text(json.dumps(info))
    old = Workspace.open(ws.path)
    assert not old.checksums_recorded and old.verify() == []
    old.require_intact()
    assert main(["inspect", str(ws.path)]) == 0
    assert "not recorded" in capsys.readouterr().out

    # without records, chunks and .npz files are still checked against the CRCs inside them
    _truncate(ws.file("chunks/00002.npz"))
    _flip_a_byte(ws.file("tracking.npz"))
    found = [(d.name, d.step) for d in old.verify()]
    assert found == [("chunks/00002.npz", "frames"), ("tracking.npz", "tracking")]
    assert main(["inspect", str(ws.path)]) == 2
    assert "chunks/00002.npz" in _error_line(capsys.readouterr().err)
    assert main([*shlex.split(old.repair_command())[1:], "-q"]) == 0
    repaired = Workspace.open(ws.path)
    assert repaired.verify() == []
    for name in ("chunks/00002.npz", "tracking.npz"):
        assert repaired.recorded()[name] == prepared.recorded()[name], name


# ---- failed runs leave no stubs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def faceless_clip(tmp_path_factory):
    """3 s of a moving texture with no face in it."""
    import cv2

    from pipeline.video_io import VideoWriter
    from tests.footage import textured_background

    clip = tmp_path_factory.mktemp("faceless") / "empty.mp4"
    bg = textured_background(128)
    with VideoWriter(clip, 25, (128, 128)) as w:
        for k in range(75):
            w.write(cv2.GaussianBlur(np.roll(bg, k, 1), (3, 3), 0))
    return clip


def test_failed_prepare_leaves_nothing(faceless_clip, tmp_path, capsys):
    root = tmp_path / "identities"
    for _ in range(2):  # the second run says the same, not "use --force"
        assert (
            main(["prepare", str(faceless_clip), "--identity", "empty", "--workspace", str(root), "-q"]) == 2
        )
        line = _error_line(capsys.readouterr().err)
        assert "face was found on only 0" in line and "--force" not in line
        assert not root.exists()


def test_bad_audio_is_refused_before_any_work(footage, tmp_path, capsys, monkeypatch):
    import pipeline.prepare as prep

    written = []
    monkeypatch.setattr(prep, "write_chunk", lambda *a: written.append(a))
    not_audio = tmp_path / "speech.wav"
    not_audio.write_text("not audio")
    root = tmp_path / "identities"
    args = ["prepare", str(footage.path), "--identity", "x", "--workspace", str(root)]
    assert main([*args, "--audio", str(not_audio), "-q"]) == 2
    assert str(not_audio) in _error_line(capsys.readouterr().err)
    assert written == [] and not root.exists()


def _snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_failed_rerun_leaves_the_workspace_as_it_was(prepared, faceless_clip, tmp_path, capsys):
    ws = _copy(prepared, tmp_path)
    before = _snapshot(ws.path)
    not_audio = tmp_path / "speech.wav"
    not_audio.write_text("not audio")
    runs = [
        [
            ws.info["source"]["path"],
            "--audio",
            str(not_audio),
            "--config",
            str(ws.file("prepare.config.yaml")),
        ],
        [str(faceless_clip), "--force"],  # the old workspace is kept until the new one is prepared
    ]
    for args in runs:
        assert main(["prepare", *args, "--identity", ws.name, "--workspace", str(ws.path.parent), "-q"]) == 2
        _error_line(capsys.readouterr().err)
        assert _snapshot(ws.path) == before
        assert sorted(p.name for p in ws.path.parent.iterdir()) == [ws.name]


@pytest.mark.parametrize("renderer", ["nerf", "diffusion"])
def test_failed_train_leaves_no_renderer_folder(prepared, tmp_path, renderer):
    from common.config import load_config
    from renderers import registry

    Config, train = registry.entry(renderer).trainer()
    config = load_config(Config, f"{renderer}_tiny.yaml", ["iterations=4", "checkpoint_every=4"])
    out = tmp_path / "renderers" / renderer

    def fail_at_2(step: int) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(prepared, out, config, on_step=fail_at_2)
    assert not out.exists() and not out.parent.exists()


def test_force_replaces_the_workspace_and_leaves_nothing_aside(prepared, tmp_path):
    from pipeline.prepare import prepare
    from tests.conftest import PREPARE_CONFIG

    ws = _copy(prepared, tmp_path)
    aside = ws.path.with_name(f".{ws.name}.replaced")
    aside.mkdir()  # what a --force run killed before it finished leaves
    (aside / IDENTITY_FILE).write_text("{}")
    assert main([*shlex.split(ws.repair_command())[1:], "-q"]) == 0  # nothing to redo; the leftover goes
    assert sorted(p.name for p in ws.path.parent.iterdir()) == [ws.name]
    again = prepare(ws.info["source"]["path"], ws.name, ws.path.parent, PREPARE_CONFIG, force=True)
    assert sorted(p.name for p in ws.path.parent.iterdir()) == [ws.name]
    assert again.verify() == [] and list(again.info["steps"]) == list(prepared.info["steps"])
    timed = "report/summary.json"  # holds the run's timings
    assert {n: r for n, r in again.recorded().items() if n != timed} == {
        n: r for n, r in prepared.recorded().items() if n != timed
    }


def test_a_mangled_list_of_files_is_one_error_line(prepared, tmp_path, capsys):
    ws = _copy(prepared, tmp_path)
    info = json.loads(ws.file(IDENTITY_FILE).read_text())
    info["files"]["tracking.npz"] = {"size": "big"}
    ws.file(IDENTITY_FILE).write_text(json.dumps(info))
    assert main(["inspect", str(ws.path)]) == 2
    assert "unreadable list of files" in _error_line(capsys.readouterr().err)


def test_render_and_eval_refuse_a_damaged_workspace(prepared, tmp_path, capsys, demo_speech):
    ws = _copy(prepared, tmp_path)
    (ws.path / "renderers" / "nerf").mkdir(parents=True)  # a trained renderer's place: the workspace check
    (ws.path / "renderers" / "nerf" / "model.safetensors").write_bytes(b"")  # comes before it is read
    _truncate(ws.file("chunks/00001.npz"))
    root, name = str(ws.path.parent), ws.path.name
    out = tmp_path / "render.mp4"
    render = [
        "render",
        "--identity",
        name,
        "--workspace",
        root,
        "--audio",
        str(demo_speech),
        "--out",
        str(out),
    ]
    assert main([*render, "-q"]) == 2
    assert "chunks/00001.npz" in _error_line(capsys.readouterr().err) and not out.exists()
    assert main(["eval", "--identity", name, "--workspace", root, "--out", str(tmp_path / "eval"), "-q"]) == 2
    assert "is damaged: chunks/00001.npz" in _error_line(capsys.readouterr().err)

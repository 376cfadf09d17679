"""``bench gpu``: on the CPU at tiny sizes every stage ends with figures in report.json, the log and the
summary table are written; a failing stage is recorded and the next one runs; no GPU means one clear line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipeline.bench.gpu_report import BenchReport, StageFailed, summary_table
from pipeline.cli import main
from tests.conftest import REPO

STAGES = ["kernels", "tests", "diffusion", "identity", "nerf_train", "nerf_speed", "dub"]


@pytest.mark.slow
def test_cpu_run_records_every_stage_with_figures(tmp_path, capsys):
    out = tmp_path / "bench"
    hashgrid_tests = str(REPO / "tests" / "test_hashgrid.py")  # one GPU test: its collection is quick
    code = main(["bench", "gpu", "--device", "cpu", "--minutes", "0.1", "--out", str(out),
                 "--tests", hashgrid_tests])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["finished"] and report["device"] == "cpu"
    assert "--device cpu" in report["command"] and report["machine"]["packages"]["torch"]
    stages = report["stages"]
    assert list(stages) == STAGES
    for name, entry in stages.items():
        assert entry["status"] == "ok", (name, entry.get("error"))
        assert entry["seconds"] >= 0

    tests = stages["tests"]
    assert tests["passed"] + tests["skipped"] == 1 and tests["failed"] == tests["errors"] == 0

    fps = stages["diffusion"]["frames_per_second"]
    assert sorted(fps) == ["64px_1steps", "64px_2steps", "64px_4steps"] and min(fps.values()) > 0

    identity = stages["identity"]
    assert identity["clip_seconds"] == 3.0 and identity["frames"] == 75 and identity["size"] == 128
    assert identity["holdout_frames"] > 0 and identity["prepare_fps"] > 0

    train = stages["nerf_train"]
    curve = train["psnr_holdout"]
    assert train["steps"] >= 1 and curve and curve[-1]["step"] == train["steps"]
    assert all(math.isfinite(p["psnr"]) and p["psnr"] > 0 for p in curve)
    assert [p["seconds"] for p in curve] == sorted(p["seconds"] for p in curve)
    assert (train["stopped_by"] == "time") == (train["steps"] < 40)  # the tiny preset's iterations

    speed = stages["nerf_speed"]
    assert speed["render"]["resolution"] == 32 and speed["render"]["fps"] > 0
    assert speed["encoding"]["torch"]["forward_backward_mpts_s"] > 0

    dubbed = stages["dub"]
    assert dubbed["frames"] > 0 and dubbed["frames_per_second"] > 0
    assert all(math.isfinite(v) for v in dubbed["eval"].values())

    log = (out / "bench_gpu.log").read_text()
    assert all(f"== {name}" in log for name in STAGES)
    assert "1 skipped" in log or "1 passed" in log  # the test subprocess's own output
    printed = capsys.readouterr().out
    assert "| date | machine | command | stage | result |" in printed
    assert "held-out PSNR" in printed and "64 px:" in printed and "render at 32 px" in printed


def test_a_failing_stage_is_recorded_and_the_next_one_runs(tmp_path):
    machine = {"machine": "m", "cores": 2, "packages": {"torch": "2"}}
    report = BenchReport(tmp_path, {"command": "bench", "date": "2026-12-02 10:00", "machine": machine})
    with report.stage("identity") as figures:
        figures["frames"] = 10
        running = json.loads((tmp_path / "report.json").read_text())
        raise ValueError("no face in the clip")
    with report.stage("nerf_train"):
        raise StageFailed("it needs the identity stage, which did not finish")
    with report.stage("diffusion") as figures:
        figures.update(preset="tiny", batch=1, sampler="ddim", frames_per_second={"64px_1steps": 3.0})
    assert running["stages"]["identity"]["status"] == "running"  # a run cut short shows where it was
    saved = json.loads((tmp_path / "report.json").read_text())["stages"]
    assert (
        saved["identity"]["status"] == "failed"
        and saved["identity"]["error"] == "ValueError: no face in the clip"
    )
    assert saved["nerf_train"]["status"] == "skipped" and "identity" in saved["nerf_train"]["error"]
    assert (
        saved["diffusion"]["status"] == "ok" and saved["diffusion"]["frames_per_second"]["64px_1steps"] == 3.0
    )
    table = summary_table(report.data)
    assert "| identity | failed: ValueError: no face in the clip" in table
    assert "| diffusion | tiny net, batch 1, ddim: 64 px: 3.0 frames/s at 1 steps" in table
    assert "Traceback" in (tmp_path / "bench_gpu.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_no_gpu_is_refused_with_one_line_unless_cpu_is_asked(tmp_path, capsys):
    code = main(["bench", "gpu", "--out", str(tmp_path / "bench")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no CUDA GPU") and "--device cpu" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bench").exists()
